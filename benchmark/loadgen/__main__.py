"""python -m benchmark.loadgen model=... model.checkpoint=... dataset.root=... loadgen.scenario=Offline loadgen.mode=accuracy"""

import hydra
from omegaconf import DictConfig

from preprocessing.errors import exit_on_user_error


@hydra.main(version_base="1.3", config_path="pkg://benchmark.conf", config_name="loadgen")
def main(cfg: DictConfig) -> None:
    if cfg.loadgen.get("compliance"):
        from benchmark.loadgen.compliance import run
    else:
        from benchmark.loadgen.run import run

    exit_on_user_error(lambda: run(cfg))


if __name__ == "__main__":
    main()
