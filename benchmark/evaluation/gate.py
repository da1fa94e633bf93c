"""MLPerf's accuracy target, as its submission checker (`tools/submission/submission_checker.py`)
computes and compares it: a fraction of the FP32 reference's top-1 (ResNet-50: 99 % of 76.46;
MobileNet: 98 % of 71.68), met when the accuracy as `accuracy-imagenet.py` prints it (three decimals)
is at least the target."""

from __future__ import annotations

from dataclasses import dataclass

WHOLE_SET = 50_000  # ImageNet's validation set: the target is judged on all of it

# arch -> (the FP32 reference top-1 in %, the fraction a submission must reach), the checker's constants
TARGETS = {"resnet50": (76.46, 0.99), "mobilenet_v1": (71.68, 0.98)}


@dataclass(frozen=True)
class Gate:
    arch: str
    reference: float  # %
    fraction: float
    accuracy: float  # the run's top-1 as printed, %
    total: int

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
        return (f"mlperf target {self.target:.3f}% ({self.fraction * 100:g}% of {self.reference:g}): "
                f"{verdict}{scope}")

    def to_dict(self) -> dict:
        return {"target": self.target, "reference": self.reference, "fraction": self.fraction,
                "accuracy": float(f"{self.accuracy:.3f}"), "passed": self.passed, "indicative": self.indicative,
                "total": self.total}


def gate(arch: str, accuracy: float, total: int) -> Gate | None:
    """MLPerf's gate for a model of `arch` at `accuracy` % over `total` images; None for an
    architecture MLPerf sets no ImageNet target for."""
    if arch not in TARGETS:
        return None
    reference, fraction = TARGETS[arch]
    return Gate(arch, reference, fraction, accuracy, total)
