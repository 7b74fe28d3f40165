"""The multi-turn history ablation: the best candidate scored on its multi-turn test records with the
whole history (its bake-off predictions) and with the last user turn only. The paired gap, with its
interval, is the evidence for the "multi-turn context" criterion."""

from __future__ import annotations

from tunewise.evaluate.sequential import paired_test
from tunewise.evaluate.stats import bootstrap_ci
from tunewise.results import HistoryAblation, Interval


def ablation(candidate: str, metric: str, full: list[str], last_turn: list[str], references: list[str],
             labels: list[str] | None, n_resamples: int, seed: int) -> HistoryAblation:
    t = paired_test(metric, full, last_turn, references, labels, 0.05, n_resamples, seed)
    return HistoryAblation(
        candidate=candidate, metric=metric, records=len(references),
        whole_history=Interval(**bootstrap_ci(metric, full, references, labels, n_resamples, seed)),
        last_turn=Interval(**bootstrap_ci(metric, last_turn, references, labels, n_resamples, seed)),
        gap=Interval(value=t["diff"], ci_low=t["ci_low"], ci_high=t["ci_high"]), p_value=t["p_value"], test=t["test"])
