"""python -m preprocessing model=... preprocess=mlperf model.image_size=224 dataset.root=... cache_dir=...

Builds (or verifies) the crop cache on its own; the cache folder is the last line printed. It reads
images only, never the model: the input size comes from model.image_size (`python -m benchmark`,
which reads the checkpoint, builds the same cache without it)."""

import sys

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="pkg://benchmark.conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from preprocessing.errors import exit_on_user_error
    from preprocessing.stage import CacheSpec, DatasetSpec, PipelineSpec, build_cache, prepare, require

    def build():
        size = require(cfg, "model.image_size", ": python -m preprocessing reads images, not the model; set the "
                                                "model's input size (224 for MLPerf's ResNet-50 and MobileNet-v1), "
                                                "or let python -m benchmark build the cache, reading it from the "
                                                "checkpoint")
        inputs = prepare(DatasetSpec.from_config(cfg).listed(), PipelineSpec.from_config(cfg), int(size))
        return build_cache(CacheSpec.from_config(cfg), inputs)

    cache = exit_on_user_error(build)
    print(f"{cache.manifest['count']} images, {cache.images.nbytes / 1e6:.1f} MB", file=sys.stderr)
    print(cache.folder)


if __name__ == "__main__":
    main()
