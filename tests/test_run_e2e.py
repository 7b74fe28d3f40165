"""End to end on the shipped model: `tunewise run` on a small task file, then the report rebuilt
from the store, then a re-run that reuses every finished candidate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tunewise.cli import app
from tunewise.config import BUDGETS

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SIX = {"majority", "classical", "zero_shot", "few_shot", "knn_few_shot", "lora"}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    import os

    folder = tmp_path_factory.mktemp("e2e")
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        result = CliRunner().invoke(app, ["run", str(EXAMPLES / "tickets.jsonl"), "--task",
                                          str(EXAMPLES / "tickets.yaml"), "--budget", "quick", "--out", "run1"])
    finally:
        os.chdir(cwd)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return folder, result


def test_results_hold_every_candidate_with_intervals(first_run):
    folder, _ = first_run
    results = json.loads((folder / "run1" / "results.json").read_text())
    names = {c["name"] for c in results["candidates"]}
    assert SIX <= names
    for c in results["candidates"]:
        if c["name"] in SIX:
            assert c["status"] == "ok", c["error"]
            acc = c["metrics"]["accuracy"]
            assert acc["ci_low"] <= acc["value"] <= acc["ci_high"]
            assert c["latency_ms"]["p95"] >= c["latency_ms"]["p50"] >= 0
    lora = next(c for c in results["candidates"] if c["name"] == "lora")
    assert lora["train_seconds"] > 0 and lora["train_tokens_per_s"] > 0 and lora["losses"]
    assert results["budget"]["name"] == "quick" and results["budget"]["test_first"] == 100
    assert results["comparisons"] and all(0 <= c["p_value"] <= 1 for c in results["comparisons"])


def test_evidence_and_verdict_are_in_the_results(first_run):
    folder, _ = first_run
    results = json.loads((folder / "run1" / "results.json").read_text())
    curve = results["learning_curve"]
    assert [p["fraction"] for p in curve["points"]] == [0.125, 0.25, 0.5, 1.0]
    assert curve["points"][0]["n"] < curve["points"][-1]["n"]
    assert results["forgetting"]["items"] == BUDGETS["quick"].probe_limit
    assert results["forgetting"]["models"][0]["candidate"] == "lora"
    assert {"profile", "bakeoff", "learning_curve", "forgetting", "freshness", "history"} <= set(results["stage_seconds"])
    estimate = results["compute"][0]
    assert estimate["candidate"] == "lora" and estimate["flops"] > 0 and estimate["measured_seconds"] > 0
    assert results["cost"]["candidates"] and results["cost"]["break_even"] is not None
    assert results["verdict"]["decision"] in {"PROMPT", "RETRIEVAL", "FINE_TUNE", "SMALL_MODEL", "CLASSICAL",
                                              "COLLECT_MORE_DATA", "INSUFFICIENT_EVIDENCE"}
    assert results["verdict"]["reasons"]
    html = (folder / "run1" / "report.html").read_text()
    assert results["verdict"]["decision"] in html and "plot-learning-curve" in html
    assert (folder / "run1" / "candidates" / "lora" / "adapter" / "adapter_config.json").is_file()
    # quick trains one epoch: the curve's points below 1 are the LoRA run's decay branches
    for p in curve["points"][:-1]:
        assert (folder / "run1" / "candidates" / "lora" / "curve" / f"n{p['n']}" / "adapter_config.json").is_file()
    assert {f"lora@{p['fraction']:g}" for p in curve["points"][:-1]} <= {
        d.name for d in (folder / "run1" / "curve").iterdir()}


def test_report_is_rebuilt_from_the_store(first_run, monkeypatch):
    folder, _ = first_run
    monkeypatch.chdir(folder)
    (folder / "run1" / "report.html").unlink()
    import tunewise.runner

    monkeypatch.setattr(tunewise.runner, "run", lambda *a, **k: pytest.fail("recomputed"))
    result = CliRunner().invoke(app, ["report", "run1"])
    assert result.exit_code == 0, result.output
    assert (folder / "run1" / "report.html").is_file()


def test_a_rerun_reuses_finished_candidates(first_run, monkeypatch):
    folder, _ = first_run
    monkeypatch.chdir(folder)
    from tunewise.strategies import finetune

    monkeypatch.setattr(finetune.FineTune, "fit", lambda self, ctx: pytest.fail("retrained"))
    result = CliRunner().invoke(app, ["run", str(EXAMPLES / "tickets.jsonl"), "--task",
                                      str(EXAMPLES / "tickets.yaml"), "--budget", "quick", "--out", "run2"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert result.output.count("reused from the store") >= 6
    first = json.loads((folder / "run1" / "results.json").read_text())
    second = json.loads((folder / "run2" / "results.json").read_text())
    assert [c["metrics"] for c in first["candidates"]] == [c["metrics"] for c in second["candidates"]]
