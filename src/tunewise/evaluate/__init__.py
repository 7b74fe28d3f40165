"""Scoring predictions on the test split, with intervals and paired comparisons."""

from .metrics import METRICS_FOR, confusion, item_scores, macro_f1, normalize, per_class
from .stats import bootstrap_ci, mcnemar, paired_bootstrap, samples_to_separate, score_all

__all__ = ["METRICS_FOR", "bootstrap_ci", "confusion", "item_scores", "macro_f1", "mcnemar", "normalize",
           "paired_bootstrap", "per_class", "samples_to_separate", "score_all"]
