"""Uncertainty for test-split scores: bootstrap intervals, paired tests, sample-size estimates.

Test sets are small, so every score is reported with an interval and every comparison with a
p-value; the resampling unit is the test item.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
from scipy.stats import binomtest, norm

from .metrics import ITEM_METRICS, JSON_METRICS, METRICS_FOR, item_scores, json_answers, macro_f1

_CHUNK_ELEMENTS = 4_000_000  # bounds the (resamples x items) index matrix held in memory at once


def _index_chunks(n: int, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Seeded bootstrap index matrices, (rows, n) each, n_resamples rows in all."""
    if n == 0:
        raise ValueError("cannot bootstrap an empty test split")
    rng = np.random.default_rng(seed)
    rows = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, n_resamples, rows):
        yield rng.integers(0, n, size=(min(rows, n_resamples - start), n))


def encode(predictions, references, labels) -> tuple[np.ndarray, np.ndarray]:
    """Labels -> 0..L-1; anything else -> L, a bucket that never counts as a class."""
    index = {lab: i for i, lab in enumerate(labels)}
    other = len(labels)
    return (np.array([index.get(p, other) for p in predictions], dtype=np.int64),
            np.array([index.get(r, other) for r in references], dtype=np.int64))


def macro_f1_resampled(pred: np.ndarray, ref: np.ndarray, n_labels: int, idx: np.ndarray) -> np.ndarray:
    """Macro-F1 of each resample (row of `idx`) from per-class counts, without a Python loop.

    Per class F1 = 2 tp / (n_pred + n_true), 0 when both are 0 (sklearn's zero_division=0).
    """
    k = n_labels + 1
    offset = (np.arange(idx.shape[0]) * k)[:, None]
    p, r = pred[idx], ref[idx]
    size = idx.shape[0] * k

    def count(codes, weights=None):
        return np.bincount((offset + codes).ravel(), weights=weights, minlength=size).reshape(-1, k)[:, :n_labels]

    tp = count(r, (p == r).ravel().astype(float))
    denom = count(p) + count(r)
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return f1.mean(axis=1) if n_labels else np.zeros(idx.shape[0])


def _statistic(metric, predictions, references, labels) -> tuple[float, Callable[[np.ndarray], np.ndarray]]:
    """The metric on the full split and a function giving it on each resample of an index matrix."""
    if metric in ITEM_METRICS:
        s = item_scores(metric, predictions, references)
        return float(s.mean()) if len(s) else 0.0, lambda idx: s[idx].mean(axis=1)
    if metric == "macro_f1":
        labels = list(labels) if labels is not None else sorted(set(references))
        p, r = encode(predictions, references, labels)
        return macro_f1(predictions, references, labels), lambda idx: macro_f1_resampled(p, r, len(labels), idx)
    raise ValueError(f"unknown metric {metric!r}; expected macro_f1 or one of {ITEM_METRICS}")


def metric_value(metric: str, predictions: list[str], references: list[str], labels: list[str] | None = None) -> float:
    """The metric on the whole split, no interval."""
    return _statistic(metric, predictions, references, labels)[0]


