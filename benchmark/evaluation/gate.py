"""MLPerf's accuracy target, as its submission checker (`tools/submission/submission_checker.py`)
computes and compares it: a fraction of the FP32 reference's top-1 (ResNet-50: 99 % of 76.46;
MobileNet: 98 % of 71.68), met when the accuracy as `accuracy-imagenet.py` prints it (three decimals)
is at least the target."""

from __future__ import annotations

from dataclasses import dataclass

from benchmark.families import FAMILIES, with_target

WHOLE_SET = 50_000  # ImageNet's validation set: the target is judged on all of it



def title(arch: str) -> str:
    """Whose target it is: the one model of the family MLPerf judges."""
    return FAMILIES[arch].title


@dataclass(frozen=True)
class Gate:
    arch: str
    reference: float  # %
    fraction: float
    accuracy: float  # the run's top-1 as printed, %
    total: int
    # why the verdict is shown for reference only (a checkpoint that is not MLPerf's, a calibration
    # list that is not MLPerf's); none: the verdict is a submission's
    reservations: tuple[str, ...] = ()

    @property
    def target(self) -> float:
        return self.reference * self.fraction  # the checker's own expression, in float64

    @property
    def passed(self) -> bool:
        return float(f"{self.accuracy:.3f}") >= self.target  # it reads the printed accuracy back

    @property
    def indicative(self) -> bool:
        return self.total != WHOLE_SET

    def line(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        scope = f" (indicative: {self.total:,} images, not the {WHOLE_SET:,} the target is judged on)" \
            if self.indicative else ""
        caveat = f"; for reference only, not a submission's verdict: {'; '.join(self.reservations)}" \
            if self.reservations else ""
        return (f"mlperf target {self.target:.3f}% (MLPerf's {title(self.arch)}: {self.fraction * 100:g}% of "
                f"{self.reference:g}): {verdict}{scope}{caveat}")

    def to_dict(self) -> dict:
        return {"model": title(self.arch), "target": self.target, "reference": self.reference,
                "fraction": self.fraction, "accuracy": float(f"{self.accuracy:.3f}"), "passed": self.passed,
                "indicative": self.indicative, "total": self.total, "reservations": list(self.reservations)}


def gate(arch: str, accuracy: float, total: int, reservations: tuple[str, ...] = ()) -> Gate | None:
    """MLPerf's gate for a model of `arch` at `accuracy` % over `total` images; None for an
    architecture MLPerf sets no ImageNet target for. `reservations`: why the verdict is not a
    submission's (`reservations` below)."""
    if arch not in with_target():
        return None
    reference, fraction = FAMILIES[arch].target
    return Gate(arch, reference, fraction, accuracy, total, tuple(reservations))


def reservations(arch: str, checkpoint: str, mlperfs: bool, calibration: dict | None,
                 transform=None, module: str | None = None, pipeline: list[str] | tuple = ()) -> tuple[str, ...]:
    """Why a run's verdict against `arch`'s target is not a submission's: its checkpoint (named
    `checkpoint`) is not MLPerf's published one (`mlperfs`), its int8 model was calibrated on a
    list that is not one of MLPerf's, the model ran transformed by a user's `transform`, it is a
    user's `module` (model=module) with weights of its own, or its preprocessing departs from
    MLPerf's pipeline (`pipeline`: families.mlperf_departures, whatever the config is called)."""
    out = []
    if pipeline:
        out.append(f"the preprocessing is not MLPerf's pipeline ({', '.join(pipeline)})")
    if module is not None:
        out.append(f"the model is your module {module} with the weights {checkpoint} (model=module), "
                   f"not MLPerf's published {title(arch)} checkpoint")
    if transform is not None:
        out.append(f"the model ran transformed by {transform.target} (model.transform)")
    if arch in with_target() and not mlperfs and module is None:
        out.append(f"{checkpoint} is not MLPerf's published {title(arch)} checkpoint (not fetched from MLPerf's "
                   f"URL, nor of a published md5)")
    if calibration is not None and not calibration.get("mlperf_list"):
        out.append(f"calibrated on {calibration['list']}, not one of MLPerf's calibration lists")
    return tuple(out)
