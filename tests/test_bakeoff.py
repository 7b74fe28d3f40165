"""The bake-off's promises: label scoring is exact, test data never reaches a prompt, failures are
contained, finished work is reused and interrupted training resumes."""

from __future__ import annotations

import pytest
import torch

from tunewise.bakeoff import compare, run_bakeoff
from tunewise.config import BUDGETS, TaskSpec
from tunewise.data.records import Record
from tunewise.models.backend import Capabilities, Scored
from tunewise.models.lm import LabelTrie, LanguageModel
from tunewise.store import Store
from tunewise.strategies import CandidateSpec, Context, ModelPool, build, register
from tunewise.errors import ConfigError
from tunewise.ui import Progress

TASK = TaskSpec(name="t", type="classification", labels=["neg", "negative", "positive"],
                instruction="Classify the sentiment.")


def rec(i: int, text: str, label: str) -> Record:
    return Record(id=f"r{i}", messages=(("user", text),), output=label, source="mem", line=i)


TRAIN = [rec(i, f"train review {i} {'bad' if i % 2 else 'good'}", "negative" if i % 2 else "positive")
         for i in range(30)]
TEST = [rec(100 + i, f"held-out test text {i} {'awful' if i % 2 else 'great'}",
            "negative" if i % 2 else "positive") for i in range(8)]


@pytest.fixture(scope="module")
def lm():
    from tunewise.models.load import load_model

    model, tok = load_model("smollm2-135m", dtype="float32")
    return LanguageModel(model, tok, "smollm2-135m")


def naive_logprob(lm: LanguageModel, messages, label: str) -> float:
    """The reference: one full forward over prompt + label, summing the label tokens' log-probs."""
    prompt = lm.encode(lm.render(messages, add_generation_prompt=True))
    ids = lm.label_ids([label])[0]
    with torch.no_grad():
        logp = torch.log_softmax(lm.model(torch.tensor([prompt + ids])).logits[0].float(), -1)
    return sum(logp[len(prompt) - 1 + j, t].item() for j, t in enumerate(ids))


def test_multi_token_labels_match_a_full_forward(lm):
    labels = ["neg", "negative", "credit card payment declined", "positive"]
    assert any(len(ids) > 2 for ids in lm.label_ids(labels))  # really multi-token
    shared = [("system", "Classify the text.")]
    rest = [("user", "The payment did not go through and I am upset.")]
    scored = lm.classify(shared, rest, labels)
    expected = [naive_logprob(lm, shared + rest, label) for label in labels]
    assert scored.label_logprobs == pytest.approx(expected, abs=2e-3)
    # 'neg' is a prefix of 'negative': the end-of-turn token must tell them apart
    assert abs(scored.label_logprobs[0] - scored.label_logprobs[1]) > 1e-3
    assert scored.prediction == labels[max(range(4), key=lambda i: expected[i])]


def test_labels_sharing_leading_tokens_share_trie_positions_and_score_like_a_full_forward(lm):
    from tunewise.models.lm import LabelTrie

    labels = ["card_arrival", "card_delivery_estimate", "card_linking", "cash_withdrawal_charge", "card"]
    ids = lm.label_ids(labels)
    trie = LabelTrie(ids)
    assert len(trie.tokens) < sum(map(len, ids))  # shared leading tokens are computed once
    # and only inner nodes are fed: each distinct proper prefix of a label once, no label's last token
    assert len(trie.tokens) == len({tuple(lab[:k]) for lab in ids for k in range(1, len(lab))})
    shared = [("system", "Which banking intent is this?")]
    rests = [[("user", "My card has not come yet")], [("user", "Why was I charged for taking out cash?")]]
    for rest, scored in zip(rests, lm.classify_many(shared, rests, labels)):
        assert scored.label_logprobs == pytest.approx([naive_logprob(lm, shared + rest, lab) for lab in labels],
                                                      abs=2e-3)


