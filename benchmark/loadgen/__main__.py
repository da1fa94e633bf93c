"""python -m benchmark.loadgen model=... model.checkpoint=... dataset.root=... loadgen.scenario=Offline loadgen.mode=accuracy"""

import sys

import hydra
from omegaconf import DictConfig

from ..errors import USER_ERRORS


@hydra.main(version_base="1.3", config_path="pkg://benchmark.conf", config_name="loadgen")
def main(cfg: DictConfig) -> None:
    from .run import run

    try:
        run(cfg)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
