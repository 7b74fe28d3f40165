"""Integration, no mocks: `transformers serve` serves the shipped SmolLM2 from a local folder on 127.0.0.1,
`tunewise run` prompts it over HTTP next to the same model run locally, both by generate and parse, and
their predictions on the same test records must agree."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tunewise.cli import app
from tunewise.store import Store

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(base URL, served model name) of a `transformers serve` process, stopped after the module."""
    from servers import TransformersServe

    from tunewise.models.load import cpu_has_bf16, model_folder

    folder = model_folder("smollm2-135m")
    server = TransformersServe(folder, tmp_path_factory.mktemp("serve") / "serve.log",
                               "bfloat16" if cpu_has_bf16() else "float32")
    if not server.binary.is_file():
        pytest.skip("transformers CLI not installed (pip install 'transformers[serving]')")
    with server:
        yield server.url, folder


def task_file(tmp_path, url, folder) -> Path:
    task = yaml.safe_load((EXAMPLES / "tickets.yaml").read_text())
    task["models"] = {"served": {"base_url": url, "model": folder, "input_per_mtok": 0.2, "output_per_mtok": 0.8,
                                 "concurrency": 2},
                      "local": {"model": "smollm2-135m", "scoring": "generate"}}
    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump(task))
    return path


def check_agreement(results, served, local) -> None:
    assert served.status == local.status == "ok", (served.error, local.error)
    assert served.scoring == local.scoring == "generate"  # transformers serve returns no log-probabilities
    assert any("echo+logprobs no, chat logprobs no" in n for n in served.notes)  # found by probing
    assert served.answers == local.answers and all(served.answers)  # greedy text, token for token
    assert served.predictions == local.predictions and served.unparsed == local.unparsed
    assert served.api.requests == results.split.test_scored and local.api is None
    assert served.latency_ms["p95"] > 0 and served.prompt_tokens_mean > 0
    api_cost = next(c for c in results.cost.candidates if c.candidate == served.name)
    assert api_cost.hosting == "api" and api_cost.per_1k_requests == pytest.approx(
        1000 * (served.prompt_tokens_mean * 0.2 + served.output_tokens_mean * 0.8) / 1e6)


def test_served_and_local_generate_and_parse_agree(served, tmp_path):
    """The `tunewise run` pipeline (runner.run: bake-off, cost, verdict, report) on 4 test tickets; the CLI
    adds only the data profile, whose perplexities cost minutes on shared CPUs (see the slow test below)."""
    from tunewise.config import BUDGETS
    from tunewise.data.prepare import prepare
    from tunewise.runner import RunOptions, run
    from tunewise.ui import Progress

    url, folder = served
    data = tmp_path / "tickets.jsonl"
    data.write_text("\n".join((EXAMPLES / "tickets.jsonl").read_text().splitlines()[:20]) + "\n")
    prep = prepare(str(data), task_file=str(task_file(tmp_path, url, folder)))
    opts = RunOptions(budget=BUDGETS["quick"], out_dir=tmp_path / "run", store=Store(tmp_path / ".tunewise"),
                      prompt_models=["served", "local"], candidates=["zero_shot@served", "zero_shot@local"],
                      learning_curve=False, forgetting=False)
    results = run(prep, opts, Progress(quiet=True))
    check_agreement(results, results.candidate("zero_shot@served"), results.candidate("zero_shot@local"))
    row = next(line for line in (tmp_path / "run" / "report.md").read_text().splitlines()
               if line.startswith("| zero_shot@served "))
    assert "generate (HTTP)" in row and " ms" in row and "$" in row


@pytest.mark.slow
def test_tunewise_run_cli_prompts_a_served_model(served, tmp_path):
    """`tunewise run` itself, as the README shows it (with the data profile: minutes on 2 shared cores)."""
    from tunewise.results import CandidateResult, RunResults

    url, folder = served
    result = CliRunner().invoke(app, [
        "run", str(EXAMPLES / "tickets.jsonl"), "--task", str(task_file(tmp_path, url, folder)), "--out", "run",
        "--prompt-model", "served", "--prompt-model", "local", "--candidates", "zero_shot@served,zero_shot@local",
        "--budget", "quick", "--no-curve", "--no-forgetting"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    results = RunResults.model_validate(json.loads((tmp_path / "run" / "results.json").read_text()))
    store = Store(".tunewise")
    stored = {c.name: c for c in (CandidateResult.model_validate(store.get("candidate", k))
                                  for k in store.keys("candidate"))}
    check_agreement(results, stored["zero_shot@served"], stored["zero_shot@local"])
