"""A sweep's crop caches built together before its first job: `python -m benchmark -m ...` and
`python -m preprocessing -m ...` (Hydra's multirun) run this callback (conf/config.yaml).

Built one job at a time, a sweep over N pipelines reads and decodes every image N times.
Here every job's pipeline is known before the first one runs, so the caches the sweep needs are
built in one pass (preprocessing.cache.open_caches): each file read once (and hashed, for
verify=sha256), and decoded once per decoder (OpenCV, Pillow or TensorFlow). The jobs then find
their caches built.

A job is built for here when its config names its input size (`model.image_size`: `python -m
preprocessing` needs it anyway; `python -m benchmark` otherwise reads it from the checkpoint, when
its job runs). Jobs sent to SLURM build on their own nodes, as a login node is no place for it.
"""

from __future__ import annotations

import itertools
import sys
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

REMOTE_LAUNCHERS = ("SlurmLauncher",)  # jobs that run on other machines: they build there


def job_overrides(task: list[str]) -> list[list[str]]:
    """Each job's overrides of a multirun's command line (`a=1,2 b=x,y`: four jobs), as Hydra's
    basic sweeper expands them."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    choices = []
    for override in OverridesParser.create().parse_overrides(task):
        if override.is_sweep_override():
            key = override.get_key_element()
            choices.append([f"{key}={value}" for value in override.sweep_string_iterator()])
        else:
            choices.append([override.input_line])
    return [list(job) for job in itertools.product(*choices)]


def sweep_pipelines(configs: list[DictConfig]) -> dict[tuple, list]:
    """The jobs' (dataset, pipeline) pairs, grouped by what shares one pass: the same images, cache
    folder and build options. Jobs without an input size, or whose config is wrong (the job itself
    says so when it runs), are left to build their own."""
    from preprocessing.errors import UserError
    from preprocessing.stage import CacheSpec, DatasetSpec, PipelineSpec, prepare

    groups: dict[tuple, list] = {}
    for cfg in configs:
        size = OmegaConf.select(cfg, "model.image_size")
        if size is None:
            continue
        try:
            inputs = prepare(DatasetSpec.from_config(cfg).listed(), PipelineSpec.from_config(cfg), int(size))
        except (UserError, ValueError, OSError):
            continue
        d, c = inputs.dataset, CacheSpec.from_config(cfg)
        key = (str(d.root), d.labels_file and str(d.labels_file), tuple(d.names), str(c.folder), c.workers,
               c.progress, c.on_error, c.verify)
        group = groups.setdefault(key, [d])
        if inputs.settings not in group[1:]:
            group.append(inputs.settings)
    return groups


def build_sweep_caches(configs: list[DictConfig]) -> int:
    """Every cache the jobs of `configs` need, built in one pass per image set; the number of jobs
    whose cache was handled here."""
    from preprocessing.cache import open_caches

    handled = 0
    for (_, _, _, folder, workers, progress, on_error, verify), (dataset, *pipelines) in \
            sweep_pipelines(configs).items():
        decoders = {"tf" if p.resize == "tf" else p.decoder for p in pipelines}
        passes = "one pass" if len({p.resize == "tf" for p in pipelines}) == 1 else "two passes (TensorFlow's apart)"
        print(f"sweep: the crop caches of {len(pipelines)} pipeline(s) on {len(dataset)} images, in {passes} "
              f"({len(decoders)} decode(s) per image)", file=sys.stderr)
        open_caches(dataset, pipelines, folder, workers, progress, on_error, verify)
        handled += len(pipelines)
    return handled


class BuildSweepCaches(Callback):
    """Hydra's multirun callback: the sweep's caches, before its first job."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra import compose

        from preprocessing.errors import exit_on_user_error

        launcher = str(OmegaConf.select(config, "hydra.launcher._target_") or "")
        if launcher.rsplit(".", 1)[-1] in REMOTE_LAUNCHERS:
            return
        configs = [compose(config_name=config.hydra.job.config_name, overrides=job)
                   for job in job_overrides(list(config.hydra.overrides.task))]
        exit_on_user_error(lambda: build_sweep_caches(configs))
