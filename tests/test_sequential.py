"""Adaptive test scoring: the looks, their alphas, the stopping rule on synthetic scores, and a
killed round resumed without rescoring finished records."""

from __future__ import annotations

import pytest

from tunewise.bakeoff import compare, run_bakeoff
from tunewise.config import BUDGETS, TaskSpec
from tunewise.data.records import Record
from tunewise.evaluate import sequential
from tunewise.models.lm import Scored
from tunewise.store import Store
from tunewise.strategies import CandidateSpec, register
from tunewise.ui import Progress

TASK = TaskSpec(name="t", type="classification", labels=["no", "yes"])
TEST = [Record(id=f"t{i}", messages=(("user", f"item {i}"),), output="yes" if i % 2 else "no", source="mem", line=i)
        for i in range(400)]
TRAIN = [Record(id=f"r{i}", messages=(("user", f"train {i}"),), output="yes" if i % 3 else "no", source="mem",
                line=i) for i in range(30)]
CALLS: dict[str, list[str]] = {}


class _Fake:
    """Predicts from the record's index alone: right on the items `right` says, else wrong."""

    family = "prompting"

    def __init__(self, spec):
        self.name = spec.name

    def settings(self):
        return {"fake": self.name}

    def fit(self, ctx):
        return {}

    def right(self, i: int) -> bool:
        raise NotImplementedError

    def predict(self, ctx, record):
        return self.predict_many(ctx, [record])[0]

    def predict_many(self, ctx, records):
        CALLS.setdefault(self.name, []).extend(r.id for r in records)
        out = []
        for r in records:
            i = int(r.id[1:])
            wrong = "no" if r.output == "yes" else "yes"
            out.append(Scored(r.output if self.right(i) else wrong, 0.001, 10, 1))
        return out


@register("oracle_for_test")
class Oracle(_Fake):
    def right(self, i):
        return i % 20 != 0  # 95%


@register("coin_for_test")
class Coin(_Fake):
    def right(self, i):
        return (i * 7919) % 13 < 7  # about 54%, deterministic


@register("twin_for_test")
class Twin(_Fake):
    def right(self, i):
        return (i * 7919) % 13 < 7 or i % 97 == 0  # the coin, plus a few more: never separable


def run(tmp_path, names: list[tuple[str, str]], budget=None, store=None):
    specs = [CandidateSpec(name="majority", strategy="majority")] + [
        CandidateSpec(name=n, strategy=s) for n, s in names]
    budget = budget or BUDGETS["quick"].model_copy(update={"test_first": 50, "scoring_seconds": None})
    return run_bakeoff(specs, task=TASK, labels=TASK.labels, train=TRAIN, validation=[], test=TEST, budget=budget,
                       seed=0, run_dir=tmp_path / "run", store=store or Store(tmp_path / "store"), data_key="k",
                       progress=Progress(quiet=True))


def test_looks_double_and_spend_five_percent_in_all():
    sizes = sequential.look_sizes(100, 379)
    assert sizes == [100, 200, 379]
    alphas = sequential.look_alphas(sizes)
    assert sum(alphas) == pytest.approx(0.05)
    assert alphas[0] < alphas[1] < alphas[2] and alphas[0] < 1e-3  # O'Brien-Fleming: little spent early
    assert sequential.look_sizes(500, 379) == [379] and sequential.look_alphas([379]) == [pytest.approx(0.05)]


def test_a_clear_winner_stops_early(tmp_path):
    CALLS.clear()
    results, scoring = run(tmp_path, [("oracle", "oracle_for_test"), ("coin", "coin_for_test")])
    assert scoring.planned == [50, 100, 200, 400]
    assert scoring.stop == "separated" and len(scoring.looks) == 2  # 1st look: alpha 3e-8 is too strict
    assert scoring.looks[0].open == ["coin"] and scoring.looks[1].dropped == ["coin"]
    assert scoring.looks[-1].leader == "oracle" and scoring.looks[-1].floor_separated
    assert scoring.records == {"majority": 100, "oracle": 100, "coin": 100}
    assert len(CALLS["oracle"]) == 100  # nothing scored beyond the second look
    by = {c.name: c for c in results}
    assert by["oracle"].test_records == 100
    comparisons = compare(results, TEST, "accuracy", TASK.labels, 500, 0,
                          list(zip(scoring.planned, scoring.alphas)))
    vs_coin = next(c for c in comparisons if {c.a, c.b} == {"oracle", "coin"})
    assert vs_coin.n == 100 and vs_coin.alpha == pytest.approx(scoring.alphas[1]) and vs_coin.significant


