"""Models behind OpenAI-compatible servers: naming, the three scoring methods, faults, cost, keys.

Servers here are real HTTP servers bound to 127.0.0.1 (pytest-httpserver for faults, tests/servers.py
for log-probabilities over the shipped model), started and stopped by the tests."""

from __future__ import annotations

import json
import math
import time

import pytest
from werkzeug import Response

from tunewise.bakeoff import run_bakeoff
from tunewise.config import BUDGETS, ModelConfig, TaskSpec, load_task, model_config
from tunewise.data.records import Record
from tunewise.errors import ConfigError
from tunewise.models.chat_format import ChatFormat
from tunewise.models.endpoint import Endpoint, EndpointError, check_prompt_models
from tunewise.models.http import HttpBackend, chat_label_scores
from tunewise.store import Store
from tunewise.strategies import CandidateSpec
from tunewise.ui import Progress

SECRET = "sk-test-DO-NOT-LEAK-0123456789"


@pytest.fixture(scope="session")
def httpserver_listen_address():
    return ("127.0.0.1", 0)


# ---- naming models ------------------------------------------------------------------------------

def test_prompt_model_names_resolve_to_settings():
    models = {"smol": ModelConfig(base_url="http://127.0.0.1:9/v1", model="served-name", concurrency=2),
              "gpt-4o-mini": ModelConfig(input_per_mtok=0.15, output_per_mtok=0.6)}
    name, cfg = model_config("smol", models)
    assert (name, cfg.base_url, cfg.model, cfg.concurrency) == ("smol", "http://127.0.0.1:9/v1", "served-name", 2)
    name, cfg = model_config("openai:gpt-4o-mini", models)
    assert (name, cfg.base_url, cfg.model, cfg.api_key_env) == ("gpt-4o-mini", "https://api.openai.com/v1",
                                                                 "gpt-4o-mini", "OPENAI_API_KEY")
    assert cfg.input_per_mtok == 0.15  # the models: entry named like the served model adds its prices
    name, cfg = model_config("http://127.0.0.1:8000/v1/#/models/SmolLM2-135M", models)
    assert (name, cfg.base_url, cfg.model, cfg.api_key_env) == ("SmolLM2-135M", "http://127.0.0.1:8000/v1",
                                                                 "/models/SmolLM2-135M", None)
    name, cfg = model_config("smollm2-135m", models)
    assert (name, cfg.is_http, cfg.model) == ("smollm2-135m", False, "smollm2-135m")
    with pytest.raises(ConfigError, match="after '#'"):
        model_config("http://127.0.0.1:8000/v1", models)


def test_models_section_is_typed_and_never_takes_a_key(tmp_path, monkeypatch):
    task = tmp_path / "task.yaml"
    task.write_text("models:\n  gpt:\n    base_url: https://api.openai.com/v1\n    api_key_env: " + SECRET + "\n")
    with pytest.raises(ConfigError, match="models.gpt.api_key_env") as err:
        load_task(task)
    assert SECRET not in str(err.value)
    task.write_text("models:\n  gpt:\n    base_url: https://api.openai.com/v1\n    api_key_env: MY_KEY\n"
                    "    input_per_mtok: 0.15\n    concurency: 3\n")
    with pytest.raises(ConfigError, match="models.gpt.concurency"):
        load_task(task)
    task.write_text("models:\n  gpt:\n    base_url: https://api.openai.com/v1\n    api_key_env: MY_KEY\n")
    spec = load_task(task)
    monkeypatch.delenv("MY_KEY", raising=False)
    with pytest.raises(ConfigError, match="MY_KEY.*not set"):
        check_prompt_models(["gpt"], spec.models)
    monkeypatch.setenv("MY_KEY", SECRET)
    check_prompt_models(["gpt"], spec.models)


# ---- chat log-probabilities ----------------------------------------------------------------------

def tok(token, logprob, *alts):
    return {"token": token, "logprob": logprob, "top_logprobs": [{"token": t, "logprob": lp} for t, lp in alts]}


def test_chat_logprobs_follow_the_answer_and_bound_the_others():
    labels = ["neg", "negative", "positive", "billing"]
    answer = [tok("Neg", -0.2, ("Neg", -0.2), ("Pos", -1.9), (" positive", -2.5)),
              tok("ative", -0.1, ("ative", -0.1), ("ated", -3.0))]
    neg, negative, positive, billing = chat_label_scores(answer, labels)
    assert negative == pytest.approx(-0.3)  # the label the model wrote: its tokens' log-probs
    assert neg == -math.inf  # 'Negative' does not complete 'neg'; no alternative ends it there
    assert positive == pytest.approx(-1.9)  # the best alternative that starts it; the rest taken as certain
    assert billing == -math.inf
    short = [tok("neg", -0.5, ("neg", -0.5))]  # the answer stops at 'neg'
    assert chat_label_scores(short, ["neg", "negative"]) == [pytest.approx(-0.5), -math.inf]