INTENTS = ["card_arrival", "card_delivery_estimate", "card_linking", "card_payment_fee_charged",
           "cash_withdrawal_charge", "cash_withdrawal_not_recognised", "exchange_rate", "exchange_via_app",
           "top_up_failed", "top_up_reverted", "transfer_timing", "wrong_amount_of_cash_received"]


@pytest.mark.parametrize("calibrated", [False, True])
def test_best_label_search_picks_the_label_scoring_every_label_picks(lm, calibrated):
    import tunewise.models.lm as lm_module

    assert len(LabelTrie(lm.label_ids(INTENTS)).tokens) > lm_module.SEARCH_ABOVE  # the search is used
    shared = [("system", "Which banking intent is this? One of: " + ", ".join(INTENTS))]
    rests = [[("user", t)] for t in ("My card has not come yet", "Why was I charged for taking out cash?",
                                     "The top up did not work", "How long does a transfer take?")]
    prior = lm.classify(shared, [("user", "N/A")], INTENTS).label_logprobs if calibrated else None
    full = lm.classify_many(shared, rests, INTENTS)
    searched = lm.classify_many(shared, rests, INTENTS, prior=prior, full=False)
    for every, found in zip(full, searched):
        scores = [lp - (prior[j] if prior else 0.0) for j, lp in enumerate(every.label_logprobs)]
        assert found.label_logprobs is None  # only the best label was asked for
        assert scores[INTENTS.index(found.prediction)] == pytest.approx(max(scores), abs=1e-4)


def test_best_label_search_skips_labels_that_cannot_win(lm, monkeypatch):
    """A confident model (here: told the answer) puts its mass on one first token: only the labels
    starting with it are scored, the others are bounded out by their first token."""
    import tunewise.models.lm as lm_module

    scored_labels = []
    original = lm_module.LanguageModel._trie_scores
    monkeypatch.setattr(lm_module.LanguageModel, "_trie_scores",
                        lambda self, cache, visible, first, ids: scored_labels.append(len(ids))
                        or original(self, cache, visible, first, ids))
    shared = [("system", "Repeat the intent the user names, exactly.")]
    found = lm.classify_many(shared, [[("user", "The intent is exchange_rate")]], INTENTS, full=False)[0]
    assert found.prediction == "exchange_rate"
    assert sum(scored_labels) < len(INTENTS) / 2


def test_shared_prefix_cache_is_reused_without_changing_scores(lm):
    shared = [("system", "Classify the text."), ("user", "great stuff"), ("assistant", "positive")]
    labels = ["negative", "positive"]
    prefix_ids, _ = lm.split_prompt(shared, [("user", "x")])
    cache = lm.prefix_cache(prefix_ids)
    for text in ("terrible", "lovely", "meh"):
        rest = [("user", text)]
        cached = lm.classify(shared, rest, labels, cache=cache).label_logprobs
        fresh = [naive_logprob(lm, shared + rest, label) for label in labels]
        assert cached == pytest.approx(fresh, abs=2e-3)
    assert cache.get_seq_length() == len(prefix_ids)  # scoring never grows the shared cache


def test_batched_scoring_of_inputs_of_different_lengths_matches_a_full_forward(lm):
    shared = [("system", "Classify the text."), ("user", "great stuff"), ("assistant", "positive")]
    labels = ["neg", "negative", "credit card payment declined", "positive"]
    texts = ["meh", "The payment did not go through and I am upset. " * 4, "lovely day out, we enjoyed it",
             "terrible", "ok I guess, nothing special about it"]
    rests = [[("user", t)] for t in texts]
    cache = lm.prefix_cache(lm.split_prompt(shared, rests[0])[0])
    batched = lm.classify_many(shared, rests, labels, cache=cache, batch_size=3)  # left padding in each batch
    assert len({len(lm.split_prompt(shared, r)[1]) for r in rests}) >= 3  # batches really hold padding
    for rest, scored in zip(rests, batched):  # results come back in input order
        expected = [naive_logprob(lm, shared + rest, label) for label in labels]
        assert scored.label_logprobs == pytest.approx(expected, abs=2e-3)
        assert scored.prediction == labels[max(range(len(labels)), key=lambda i: expected[i])]


