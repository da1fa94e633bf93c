"""python -m benchmark.submission model=resnet50 dataset.root=DIR submission.submitter=NAME submission.system=NAME"""

import hydra
from omegaconf import DictConfig

from preprocessing.errors import exit_on_user_error


@hydra.main(version_base="1.3", config_path="pkg://benchmark.conf", config_name="submission")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from benchmark.submission.make import make

    exit_on_user_error(lambda: make(cfg, list(HydraConfig.get().overrides.task)))


if __name__ == "__main__":
    main()