def test_options_never_separated_are_scored_until_the_split_is_exhausted(tmp_path):
    CALLS.clear()
    results, scoring = run(tmp_path, [("coin", "coin_for_test"), ("twin", "twin_for_test")])
    assert scoring.stop == "test split exhausted"
    assert [lk.n for lk in scoring.looks] == scoring.planned == [50, 100, 200, 400]
    assert all(lk.open for lk in scoring.looks)
    assert scoring.records["coin"] == scoring.records["twin"] == 400
    assert sorted(CALLS["twin"]) == sorted(r.id for r in TEST)  # every record once, none twice


def test_the_time_cap_stops_before_a_look_that_would_exceed_it(tmp_path):
    budget = BUDGETS["quick"].model_copy(update={"test_first": 50, "scoring_seconds": 0.0})
    _, scoring = run(tmp_path, [("coin", "coin_for_test"), ("twin", "twin_for_test")], budget)
    assert scoring.stop.startswith("time cap") and [lk.final for lk in scoring.looks] == [False, True]
    assert scoring.records["coin"] == 50


def test_a_time_cap_after_the_first_look_spends_the_alpha_left_on_the_records_scored(tmp_path):
    budget = BUDGETS["quick"].model_copy(update={"test_first": 50, "scoring_seconds": 0.0})
    results, scoring = run(tmp_path, [("oracle", "oracle_for_test"), ("coin", "coin_for_test")], budget)
    first, final = scoring.looks
    assert first.n == final.n == 50 and first.open == ["coin"] and not first.final  # 3e-8 separates nothing
    assert final.final and final.alpha == pytest.approx(0.05 - first.alpha)
    assert final.dropped == ["coin"] and final.floor_separated
    assert scoring.stop.startswith("time cap") and "alpha left" in scoring.stop
    comparisons = compare(results, TEST, "accuracy", TASK.labels, 500, 0, [(lk.n, lk.alpha) for lk in scoring.looks])
    vs_coin = next(c for c in comparisons if {c.a, c.b} == {"oracle", "coin"})
    assert vs_coin.n == 50 and vs_coin.alpha == pytest.approx(final.alpha) and vs_coin.significant


def test_no_final_look_when_the_last_look_already_spent_the_alpha(tmp_path):
    _, scoring = run(tmp_path, [("coin", "coin_for_test"), ("twin", "twin_for_test")])
    assert not any(lk.final for lk in scoring.looks)  # exhausted: the last planned look spent it all


def test_a_round_killed_midway_resumes_without_rescoring_finished_records(tmp_path, monkeypatch):
    store = Store(tmp_path / "store")
    real = Twin.predict_many

    def killed(self, ctx, records):
        if any(int(r.id[1:]) >= 150 for r in records):
            raise KeyboardInterrupt  # SIGINT in the middle of the third look
        return real(self, ctx, records)

    monkeypatch.setattr(Twin, "predict_many", killed)
    CALLS.clear()
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, [("coin", "coin_for_test"), ("twin", "twin_for_test")], store=store)
    before = list(CALLS["twin"])
    assert 100 < len(before) < 200  # part of the third look was scored and stored, chunk by chunk
    monkeypatch.setattr(Twin, "predict_many", real)
    CALLS.clear()
    results, scoring = run(tmp_path, [("coin", "coin_for_test"), ("twin", "twin_for_test")], store=store)
    assert not set(CALLS["twin"]) & set(before)  # finished records were not scored again
    assert scoring.records["twin"] == 400
    CALLS.clear()
    fresh, _ = run(tmp_path / "fresh", [("coin", "coin_for_test"), ("twin", "twin_for_test")])
    assert [c.predictions for c in results] == [c.predictions for c in fresh]
    assert [c.metrics for c in results] == [c.metrics for c in fresh]


def test_paired_accuracy_uses_the_exact_mcnemar_test_on_disagreements():
    refs = ["yes"] * 400
    a = ["yes"] * 400
    b = ["no"] * 4 + ["yes"] * 396  # 4 disagreements, all for a: exact p = 0.125, a z-test says 0.046
    t = sequential.paired_test("accuracy", a, b, refs, None, alpha=0.05)
    assert t["test"] == "mcnemar_exact" and t["p_value"] == pytest.approx(0.125)
    many = ["no"] * 60 + ["yes"] * 340
    t = sequential.paired_test("accuracy", a, many, refs, None, alpha=1e-6)
    assert t["p_value"] < 1e-6 and t["ci_low"] > 0  # tiny early-look alphas can be met
    f1 = sequential.paired_test("macro_f1", a, many, refs, ["yes", "no"], alpha=0.05)
    assert f1["test"] == "paired_bootstrap_z" and f1["diff"] > 0