def _interval(value: float, samples: np.ndarray, alpha: float) -> tuple[float, float]:
    lo, hi = np.percentile(samples, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    # Percentile intervals of a biased statistic (macro-F1 with rare classes) can miss the point
    # estimate; widen to include it so "value [low, high]" always reads sensibly.
    return float(min(lo, value)), float(max(hi, value))


def bootstrap_ci(metric: str, predictions: list[str], references: list[str], labels: list[str] | None = None,
                 n_resamples: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict:
    """Seeded percentile bootstrap over test items: {"value", "ci_low", "ci_high"}.

    For macro_f1, `labels` defaults to the labels present in `references`.
    """
    value, stat = _statistic(metric, predictions, references, labels)
    samples = np.concatenate([stat(idx) for idx in _index_chunks(len(references), n_resamples, seed)])
    lo, hi = _interval(value, samples, alpha)
    return {"value": value, "ci_low": lo, "ci_high": hi}


def mean_ci(values: list[float], n_resamples: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict:
    """The mean of per-item scores with its seeded percentile bootstrap interval (as `bootstrap_ci`)."""
    s = np.asarray(values, dtype=float)
    value = float(s.mean())
    samples = np.concatenate([s[idx].mean(axis=1) for idx in _index_chunks(len(s), n_resamples, seed)])
    lo, hi = _interval(value, samples, alpha)
    return {"value": value, "ci_low": lo, "ci_high": hi}


def joint_resamples(metric: str, predictions: list[list[str]], references: list[str],
                    labels: list[str] | None = None, n_resamples: int = 1000, seed: int = 0) -> np.ndarray:
    """(n_resamples, systems): every system's metric on the same bootstrap resamples of the test items.

    Systems scored on one test split share its easy and hard items, so their errors are correlated;
    resampling them jointly keeps that correlation (a learning curve's slope is not blurred by it).
    """
    if metric == "macro_f1" and labels is None:
        labels = sorted(set(references))
    stats = [_statistic(metric, p, references, labels)[1] for p in predictions]
    return np.concatenate([np.stack([stat(idx) for stat in stats], axis=1)
                           for idx in _index_chunks(len(references), n_resamples, seed)])


def score_all(task_type: str, predictions: list[str], references: list[str], labels: list[str] | None = None,
              n_resamples: int = 1000, seed: int = 0) -> dict[str, dict]:
    """Every metric of the task type, each with its bootstrap interval (generation with JSON answers:
    their validity rate and field-level precision, recall and F1 too)."""
    if task_type not in METRICS_FOR:
        raise ValueError(f"unknown task type {task_type!r}; expected one of {sorted(METRICS_FOR)}")
    metrics = METRICS_FOR[task_type] + (list(JSON_METRICS) if task_type == "generation" and json_answers(references)
                                        else [])
    return {m: bootstrap_ci(m, predictions, references, labels, n_resamples, seed) for m in metrics}


def paired_bootstrap(metric: str, preds_a: list[str], preds_b: list[str], references: list[str],
                     labels: list[str] | None = None, n_resamples: int = 1000, seed: int = 0,
                     alpha: float = 0.05) -> dict:
    """Is a better than b on the same items? Both are scored on the same resamples, so item
    difficulty cancels. Two-sided p from the resampled diffs centred on the observed diff
    (they approximate the null distribution shifted by diff)."""
    if labels is None and metric == "macro_f1":
        labels = sorted(set(references))
    va, sa = _statistic(metric, preds_a, references, labels)
    vb, sb = _statistic(metric, preds_b, references, labels)
    diff = va - vb
    d = np.concatenate([sa(idx) - sb(idx) for idx in _index_chunks(len(references), n_resamples, seed)])
    lo, hi = _interval(diff, d, alpha)
    # Tolerance: equal systems give diffs that differ from 0 only by float rounding.
    extreme = int(np.sum(np.abs(d - diff) >= abs(diff) - 1e-12))
    return {"diff": diff, "ci_low": lo, "ci_high": hi,
            "p_value": (extreme + 1) / (n_resamples + 1), "test": "paired_bootstrap"}


def unpaired_bootstrap(metric: str, preds_a: list[str], refs_a: list[str], preds_b: list[str], refs_b: list[str],
                       labels: list[str] | None = None, n_resamples: int = 1000, seed: int = 0,
                       alpha: float = 0.05) -> dict:
    """a - b scored on two different test sets (e.g. a random and a time split): each set resampled on
    its own, the percentile interval of the differences. {"value", "ci_low", "ci_high"}."""
    if labels is None and metric == "macro_f1":
        labels = sorted(set(refs_a) | set(refs_b))
    va, sa = _statistic(metric, preds_a, refs_a, labels)
    vb, sb = _statistic(metric, preds_b, refs_b, labels)
    da = np.concatenate([sa(idx) for idx in _index_chunks(len(refs_a), n_resamples, seed)])
    db = np.concatenate([sb(idx) for idx in _index_chunks(len(refs_b), n_resamples, seed + 1)])
    lo, hi = _interval(va - vb, da - db, alpha)
    return {"value": va - vb, "ci_low": lo, "ci_high": hi}


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> dict:
    """Exact McNemar test on per-item correctness; only items where a and b disagree carry evidence.

    b01: a wrong, b right; b10: a right, b wrong; diff = accuracy(a) - accuracy(b).
    """
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"correctness arrays differ in shape: {a.shape} vs {b.shape}")
    b01, b10 = int(np.sum(~a & b)), int(np.sum(a & ~b))
    p = binomtest(b10, b01 + b10, 0.5).pvalue if b01 + b10 else 1.0
    diff = (b10 - b01) / a.size if a.size else 0.0
    return {"diff": float(diff), "p_value": float(p), "test": "mcnemar", "b01": b01, "b10": b10}


def samples_to_separate(p_a: float, p_b: float, alpha: float = 0.05, power: float = 0.8) -> int | None:
    """Test items per system for a two-sided two-proportion z-test at `alpha` to detect p_a vs p_b
    with `power`; None when they are equal (no finite size separates them)."""
    if not (0 <= p_a <= 1 and 0 <= p_b <= 1):
        raise ValueError(f"accuracies must be in [0, 1], got {p_a} and {p_b}")
    if p_a == p_b:
        return None
    p_bar = (p_a + p_b) / 2
    z_a, z_b = norm.ppf(1 - alpha / 2), norm.ppf(power)
    root = z_a * np.sqrt(2 * p_bar * (1 - p_bar)) + z_b * np.sqrt(p_a * (1 - p_a) + p_b * (1 - p_b))
    return int(np.ceil(root**2 / (p_a - p_b) ** 2))
