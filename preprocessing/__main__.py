"""python -m preprocessing model=... preprocess=mlperf dataset.root=... cache_dir=...

Builds (or verifies) the crop cache on its own; the cache folder is the last line printed."""

import sys

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="pkg://benchmark.conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from benchmark.errors import USER_ERRORS
    from benchmark.run import build_cache, prepare_cache_only

    try:
        cache = build_cache(cfg, prepare_cache_only(cfg))
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"{cache.manifest['count']} images, {cache.images.nbytes / 1e6:.1f} MB", file=sys.stderr)
    print(cache.folder)


if __name__ == "__main__":
    main()
