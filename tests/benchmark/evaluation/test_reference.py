"""A run against a reference (reference=tf, onnxruntime, torch): agreement, the largest logit
difference, and which disagreements are near-ties, ties within numerical noise only."""

import numpy as np

from benchmark.evaluation.report import compare, near_tie_margin
from benchmark.evaluation.scoring import score


def test_near_ties_are_ties_within_numerical_noise_not_within_the_ports_error():
    """A port 15 logits off (a padding slip) disagrees on most images: none is a near-tie, however
    large its logit difference (the fault: the margin was held to twice that difference, so every
    disagreement of a broken port was "a near-tie"). A reference whose top two are 1e-5 apart, which
    float rounding breaks either way, is one."""
    rng = np.random.default_rng(0)
    ref_logits = (rng.standard_normal((300, 1001)) * 4).astype(np.float32)
    logits = ref_logits + (rng.standard_normal(ref_logits.shape) * 5).astype(np.float32)  # the slipped port
    top = ref_logits.argmax(1)
    ref_logits[0, 7] = ref_logits[0, top[0]] - 1e-5  # a true tie in the reference, broken by the run
    logits[0] = ref_logits[0]
    logits[0, 7] += 2e-5
    labels = list(top - 1)
    run, ref = score(logits, labels), score(ref_logits, labels)
    c = compare("reference", {}, run, ref, logits, ref_logits, labels, [str(i) for i in range(300)], None)
    differ = 300 - c.agreement
    assert differ > 250 and c.max_abs_logit_diff > 15
    assert all(m <= 2 * c.max_abs_logit_diff for m in c.disagreement_margins)  # what the old test counted
    assert c.near_tie_margin == near_tie_margin(ref_logits) == 2e-4  # 16 ulps of ~20 is under 1e-4
    assert c.near_ties == 1 and c.disagreements[0] == "0"
    # the flips are the run's against the other's, on the labels: fixed where only the run is right
    assert (c.fixed, c.broken) == (int(((run.predictions == labels) & (ref.predictions != labels)).sum()),
                                   int(((run.predictions != labels) & (ref.predictions == labels)).sum()))
    assert c.broken > 250 and c.scores.good == 300
    big = ref_logits * 1000  # logits of thousands: 16 ulps of their scale is the noise
    assert near_tie_margin(big) == 2 * 16 * float(np.finfo(np.float32).eps) * float(np.abs(big).max())
