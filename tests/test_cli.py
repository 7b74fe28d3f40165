"""The command line: version and help, one-line `error:` and exit code 2 for every kind of bad input
(never a traceback), --skip-invalid going on, and `advise` on the shipped examples."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tunewise import __version__
from tunewise.cli import app

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "advise"
TUNEWISE = Path(sys.executable).with_name("tunewise")

POS = ["great product, works well", "I love it", "excellent service", "very happy with this", "fantastic quality",
       "would buy again"]
NEG = ["terrible, broke at once", "awful support", "waste of money", "very disappointed", "poor quality",
       "never again"]


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def error_line(result) -> str:
    """The single `error:` line of a failed command; no traceback anywhere."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    return lines[0]


def mixed_jsonl(path: Path) -> Path:
    """12 valid text/label records (2 labels) and 2 bad ones, on lines 4 and 9."""
    lines = []
    for p, n in zip(POS, NEG):
        lines += [json.dumps({"text": p, "label": "pos"}), json.dumps({"text": n, "label": "neg"})]
    lines.insert(3, "{not json")
    lines.insert(8, json.dumps({"text": "  ", "label": "pos"}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def task_file(path: Path, text: str = "name: reviews\ntype: classification\nlabels: [pos, neg]\n") -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# -- version and help --------------------------------------------------------------------------------
def test_version_for_real():
    done = subprocess.run([str(TUNEWISE), "--version"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == f"tunewise {__version__}"


def test_help_lists_the_commands():
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("profile", "run", "report", "advise", "serve", "export"):
        assert command in result.output


# -- bad input: exit 2, one line, no traceback -------------------------------------------------------
def test_missing_data_file():
    assert "nope.jsonl: no such file" in error_line(invoke("profile", "nope.jsonl"))


def test_empty_data_file(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    assert "empty.jsonl: the file is empty" in error_line(invoke("profile", "empty.jsonl"))


def test_directory_as_data(tmp_path):
    (tmp_path / "folder").mkdir()
    assert "folder: is a directory" in error_line(invoke("profile", "folder"))


def test_malformed_jsonl_lists_every_bad_line(tmp_path):
    path = mixed_jsonl(tmp_path / "mixed.jsonl")
    result = invoke("profile", path.name, "--task", task_file(tmp_path / "t.yaml"))
    line = error_line(result)
    assert line.startswith("error: mixed.jsonl: 2 invalid record(s); first: line 4") and "--skip-invalid" in line
    assert "mixed.jsonl:4: malformed JSON" in result.output
    assert "mixed.jsonl:9 field 'text': empty text" in result.output


def test_unknown_budget():
    line = error_line(invoke("run", "--demo", "sentiment", "--budget", "huge"))
    assert "--budget 'huge'" in line and "quick" in line


def test_unknown_task_file_key_is_named(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"text": "a", "label": "x"}\n')
    task = task_file(tmp_path / "t.yaml", "type: classification\nlablels: [x, y]\n")
    line = error_line(invoke("profile", "d.jsonl", "--task", task.name))
    assert "t.yaml" in line and "'lablels'" in line


def test_missing_task_file(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"text": "a", "label": "x"}\n')
    assert "task file nothere.yaml" in error_line(invoke("profile", "d.jsonl", "--task", "nothere.yaml"))


def test_unknown_demo():
    assert "--demo 'nope'" in error_line(invoke("profile", "--demo", "nope"))


def test_neither_data_nor_demo():
    assert "DATA file or --demo" in error_line(invoke("profile"))


def test_report_on_a_folder_that_is_not_a_run(tmp_path):
    assert "not a run folder" in error_line(invoke("report", "somewhere"))


def test_bad_input_exit_code_for_real(tmp_path):
    done = subprocess.run([str(TUNEWISE), "profile", "nope.jsonl"], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == ["error: nope.jsonl: no such file (fix: check the path)"]


# -- --skip-invalid goes on --------------------------------------------------------------------------
def _check_skip_invalid_profile(stdout: str, stderr: str) -> dict:
    profile = json.loads(stdout)
    assert profile["records"]["train"] + profile["records"]["test"] == 12
    assert set(profile["labels"]["train"]) == {"pos", "neg"}
    assert profile["skipped"]["count"] == 2
    assert [r.split(":")[1].split()[0] for r in profile["skipped"]["records"]] == ["4", "9"]
    assert "skipped 2 invalid record(s)" in stderr and "mixed.jsonl:4" in stderr
    return profile


def test_skip_invalid_goes_on(tmp_path, monkeypatch):
    """In-process, with the base-model perplexity (minutes on a loaded CPU) stubbed; the tokenizer,
    MiniLM embeddings, store and JSON output are real. The full command runs in the slow test below."""
    import tunewise.data.profile as profile_module

    monkeypatch.setattr(profile_module, "measure_domain_gap", lambda train, **kw: {"stubbed": True})
    mixed_jsonl(tmp_path / "mixed.jsonl")
    result = invoke("profile", "mixed.jsonl", "--task", task_file(tmp_path / "t.yaml"), "--skip-invalid", "--json")
    assert result.exit_code == 0, (result.output, result.exception)
    profile = _check_skip_invalid_profile(result.stdout, result.stderr)
    assert profile["domain_gap"] == {"stubbed": True}
    assert (tmp_path / ".tunewise").is_dir()  # the store lands in the test's own folder


@pytest.mark.slow
def test_skip_invalid_goes_on_for_real(tmp_path):
    mixed_jsonl(tmp_path / "mixed.jsonl")
    task_file(tmp_path / "t.yaml")
    done = subprocess.run([str(TUNEWISE), "profile", "mixed.jsonl", "--task", "t.yaml", "--skip-invalid", "--json"],
                          capture_output=True, text=True, timeout=900, cwd=tmp_path,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    profile = _check_skip_invalid_profile(done.stdout, done.stderr)
    assert profile["domain_gap"]["ratio"] > 0


# -- advise ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, decision", [("legal-contracts", "FINE_TUNE"), ("faq-shipping", "PROMPT"),
                                            ("news-bot", "RETRIEVAL")])
def test_advise_examples(name, decision):
    answers = EXAMPLES / f"{name}.yaml"
    as_json = invoke("advise", "--answers", answers, "--json")
    assert as_json.exit_code == 0, as_json.output
    verdict = json.loads(as_json.stdout)
    assert verdict["decision"] == decision and verdict["summary"] and verdict["reasons"]
    shown = invoke("advise", "--answers", answers)
    assert shown.exit_code == 0 and decision in shown.output


def test_advise_without_answers_and_no_terminal():
    line = error_line(invoke("advise"))
    assert "no --answers file and no terminal" in line and "--answers FILE" in line


def test_advise_with_a_missing_answers_file():
    assert "answers file nope.yaml" in error_line(invoke("advise", "--answers", "nope.yaml"))