class RecordingLM:
    """Stands in for a backend: records every prompt it is shown."""

    name = "fake"

    def __init__(self):
        self.prompts = []

    def capabilities(self):
        return Capabilities(prompt_logprobs=True, chat_logprobs=False, trainable=False)

    def score_labels(self, shared, rests, labels, method="likelihood", prior=None, full=True):
        out = [self.classify(shared, rest, labels) for rest in rests]
        for s in out if prior is not None else []:  # the best label after calibration, as the protocol says
            shifted = [lp - p for lp, p in zip(s.label_logprobs, prior)]
            s.prediction = labels[shifted.index(max(shifted))]
        return out

    def classify(self, shared, rest, labels):
        self.prompts.append(list(shared) + list(rest))
        return Scored(labels[0], 0.001, 10, 1, [0.0] * len(labels))


class FakePool(ModelPool):
    def __init__(self):
        super().__init__()
        self.fake = RecordingLM()

    def lm(self, name):
        return self.fake


def ctx_for(tmp_path, pool=None, train=TRAIN) -> Context:
    return Context(task=TASK, labels=TASK.labels, train=train, validation=[], budget=BUDGETS["quick"], seed=0,
                   work_dir=tmp_path, models=pool or FakePool())


@pytest.mark.parametrize("strategy", ["few_shot", "knn_few_shot"])
def test_no_test_example_ever_appears_in_a_prompt(tmp_path, strategy):
    ctx = ctx_for(tmp_path)
    s = build(CandidateSpec(name=strategy, strategy=strategy, model="fake", options={"k": 4}))
    s.fit(ctx)
    for record in TEST[:3]:
        s.predict(ctx, record)
    s.predict_many(ctx, TEST[3:])
    prompts = ctx.models.fake.prompts
    assert len(prompts) >= len(TEST)
    test_texts = {r.text for r in TEST}
    for record, prompt in zip(TEST, [p for p in prompts if p[-1][1] != "N/A"]):
        examples = prompt[1:-1]  # between the system turn and the input itself
        assert len([m for m in examples if m[0] == "user"]) == 4
        assert not test_texts & {content for _, content in examples}
        assert prompt[-1] == ("user", record.text)


def test_few_shot_examples_are_balanced_across_classes(tmp_path):
    ctx = ctx_for(tmp_path)
    s = build(CandidateSpec(name="few_shot", strategy="few_shot", model="fake", options={"k": 4}))
    s.fit(ctx)
    assert sorted(r.output for r in s.examples) == ["negative", "negative", "positive", "positive"]


class PriorLM(RecordingLM):
    """Always scores 'positive' highest, by 1 nat for a real input and by 3 for the content-free one:
    raw scoring says positive, calibrated scoring says the runner-up."""

    def classify(self, shared, rest, labels):
        lift = 3.0 if rest[-1][1] == "N/A" else 1.0
        lps = [lift if lab == "positive" else 0.0 for lab in labels]
        return Scored(labels[lps.index(max(lps))], 0.001, 10, 1, lps)


