"""Evidence beyond the scores: learning curve, overfitting, compute and cost. Import-light (no torch)."""

from tunewise.evidence.compute import estimate_compute, measure_device_flops, training_flops
from tunewise.evidence.cost import DEFAULT_ASSUMPTIONS, break_even, candidate_cost
from tunewise.evidence.curve import fit_learning_curve
from tunewise.evidence.overfit import detect_overfitting

__all__ = ["DEFAULT_ASSUMPTIONS", "break_even", "candidate_cost", "detect_overfitting", "estimate_compute",
           "fit_learning_curve", "measure_device_flops", "training_flops"]
