"""Tests for tunewise.evaluate: metric values by hand, bootstrap behaviour, paired tests."""

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import f1_score

from tunewise.evaluate import (METRICS_FOR, bootstrap_ci, confusion, item_scores, macro_f1, mcnemar, normalize,
                               paired_bootstrap, per_class, samples_to_separate, score_all)
from tunewise.evaluate.stats import encode, macro_f1_resampled


def _labels_with_accuracy(n, acc, seed, labels=("pos", "neg")):
    """References and predictions where exactly round(acc * n) items are right."""
    rng = np.random.default_rng(seed)
    refs = list(rng.choice(labels, n))
    right = np.zeros(n, bool)
    right[rng.permutation(n)[: round(acc * n)]] = True
    other = {labels[0]: labels[1], labels[1]: labels[0]}
    return [r if ok else other[r] for r, ok in zip(refs, right)], refs


# --- metrics -----------------------------------------------------------------------------------

def test_normalize_squad_style():
    assert normalize("  The Cat,  sat on AN old-mat! ") == "cat sat on oldmat"
    assert normalize("theatre a") == "theatre"  # articles only as whole words


def test_accuracy_exact_and_exact_match_normalised():
    assert item_scores("accuracy", ["Cat", "dog"], ["cat", "dog"]).tolist() == [0.0, 1.0]
    assert item_scores("exact_match", ["The Cat!", "a dog"], ["cat", "dogs"]).tolist() == [1.0, 0.0]


def test_token_f1_hand_computed():
    # pred -> [cat, sat, on, mat], ref -> [cat, on, mat]: overlap 3, P = 3/4, R = 1, F1 = 6/7
    s = item_scores("token_f1", ["the cat sat on the mat"], ["a cat on a mat"])
    assert s[0] == pytest.approx(6 / 7)
    # repeated tokens count only as often as they occur in both: [x x y] vs [x z]: overlap 1
    assert item_scores("token_f1", ["x x y"], ["x z"])[0] == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))
    # empty vs empty agree, empty vs something scores 0 ("the" normalises to nothing)
    assert item_scores("token_f1", ["", "the", "cat"], ["", "cat", "dog"]).tolist() == [1.0, 0.0, 0.0]


def test_rouge_l_hand_computed_and_order_sensitive():
    # LCS(one two three four five, one six three seven five) = 3 -> P = R = F = 3/5
    assert item_scores("rouge_l", ["one two three four five"], ["one six three seven five"])[0] == pytest.approx(0.6)
    # same bag of words in another order: token F1 is 6/7, but LCS is 1 -> P = 1/4, R = 1/3, F = 2/7
    assert item_scores("rouge_l", ["cat sat on mat"], ["mat on cat"])[0] == pytest.approx(2 / 7)
    assert item_scores("rouge_l", ["The mat."], ["mat"])[0] == 1.0
    assert item_scores("rouge_l", ["", "x"], ["", ""]).tolist() == [1.0, 0.0]


def test_unknown_metric_and_length_mismatch_raise():
    with pytest.raises(ValueError):
        item_scores("bleu", ["a"], ["a"])
    with pytest.raises(ValueError):
        item_scores("accuracy", ["a", "b"], ["a"])