@pytest.mark.parametrize("truth, calibrated", [("positive", False), ("neg", True)])
def test_calibration_is_chosen_on_validation(tmp_path, truth, calibrated):
    pool = FakePool()
    pool.fake = PriorLM()
    validation = [rec(200 + i, f"validation {i}", truth) for i in range(6)]
    ctx = Context(task=TASK, labels=TASK.labels, train=TRAIN, validation=validation, budget=BUDGETS["quick"],
                  seed=0, work_dir=tmp_path, models=pool)
    s = build(CandidateSpec(name="zero_shot", strategy="zero_shot", model="fake"))
    facts = s.fit(ctx)
    assert s.calibrate is calibrated and s.settings()["calibrate"] == "auto"
    assert facts.notes[-1:] == [f"contextual calibration {'on' if calibrated else 'off'}: accuracy on the 6 "
                              f"validation records {1.0 if calibrated else 0.0:.2f} with it, "
                              f"{0.0 if calibrated else 1.0:.2f} without"]
    assert s.predict(ctx, TEST[0]).prediction == ("neg" if calibrated else "positive")


@pytest.mark.parametrize("setting", [False, True])
def test_a_models_calibrate_setting_fixes_calibration(tmp_path, setting):
    """`models: {fake: {calibrate: ...}}` in the task file: no choice on validation (which would turn it on
    here); off is what a served fine-tuned model needs to answer as it was trained and scored."""
    from tunewise.config import ModelConfig

    pool = FakePool()
    pool.fake, pool.models = PriorLM(), {"fake": ModelConfig(calibrate=setting)}
    validation = [rec(200 + i, f"validation {i}", "neg") for i in range(6)]
    ctx = Context(task=TASK, labels=TASK.labels, train=TRAIN, validation=validation, budget=BUDGETS["quick"],
                  seed=0, work_dir=tmp_path, models=pool)
    s = build(CandidateSpec(name="zero_shot", strategy="zero_shot", model="fake"))
    facts = s.fit(ctx)
    assert s.calibrate is setting
    assert facts.notes[-1] == (f"contextual calibration {'on' if setting else 'off'}: set by model 'fake' "
                               f"(calibrate: {str(setting).lower()})")
    assert s.predict(ctx, TEST[0]).prediction == ("neg" if setting else "positive")


def test_registered_strategies_are_selectable_without_editing_the_line_up():
    from tunewise.bakeoff import default_candidates
    from tunewise.runner import _select

    lineup = default_candidates(TASK, "smollm2-135m")
    assert "full_ft" not in {s.strategy for s in lineup}
    chosen = _select(lineup, ["zero_shot", "full_ft"], "smollm2-135m")
    assert [(s.name, s.strategy, s.model) for s in chosen] == [("zero_shot", "zero_shot", "smollm2-135m"),
                                                                ("full_ft", "full_ft", "smollm2-135m")]
    with pytest.raises(ConfigError, match="unknown nope.*full_ft"):
        _select(lineup, ["nope"])


def test_unknown_strategy_lists_the_known_ones():
    with pytest.raises(ConfigError, match="few_shot.*lora|lora.*zero_shot"):
        build(CandidateSpec(name="x", strategy="nope"))


@register("explodes_for_test")
class Explodes:
    family = "prompting"

    def __init__(self, spec):
        pass

    def settings(self):
        return {}

    def fit(self, ctx):
        raise RuntimeError("boom: out of memory on purpose")

    def predict(self, ctx, record):
        raise AssertionError("not reached")


@register("batches_for_test")
class Batches:
    """Single requests take 50 ms, batched ones 1 ms each: latency must come from the single ones."""

    family = "prompting"
    calls: list = []

    def __init__(self, spec):
        pass

    def settings(self):
        return {}

    def fit(self, ctx):
        return {}

    def predict(self, ctx, record):
        Batches.calls.append(1)
        return Scored(record.output, 0.050, 10, 1)

    def predict_many(self, ctx, records):
        Batches.calls.append(len(records))
        return [Scored(r.output, 0.001, 10, 1) for r in records]


