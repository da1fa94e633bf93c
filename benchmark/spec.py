"""A run as the command resolved it: the Hydra config turned into typed parts once, at the top
(`RunSpec.from_config`), so every stage below takes the parts it uses and none reads the config.
`python -m benchmark`, its LoadGen runs, `benchmark.compare` and `benchmark.export` make one."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from benchmark import runtimes
from benchmark.families import judged_as
from benchmark.nn.transform import Transform, load_transform
from benchmark.runtimes.source import ModelSpec
from preprocessing.errors import ConfigError
from preprocessing.stage import CacheSpec, DatasetSpec, PipelineSpec, default_cache_dir


@dataclass(frozen=True)
class RunSpec:
    model: ModelSpec
    judged: str  # the family whose MLPerf target, pipeline and exact model apply (a module's: the one it ports)
    ported: ModelSpec | None  # model=module: the MLPerf model it ports (reference_checkpoint= applied)
    dataset: DatasetSpec | None  # None: a command that reads no images (benchmark.export)
    pipeline: PipelineSpec
    cache: CacheSpec
    backend: str
    reference: str | None
    device: str
    threads: int | None
    batch_size: int | None  # None: the runtime's device's default
    fold_bn: bool
    cpu_fusion: bool | str
    cuda_graphs: bool
    precision: str  # precision= (fp32 where a config has none)
    transform: Transform | None  # model.transform: the user's transform the backend runs
    calibration_list: str  # int8: MLPerf's option_1 or option_2, or a file of image names
    calibration_min_images: int | None
    real: bool  # labels.real=true: ImageNet-ReaL's scores too
    checkpoint_dir: Path  # where downloaded checkpoints go
    results_file: Path | None  # None: results/runs/<model>-<pipeline>-<backend>-<time>-<pid>.json
    progress: bool
    config: dict  # the whole resolved config, recorded in the results

    @property
    def is_module(self) -> bool:
        return self.model.arch == "module"

    @classmethod
    def from_config(cls, cfg: DictConfig, images: bool = True) -> RunSpec:
        """The config's parts, each checked where the config alone can refuse it (before a checkpoint
        is opened or an image read). `images`: false for a command that reads none (no dataset)."""
        if cfg.model.arch == "module" and OmegaConf.is_missing(cfg.model, "module"):
            raise ConfigError("model.module is not set: the factory of your module (package.module:callable, "
                              "e.g. torchvision.models:resnet50)")
        # a module ports one of MLPerf's models (checked first: its group's values are the ported one's)
        judged = judged_as(str(cfg.model.arch), cfg.model.get("ports"))
        model = ModelSpec.from_config(cfg.model)
        module = model.arch == "module"
        runtimes.supports(cfg.backend, module=module)
        if cfg.get("reference_checkpoint") and not module:
            raise ConfigError(f"reference_checkpoint= names the MLPerf checkpoint a model=module ports; "
                              f"model={model.name}'s reference is its own checkpoint")
        if cfg.reference is not None:
            # a module's: the exact conversion (torch), tf or onnxruntime of the ported checkpoint
            runtimes.supports(cfg.reference, "reference", module=module, backend=cfg.backend)
        ported = None
        if module:
            from benchmark import conf

            ported_config = conf.load("model", judged)
            if cfg.get("reference_checkpoint"):
                ported_config.checkpoint = str(cfg.reference_checkpoint)
            ported = ModelSpec.from_config(ported_config)
        return cls(
            model=model, judged=judged, ported=ported, dataset=DatasetSpec.from_config(cfg) if images else None,
            pipeline=PipelineSpec.from_config(cfg), cache=CacheSpec.from_config(cfg), backend=str(cfg.backend),
            reference=None if cfg.reference is None else str(cfg.reference), device=str(cfg.device),
            threads=cfg.threads, batch_size=cfg.batch_size, fold_bn=bool(cfg.fold_bn), cpu_fusion=cfg.cpu_fusion,
            cuda_graphs=cfg.cuda_graphs, precision=str(cfg.get("precision", "fp32")),
            transform=load_transform(cfg.model.get("transform")), calibration_list=str(cfg.calibration.list),
            calibration_min_images=cfg.calibration.min_images, real=bool((cfg.get("labels") or {}).get("real")),
            checkpoint_dir=Path(cfg.checkpoint_dir).expanduser() if cfg.checkpoint_dir
            else default_cache_dir() / "checkpoints",
            results_file=Path(cfg.results_file).expanduser() if cfg.results_file else None,
            progress=bool(cfg.progress), config=OmegaConf.to_container(cfg, resolve=True))

    @property
    def cache_folder(self) -> Path:
        return self.cache.folder

    def on_device(self, device: str) -> RunSpec:
        """The same run on another device (one GPU per torchrun rank)."""
        return replace(self, device=device)

    def options(self, threads: int | None, role: str = "backend", numerics: str | None = None,
                transform=None) -> runtimes.Options:
        """The runtime settings; `numerics`: a precision other than the run's; `transform`: the user's
        transform of the model (backend only)."""
        return runtimes.Options(device=self.device, threads=threads, fold_bn=self.fold_bn, cpu_fusion=self.cpu_fusion,
                                cuda_graphs=self.cuda_graphs, role=role, precision=numerics or self.precision,
                                transform=transform)
