"""`tunewise serve`: the official `openai` client against a run's saved candidates over loopback.
Each family answers what it predicted in the run; streaming; 4xx on oversized and malformed requests;
401 without the key; `/v1/completions` echo + logprobs is what tunewise's HTTP backend needs to score
labels by likelihood against it (the loop with `tunewise run --prompt-model`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import openai
import pytest

from servers import AppServer, free_port
from tiny_run import FAMILIES
from tunewise.deploy.server import create_app
from tunewise.strategies.saved import load_candidate

KEY = "test-key-123"


def serving(tiny_run, name: str, **kw):
    folder = tiny_run.run_dir / "candidates" / name / "saved"
    return AppServer(create_app(load_candidate(folder, device="cpu"), **kw))


def client(url: str, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=60)


def chat(c: openai.OpenAI, model: str, text: str, **kw):
    return c.chat.completions.create(model=model, messages=[{"role": "user", "content": text}], **kw)


@pytest.mark.parametrize("name", FAMILIES)
def test_each_family_answers_what_it_predicted_in_the_run(tiny_run, name):
    expected = tiny_run.results.candidate(name).predictions
    with serving(tiny_run, name) as server:
        c = client(server.url)
        assert [m.id for m in c.models.list().data][0] == name
        answers = [chat(c, name, r.text).choices[0].message.content for r in tiny_run.test]
    assert answers == expected


def test_streaming_gives_the_same_answer(tiny_run):
    expected = tiny_run.results.candidate("lora").predictions[:3]
    with serving(tiny_run, "lora") as server:
        c = client(server.url)
        streamed = ["".join(chunk.choices[0].delta.content or "" for chunk in chat(c, "lora", r.text, stream=True)
                            if chunk.choices) for r in tiny_run.test[:3]]
    assert streamed == expected


def test_bad_requests_get_openai_style_4xx(tiny_run):
    with serving(tiny_run, "classical", max_body_bytes=5_000, max_tokens=64) as server:
        c = client(server.url)
        with pytest.raises(openai.APIStatusError) as too_big:
            chat(c, "classical", "x" * 10_000)
        assert too_big.value.status_code == 413 and "over the limit" in too_big.value.message
        with pytest.raises(openai.BadRequestError, match="max_tokens 100 is over"):
            chat(c, "classical", "fine", max_tokens=100)
        with pytest.raises(openai.NotFoundError, match="not served here"):
            chat(c, "gpt-4o", "fine")
        with pytest.raises(openai.BadRequestError, match="not a language model"):
            c.completions.create(model="classical", prompt="hello", max_tokens=1)
        with pytest.raises(openai.BadRequestError, match="last message must be the user"):
            c.chat.completions.create(model="classical", messages=[{"role": "assistant", "content": "hi"}])
        for raw in (b"{not json", b'{"model": "classical"}', b'{"model": "classical", "messages": "hi"}'):
            request = urllib.request.Request(server.url + "/chat/completions", data=raw,
                                             headers={"Content-Type": "application/json"})
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(request, timeout=30)
            assert err.value.code == 400
            assert json.loads(err.value.read())["error"]["type"] == "invalid_request_error"


def test_a_key_is_required_when_set(tiny_run):
    with serving(tiny_run, "majority", api_key=KEY) as server:
        with pytest.raises(openai.AuthenticationError):
            chat(client(server.url, key="wrong"), "majority", "fine")
        assert chat(client(server.url), "majority", "fine").choices[0].message.content
        health = json.loads(urllib.request.urlopen(server.url.removesuffix("/v1") + "/health", timeout=10).read())
        assert health["status"] == "ok"  # /health needs no key


def test_prompting_the_served_lora_over_http_reproduces_its_run(tiny_run):
    """The loop with the HTTP backend: a zero-shot candidate prompting the served LoRA through
    /v1/completions echo + logprobs (as `tunewise run --prompt-model http://.../v1#smollm2-135m` does;
    the served base-model name gives tunewise the local tokenizer, so prompts go as token ids) is
    scored in a bake-off on the run's test records and predicts what the LoRA predicted in the run."""
    from tunewise.bakeoff import run_bakeoff
    from tunewise.config import Budget, ModelConfig, TaskSpec
    from tunewise.store import Store
    from tunewise.strategies import CandidateSpec
    from tunewise.ui import Progress

    lora = tiny_run.results.candidate("lora")
    labels = tiny_run.results.task.labels
    with serving(tiny_run, "lora") as server:
        task = TaskSpec.model_validate(tiny_run.results.task.model_dump(exclude={"labels", "models"})
                                       | {"labels": labels, "models": {"served": ModelConfig(
                                           base_url=server.url, model="smollm2-135m")}})
        spec = CandidateSpec(name="zero_shot@served", strategy="zero_shot", model="served",
                             options={"calibrate": False})
        budget = Budget.model_validate(tiny_run.results.budget)
        (served,), _ = run_bakeoff([spec], task=task, labels=labels, train=[], validation=[], test=tiny_run.test,
                                   budget=budget, seed=0, run_dir=tiny_run.run_dir.parent / "loop",
                                   store=Store(tiny_run.run_dir.parent / ".tunewise-loop"), data_key="loop",
                                   progress=Progress(quiet=True))
        text = client(server.url).completions.create(model="lora", prompt="The review says", max_tokens=4,
                                                     echo=True, logprobs=2)
    assert served.status == "ok", served.error
    assert served.scoring == "likelihood" and any("echo+logprobs yes" in n for n in served.notes)
    assert served.predictions == lora.predictions
    assert served.metrics["accuracy"].value == lora.metrics["accuracy"].value
    lp = text.choices[0].logprobs
    assert lp.token_logprobs[0] is None and len(lp.tokens) == len(lp.token_logprobs) == len(lp.text_offset)
    assert text.choices[0].text.startswith("The review says") and len(lp.top_logprobs[1]) == 2


def test_the_cli_serves_prints_the_curl_command_and_needs_its_key(tiny_run, tmp_path):
    port = free_port()
    cmd = [sys.executable, "-m", "tunewise.cli", "serve", str(tiny_run.run_dir), "--candidate", "classical",
           "--port", str(port), "--api-key-env", "SERVE_TEST_KEY"]
    log = tmp_path / "serve.log"
    env = os.environ | {"SERVE_TEST_KEY": KEY, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.5)
        printed = log.read_text()
        assert f"curl -s http://127.0.0.1:{port}/v1/chat/completions" in printed
        assert 'Authorization: Bearer $SERVE_TEST_KEY' in printed and KEY not in printed
        url = f"http://127.0.0.1:{port}/v1"
        with pytest.raises(openai.AuthenticationError):
            chat(client(url, key="nope"), "classical", "fine")
        assert chat(client(url), "classical", "fine").choices[0].message.content in tiny_run.results.task.labels
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_serve_errors_are_one_line(tiny_run, tmp_path):
    from typer.testing import CliRunner

    from tunewise.cli import app

    runner = CliRunner()
    missing = runner.invoke(app, ["serve", str(tiny_run.run_dir), "--candidate", "nope"])
    assert missing.exit_code == 2 and "--candidate 'nope': is not in this run" in missing.output
    nokey = runner.invoke(app, ["serve", str(tiny_run.run_dir), "--api-key-env", "SURELY_UNSET_VAR_X"])
    assert nokey.exit_code == 2 and "SURELY_UNSET_VAR_X" in nokey.output
    empty = runner.invoke(app, ["serve", str(tmp_path)])
    assert empty.exit_code == 2 and "no results.json" in empty.output