def test_latency_comes_from_single_requests_and_the_rest_is_batched(tmp_path, monkeypatch):
    import tunewise.bakeoff as bakeoff_module

    monkeypatch.setattr(bakeoff_module, "LATENCY_SAMPLE", 3)
    Batches.calls = []
    result = bakeoff(tmp_path, [CandidateSpec(name="b", strategy="batches_for_test")], Store(tmp_path / "s"))[0]
    assert result.status == "ok" and result.predictions == [r.output for r in TEST]  # order kept
    assert Batches.calls == [1, 1, 1, len(TEST) - 3]
    assert result.latency_samples == 3 and result.latency_ms["p95"] == pytest.approx(50.0)
    assert result.scoring_seconds is not None


def test_a_stage_that_reports_no_latency_scores_every_record_in_batches(tmp_path):
    from tunewise.bakeoff import run_candidate

    Batches.calls = []
    spec = CandidateSpec(name="b", strategy="batches_for_test")
    result = run_candidate(spec, ctx_for(tmp_path), TEST, Store(tmp_path / "s"), "k", Progress(quiet=True),
                           latency_sample=0)
    assert result.status == "ok" and result.predictions == [r.output for r in TEST]
    assert Batches.calls == [len(TEST)] and result.latency_ms is None and result.latency_samples == 0


def bakeoff(tmp_path, specs, store):
    return run_bakeoff(specs, task=TASK, labels=TASK.labels, train=TRAIN, validation=[], test=TEST,
                       budget=BUDGETS["quick"], seed=0, run_dir=tmp_path / "run", store=store, data_key="k",
                       progress=Progress(quiet=True))[0]


def test_a_failing_candidate_is_recorded_and_the_run_goes_on(tmp_path):
    specs = [CandidateSpec(name="majority", strategy="majority"),
             CandidateSpec(name="boom", strategy="explodes_for_test"),
             CandidateSpec(name="classical", strategy="classical")]
    results = bakeoff(tmp_path, specs, Store(tmp_path / "store"))
    by_name = {c.name: c for c in results}
    assert by_name["boom"].status == "failed" and "boom: out of memory" in by_name["boom"].error
    assert by_name["majority"].status == by_name["classical"].status == "ok"
    assert (tmp_path / "run" / "candidates" / "boom" / "error.txt").is_file()
    ok = [c for c in results if c.status == "ok"]
    assert all(0 <= c.metrics["accuracy"].ci_low <= c.metrics["accuracy"].value <= c.metrics["accuracy"].ci_high
               for c in ok)
    comparisons = compare(results, TEST, "accuracy", TASK.labels, 200, 0)
    assert {(c.a, c.b) for c in comparisons} and all(c.b != "boom" and c.a != "boom" for c in comparisons)


def test_finished_candidates_are_reused_from_the_store(tmp_path, monkeypatch):
    store = Store(tmp_path / "store")
    specs = [CandidateSpec(name="classical", strategy="classical")]
    first = bakeoff(tmp_path, specs, store)[0]
    from tunewise.strategies import classical

    monkeypatch.setattr(classical.TfidfLogistic, "fit", lambda self, ctx: pytest.fail("recomputed"))
    second = bakeoff(tmp_path, specs, store)[0]
    assert second.predictions == first.predictions and second.metrics == first.metrics


def test_interrupted_training_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    import tunewise.models.train as train_module

    store = Store(tmp_path / "store")
    spec = CandidateSpec(name="lora", strategy="lora", model="smollm2-135m",
                         options={"checkpoint_every": 1, "batch_size": 4, "max_length": 48, "r": 4})
    real_train = train_module.train

    def stop_after_3(state):
        if state.step >= 3:
            raise RuntimeError(f"stopped after {state.step} steps")

    def interrupted(*args, **kwargs):
        return real_train(*args, **kwargs, on_step=stop_after_3)

    monkeypatch.setattr(train_module, "train", interrupted)
    first = bakeoff(tmp_path, [spec], store)[0]
    assert first.status == "failed" and "stopped after 3 steps" in first.error
    monkeypatch.setattr(train_module, "train", real_train)
    second = bakeoff(tmp_path, [spec], store)[0]
    assert second.status == "ok", second.error
    assert "resumed from step 3" in second.notes
    assert second.artifact and (tmp_path / "run" / "candidates" / "lora" / "adapter").is_dir()


