"""The README's generation example: `tunewise run` on a JSONL of questions with a corpus folder,
with a tiny line-up (zero-shot and rag): answers scored, retrieval recall, the time split, a verdict."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from tunewise.cli import app

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_generation_example_with_a_corpus_folder_runs_end_to_end(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["run", str(EXAMPLES / "service_qa.jsonl"), "--task",
                                      str(EXAMPLES / "service_qa.yaml"), "--budget", "quick", "--candidates",
                                      "zero_shot,rag", "--no-curve", "--no-forgetting", "--out", "run"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    r = json.loads((tmp_path / "run" / "results.json").read_text())
    by = {c["name"]: c for c in r["candidates"]}
    assert by["zero_shot"]["status"] == by["rag"]["status"] == "ok", (by["zero_shot"]["error"], by["rag"]["error"])
    assert {"exact_match", "token_f1", "rouge_l"} <= set(by["rag"]["metrics"])
    assert by["rag"]["family"] == "retrieval" and by["rag"]["retrieval_recall"]["value"] > 0.5
    fr = r["freshness"]
    assert {row["candidate"] for row in fr["rows"]} == {"zero_shot", "rag"}
    assert all(v == 0 for v in fr["leakage"].values()) and "rag@frozen documents after the cut-off" in fr["leakage"]
    assert fr["frozen"] and fr["frozen"][0]["candidate"] == "rag"
    assert r["verdict"]["decision"]
    md = (tmp_path / "run" / "report.md").read_text()
    assert "Knowledge ageing (time split)" in md and "frozen corpus" in md
    assert "## Retrieval recall@k" in md and "| rag | 2 |" in md  # the example's top_k
