"""Generation metrics against the maintained packages, JSON answers, and graded paired tests."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rouge_score import rouge_scorer

from tunewise.evaluate import item_scores
from tunewise.evaluate.sequential import paired_test
from tunewise.evaluate.stats import score_all

WORDS = st.lists(st.sampled_from(["cat", "dog", "sun", "sky", "red", "blue"]), max_size=12).map(" ".join)


@settings(max_examples=200, deadline=None)
@given(WORDS, WORDS)
def test_rouge_l_equals_rouge_score_package(pred, ref):
    # plain lowercase ASCII words: our normalisation changes nothing, so the package's own tokenizer agrees
    expected = rouge_scorer.RougeScorer(["rougeL"]).score(ref, pred)["rougeL"].fmeasure
    got = item_scores("rouge_l", [pred], [ref])[0]
    assert got == pytest.approx(1.0 if not pred and not ref else expected)


def test_rouge_l_keeps_non_ascii_words():
    # rouge-score's default tokenizer drops non-ASCII letters; ours keeps them
    assert item_scores("rouge_l", ["Ибупрофен от боли"], ["ибупрофен от головной боли"])[0] == pytest.approx(
        2 * 1 * 0.75 / 1.75)


def test_json_metrics_fields_and_validity():
    refs = ['{"drug": "ibuprofen", "dose": 200}', '{"drug": "x", "dose": 1}', '{"a": [1, 2]}']
    preds = ['```json\n{"dose": 200, "drug": "ibuprofen"}\n```', '{"drug": "x", "dose": "1", "extra": 0}', "not json"]
    assert item_scores("json_valid", preds, refs).tolist() == [1.0, 1.0, 0.0]
    # second answer: drug matches, dose "1" != 1, extra is not in the reference -> P 1/3, R 1/2
    assert item_scores("json_field_precision", preds, refs).tolist() == pytest.approx([1.0, 1 / 3, 0.0])
    assert item_scores("json_field_recall", preds, refs).tolist() == pytest.approx([1.0, 0.5, 0.0])
    assert item_scores("json_field_f1", preds, refs).tolist() == pytest.approx([1.0, 0.4, 0.0])


def test_score_all_adds_json_metrics_only_for_json_references():
    out = score_all("generation", ['{"a": 1}', "{}"], ['{"a": 1}', '{"b": 2}'], n_resamples=100)
    assert {"json_valid", "json_field_f1"} <= set(out)
    assert out["json_valid"]["value"] == 1.0 and out["json_field_f1"]["value"] == 0.5
    plain = score_all("generation", ["x"], ["y"], n_resamples=100)
    assert list(plain) == ["exact_match", "token_f1", "rouge_l"]


def test_graded_metric_paired_test_is_a_z_test_and_separates():
    refs = [f"answer number {i} is here" for i in range(60)]
    good = [r if i % 4 else r + " and more words" for i, r in enumerate(refs)]
    bad = [f"answer {i}" for i in range(60)]
    t = paired_test("rouge_l", good, bad, refs, None, 0.05)
    assert t["test"] == "paired_z" and t["diff"] > 0.2 and t["p_value"] < 0.001
    same = paired_test("token_f1", good, list(good), refs, None, 0.05)
    assert same["diff"] == 0 and same["p_value"] == 1.0
