"""python -m benchmark model=mobilenet_v1 preprocess=mlperf model.checkpoint=... dataset.root=..."""

import hydra
from omegaconf import DictConfig

from preprocessing.errors import exit_on_user_error


@hydra.main(version_base="1.3", config_path="pkg://benchmark.conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from benchmark.run import run

    exit_on_user_error(lambda: run(cfg))


if __name__ == "__main__":
    main()
