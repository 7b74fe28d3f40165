"""Data profile: duplicates, conflicting labels, leakage, multi-turn share, dates (hand-made records),
the demo's known figures, and banking77 from the shared data folder when it is there."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tunewise.config import TaskSpec
from tunewise.data.profile import date_stats, normalise, profile, text_hash
from tunewise.data.records import Record
from tunewise.data.split import Split, subsample
from tunewise.models.embed import get_embedder, nearest

BANKING77 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "banking77"
TASK = TaskSpec(type="classification")

# Checked against all-MiniLM-L6-v2: 0.992 and 0.993 (near, >= 0.95), and far apart from each other.
# ("I lost my card yesterday." vs "Yesterday I lost my card" is 0.946: too close to the threshold.)
NEAR_A = ("How do I reset my password?", "How can I reset my password?")
NEAR_B = ("Why was I charged a fee for my transfer?", "Why did I get charged a fee for my transfer?")


def rec(i: str, text: str, output: str = "a", *, date: str | None = None, turns: int = 1) -> Record:
    messages: tuple = (("user", text),)
    for t in range(1, turns):
        messages = messages + (("assistant", f"reply {t}"), ("user", f"{text} (turn {t + 1})"))
    return Record(id=i, messages=messages, output=output, date=date)


def split(train: list[Record], test: list[Record]) -> Split:
    return Split(train=train, test=test, source="test file", seed=0)


def run(train, test, **kw) -> dict:
    return profile(TASK, split(train, test), domain_gap=False, **kw)


# -- pieces ------------------------------------------------------------------------------------------
def test_normalise_ignores_case_punctuation_and_spacing():
    assert normalise("  I lost my CARD,   yesterday!! ") == "i lost my card yesterday"
    assert text_hash("I lost my card yesterday") == text_hash("i lost my card yesterday!")
    assert text_hash("I lost my card yesterday") != text_hash("Yesterday I lost my card")


def test_embedder_similarities_behind_the_near_pairs():
    emb = get_embedder()
    vecs = emb.encode([*NEAR_A, *NEAR_B, "What is the weather like in Paris?"])
    assert vecs.dtype == np.float32 and vecs.shape == (5, 384)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4)
    sims = vecs @ vecs.T
    assert sims[0, 1] >= 0.98 and sims[2, 3] >= 0.98  # comfortably above the 0.95 threshold
    assert sims[0, 2] < 0.5 and sims[4, :4].max() < 0.5
    idx, top = nearest(vecs[[1, 3]], vecs[[0, 2, 4]], k=2)
    assert idx[:, 0].tolist() == [0, 1] and top.shape == (2, 2) and (top[:, 0] >= top[:, 1]).all()


def test_nearest_in_chunks_matches_full_product():
    rng = np.random.default_rng(0)
    q, c = rng.normal(size=(37, 8)).astype(np.float32), rng.normal(size=(50, 8)).astype(np.float32)
    idx, sims = nearest(q, c, k=3, chunk=5)
    full = q @ c.T
    assert (idx == np.argsort(-full, axis=1)[:, :3]).all()
    assert np.allclose(sims, np.sort(full, axis=1)[:, ::-1][:, :3], atol=1e-5)
    assert nearest(q, c[:2], k=5)[0].shape == (37, 2)


# -- hand-made records -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small() -> dict:
    train = [
        rec("t1", "I lost my card yesterday", "lost"),
        rec("t2", "i lost my card yesterday!", "lost"),          # exact duplicate of t1
        rec("t3", "Where is my refund?", "refund"),
        rec("t4", "where is my  refund", "status"),              # exact duplicate of t3, other label
        rec("t5", NEAR_A[0], "password"),
        rec("t6", NEAR_B[0], "fee"),
        rec("t7", NEAR_B[1], "fee"),                             # near duplicate of t6
        rec("t8", "Can I open a savings account for my child?", "account"),
    ]
    test = [
        rec("s1", "I LOST my card, yesterday.", "lost"),         # exact leak of t1
        rec("s2", NEAR_A[1], "password"),                        # near leak of t5
        rec("s3", "What is the weather like in Paris?", "other"),  # unseen label, no leak
    ]
    notes: list[str] = []
    result = run(train, test, progress=notes.append)
    result["_notes"] = notes
    return result


def test_small_profile_is_plain_json(small):
    json.dumps({k: v for k, v in small.items() if k != "_notes"})  # no default=: everything is JSON already
    assert small["records"] == {"train": 8, "test": 3} and small["split_source"] == "test file"
    assert small["domain_gap"] is None
    assert len(small["_notes"]) >= 3 and all(isinstance(n, str) for n in small["_notes"])


def test_exact_duplicates_and_conflicting_labels(small):
    dup = small["duplicates"]
    assert dup["exact"] == 2  # t2 repeats t1, t4 repeats t3
    assert dup["conflicting_labels"] == 1 and dup["conflicting_records"] == 2
    assert dup["examples"]["conflicting"][0]["outputs"] == {"refund": 1, "status": 1}
    assert dup["near"] == 1 and dup["near_pairs"] == 1  # t7 ~ t6, not counted as exact
    near = dup["examples"]["near"][0]
    assert {near["id"], near["other_id"]} == {"t6", "t7"} and near["similarity"] >= 0.95


def test_exact_and_near_leakage(small):
    leak = small["leakage"]
    assert leak["exact"] == 1 and leak["near"] == 1
    assert leak["examples"]["exact"][0] == {**leak["examples"]["exact"][0], "test_id": "s1", "train_id": "t1"}
    near = leak["examples"]["near"][0]
    assert near["test_id"] == "s2" and near["train_id"] == "t5" and near["similarity"] >= 0.95
    assert leak["exact_share"] == pytest.approx(1 / 3, abs=1e-3)


def test_labels_and_tokens(small):
    assert small["labels"]["train"] == {"account": 1, "fee": 2, "lost": 2, "password": 1, "refund": 1, "status": 1}
    assert small["unseen_test_labels"] == ["other"]
    assert small["label_count"] == 6 and small["examples_per_class_min"] == 1
    assert small["majority_share"] == pytest.approx(0.25)
    tok = small["tokens"]
    assert tok["limit"] == 256 and tok["over_limit_count"] == 0 and tok["over_limit_share"] == 0.0
    assert 0 < tok["p50"] <= tok["p90"] <= tok["p95"] <= tok["p99"] <= tok["max"] < 30


def test_over_limit_counts_long_records():
    train = [rec("a", "word " * 300, "x"), rec("b", "short text", "y"), rec("c", "another short one", "x")]
    tok = run(train, [], max_length=64)["tokens"]
    assert tok["over_limit_count"] == 1 and tok["over_limit_share"] == pytest.approx(1 / 3, abs=1e-3)
    assert tok["max"] > 250 and tok["limit"] == 64


def test_no_leakage_without_overlap():
    train = [rec("a", "Please close my account.", "close"), rec("b", "How do I change my address?", "address")]
    test = [rec("c", "What is the exchange rate for euros?", "fx")]
    result = run(train, test, near_threshold=0.95)
    assert result["leakage"]["exact"] == 0 and result["leakage"]["near"] == 0
    assert result["duplicates"]["exact"] == 0 and result["duplicates"]["near"] == 0


def test_multi_turn_share_and_dates():
    train = [rec("a", "hello there", "x", date="2021-03-01", turns=2), rec("b", "good morning", "y", date="2020-01-05"),
             rec("c", "see you later", "x")]
    test = [rec("d", "how are things", "y", date="2022-12-31", turns=3)]
    result = run(train, test)
    assert result["multi_turn_share"] == pytest.approx(0.5) and result["multi_turn_count"] == 2
    dates = result["dates"]
    assert (dates["min"], dates["max"], dates["count"]) == ("2020-01-05", "2022-12-31", 3)
    assert dates["train"] == {"min": "2020-01-05", "max": "2021-03-01"}
    assert date_stats([rec("e", "x")], []) is None


# -- the demo ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo() -> dict:
    from tunewise.data.demo import load_demo
    from tunewise.data.split import make_split

    task, train, test = load_demo("sentiment")
    return profile(task, make_split(train.records, test.records))


def test_demo_profile(demo):
    assert demo["records"] == {"train": 600, "test": 379}
    assert demo["labels"]["train"] == {"negative": 161, "neutral": 54, "positive": 385}
    assert demo["label_count"] == 3 and demo["examples_per_class_min"] == 54
    assert demo["majority_share"] == pytest.approx(385 / 600, abs=1e-4)
    assert demo["unseen_test_labels"] == []
    assert demo["multi_turn_share"] == 0.0
    assert demo["dates"]["count"] == 979 and demo["dates"]["min"] < demo["dates"]["max"]
    assert isinstance(demo["leakage"]["exact"], int) and isinstance(demo["leakage"]["near"], int)
    tok = demo["tokens"]
    assert 50 < tok["p50"] < tok["p95"] <= tok["max"] and tok["limit"] == 256
    json.dumps(demo)


def test_demo_domain_gap(demo):
    gap = demo["domain_gap"]
    assert gap["ratio"] > 0 and gap["task_perplexity"] > 1 and gap["general_perplexity"] > 1
    assert gap["ratio"] == pytest.approx(gap["task_perplexity"] / gap["general_perplexity"], rel=1e-3)
    assert gap["task_sample"] == 40 and gap["general_sample"] == 40
    assert isinstance(gap["interpretation"], str) and "perplexity" in gap["interpretation"]


# -- banking77 (shared data folder) --------------------------------------------------------------
BANKING_TASK = TaskSpec(type="classification", input_field="text", output_field="category")


@pytest.fixture(scope="module")
def banking() -> tuple[list[Record], list[Record]]:
    if not (BANKING77 / "train.csv").is_file():
        pytest.skip(f"banking77 not found at {BANKING77}: the shared data folder is absent")
    from tunewise.data.read import load_records

    return (load_records(BANKING77 / "train.csv", BANKING_TASK).records,
            load_records(BANKING77 / "test.csv", BANKING_TASK).records)


def _check_banking(result: dict) -> None:
    assert result["label_count"] == 77 and result["unseen_test_labels"] == []
    for key in ("exact", "near"):
        assert type(result["leakage"][key]) is int and result["leakage"][key] >= 0
        assert type(result["duplicates"][key]) is int
    assert result["tokens"]["over_limit_count"] == 0 and result["domain_gap"] is None
    json.dumps(result)


def test_banking77_profile(banking):
    """A seeded, stratified slice (all 77 labels) keeps this quick on a small CPU; the full set is slow."""
    train = subsample(banking[0], 2000, seed=0, stratified=True)
    test = subsample(banking[1], 500, seed=0, stratified=False)
    result = profile(BANKING_TASK, split(train, test), domain_gap=False)
    assert result["records"] == {"train": 2000, "test": 500}
    _check_banking(result)


@pytest.mark.slow
def test_banking77_full_profile(banking):
    result = profile(BANKING_TASK, split(*banking), domain_gap=False)
    assert result["records"] == {"train": 10003, "test": 3080}
    _check_banking(result)
    assert result["leakage"]["exact"] == 25 and result["duplicates"]["exact"] == 29
    assert result["duplicates"]["conflicting_labels"] == 1
    assert result["leakage"]["near"] > result["leakage"]["exact"]  # paraphrases are common in banking77
