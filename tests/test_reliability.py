"""Issue 15, one regression test per case: user errors are one line with exit 2 and come before any
work, a split that cannot show anything is refused with its numbers, the profile cache never reports
another file's records, over-long records are refused, stage times add up over resumed invocations,
and report files are written atomically, results.json first."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from test_cli import error_line, invoke

QUICK = ["--budget", "quick", "--no-curve", "--no-forgetting", "--candidates", "majority,classical"]
TOPICS = {"a": "invoice refund charge", "b": "crash error screen", "c": "hiring office visit",
          "d": "weather sunny rain"}


def dataset(path: Path, counts: dict[str, int], start: int = 0) -> Path:
    """text/label JSONL, `counts[label]` distinct records per label."""
    rows = [{"text": f"{TOPICS.get(label, label)} number {start + i}", "label": label}
            for label, n in counts.items() for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def no_profile(monkeypatch):
    """The profile is the first slow stage: every error here must come before it."""
    import tunewise.data.profile as profile_module

    monkeypatch.setattr(profile_module, "profile", lambda *a, **k: pytest.fail("profiling started before the error"))


@pytest.fixture
def fast_profile(monkeypatch):
    """The real profile without the base-model perplexity (minutes on a loaded CPU)."""
    import tunewise.data.profile as profile_module

    monkeypatch.setattr(profile_module, "measure_domain_gap", lambda train, **kw: {"stubbed": True})


# -- 2. test labels absent from train ----------------------------------------------------------------
def test_test_labels_absent_from_train_stop_the_run(tmp_path, no_profile):
    dataset(tmp_path / "train.jsonl", {"a": 6, "b": 6})
    dataset(tmp_path / "test.jsonl", {"a": 3, "b": 3, "c": 2, "d": 1}, start=100)
    line = error_line(invoke("run", "train.jsonl", "--test", "test.jsonl", *QUICK))
    assert "2 test label(s) never occur in train ('c': 2, 'd': 1; 3 of 9 test records)" in line
    assert "fix:" in line and "--allow-unseen-labels" in line


# -- 3. splits too small to compare options on -------------------------------------------------------
def test_single_class_training_data_with_declared_labels_is_refused(tmp_path, no_profile):
    dataset(tmp_path / "d.jsonl", {"a": 20})
    (tmp_path / "t.yaml").write_text("labels: [a, b]\n")
    line = error_line(invoke("run", "d.jsonl", "--task", "t.yaml", *QUICK))
    assert "train has 1 class(es) with at least 4 records (16 records: 'a': 16); need at least 2" in line
    assert "test has 1 class(es) with at least 2 records" in line and "fix: add records" in line


def test_a_three_record_training_set_is_refused(tmp_path, no_profile):
    dataset(tmp_path / "train.jsonl", {"a": 2, "b": 1})
    dataset(tmp_path / "test.jsonl", {"a": 3, "b": 3}, start=100)
    line = error_line(invoke("run", "train.jsonl", "--test", "test.jsonl", *QUICK))
    assert "train has 0 class(es) with at least 4 records (3 records: 'a': 2, 'b': 1); need at least 2" in line


def test_profile_shows_the_same_findings_as_warnings(tmp_path, fast_profile):
    dataset(tmp_path / "train.jsonl", {"a": 6, "b": 6})
    dataset(tmp_path / "test.jsonl", {"a": 3, "b": 3, "c": 2}, start=100)
    result = invoke("profile", "train.jsonl", "--test", "test.jsonl")
    assert result.exit_code == 0, result.output
    assert "warning: 1 test label(s) never occur in train" in result.output


# -- 4. one-line errors for folders and stores -------------------------------------------------------
def test_out_pointing_at_a_file(tmp_path, no_profile):
    dataset(tmp_path / "d.jsonl", {"a": 10, "b": 10})
    (tmp_path / "taken").write_text("x")
    assert "--out taken: is a file, not a folder" in error_line(invoke("run", "d.jsonl", *QUICK, "--out", "taken"))


def test_out_in_a_folder_that_cannot_be_written(tmp_path, no_profile):
    dataset(tmp_path / "d.jsonl", {"a": 10, "b": 10})
    if os.geteuid() == 0:  # root writes through permission bits: use a folder no one can create files in
        out = "/sys/tunewise-run"
    else:
        (tmp_path / "locked").mkdir(mode=0o500)
        out = "locked/run"
    line = error_line(invoke("run", "d.jsonl", *QUICK, "--out", out))
    assert f"--out {out}: cannot write in" in line and "fix:" in line


def test_store_pointing_at_a_file(tmp_path, no_profile):
    dataset(tmp_path / "d.jsonl", {"a": 10, "b": 10})
    (tmp_path / "store").write_text("x")
    assert "--store store: is a file, not a folder" in error_line(invoke("run", "d.jsonl", *QUICK, "--store", "store"))


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_corrupt_store_is_named_and_never_replaced(tmp_path, no_profile, damage):
    from tunewise.store import Store

    dataset(tmp_path / "d.jsonl", {"a": 10, "b": 10})
    db = tmp_path / "s" / "store.sqlite"
    if damage == "garbage":
        db.parent.mkdir()
        db.write_bytes(b"this is not a database" * 300)
    else:  # a real store cut in half, as an interrupted copy or sync leaves it
        store = Store(tmp_path / "s")
        for i in range(300):
            store.put("candidate", f"k{i}", {"predictions": ["x" * 50] * 20})
        store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        store.close()
        db.write_bytes(db.read_bytes()[: db.stat().st_size // 2])
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    for args in (["run", "d.jsonl", *QUICK, "--store", "s"], ["profile", "d.jsonl", "--store", "s"]):
        line = error_line(invoke(*args))
        assert f"store {db.relative_to(tmp_path)} is corrupt" in line and "move it aside" in line
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before


@pytest.mark.parametrize("content", ['{"tunewise_version": "0.3.0", "run_id": "r", "crea', '{"run_id": "r"}', ""])
def test_report_on_a_truncated_or_incomplete_results_json(tmp_path, content):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "results.json").write_text(content)
    line = error_line(invoke("report", "r"))
    assert "results.json: not a complete results.json" in line and "fix: re-run" in line


# -- 5. every flag checked before any work -----------------------------------------------------------
@pytest.mark.parametrize("flags, expected", [
    (["--candidates", "nope"], "--candidates: unknown nope"),
    (["--candidates", "majority,zero_shot@nope"], "--candidates: unknown zero_shot@nope"),
    (["--fail-on", "nope"], "--fail-on 'nope': unknown (fix: use one of below-target, not-fine-tune"),
    (["--device", "tpu"], "--device 'tpu': unknown (fix: use one of auto, cpu, cuda)"),
    (["--target", "85"], "--target 85.0: must be between 0 and 1"),
    (["--fail-on", "below-target"], "--fail-on below-target needs a target (fix: set target in the task file"),
    (["--model", "./no-such-folder"], "--model './no-such-folder': no such folder or file"),
])
def test_bad_flags_fail_before_any_work(tmp_path, no_profile, flags, expected):
    dataset(tmp_path / "d.jsonl", {"a": 10, "b": 10})
    assert expected in error_line(invoke("run", "d.jsonl", "--budget", "quick", *flags))


def test_help_lists_the_choices_of_enum_flags():
    import re

    text = re.sub(r"[\s│]+", " ", invoke("run", "--help").output)  # the help panel wraps lines
    assert "below-target | not-fine-tune | fine-tune | insufficient" in text and "auto | cpu | cuda" in text
    assert "--allow-unseen-labels" in text


# -- 6. atomic report files, results.json first -------------------------------------------------------
def test_report_files_are_replaced_whole_and_results_json_first(tmp_path, monkeypatch):
    import tunewise.report as report
    from test_report import full_results

    out = tmp_path / "run"
    report.write_report(full_results(), out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    render_markdown = report.render_markdown
    monkeypatch.setattr(report, "render_markdown", lambda r: (_ for _ in ()).throw(RuntimeError("killed")))
    with pytest.raises(RuntimeError):
        report.write_report(full_results(), out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing half-written
    monkeypatch.setattr(report, "render_markdown", render_markdown)
    order = []
    real_replace = os.replace
    import tunewise.files

    monkeypatch.setattr(tunewise.files.os, "replace",
                        lambda src, dst: (order.append(Path(dst).name), real_replace(src, dst)))
    (out / ".report.html.999.tmp").write_text("left by a killed writer")
    report.write_report(full_results(), out)
    assert order == ["results.json", "report.html", "report.md"]
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.md", "results.json"]


# -- 7. the profile cache key covers what the profile reports ----------------------------------------
def test_a_cached_profile_never_reports_another_files_skipped_records(tmp_path, fast_profile):
    lines = (tmp_path / "x.jsonl")
    dataset(lines, {"a": 8, "b": 8})
    good = lines.read_text().splitlines()
    (tmp_path / "malformed3.jsonl").write_text("\n".join(good[:2] + ["{broken"] + good[2:]) + "\n")
    (tmp_path / "clean.jsonl").write_text("\n".join(good) + "\n")
    first = invoke("profile", "malformed3.jsonl", "--skip-invalid", "--json")
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["skipped"]["records"][0].startswith("malformed3.jsonl:3")
    second = invoke("profile", "clean.jsonl", "--json")
    assert second.exit_code == 0, second.output
    profile = json.loads(second.stdout)
    assert profile["skipped"] == {"count": 0, "records": []} and "malformed3" not in second.stdout


# -- 8. records longer than the model's context -------------------------------------------------------
def test_a_record_longer_than_the_models_context_is_refused(tmp_path, no_profile):
    path = dataset(tmp_path / "d.jsonl", {"a": 10, "b": 10})
    with path.open("a") as handle:
        handle.write(json.dumps({"text": "lorem ipsum " * 6000, "label": "a"}) + "\n")
    result = invoke("profile", "d.jsonl")
    line = error_line(result)
    assert "d.jsonl: 1 invalid record(s); first: line 21" in line
    assert "tokens, longer than the context of smollm2-135m (8,192 tokens)" in line


def test_context_length_comes_from_the_config_when_the_tokenizer_has_a_placeholder():
    from tunewise.models.load import context_length, load_tokenizer

    tokenizer = load_tokenizer("smollm2-135m")
    assert tokenizer.model_max_length > 1e6  # the placeholder that disabled the check
    assert context_length("smollm2-135m", tokenizer) == 8192


# -- 9. smaller ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("lablels: [a, b]\n", "key 'lablels': Extra inputs are not permitted (fix: remove it or correct its spelling"),
    ("labels: [a, b\n", "not valid YAML/JSON"),
    ("type: generation\nmetric: accuracy\n", "key 'metric': 'accuracy' does not fit a generation task (fix: "),
    ("name: 2001-02-30\n", "not valid YAML/JSON (day is out of range for month)"),
])
def test_task_file_errors_name_the_key_and_carry_a_fix(tmp_path, text, expected):
    dataset(tmp_path / "d.jsonl", {"a": 10, "b": 10})
    (tmp_path / "t.yaml").write_text(text)
    line = error_line(invoke("profile", "d.jsonl", "--task", "t.yaml"))
    assert expected in line and "(fix: " in line


def test_the_invalid_records_summary_names_the_field(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"text": "ok", "label": "a"}\n{"text": "  ", "label": "b"}\n')
    assert "first: line 2 field 'text': empty text" in error_line(invoke("profile", "d.jsonl"))


def test_stage_seconds_add_up_over_a_killed_and_resumed_run(tmp_path, fast_profile, monkeypatch):
    import time

    import tunewise.data.profile as profile_module
    import tunewise.runner as runner

    class Killed(BaseException):
        """Like SIGKILL, nothing catches it."""

    dataset(tmp_path / "d.jsonl", {"a": 10, "b": 10})
    real_profile, real_decide = profile_module.profile, runner.decide
    monkeypatch.setattr(profile_module, "profile", lambda *a, **k: (time.sleep(1.5), real_profile(*a, **k))[1])
    monkeypatch.setattr(runner, "decide", lambda *a, **k: (_ for _ in ()).throw(Killed()))
    with pytest.raises(Killed):
        invoke("run", "d.jsonl", *QUICK, "--out", "run")
    monkeypatch.setattr(profile_module, "profile", real_profile)
    monkeypatch.setattr(runner, "decide", real_decide)
    result = invoke("run", "d.jsonl", *QUICK, "--out", "run")
    assert result.exit_code == 0, (result.output, result.exception)
    assert "profile: computed earlier, reused from the store" in result.output
    stages = json.loads((tmp_path / "run" / "results.json").read_text())["stage_seconds"]
    assert stages["profile"] >= 1.5  # the first invocation's profile, not the resumed one's cache hit
    third = invoke("run", "d.jsonl", *QUICK, "--out", "run")  # a complete run starts its clock afresh
    assert json.loads((tmp_path / "run" / "results.json").read_text())["stage_seconds"]["profile"] < 1.5, third.output


# -- the figures, at a small size (the full run: make bench-reliability) --------------------------------
@pytest.mark.slow
def test_kill_resume_and_concurrency_harness(tmp_path):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "reliability.py"
    spec = importlib.util.spec_from_file_location("reliability_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    killed = bench.kill_resume(tmp_path, kills=3, per_episode=3, seed=1)
    assert killed["kills"] == 3 and killed["all_ok"], killed["episode_results"]
    together = bench.concurrency(tmp_path)
    assert together["ok"], together
