"""Task metrics, scored per test item so that the bootstrap can resample them.

Item-level metrics (accuracy, exact_match, token_f1, rouge_l) average over items;
macro-F1 does not, so it is computed on whole prediction lists (see stats.py for its bootstrap).
"""

from __future__ import annotations

import re
import string
from collections import Counter

import numpy as np
from sklearn.metrics import f1_score, precision_recall_fscore_support

METRICS_FOR = {"classification": ["accuracy", "macro_f1"], "generation": ["exact_match", "token_f1", "rouge_l"]}
ITEM_METRICS = ("accuracy", "exact_match", "token_f1", "rouge_l")

_PUNCT = str.maketrans("", "", string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize(text: str) -> str:
    """SQuAD answer normalisation: lowercase, drop punctuation and articles, collapse whitespace."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCT)).split())


def _check(predictions, references) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")


def _f1(overlap: int, n_pred: int, n_ref: int) -> float:
    # Two empty answers agree; one empty answer shares nothing (SQuAD convention).
    if n_pred == 0 or n_ref == 0:
        return float(n_pred == n_ref)
    if overlap == 0:
        return 0.0
    p, r = overlap / n_pred, overlap / n_ref
    return 2 * p * r / (p + r)


def _token_f1(pred: list[str], ref: list[str]) -> float:
    return _f1(sum((Counter(pred) & Counter(ref)).values()), len(pred), len(ref))


def lcs_length(a: list[str], b: list[str]) -> int:
    """Longest common subsequence length, one numpy row per token of `a`.

    Row update: cur[j] = max(prev[j], prev[j-1] + match[j], cur[j-1]); the last term is a running max.
    """
    if not a or not b:
        return 0
    bs = np.array(b, dtype=object)
    prev = np.zeros(len(b) + 1, dtype=np.int64)
    for tok in a:
        cur = np.maximum(prev[1:], prev[:-1] + (bs == tok))
        prev = np.concatenate(([0], np.maximum.accumulate(cur)))
    return int(prev[-1])


def _rouge_l(pred: list[str], ref: list[str]) -> float:
    return _f1(lcs_length(pred, ref), len(pred), len(ref))


def item_scores(metric: str, predictions: list[str], references: list[str]) -> np.ndarray:
    """One float per test item for an item-level metric; its mean is the metric."""
    _check(predictions, references)
    if metric == "accuracy":
        return np.array([p == r for p, r in zip(predictions, references)], dtype=float)
    if metric == "exact_match":
        return np.array([normalize(p) == normalize(r) for p, r in zip(predictions, references)], dtype=float)
    fn = {"token_f1": _token_f1, "rouge_l": _rouge_l}.get(metric)
    if fn is None:
        raise ValueError(f"unknown item-level metric {metric!r}; expected one of {ITEM_METRICS}")
    return np.array([fn(normalize(p).split(), normalize(r).split())
                     for p, r in zip(predictions, references)], dtype=float)


def macro_f1(predictions: list[str], references: list[str], labels: list[str]) -> float:
    """Unweighted mean F1 over `labels`; a class never seen nor predicted scores 0."""
    _check(predictions, references)
    return float(f1_score(references, predictions, labels=labels, average="macro", zero_division=0))


def per_class(predictions: list[str], references: list[str], labels: list[str]) -> dict[str, dict]:
    _check(predictions, references)
    p, r, f, s = precision_recall_fscore_support(references, predictions, labels=labels, zero_division=0)
    return {lab: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, lab in enumerate(labels)}


def confusion(predictions: list[str], references: list[str], labels: list[str]) -> dict:
    """Rows are true labels, columns predicted; items with a label outside `labels` are left out.

    Counted by hand: sklearn's confusion_matrix refuses label sets absent from the references.
    """
    _check(predictions, references)
    index = {lab: i for i, lab in enumerate(labels)}
    m = np.zeros((len(labels), len(labels)), dtype=int)
    for p, r in zip(predictions, references):
        if p in index and r in index:
            m[index[r], index[p]] += 1
    return {"labels": list(labels), "matrix": m.tolist()}