def test_per_class_and_confusion_hand_computed():
    refs = ["a", "a", "b", "b", "c"]
    preds = ["a", "b", "b", "zzz", "a"]  # "zzz" is outside the label set: wrong, not in the matrix
    labels = ["a", "b", "c"]
    pc = per_class(preds, refs, labels)
    assert pc["a"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert pc["b"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert pc["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert macro_f1(preds, refs, labels) == pytest.approx(1 / 3)
    assert confusion(preds, refs, labels) == {"labels": labels, "matrix": [[1, 1, 0], [0, 1, 0], [1, 0, 0]]}
    assert item_scores("accuracy", preds, refs).mean() == pytest.approx(2 / 5)


def test_vectorised_macro_f1_equals_sklearn_on_random_data():
    rng = np.random.default_rng(1)
    labels = [f"c{i}" for i in range(7)]
    # references miss one class; predictions include an out-of-set label
    refs = list(rng.choice(labels[:6], 300))
    preds = list(rng.choice(labels + ["junk"], 300))
    p, r = encode(preds, refs, labels)
    idx = np.vstack([np.arange(300), rng.integers(0, 300, size=(20, 300))])
    got = macro_f1_resampled(p, r, len(labels), idx)
    for row, value in zip(idx, got):
        expected = f1_score([refs[i] for i in row], [preds[i] for i in row], labels=labels,
                            average="macro", zero_division=0)
        assert value == pytest.approx(expected, abs=1e-12)
    assert got[0] == pytest.approx(macro_f1(preds, refs, labels))


# --- bootstrap ---------------------------------------------------------------------------------

def test_bootstrap_contains_value_and_narrows_with_n():
    widths = []
    for n in (100, 1600):
        preds, refs = _labels_with_accuracy(n, 0.7, seed=n)
        ci = bootstrap_ci("accuracy", preds, refs)
        assert ci["value"] == pytest.approx(0.7)
        assert ci["ci_low"] < ci["value"] < ci["ci_high"]
        widths.append(ci["ci_high"] - ci["ci_low"])
        # normal-approximation width 2 * 1.96 * sqrt(p(1-p)/n), within 20%
        assert widths[-1] == pytest.approx(2 * 1.96 * np.sqrt(0.21 / n), rel=0.2)
    assert widths[1] < widths[0] / 3  # 16x the items -> about a quarter of the width


def test_bootstrap_is_deterministic_under_seed():
    preds, refs = _labels_with_accuracy(200, 0.75, seed=3)
    a = bootstrap_ci("macro_f1", preds, refs, labels=["pos", "neg"], seed=7)
    assert a == bootstrap_ci("macro_f1", preds, refs, labels=["pos", "neg"], seed=7)
    assert a != bootstrap_ci("macro_f1", preds, refs, labels=["pos", "neg"], seed=8)


def test_macro_f1_bootstrap_fast_with_many_labels_and_interval_covers_value():
    rng = np.random.default_rng(0)
    labels = [f"l{i}" for i in range(300)]
    refs = list(rng.choice(labels, 5000))
    preds = [r if rng.random() < 0.6 else str(rng.choice(labels)) for r in refs]
    start = time.perf_counter()
    ci = bootstrap_ci("macro_f1", preds, refs, labels=labels)
    assert time.perf_counter() - start < 5
    assert ci["value"] == pytest.approx(macro_f1(preds, refs, labels))
    assert ci["ci_low"] <= ci["value"] <= ci["ci_high"]


def test_score_all_covers_task_metrics():
    preds, refs = _labels_with_accuracy(50, 0.8, seed=0)
    out = score_all("classification", preds, refs, labels=["pos", "neg"], n_resamples=200)
    assert list(out) == METRICS_FOR["classification"]
    assert out["accuracy"]["value"] == pytest.approx(0.8)
    gen = score_all("generation", ["the cat sat", "a dog"], ["cat sat", "dog ran"], n_resamples=200)
    assert list(gen) == ["exact_match", "token_f1", "rouge_l"]
    assert gen["exact_match"]["value"] == pytest.approx(0.5)
    with pytest.raises(ValueError):
        score_all("ranking", preds, refs)


# --- paired tests ------------------------------------------------------------------------------

def test_paired_bootstrap_separates_clearly_better_system():
    good, refs = _labels_with_accuracy(300, 0.9, seed=11)
    bad, _ = _labels_with_accuracy(300, 0.6, seed=11)
    out = paired_bootstrap("accuracy", good, bad, refs)
    assert out["test"] == "paired_bootstrap"
    assert out["diff"] == pytest.approx(0.3)
    assert 0 < out["ci_low"] < out["diff"] < out["ci_high"]
    assert out["p_value"] < 0.01
    flipped = paired_bootstrap("accuracy", bad, good, refs)
    assert flipped["diff"] == pytest.approx(-0.3) and flipped["p_value"] < 0.01


def test_paired_bootstrap_identical_systems_large_p():
    preds, refs = _labels_with_accuracy(300, 0.7, seed=5)
    for metric in ("accuracy", "macro_f1"):
        out = paired_bootstrap(metric, preds, list(preds), refs)
        assert out["diff"] == 0 and out["p_value"] == 1.0


def test_paired_bootstrap_close_systems_not_significant():
    a, refs = _labels_with_accuracy(200, 0.7, seed=2)
    b = list(a)
    right = [i for i in range(200) if a[i] == refs[i]]
    wrong = [i for i in range(200) if a[i] != refs[i]]
    for i in right[:3]:  # b loses 3 items a gets and wins 2 that a misses: diff = 1/200
        b[i] = "neg" if refs[i] == "pos" else "pos"
    for i in wrong[:2]:
        b[i] = refs[i]
    out = paired_bootstrap("accuracy", a, b, refs, seed=1)
    assert out["diff"] == pytest.approx(0.005)
    assert out["p_value"] > 0.5
    assert out["ci_low"] < 0 < out["ci_high"]
    assert mcnemar(np.array(a) == np.array(refs), np.array(b) == np.array(refs))["p_value"] == 1.0


def test_mcnemar_hand_computed_table():
    # 10 both right, 8 only a right, 2 only b right, 5 both wrong
    a = np.array([1] * 10 + [1] * 8 + [0] * 2 + [0] * 5, bool)
    b = np.array([1] * 10 + [0] * 8 + [1] * 2 + [0] * 5, bool)
    out = mcnemar(a, b)
    assert (out["b01"], out["b10"], out["test"]) == (2, 8, "mcnemar")
    assert out["diff"] == pytest.approx(6 / 25)
    # exact two-sided binomial: 2 * P(X >= 8 | n=10, 1/2) = 2 * (45 + 10 + 1) / 1024
    assert out["p_value"] == pytest.approx(112 / 1024)
    assert mcnemar(a, a)["p_value"] == 1.0


def test_samples_to_separate():
    n = samples_to_separate(0.80, 0.85)
    assert n == pytest.approx(900, rel=0.15)
    assert samples_to_separate(0.85, 0.80) == n
    assert samples_to_separate(0.80, 0.95) < n  # bigger gaps need fewer items
    assert samples_to_separate(0.7, 0.7) is None
    with pytest.raises(ValueError):
        samples_to_separate(1.2, 0.5)