def test_a_model_cast_for_scoring_matches_one_loaded_in_bf16(lm):
    """Fine-tuned models are cast to the scoring dtype after training: parameters only, so the rotary
    buffers stay fp32 exactly as when the model is loaded in bf16 (rounding them shifts positions)."""
    import copy

    from tunewise.models.load import cast_weights, load_model

    cast = cast_weights(copy.deepcopy(lm.model), torch.bfloat16)
    loaded, _ = load_model("smollm2-135m", dtype="bfloat16")
    assert {b.dtype for b in cast.model.rotary_emb.buffers()} == {torch.float32}
    assert {p.dtype for p in cast.parameters()} == {torch.bfloat16}
    ids = torch.tensor([lm.encode("A long enough sentence to reach positions where rounded angles differ. " * 4)])
    with torch.no_grad():
        assert torch.equal(cast(ids).logits, loaded(ids).logits)


def test_a_calibration_choice_on_too_few_validation_records_is_called_uncertain(tmp_path):
    pool = FakePool()
    pool.fake = PriorLM()
    validation = [rec(200 + i, f"validation {i}", "neg") for i in range(3)]  # 3 of 3 for calibration: p = 0.25
    ctx = Context(task=TASK, labels=TASK.labels, train=TRAIN, validation=validation, budget=BUDGETS["quick"],
                  seed=0, work_dir=tmp_path, models=pool)
    s = build(CandidateSpec(name="zero_shot", strategy="zero_shot", model="fake"))
    note = s.fit(ctx).notes[-1]
    assert s.calibrate is True
    assert note.startswith("contextual calibration on: accuracy on the 3 validation records 1.00 with it, 0.00")
    assert "p = 0.25: too few validation records to be sure of the choice" in note


def test_batched_generation_answers_like_one_at_a_time(lm):
    convs = [[("system", "Answer briefly."), ("user", q)] for q in
             ("Which condition is Metformin taken for?", "What is 2 + 2?", "Name a colour.",
              "Which condition is Sertraline taken for, and why do doctors prescribe it so often?")]
    batched = lm.generate(convs, 12)
    for conv, b in zip(convs, batched):
        one = lm.generate_one(conv, 12)
        assert (b.prediction, b.prompt_tokens, b.output_tokens) == (one.prediction, one.prompt_tokens, one.output_tokens)


def test_lora_trains_with_wsd_and_curve_branches_on_one_epoch_budgets(tmp_path):
    """One epoch (quick): WSD with a decay branch per curve subset (benchmarks/results/curve.md);
    more epochs, `schedule: linear`, a curve point or full fine-tuning: no branches."""
    import dataclasses

    quick = ctx_for(tmp_path)
    lora = build(CandidateSpec(name="lora", strategy="lora"))
    assert lora.config(quick).schedule == "wsd" and lora.curve_fractions(quick) == [0.125, 0.25, 0.5]
    linear = build(CandidateSpec(name="lora", strategy="lora", options={"schedule": "linear"}))
    assert linear.config(quick).schedule == "linear"
    two_epochs = build(CandidateSpec(name="lora", strategy="lora", options={"epochs": 2}))
    assert two_epochs.config(quick).schedule == "linear"
    standard = dataclasses.replace(quick, budget=BUDGETS["standard"])
    assert lora.config(standard).schedule == "linear"
    point = build(CandidateSpec(name="lora@0.5", strategy="lora", options={"fraction": 0.5}))
    assert point.curve_fractions(quick) == []
    assert build(CandidateSpec(name="full_ft", strategy="full_ft")).config(quick).schedule == "linear"
    free_text = dataclasses.replace(quick, task=TaskSpec(name="g", type="generation"))
    assert lora.config(free_text).schedule == "linear"  # measured to hurt on free text