def test_chat_logprobs_over_http_pick_labels_and_flag_answers_without_one(httpserver, tmp_path):
    """The request asks for top log-probabilities; a reply whose alternatives hold no label is unparsed."""
    bodies = []

    def answer(request):
        bodies.append(request.get_json())
        first = [("Positive", -0.1), ("Negative", -2.4)] if len(bodies) == 1 else [("Maybe", -0.2)]
        content = [{"token": first[0][0], "logprob": first[0][1], "bytes": None,
                    "top_logprobs": [{"token": t, "logprob": lp, "bytes": None} for t, lp in first]}]
        return Response(json.dumps(chat_reply(first[0][0]) | {"choices": [
            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": first[0][0]},
             "logprobs": {"content": content}}]}), content_type="application/json")

    httpserver.expect_request("/v1/chat/completions").respond_with_handler(answer)
    cfg = ModelConfig(base_url=httpserver.url_for("/v1"), model="stub", scoring="chat_logprobs", concurrency=1)
    backend = HttpBackend("stub", cfg, Store(tmp_path / "s"), ChatFormat(None))
    assert backend.capabilities().best_method() == "chat_logprobs"
    first, second = backend.score_labels([("system", "Classify.")], [[("user", "good")], [("user", "hm")]],
                                         ["negative", "positive"], "chat_logprobs")
    assert bodies[0]["logprobs"] is True and bodies[0]["top_logprobs"] == 20 and bodies[0]["temperature"] == 0
    assert first.prediction == "positive" and first.label_logprobs == [pytest.approx(-2.4), pytest.approx(-0.1)]
    assert second.unparsed and second.prediction == "" and second.label_logprobs == [-math.inf, -math.inf]


# ---- log-probabilities over HTTP equal local scores ----------------------------------------------

@pytest.fixture(scope="module")
def lm():
    from tunewise.models.lm import LanguageModel
    from tunewise.models.load import load_model

    model, tokenizer = load_model("smollm2-135m", dtype="float32")
    return LanguageModel(model, tokenizer, "smollm2-135m")


def test_echo_logprobs_over_http_equal_local_label_scores(lm, tmp_path):
    from servers import EchoServer

    labels = ["neg", "negative", "positive", "credit card payment declined"]
    shared = [("system", "Classify the text."), ("user", "great stuff"), ("assistant", "positive")]
    rests = [[("user", "The payment did not go through and I am upset.")], [("user", "lovely")]]
    local = lm.score_labels(shared, rests, labels)
    with EchoServer(lm) as server:
        cfg = ModelConfig(base_url=server.url, model="smollm2-135m", concurrency=2)
        backend = HttpBackend("echo", cfg, Store(tmp_path / "s"), ChatFormat(lm.tokenizer))
        assert backend.capabilities().best_method() == "likelihood"
        served = backend.score_labels(shared, rests, labels, "likelihood")
        for here, there in zip(local, served):
            assert there.label_logprobs == pytest.approx(here.label_logprobs, abs=1e-3)
            assert there.prediction == here.prediction and there.prompt_tokens > 0
        sent = server.requests
        again = HttpBackend("echo", cfg, Store(tmp_path / "s"), ChatFormat(lm.tokenizer))
        assert [s.label_logprobs for s in again.score_labels(shared, rests, labels)] == \
               [s.label_logprobs for s in served]
        assert server.requests == sent and all(s.cached for s in again.score_labels(shared, rests, labels))


TASK = TaskSpec(name="t", type="classification", labels=["negative", "positive"],
                instruction="Classify the sentiment.")
TRAIN = [Record(id=f"r{i}", messages=(("user", f"train {'bad' if i % 2 else 'good'} {i}"),),
                output="negative" if i % 2 else "positive") for i in range(12)]
TEST = [Record(id=f"t{i}", messages=(("user", f"test {'awful' if i % 2 else 'great'} {i}"),),
               output="negative" if i % 2 else "positive") for i in range(6)]


def bakeoff(tmp_path, specs, task=TASK, store=None):
    return run_bakeoff(specs, task=task, labels=task.labels, train=TRAIN, validation=[], test=TEST,
                       budget=BUDGETS["quick"], seed=0, run_dir=tmp_path / "run", store=store or Store(tmp_path / "s"),
                       data_key="k", progress=Progress(quiet=True))[0]


