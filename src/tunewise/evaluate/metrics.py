"""Task metrics, scored per test item so that the bootstrap can resample them.

Item-level metrics (accuracy, exact_match, token_f1, rouge_l, and for JSON answers json_valid and
json_field_precision/recall/f1) average over items;
macro-F1 does not, so it is computed on whole prediction lists (see stats.py for its bootstrap).
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter

import numpy as np
from rouge_score import rouge_scorer
from sklearn.metrics import f1_score, precision_recall_fscore_support

METRICS_FOR = {"classification": ["accuracy", "macro_f1"], "generation": ["exact_match", "token_f1", "rouge_l"]}
# Added to a generation task's metrics when every reference answer is a JSON object.
JSON_FIELD_METRICS = ("json_field_precision", "json_field_recall", "json_field_f1")
JSON_METRICS = ("json_valid", *JSON_FIELD_METRICS)
ITEM_METRICS = ("accuracy", "exact_match", "token_f1", "rouge_l", *JSON_METRICS)
_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$")

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


class _Tokens:
    """rouge-score's tokenizer interface over our normalisation: its own default keeps only ASCII
    letters and digits, which would erase non-English answers."""

    def tokenize(self, text: str) -> list[str]:
        return normalize(text).split()


_ROUGE = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_Tokens())


def _rouge_l(pred: str, ref: str) -> float:
    """ROUGE-L F-measure from the maintained `rouge-score` package; two empty answers agree (as in EM)."""
    if not normalize(pred) and not normalize(ref):
        return 1.0
    return float(_ROUGE.score(ref, pred)["rougeL"].fmeasure)


def json_object(text: str) -> dict | None:
    """The answer as a JSON object (a ```json fence around it allowed), or None when it is not one."""
    body = _FENCE.sub("", text.strip()).strip()
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def json_answers(references: list[str]) -> bool:
    """Every reference is a JSON object: the task's answers are structured, so JSON metrics apply."""
    return bool(references) and all(json_object(r) is not None for r in references)


def _fields(obj: dict) -> set[tuple[str, str]]:
    """(key, value) pairs; values compared as canonical JSON, so 1 and "1" differ but key order does not."""
    return {(k, json.dumps(v, sort_keys=True, ensure_ascii=False)) for k, v in obj.items()}


def _json_field_prf(pred: str, ref: str) -> tuple[float, float, float]:
    """Field-level precision, recall and F1 of one answer: a field counts when key and value match.
    Invalid JSON scores 0 (it names no field); an empty reference object is matched only by an empty one."""
    p_obj, r_obj = json_object(pred), json_object(ref)
    if p_obj is None or r_obj is None:
        return 0.0, 0.0, 0.0
    p, r = _fields(p_obj), _fields(r_obj)
    if not p and not r:
        return 1.0, 1.0, 1.0
    hit = len(p & r)
    precision = hit / len(p) if p else 0.0
    recall = hit / len(r) if r else 0.0
    return precision, recall, _f1(hit, len(p), len(r))


def item_scores(metric: str, predictions: list[str], references: list[str]) -> np.ndarray:
    """One float per test item for an item-level metric; its mean is the metric."""
    _check(predictions, references)
    if metric == "accuracy":
        return np.array([p == r for p, r in zip(predictions, references)], dtype=float)
    if metric == "exact_match":
        return np.array([normalize(p) == normalize(r) for p, r in zip(predictions, references)], dtype=float)
    if metric == "token_f1":
        return np.array([_token_f1(normalize(p).split(), normalize(r).split())
                         for p, r in zip(predictions, references)], dtype=float)
    if metric == "rouge_l":
        return np.array([_rouge_l(p, r) for p, r in zip(predictions, references)], dtype=float)
    if metric == "json_valid":
        return np.array([json_object(p) is not None for p in predictions], dtype=float)
    if metric in JSON_FIELD_METRICS:
        which = JSON_FIELD_METRICS.index(metric)
        return np.array([_json_field_prf(p, r)[which] for p, r in zip(predictions, references)], dtype=float)
    raise ValueError(f"unknown item-level metric {metric!r}; expected one of {ITEM_METRICS}")


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
