"""The Python API (issue 14, part A): `tunewise.run` runs the CLI's code and gives the CLI's results,
progress reaches a plain callback, runs load back by their unique id (two folders of one name never
collide), results.json written by the main branch still loads, and the README's example runs.

Majority and TF-IDF only, on a few dozen records, with the base-model perplexity stubbed (the rest of
the profile is real): each test takes seconds."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

import tunewise
from tunewise.cli import app

REPO = Path(__file__).resolve().parents[1]
OLD_RESULTS = Path(__file__).parent / "data" / "results-main-0.3.0.json"  # written by main at 9731128
TOPICS = {"a": "invoice refund charge", "b": "crash error screen", "c": "hiring office visit"}
CHEAP = {"budget": "quick", "candidates": ["majority", "classical"], "learning_curve": False, "forgetting": False}


def rows(per_label: int = 12, start: int = 0) -> list[dict]:
    return [{"text": f"{TOPICS[label]} number {start + i}", "label": label}
            for label in TOPICS for i in range(per_label)]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def fast_profile(monkeypatch):
    """The real profile without the base-model perplexity (minutes on a loaded CPU)."""
    import tunewise.data.profile as profile_module

    monkeypatch.setattr(profile_module, "measure_domain_gap", lambda train, **kw: {"stubbed": True})


def comparable(results: tunewise.RunResults) -> dict:
    """What a run measured and decided, less what timing changes (its id, latency and the cost it prices,
    which the verdict's sentences quote)."""
    dump = results.model_dump(mode="json")
    verdict = dump["verdict"]
    return {"task": dump["task"], "budget": dump["budget"], "split": dump["split"],
            "candidates": [{k: c[k] for k in ("name", "status", "metrics", "per_class", "confusion", "test_records")}
                           for c in dump["candidates"]],
            "comparisons": dump["comparisons"], "test_scoring": dump["test_scoring"],
            "verdict": [verdict["decision"], verdict["candidate"], [(r["criterion"], r["vote"]) for r in verdict["reasons"]]]}


def test_the_api_on_records_gives_the_cli_results_on_the_same_file(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", rows())
    cli = CliRunner().invoke(app, ["run", "d.jsonl", "--budget", "quick", "--no-curve", "--no-forgetting",
                                   "--candidates", "majority,classical", "--target", "0.9", "--out", "cli"])
    assert cli.exit_code == 0, cli.output + repr(cli.exception)
    events = []
    results = tunewise.run(rows(), target=0.9, progress=lambda message, fraction: events.append((message, fraction)),
                           **CHEAP)
    assert comparable(results) == comparable(tunewise.load_run(tmp_path / "cli"))
    assert results.verdict.decision == "CLASSICAL" and results.task.target == 0.9
    assert results.data.source == "records" and results.metric == "accuracy"
    notes = [m for m, f in events if f is None]
    steps = [f for m, f in events if f is not None]
    assert any(m.startswith("profile") or "tokenizer" in m for m in notes)
    assert steps and all(0 < f <= 1 for f in steps) and max(steps) == 1.0
    # out=None wrote nothing here, and store=None kept no store
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tunewise", "cli", "d.jsonl"]


def test_load_run_gives_back_what_run_returned_and_report_rebuilds_it(tmp_path):
    results = tunewise.run(rows(), out=tmp_path / "run", store=tmp_path / "store", **CHEAP)
    assert (tmp_path / "run" / "report.html").is_file()
    loaded = tunewise.load_run(tmp_path / "run")
    assert loaded.model_dump(mode="json") == results.model_dump(mode="json")
    assert re.fullmatch(r"run-[0-9a-f]{8}", results.run_id)
    (tmp_path / "run" / "report.md").unlink()
    done = CliRunner().invoke(app, ["report", str(tmp_path / "run"), "--store", str(tmp_path / "store")])
    assert done.exit_code == 0, done.output
    assert results.run_id in (tmp_path / "run" / "report.md").read_text()


def test_two_run_folders_of_the_same_name_on_one_store_never_collide(tmp_path):
    store = tmp_path / "store"
    first = tunewise.run(rows(), out=tmp_path / "a" / "first", store=store, **CHEAP)
    other = tunewise.run(rows(16, start=100), out=tmp_path / "b" / "first", store=store,
                         **(CHEAP | {"candidates": ["majority"]}))
    assert first.run_id != other.run_id
    for results, folder in ((first, tmp_path / "a" / "first"), (other, tmp_path / "b" / "first")):
        assert tunewise.load_run(folder, store).run_id == results.run_id
        # without its results.json the folder's own entry in the store is found, not the other's
        (folder / "results.json").unlink()
        loaded = tunewise.load_run(folder, store)
        assert loaded.run_id == results.run_id and [c.name for c in loaded.candidates] == \
            [c.name for c in results.candidates]
    assert len(first.candidates) == 2 and len(other.candidates) == 1


def test_a_run_written_again_into_its_folder_replaces_its_store_entry(tmp_path):
    from tunewise.store import Store

    first = tunewise.run(rows(), out=tmp_path / "run", store=tmp_path / "store", **CHEAP)
    again = tunewise.run(rows(), out=tmp_path / "run", store=tmp_path / "store", **CHEAP)
    assert Store(tmp_path / "store").keys("run") == [again.run_id] and first.run_id != again.run_id


def test_a_store_entry_written_by_main_is_used_for_its_own_folder_only(tmp_path):
    """main keyed runs by folder name: `b/first` overwrote `a/first`'s entry. Without a results.json,
    `a/first` must not get b's results."""
    from tunewise.store import Store

    old = json.loads(OLD_RESULTS.read_text())
    for folder in ("a/first", "b/first"):
        (tmp_path / folder).mkdir(parents=True)
    Store(tmp_path / "store").put("run", "first", {"dir": str(tmp_path / "b" / "first"), "results": old})
    assert tunewise.load_run(tmp_path / "b" / "first", tmp_path / "store").run_id == "main-run"
    with pytest.raises(tunewise.TunewiseError, match="no run written into this folder"):
        tunewise.load_run(tmp_path / "a" / "first", tmp_path / "store")


def test_a_folder_with_no_results_anywhere_is_a_one_line_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(tunewise.TunewiseError, match=r"empty: no results.json, and no run written into this folder"):
        tunewise.load_run(tmp_path / "empty", tmp_path / "store")


def test_results_json_written_by_main_still_loads_and_reports(tmp_path):
    (tmp_path / "old").mkdir()
    shutil.copy(OLD_RESULTS, tmp_path / "old" / "results.json")
    old = tunewise.load_run(tmp_path / "old")
    assert old.task.metric == "accuracy" and old.budget.name == "quick" and old.split.test_scored == 8
    assert old.profile.train_records == 28 and old.verdict.decision == "CLASSICAL"
    done = CliRunner().invoke(app, ["report", str(tmp_path / "old")])
    assert done.exit_code == 0, done.output
    assert "CLASSICAL" in (tmp_path / "old" / "report.md").read_text()


def test_bad_records_and_settings_are_one_line_errors_naming_the_place(tmp_path):
    bad = rows() + [{"text": "no label here"}]
    with pytest.raises(tunewise.TunewiseError, match=r"records: 1 invalid record\(s\); first: line 37 field 'label'"):
        tunewise.run(bad, **CHEAP)
    with pytest.raises(tunewise.TunewiseError, match=r"--candidates: unknown nope"):
        tunewise.run(rows(), **(CHEAP | {"candidates": ["majority", "nope"]}))
    with pytest.raises(tunewise.TunewiseError, match=r"--budget 'huge': unknown"):
        tunewise.run(rows(), budget="huge")
    warned = []
    results = tunewise.run(bad, task=tunewise.TaskSpec(name="tickets"), skip_invalid=True,
                           progress=lambda m, f: warned.append(m), **CHEAP)
    assert results.task.name == "tickets" and results.task.labels == ["a", "b", "c"]
    assert results.data.skipped_count == 1 and results.data.skipped == ["records:37 field 'label': missing field"]
    assert any(m.startswith("warning: skipped 1 invalid record(s)") for m in warned)


def test_profile_and_advise(tmp_path):
    profile = tunewise.profile(rows(), task={"name": "tickets", "type": "classification"})
    assert profile.train_records + profile.test_records == 36 and profile.label_count == 3
    assert profile.domain_gap == {"stubbed": True}
    import yaml

    path = REPO / "examples" / "advise" / "faq-shipping.yaml"
    verdict = tunewise.advise(path)
    assert verdict.decision and verdict.reasons
    answers = yaml.safe_load(path.read_text())
    assert tunewise.advise(answers) == verdict
    with pytest.raises(tunewise.TunewiseError, match="answers: key 'nope': Extra inputs are not permitted"):
        tunewise.advise(answers | {"nope": 1})


def test_the_readme_example_runs_as_written(capsys):
    readme = (REPO / "README.md").read_text()
    block = re.search(r"## Python API.*?```python\n(.*?)```", readme, re.S)
    assert block, "README.md: no ```python block under '## Python API'"
    code = block.group(1)
    assert len(code.strip().splitlines()) == 3
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr()
    assert printed.err == ""  # "without a callback the API prints nothing"
    assert printed.out.split()[0] in {"PROMPT", "RETRIEVAL", "FINE_TUNE", "SMALL_MODEL", "CLASSICAL",
                                  "COLLECT_MORE_DATA", "INSUFFICIENT_EVIDENCE"}
