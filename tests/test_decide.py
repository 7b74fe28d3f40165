"""Unit tests for tunewise.decide: criteria, the no-data advisor, and the measured verdict."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tunewise.decide import CRITERIA, QUESTIONS, Answers, advise, ask, decide, get, load_answers
from tunewise.config import BUDGETS
from tunewise.errors import ConfigError
from tunewise.results import (CandidateCost, CandidateResult, Comparison, ComputeEstimate, Cost, CurvePoint,
                              EpochLoss, Forgetting, ForgettingEntry, Interval, LearningCurve, Overfitting,
                              Projection, RunResults)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "advise"
NUMBER = re.compile(r"\d")


# ---- builders ------------------------------------------------------------------------------------

def cand(name, family, strategy, value, lo, hi, *, p95=None, params=None, status="ok", model=None):
    return CandidateResult(name=name, family=family, strategy=strategy, status=status, model=model,
                           metrics={"accuracy": Interval(value=value, ci_low=lo, ci_high=hi)} if status == "ok" else {},
                           latency_ms={"p50": p95 / 2, "p95": p95} if p95 else None, params=params,
                           error="boom" if status == "failed" else None)


def cmp(a, b, diff, p):
    return Comparison(a=a, b=b, metric="accuracy", diff=diff, ci_low=diff - 0.05, ci_high=diff + 0.05,
                      p_value=p, test="paired_bootstrap")


def cost(**per_1k):
    return Cost(assumptions={}, candidates=[
        CandidateCost(candidate=n, hosting="cpu", per_1k_requests=v, training_cost=1.0 if n.startswith("lora") else 0)
        for n, v in per_1k.items()])


SPLIT = {"train": 600, "test": 150, "source": "seeded split, 20% held out", "seed": 0}


def run(candidates, *, comparisons=(), curve=None, knowledge="never", latency=None, profile=None,
        cost_=None, split=None, **extra):
    return RunResults(
        tunewise_version="0.1.0", run_id="t", created="2026-01-01T00:00:00", budget=BUDGETS["quick"],
        split=SPLIT | (split or {}), profile=profile,
        task={"name": "t", "type": "classification", "metric": "accuracy",
              "constraints": {"knowledge_update": knowledge, "latency_ms_limit": latency}},
        candidates=list(candidates), comparisons=list(comparisons), learning_curve=curve, cost=cost_, **extra)


def demo_candidates(classical=(0.71, 0.64, 0.78)):
    return [
        cand("majority", "baseline", "majority", 0.65, 0.57, 0.72),
        cand("classical", "classical", "classical", *classical, p95=1),
        cand("zero_shot", "prompting", "zero_shot", 0.71, 0.66, 0.76, p95=40, params=135_000_000),
        cand("few_shot", "prompting", "few_shot", 0.70, 0.655, 0.75, p95=90, params=135_000_000),
        cand("knn_few_shot", "prompting", "knn_few_shot", 0.72, 0.67, 0.77, p95=95, params=135_000_000),
        cand("lora", "finetune", "lora", 0.83, 0.77, 0.89, p95=40, params=135_000_000, model="SmolLM2-135M"),
    ]


def demo_curve(**kw):
    pts = [CurvePoint(fraction=f, n=int(300 * f), value=v, ci_low=v - 0.06, ci_high=v + 0.06)
           for f, v in [(0.125, 0.66), (0.25, 0.72), (0.5, 0.78), (1.0, 0.83)]]
    return LearningCurve(candidate="lora", metric="accuracy", points=pts, fit={"A": 2.0, "b": 0.5, "E": 0.1},
                         extrapolable=True, reason="4 points, good fit",
                         projections=[Projection(factor=2, n=600, value=0.86, ci_low=0.84, ci_high=0.88),
                                      Projection(factor=4, n=1200, value=0.88, ci_low=0.85, ci_high=0.90)],
                         ceiling=Interval(value=0.90, ci_low=0.87, ci_high=0.93), **kw)


def demo(**kw):
    comparisons = [cmp("lora", n, 0.83 - v, 0.001) for n, v in
                   [("knn_few_shot", 0.72), ("zero_shot", 0.71), ("few_shot", 0.70), ("classical", 0.71),
                    ("majority", 0.65)]]
    kw.setdefault("cost_", cost(classical=0.001, zero_shot=0.02, few_shot=0.05, knn_few_shot=0.06, lora=0.10))
    kw.setdefault("curve", demo_curve())
    return run(kw.pop("candidates", demo_candidates()), comparisons=comparisons, **kw)


def assert_reasons_cite_numbers(verdict):
    assert verdict.reasons, verdict
    for r in verdict.reasons:
        get(r.criterion)  # every reason names a known criterion
        assert NUMBER.search(r.finding), f"no number in {r.criterion}: {r.finding}"


# ---- criteria ------------------------------------------------------------------------------------

def test_criteria_cover_the_design_table():
    ids = {c.id for c in CRITERIA}
    assert {"domain_knowledge", "accuracy_target", "multi_turn", "enough_data", "overfitting", "general_task",
            "compute_budget", "prompting_enough", "realtime_updates", "small_model_latency", "forgetting",
            "classical_enough", "majority_floor"} <= ids
    assert get("forgetting").measured_by


def test_unknown_criterion_lists_known_ids():
    with pytest.raises(KeyError, match="domain_knowledge"):
        get("vibes")


# ---- measured verdict ----------------------------------------------------------------------------

def test_demo_without_target_is_fine_tune_citing_paired_test_and_curve():
    v = decide(demo(), None, None)
    assert v.decision == "FINE_TUNE" and v.candidate == "lora" and v.model == "SmolLM2-135M"
    assert "0.83 [0.77, 0.89]" in v.summary and "0.72 [0.67, 0.77]" in v.summary
    assert "p = 0.001" in v.summary and "0.86 [0.84, 0.88]" in v.summary
    assert any("retrieved few-shot" in w and "cost" in w for w in v.would_change)
    assert_reasons_cite_numbers(v)
    floor = next(r for r in v.reasons if r.criterion == "majority_floor")
    assert "0.71 [0.64, 0.78]" in floor.finding  # classical's interval does not clear the majority's 0.65


def test_demo_with_target_picks_cheapest_option_that_reaches_it():
    v = decide(demo(), 0.65, None)
    assert v.decision == "PROMPT" and v.candidate == "zero_shot"
    assert any("0.65" in c for c in v.constraints)
    assert_reasons_cite_numbers(v)


def test_classical_wins_when_it_reaches_the_target_and_is_cheapest():
    v = decide(demo(candidates=demo_candidates(classical=(0.71, 0.67, 0.75))), 0.65, None)
    assert v.decision == "CLASSICAL" and v.candidate == "classical"
    assert_reasons_cite_numbers(v)


def test_only_fine_tuning_reaches_a_high_target():
    v = decide(demo(), 0.75, None)
    assert v.decision == "FINE_TUNE"
    assert any("target" in w for w in v.would_change)


def test_small_model_under_a_latency_limit():
    v = decide(demo(latency=200), 0.75, None)
    assert v.decision == "SMALL_MODEL" and v.candidate == "lora"
    lat = next(r for r in v.reasons if r.criterion == "small_model_latency")
    assert "200" in lat.finding and "40 ms" in lat.finding
    assert_reasons_cite_numbers(v)


def test_latency_limit_excludes_slow_options():
    cands = demo_candidates()
    cands[-1] = cand("lora", "finetune", "lora", 0.83, 0.77, 0.89, p95=900, params=1_700_000_000)
    v = decide(demo(candidates=cands), None, 100)
    assert v.decision == "PROMPT" and v.candidate != "lora"
    assert any("without the 100 ms limit" in w for w in v.would_change)


def test_frequent_updates_give_retrieval():
    cands = demo_candidates()[:5] + [cand("rag", "retrieval", "rag", 0.73, 0.68, 0.78)]
    v = decide(run(cands, knowledge="daily"), None, None)
    assert v.decision == "RETRIEVAL"
    assert "stale" in v.summary
    fresh = next(r for r in v.reasons if r.criterion == "realtime_updates")
    assert fresh.vote == "RETRIEVAL" and "365" in fresh.finding
    assert_reasons_cite_numbers(v)


def test_clear_fine_tune_win_survives_frequent_updates_with_a_warning():
    v = decide(demo(knowledge="daily"), None, None)
    assert v.decision == "FINE_TUNE" and "stale" in v.summary


def test_collect_more_data_when_curve_projects_the_target():
    curve = demo_curve(n_for_target=Interval(value=2400, ci_low=1800, ci_high=3500), target_reachable=True)
    v = decide(demo(curve=curve), 0.92, None)
    assert v.decision == "COLLECT_MORE_DATA"
    assert "2,400 [1,800, 3,500]" in v.summary and "8x" in v.summary
    assert_reasons_cite_numbers(v)


def test_insufficient_evidence_when_fine_tuning_is_not_significant():
    cands = demo_candidates()
    cands[-1] = cand("lora", "finetune", "lora", 0.75, 0.68, 0.82)
    comparisons = [cmp("lora", "knn_few_shot", 0.03, 0.31), cmp("lora", "majority", 0.10, 0.001)]
    v = decide(run(cands, comparisons=comparisons), None, None)
    assert v.decision == "INSUFFICIENT_EVIDENCE"
    assert "p = 0.31" in v.summary
    try:
        from tunewise.evaluate.stats import samples_to_separate  # noqa: F401
    except ImportError:
        pass  # not written yet: the verdict still cites the p-value
    else:
        assert "test examples would be needed" in v.summary or "no realistic test set" in v.summary
    assert_reasons_cite_numbers(v)


def test_none_of_the_options_learned_the_task():
    cands = [cand("majority", "baseline", "majority", 0.65, 0.57, 0.72),
             cand("zero_shot", "prompting", "zero_shot", 0.62, 0.55, 0.70),
             cand("classical", "classical", "classical", 0.66, 0.58, 0.73),
             cand("lora", "finetune", "lora", 0.67, 0.60, 0.74)]
    v = decide(run(cands, profile={"train_records": 5000, "examples_per_class_min": 400}), None, None)
    assert "none of the options learned the task" in v.summary.lower()
    assert v.decision == "INSUFFICIENT_EVIDENCE" and "larger model" in v.summary
    small = decide(run(cands, profile={"train_records": 80}), None, None)
    assert small.decision == "COLLECT_MORE_DATA" and "none of the options" in small.summary.lower()
    live = decide(run(cands, knowledge="realtime"), None, None)
    assert live.decision == "RETRIEVAL" and "none of the options" in live.summary.lower()
    assert_reasons_cite_numbers(v)


def test_too_few_test_records_to_show_learning_says_how_many_would():
    cands = [cand("majority", "baseline", "majority", 0.65, 0.56, 0.74),
             cand("classical", "classical", "classical", 0.69, 0.60, 0.78),
             cand("lora", "finetune", "lora", 0.75, 0.64, 0.84)]
    v = decide(run(cands, split={"test": 379, "test_scored": 100}), None, None)
    assert v.decision == "INSUFFICIENT_EVIDENCE"
    assert "not shown that any option learned the task" in v.summary.lower()
    assert "100 test records cannot separate them" in v.summary
    need = int(re.search(r"about ([\d,]+) would", v.summary).group(1).replace(",", ""))
    assert 100 < need <= 400


def test_all_failed_is_insufficient_evidence():
    v = decide(run([cand("lora", "finetune", "lora", 0, 0, 0, status="failed")]), None, None)
    assert v.decision == "INSUFFICIENT_EVIDENCE" and "1 failed" in v.summary


def test_full_evidence_gives_a_reason_per_criterion_with_numbers():
    r = demo(latency=500, profile={"domain_gap": {"ratio": 2.3}, "multi_turn_share": 0.4,
                                   "examples_per_class_min": 12},
             overfitting=[Overfitting(candidate="lora", flag=True, reason="val loss rose after epoch 1",
                                      epochs=[EpochLoss(epoch=1, train_loss=0.4, val_loss=0.5),
                                              EpochLoss(epoch=2, train_loss=0.2, val_loss=0.6)])],
             forgetting=Forgetting(probe="general-qa", items=60,
                                   base_score=Interval(value=0.5, ci_low=0.4, ci_high=0.6),
                                   models=[ForgettingEntry(candidate="lora",
                                                           score=Interval(value=0.44, ci_low=0.35, ci_high=0.53),
                                                           delta=Interval(value=-0.06, ci_low=-0.1, ci_high=-0.02))]),
             compute=[ComputeEstimate(candidate="lora", params=135_000_000, trainable_params=2_000_000, tokens=40_000,
                                      flops=3.2e13, device_flops_per_s=2.55e11, estimated_seconds=700,
                                      measured_seconds=756, budget_seconds=3600, within_budget=True)])
    v = decide(r, 0.75, None)
    got = {x.criterion for x in v.reasons}
    assert {"majority_floor", "accuracy_target", "prompting_enough", "classical_enough", "general_task",
            "domain_knowledge", "multi_turn", "enough_data", "overfitting", "forgetting", "compute_budget",
            "small_model_latency", "realtime_updates"} <= got
    assert "2.3x" in next(x.finding for x in v.reasons if x.criterion == "domain_knowledge")
    assert "loses general ability" in next(x.finding for x in v.reasons if x.criterion == "forgetting")
    assert_reasons_cite_numbers(v)


def api_vs_lora(api_per_1k, lora_per_1k, monthly=None, p=0.4):
    """An API model prompted zero-shot that the paired test cannot tell from LoRA, both priced."""
    cands = demo_candidates() + [cand("zero_shot@gpt", "prompting", "zero_shot", 0.81, 0.75, 0.87, p95=400,
                                      model="openai:gpt-4o-mini")]
    comparisons = [cmp("lora", n, 0.83 - v, 0.001) for n, v in [("knn_few_shot", 0.72), ("zero_shot", 0.71),
                                                                ("few_shot", 0.70), ("classical", 0.71),
                                                                ("majority", 0.65)]]
    comparisons += [cmp("lora", "zero_shot@gpt", 0.02, p), cmp("zero_shot@gpt", "majority", 0.16, 0.001)]
    r = run(cands, comparisons=comparisons, cost_=cost(**{"classical": 0.001, "zero_shot": 0.02, "few_shot": 0.05,
                                                          "knn_few_shot": 0.06, "lora": lora_per_1k,
                                                          "zero_shot@gpt": api_per_1k}))
    r.task.constraints.monthly_requests = monthly
    return r


def test_a_cheaper_api_model_that_ties_with_fine_tuning_is_prompted():
    v = decide(api_vs_lora(api_per_1k=0.05, lora_per_1k=0.10), None, None)
    assert v.decision == "PROMPT" and v.candidate == "zero_shot@gpt" and v.model == "openai:gpt-4o-mini"
    assert "cannot be told from LoRA" in v.summary and "p = 0.4" in v.summary and "$0.05 vs" in v.summary
    assert_reasons_cite_numbers(v)


def test_fine_tuning_that_ties_with_an_api_model_wins_on_cost_at_the_stated_volume():
    v = decide(api_vs_lora(api_per_1k=0.60, lora_per_1k=0.10, monthly=100_000), None, None)
    assert v.decision == "FINE_TUNE" and v.candidate == "lora"
    assert "100,000 requests a month" in v.summary and "training included" in v.summary
    small = decide(api_vs_lora(api_per_1k=0.60, lora_per_1k=0.10, monthly=100_000), None, 500)
    assert small.decision == "SMALL_MODEL"


def test_a_tie_without_a_volume_or_prices_stays_insufficient_evidence():
    assert decide(api_vs_lora(api_per_1k=0.60, lora_per_1k=0.10), None, None).decision == "INSUFFICIENT_EVIDENCE"
    unpriced = api_vs_lora(api_per_1k=0.05, lora_per_1k=0.10)
    unpriced.cost = None
    assert decide(unpriced, None, None).decision == "INSUFFICIENT_EVIDENCE"


def test_an_api_model_that_reaches_the_target_and_is_cheapest_is_prompted():
    v = decide(api_vs_lora(api_per_1k=0.05, lora_per_1k=0.10, p=0.01), 0.74, None)
    assert v.decision == "PROMPT" and v.candidate == "zero_shot@gpt"


def test_over_budget_candidate_is_not_recommended():
    r = demo(compute=[ComputeEstimate(candidate="lora", params=1, trainable_params=1, tokens=1, flops=1e15,
                                      device_flops_per_s=1e11, estimated_seconds=10_000, budget_seconds=3600,
                                      within_budget=False)])
    v = decide(r, None, None)
    assert v.decision != "FINE_TUNE" and any("compute budget" in w for w in v.would_change)


def test_sparse_evidence_falls_back_to_intervals():
    cands = [cand("zero_shot", "prompting", "zero_shot", 0.60, 0.55, 0.65),
             cand("lora", "finetune", "lora", 0.80, 0.75, 0.85)]
    v = decide(RunResults(tunewise_version="0", run_id="r", created="now", task={}, budget=BUDGETS["quick"], split=SPLIT,
                          candidates=cands), None, None)
    assert v.decision == "FINE_TUNE" and "intervals do not overlap" in v.summary
    assert_reasons_cite_numbers(v)


def test_decide_is_pure():
    r = demo()
    before = r.model_dump_json()
    assert decide(r, 0.7, 300) == decide(r, 0.7, 300)
    assert r.model_dump_json() == before


# ---- advisor -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, expected", [("legal-contracts", "FINE_TUNE"), ("faq-shipping", "PROMPT"),
                                            ("news-bot", "RETRIEVAL")])
def test_example_answer_files(name, expected):
    path = EXAMPLES / f"{name}.yaml"
    assert path.read_text().splitlines()[0] == f"# tunewise advise --answers examples/advise/{name}.yaml"
    v = advise(load_answers(path))
    assert v.decision == expected
    assert any(c.startswith("tunewise run measures:") for c in v.constraints)
    for r in v.reasons:
        get(r.criterion)


def _answers(**kw):
    base = dict(domain_knowledge=True, error_cost="high", labelled_examples=5000, task_general=False)
    return Answers(**{**base, **kw})


def test_advise_small_model_collect_and_would_change():
    assert advise(_answers(narrow_scope=True, latency_ms_limit=100)).decision == "SMALL_MODEL"
    assert advise(_answers(narrow_scope=True, on_premises=True)).decision == "SMALL_MODEL"
    few = advise(_answers(labelled_examples=50))
    assert few.decision == "COLLECT_MORE_DATA"
    assert any("1,000 labelled examples" in w and "FINE_TUNE" in w for w in few.would_change)
    assert advise(_answers(prompting_score=0.95, target_score=0.9, error_cost="medium",
                           domain_knowledge=False, labelled_examples=500)).decision == "PROMPT"
    small_budget = advise(_answers(compute_budget_gpu_hours=0.5))
    assert small_budget.decision == "SMALL_MODEL"
    assert "small model" in next(r.finding for r in small_budget.reasons if r.criterion == "compute_budget")


def test_load_answers_errors_name_file_and_key(tmp_path):
    bad = tmp_path / "a.yaml"
    bad.write_text("domain_knowledge: true\nerror_cost: huge\nlabelled_examples: 10\ntask_general: false\n")
    with pytest.raises(ConfigError, match=r"a\.yaml.*error_cost"):
        load_answers(bad)
    bad.write_text("domain_knowledge: true\nerror_cost: low\nlabelled_examples: 10\ntask_general: false\ncolour: red\n")
    with pytest.raises(ConfigError, match=r"colour.*known keys"):
        load_answers(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_answers(tmp_path / "missing.yaml")
    bad.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="mapping"):
        load_answers(bad)
    js = tmp_path / "a.json"
    js.write_text('{"domain_knowledge": false, "error_cost": "low", "labelled_examples": 3, "task_general": true}')
    assert load_answers(js).labelled_examples == 3


def test_ask_uses_the_prompt_function_for_every_field():
    seen = []
    given = {"domain_knowledge": "yes", "error_cost": "high", "labelled_examples": "20000", "task_general": "no",
             "target_score": "0.9", "knowledge_update": "yearly"}

    def prompt(field, question, default, typ):
        seen.append(field)
        assert question and isinstance(typ, type)
        return given.get(field, "" if default is None else default)

    a = ask(prompt)
    assert set(seen) == set(QUESTIONS) == set(Answers.model_fields)
    assert a.labelled_examples == 20000 and a.target_score == 0.9 and a.latency_ms_limit is None
    assert advise(a).decision == "FINE_TUNE"


def test_an_option_dropped_early_by_adaptive_scoring_does_not_outrank_the_leader():
    # knn_few_shot was separated below LoRA on the first 100 records and not scored further; a lucky
    # 100-record score above LoRA's score on all 379 must not make it the verdict's candidate
    candidates = demo_candidates()
    for c in candidates:
        c.test_records = 379
    knn = next(c for c in candidates if c.name == "knn_few_shot")
    knn.metrics["accuracy"], knn.test_records = Interval(value=0.85, ci_low=0.77, ci_high=0.91), 100
    v = decide(demo(candidates=candidates), None, None)
    assert v.decision == "FINE_TUNE" and v.candidate == "lora"