def test_a_served_candidate_scores_like_the_local_one_and_says_how(lm, tmp_path, monkeypatch):
    from servers import EchoServer

    from tunewise.strategies import base

    monkeypatch.setattr(base.ModelPool, "lm", lambda self, name: lm)  # the fp32 model the server also uses
    with EchoServer(lm) as server:
        task = TASK.model_copy(update={"models": {"echo": ModelConfig(base_url=server.url, model="smollm2-135m",
                                                                      input_per_mtok=1.0, output_per_mtok=2.0)}})
        specs = [CandidateSpec(name="zero_shot", strategy="zero_shot", options={"calibrate": False}),
                 CandidateSpec(name="zero_shot@echo", strategy="zero_shot", model="echo",
                               options={"calibrate": False})]
        local, served = bakeoff(tmp_path, specs, task)
    assert served.status == "ok", served.error
    assert served.predictions == local.predictions and served.scoring == local.scoring == "likelihood"
    assert any("full log-likelihood" in n and "echo+logprobs yes" in n for n in served.notes)
    assert served.api.requests == len(TEST) and served.api.input_per_mtok == 1.0 and local.api is None
    assert served.prompt_tokens_mean > 2 * local.prompt_tokens_mean  # one prompt per label, as billed


# ---- faults ---------------------------------------------------------------------------------------

def chat_reply(text="positive"):
    return {"id": "c", "object": "chat.completion", "created": 1, "model": "stub",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 40, "completion_tokens": 2, "total_tokens": 42}}


def script(httpserver, *steps):
    """Answer chat requests with `steps` in turn, the last one forever; returns the list of call times."""
    calls = []

    def handle(request):
        calls.append(time.perf_counter())
        step = steps[min(len(calls), len(steps)) - 1]
        return step if isinstance(step, Response) else step()

    httpserver.expect_request("/v1/chat/completions").respond_with_handler(handle)
    return calls


def ok():
    return Response(json.dumps(chat_reply()), content_type="application/json")


def endpoint(httpserver, tmp_path, **kw):
    cfg = ModelConfig(base_url=httpserver.url_for("/v1"), model="stub", scoring="generate",
                      **({"max_retries": 2, "timeout_s": 2.0} | kw))
    return Endpoint("stub", cfg, Store(tmp_path / "s"))


BODY = {"model": "stub", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "temperature": 0}


def test_429_is_retried_after_retry_after(httpserver, tmp_path):
    calls = script(httpserver, Response("slow down", status=429, headers={"Retry-After": "0.4"}), ok)
    reply = endpoint(httpserver, tmp_path).send_all([("chat", BODY)])[0]
    assert reply.retries == 1 and calls[1] - calls[0] >= 0.35 and reply.seconds >= 0.35


def test_500_is_retried_then_fails_for_good_naming_the_retries(httpserver, tmp_path):
    script(httpserver, Response("boom", status=500), ok)
    assert endpoint(httpserver, tmp_path).send_all([("chat", BODY)])[0].retries == 1
    httpserver.clear()
    calls = script(httpserver, Response("boom", status=500))
    with pytest.raises(EndpointError, match="HTTP 500.*after 2 retries"):
        endpoint(httpserver, tmp_path).send("chat", BODY)
    assert len(calls) == 3


def test_a_timeout_is_retried(httpserver, tmp_path):
    def slow():
        time.sleep(1.0)
        return ok()

    script(httpserver, slow, ok)
    reply = endpoint(httpserver, tmp_path, timeout_s=0.3).send("chat", BODY)
    assert reply.retries == 1
    httpserver.clear()
    script(httpserver, slow)
    with pytest.raises(EndpointError, match="timed out after 0.3 s after 1 retries"):
        endpoint(httpserver, tmp_path, timeout_s=0.3, max_retries=1).send("chat", BODY)


def test_malformed_json_and_empty_choices_are_asked_again_then_fail(httpserver, tmp_path):
    script(httpserver, Response("{not json", content_type="application/json"), ok)
    assert endpoint(httpserver, tmp_path).send("chat", BODY).retries == 1
    httpserver.clear()
    script(httpserver, Response("{not json", content_type="application/json"))
    with pytest.raises(EndpointError, match="not valid JSON after 1 retries"):
        endpoint(httpserver, tmp_path).send("chat", BODY)
    httpserver.clear()
    calls = script(httpserver, Response(json.dumps(chat_reply() | {"choices": []}), content_type="application/json"))
    with pytest.raises(EndpointError, match="no choices after 1 retries"):
        endpoint(httpserver, tmp_path).send("chat", BODY)
    assert len(calls) == 2


def stub_task(httpserver, **kw):
    cfg = ModelConfig(base_url=httpserver.url_for("/v1"), model="stub", scoring="generate",
                      **({"max_retries": 2, "timeout_s": 2.0, "concurrency": 3} | kw))
    return TASK.model_copy(update={"models": {"stub": cfg}})


