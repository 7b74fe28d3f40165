"""The loop, as a user runs it (issue 14): a `tunewise run` fine-tunes a LoRA; `tunewise serve RUN --candidate
lora` serves it; a second `tunewise run` on the same data, split and seed prompts it over HTTP
(`--prompt-model http://127.0.0.1:PORT/v1#smollm2-135m`) and its zero-shot candidate reproduces the LoRA's
predictions and scores.

Why they can agree exactly: the LoRA was trained and scored on the zero-shot prompt (the task's system turn,
then the input); the served name `smollm2-135m` is a local model, so tunewise renders that prompt with its
tokenizer and sends token ids to `/v1/completions` (echo + logprobs); and the task file sets `calibrate:
false` for that model: left to choose on the validation slice, contextual calibration was chosen here
(0.75 against 0.50 on 8 validation records), which asks the served LoRA another question than the one it
was trained and scored on. Tiny data (24 training and 8 test reviews of the demo, quick budget: 2 LoRA steps), the
base-model perplexity of the profile stubbed; the server is started and stopped here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from servers import TunewiseServe
from tunewise.api import load_run
from tunewise.cli import app
from tunewise.data.demo import load_demo
from tunewise.data import split
from tunewise.strategies.saved import read_check

SERVED = "smollm2-135m"  # `tunewise serve` answers to the candidate's name and to its base model's
OVER_HTTP = f"zero_shot@{SERVED}"


@pytest.fixture(autouse=True)
def fast_profile(monkeypatch):
    """The real profile without the base-model perplexity (minutes on a loaded CPU)."""
    import tunewise.data.profile as profile_module

    monkeypatch.setattr(profile_module, "measure_domain_gap", lambda train, **kw: {"stubbed": True})


def write_tiny_demo(folder: Path) -> list[str]:
    """train.jsonl, test.jsonl and task.yaml from the demo's reviews; the arguments of `tunewise run` for them."""
    task, train, test = load_demo("sentiment")
    rows = {"train": split.subsample(train.records, 24, seed=0, stratified=True),
            "test": split.test_order(test.records, 8, seed=0, stratified=True)[:8]}
    for name, records in rows.items():
        (folder / f"{name}.jsonl").write_text("".join(json.dumps({"text": r.text, "label": r.output}) + "\n"
                                                      for r in records))
    (folder / "task.yaml").write_text(f"name: tiny sentiment\ntype: classification\nlabels: {task.labels}\n"
                                      f"instruction: {task.instruction}\n"
                                      f"models:\n  {SERVED}: {{calibrate: false}}  # served fine-tuned: as trained\n")
    return ["train.jsonl", "--test", "test.jsonl", "--task", "task.yaml", "--budget", "quick", "--no-curve",
            "--no-forgetting", "--seed", "0"]


def tunewise(*args: str):
    done = CliRunner().invoke(app, list(args))
    assert done.exit_code == 0, done.output + repr(done.exception)
    return done


def test_tunewise_run_against_the_served_lora_reproduces_its_scores(tmp_path):
    data = write_tiny_demo(tmp_path)
    tunewise("run", *data, "--candidates", "lora", "--out", "first")
    with TunewiseServe(tmp_path / "first", "lora", tmp_path / "serve.log") as server:
        tunewise("run", *data, "--prompt-model", f"{server.url}#{SERVED}", "--candidates", OVER_HTTP,
                 "--out", "loop")
    lora, served = load_run(tmp_path / "first").candidate("lora"), load_run(tmp_path / "loop").candidate(OVER_HTTP)
    assert lora.status == "ok" and served.status == "ok", served.error
    assert served.scoring == "likelihood" and any("echo+logprobs yes" in n for n in served.notes), served.notes
    assert f"contextual calibration off: set by model '{SERVED}' (calibrate: false)" in served.notes
    # the same test records, in the same order, answered the same way (check.jsonl: the run's predictions)
    (lora_records, lora_predictions), (served_records, served_predictions) = (
        read_check(tmp_path / run / "candidates" / name / "saved") for run, name in (("first", "lora"),
                                                                                      ("loop", OVER_HTTP)))
    assert [r.id for r in served_records] == [r.id for r in lora_records] and len(lora_records) == 8
    assert served_predictions == lora_predictions
    assert served.test_records == lora.test_records == 8
    assert served.metrics == lora.metrics and served.per_class == lora.per_class
    assert served.confusion == lora.confusion
