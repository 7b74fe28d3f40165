"""Adaptive (group-sequential) test scoring: score more test records only while the decision is open.

The test split is scored in looks of growing size (the budget's first round, then doubling, up to
the whole split). At each look the leader is compared with every other option still in contention
and with the majority-class floor; an option clearly below the leader stops being scored. Scoring
stops once the leader is separated from all of them, the split is exhausted or the time cap is hit.

Repeated looks inflate false positives unless the test accounts for them. The number of looks K and
their sizes are fixed in advance; the 5% error is spent over them by the Lan-DeMets
O'Brien-Fleming-type function alpha(t) = 2 - 2 Phi(z_{1-alpha/2} / sqrt(t)), t = records scored /
test split size, and look k tests at the increment alpha(t_k) - alpha(t_{k-1}). By the union bound
the chance of any false separation over all looks stays below alpha (conservative: early looks
spend almost nothing, the last look keeps most of the 5%). The paired tests (`paired_test`) stay
valid at the tiny thresholds of early looks. When the time cap (fixed before any result) ends scoring
before the last planned look, the records scored are the final analysis: one more test on them at the
alpha left, 5% minus what the looks spent (bakeoff._final_look).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from tunewise.evaluate.metrics import ITEM_METRICS, item_scores
from tunewise.evaluate.stats import _index_chunks, _statistic, mcnemar

ALPHA = 0.05
METHOD = ("group-sequential: looks at fixed sizes (doubling), alpha spent by the O'Brien-Fleming-type "
          "Lan-DeMets function, paired tests (exact McNemar for accuracy) at each look's share; a run "
          "ended by the time cap spends the alpha left on the records scored")


def look_sizes(first: int, total: int) -> list[int]:
    """Records scored at each look: `first`, then doubling, the last look being the whole split."""
    if total <= 0:
        return []
    sizes, n = [], max(1, min(first, total))
    while n < total:
        sizes.append(n)
        n *= 2
    return sizes + [total]


def spent(t: float, alpha: float = ALPHA) -> float:
    """Cumulative alpha spent at information fraction t (O'Brien-Fleming-type, Lan-DeMets 1983)."""
    if t <= 0:
        return 0.0
    return float(min(alpha, 2 - 2 * norm.cdf(norm.ppf(1 - alpha / 2) / np.sqrt(min(t, 1.0)))))


def look_alphas(sizes: list[int], alpha: float = ALPHA) -> list[float]:
    """The significance level of each look: the increments of the spending function."""
    total = sizes[-1] if sizes else 1
    cumulative = [spent(n / total, alpha) for n in sizes]
    return [c - p for c, p in zip(cumulative, [0.0, *cumulative[:-1]])]


def paired_test(metric: str, preds_a: list[str], preds_b: list[str], references: list[str],
                labels: list[str] | None, alpha: float, n_resamples: int = 1000, seed: int = 0) -> dict:
    """a - b on the same items: diff, (1 - alpha) interval and two-sided p, valid at the small alphas
    of early looks (a percentile p from 1,000 resamples cannot go below 0.001):

    - right/wrong items (accuracy, exact match): the exact McNemar test on the items where a and b
      disagree (a normal approximation is far too liberal with few such items);
    - graded items (token F1, ROUGE-L): a z-test on the per-item differences;
    - macro-F1, not an item mean: a z-test with the paired bootstrap's standard error.
    The interval is diff +- z(1 - alpha/2) x standard error."""
    n = len(references)
    if metric in ITEM_METRICS:
        a, b = item_scores(metric, preds_a, references), item_scores(metric, preds_b, references)
        d = a - b
        diff, se = float(d.mean()), float(d.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0
        binary = bool(np.isin(a, (0.0, 1.0)).all() and np.isin(b, (0.0, 1.0)).all())
        p, test = (mcnemar(a == 1, b == 1)["p_value"], "mcnemar_exact") if binary else (None, "paired_z")
    else:
        if labels is None:
            labels = sorted(set(references))
        va, sa = _statistic(metric, preds_a, references, labels)
        vb, sb = _statistic(metric, preds_b, references, labels)
        diffs = np.concatenate([sa(idx) - sb(idx) for idx in _index_chunks(n, n_resamples, seed)])
        diff, se, p, test = va - vb, float(diffs.std(ddof=1)), None, "paired_bootstrap_z"
    if p is None:
        p = 1.0 if se <= 1e-12 and abs(diff) < 1e-12 else (0.0 if se <= 1e-12 else float(2 * norm.sf(abs(diff) / se)))
    half = float(norm.ppf(1 - alpha / 2)) * se
    return {"diff": diff, "ci_low": diff - half, "ci_high": diff + half, "p_value": float(p), "test": test,
            "n": n, "alpha": alpha}


@dataclass
class Look:
    """What one look decided."""

    n: int
    alpha: float
    leader: str
    scores: dict[str, float]  # metric of every option in contention and the floor, on these n records
    dropped: list[str]  # options separated from the leader at this look (scored no further)
    open: list[str]  # options the leader is not yet separated from
    floor_separated: bool | None  # leader vs majority floor (None: no floor in the run)


def look(metric: str, predictions: dict[str, list[str]], references: list[str], labels: list[str] | None,
         alpha: float, floor: str | None, n_resamples: int = 1000, seed: int = 0) -> Look:
    """One look on the first len(references) records of every candidate in `predictions` (options and
    the floor). The leader is the best option; each other option is separated when the leader beats it
    at this look's alpha."""
    n = len(references)
    preds = {name: p[:n] for name, p in predictions.items()}
    scores = {name: _statistic(metric, p, references, labels)[0] for name, p in preds.items()}
    options = [name for name in preds if name != floor]
    leader = max(options, key=lambda name: (scores[name], -options.index(name)))

    def beats(other: str) -> bool:
        t = paired_test(metric, preds[leader], preds[other], references, labels, alpha, n_resamples, seed)
        return t["diff"] > 0 and t["p_value"] < alpha

    dropped = [name for name in options if name != leader and beats(name)]
    still = [name for name in options if name not in dropped and name != leader]
    return Look(n=n, alpha=alpha, leader=leader, scores=scores, dropped=dropped, open=still,
                floor_separated=None if floor is None else beats(floor))


def decided(lk: Look) -> bool:
    """The leader is separated from every other option and from the floor."""
    return not lk.open and lk.floor_separated is not False