def test_retries_and_unparsed_answers_are_counted_in_the_candidate(httpserver, tmp_path):
    answers = iter(["Positive.", Response("busy", status=503), "I cannot tell", "negative", "negative", "positive",
                    "positive"] * 3)

    def handle(request):
        step = next(answers)
        return step if isinstance(step, Response) else Response(json.dumps(chat_reply(step)),
                                                                content_type="application/json")

    httpserver.expect_request("/v1/chat/completions").respond_with_handler(handle)
    spec = CandidateSpec(name="zero_shot@stub", strategy="zero_shot", model="stub")
    c = bakeoff(tmp_path, [spec], stub_task(httpserver, input_per_mtok=0.5, output_per_mtok=1.5))[0]
    assert c.status == "ok", c.error
    assert c.scoring == "generate" and c.unparsed == 1 and "" in c.predictions
    assert c.api.requests == len(TEST) and c.api.retries == 1 and c.api.cached == 0
    assert any(n.startswith("answers: 1 of 6 (16.7%)") and "'I cannot tell'" in n for n in c.notes)
    assert any(n.startswith("HTTP: 6 test requests") and "1 retries" in n for n in c.notes)
    assert c.prompt_tokens_mean == 40 and c.output_tokens_mean == 2
    assert c.latency_ms["p95"] >= c.latency_ms["p50"] > 0
    from tunewise.evidence.measure import cost_table

    row = cost_table([c], TASK.constraints.prices, 1000, "accuracy", on_gpu=False).candidates[0]
    assert row.hosting == "api" and row.per_1k_requests == pytest.approx(1000 * (40 * 0.5 + 2 * 1.5) / 1e6)


def test_an_endpoint_that_keeps_failing_fails_its_candidate_and_the_run_goes_on(httpserver, tmp_path):
    script(httpserver, Response("down", status=502))
    specs = [CandidateSpec(name="majority", strategy="majority"),
             CandidateSpec(name="zero_shot@stub", strategy="zero_shot", model="stub")]
    majority, served = bakeoff(tmp_path, specs, stub_task(httpserver, max_retries=1))
    assert majority.status == "ok"
    assert served.status == "failed" and "HTTP 502" in served.error and "after 1 retries" in served.error


def test_a_killed_run_resumes_from_cached_responses(httpserver, tmp_path):
    calls = script(httpserver, ok)
    store = Store(tmp_path / "store")
    spec = CandidateSpec(name="zero_shot@stub", strategy="zero_shot", model="stub")
    first = bakeoff(tmp_path, [spec], stub_task(httpserver), store)[0]
    for key in store.keys("candidate"):  # as if killed before its first chunk of predictions was stored
        store.delete("candidate", key)
    paid = len(calls)
    second = bakeoff(tmp_path, [spec], stub_task(httpserver), store)[0]
    assert len(calls) == paid and second.api.cached == len(TEST)
    assert second.predictions == first.predictions and second.latency_ms == first.latency_ms


def test_the_api_key_never_reaches_results_reports_or_logs(httpserver, tmp_path, monkeypatch, capsys, caplog):
    from tunewise.data.prepare import prepare
    from tunewise.runner import RunOptions, run

    def refuse(request):  # servers that echo the key back in their error message exist
        return Response(json.dumps({"error": {"message": f"Incorrect API key: {request.headers.get('Authorization')}"}}),
                        status=401, content_type="application/json")

    httpserver.expect_request("/v1/chat/completions").respond_with_handler(refuse)
    monkeypatch.setenv("STUB_KEY", SECRET)
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(json.dumps({"text": r.messages[0][1], "label": r.output}) for r in TRAIN + TEST))
    task = tmp_path / "task.yaml"
    task.write_text(f"labels: [negative, positive]\nmodels:\n  stub:\n    base_url: {httpserver.url_for('/v1')}\n"
                    "    scoring: generate\n    api_key_env: STUB_KEY\n")
    caplog.set_level("DEBUG")
    prep = prepare(str(data), task_file=str(task))
    opts = RunOptions(budget=BUDGETS["quick"], out_dir=tmp_path / "run", store=Store(tmp_path / ".tunewise"),
                      prompt_models=["stub"], candidates=["majority", "zero_shot@stub"], learning_curve=False,
                      forgetting=False)
    results = run(prep, opts, Progress())  # the CLI's run without its data profile (slow, and key-free)
    served = results.candidate("zero_shot@stub")
    assert served.status == "failed" and "HTTP 401" in served.error and "***" in served.error
    written = [p.read_text() for p in (tmp_path / "run").rglob("*") if p.is_file()]
    assert len(written) >= 4  # results.json, report.html, report.md, error.txt
    stored = [p.read_bytes().decode("latin-1") for p in (tmp_path / ".tunewise").rglob("*") if p.is_file()]
    logs = capsys.readouterr().err + caplog.text
    assert "HTTP 401" in logs
    for text in written + stored + [logs]:
        assert SECRET not in text
