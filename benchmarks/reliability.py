"""Reliability figures (issue 15): fuzz, kill-and-resume, concurrency.

    python benchmarks/reliability.py [fuzz] [kill] [concurrency] [--kills 20] [--per-episode 5]
                                     [--fuzz-files 800] [--seed 15] [--out benchmarks/results]

- fuzz: hypothesis-generated files of valid, bad and odd records through the JSONL (field pairs and
  chat), CSV/TSV readers and the task-file loader (tests/fuzz_records.py). Counts records, exceptions
  other than TunewiseError, and valid records lost or altered.
- kill: `tunewise run` on examples/tickets.jsonl (quick budget, majority + TF-IDF + LoRA, no curve or
  forgetting probe) killed with SIGKILL at a random moment (uniform over the uninterrupted run's
  duration) and resumed, in episodes of --per-episode kills on a fresh store, until --kills kills
  have landed on a live process; each episode then resumes to completion. Each final result is
  compared with an uninterrupted run's (same seed): metrics, per-class scores, confusion, losses,
  comparisons, verdict decision, profile and every candidate's predictions (from the store); store
  entries (same keys, none twice, no stage-clock entry left), sqlite integrity_check, no temporary
  report files left. Timings (latency, stage times, compute estimate and the costs and verdict
  reasons that cite them) are excluded: they differ between any two runs.
- concurrency: three such runs started at once on one store. All must finish; the store must be
  sound; the profile, the rate calibration and LoRA must each be computed by exactly one run.

Writes reliability.json (each section replaced when it is run) and reliability.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
RUN_ARGS = ["run", str(EXAMPLES / "tickets.jsonl"), "--task", str(EXAMPLES / "tickets.yaml"), "--budget", "quick",
            "--no-curve", "--no-forgetting", "--candidates", "majority,classical,lora", "--seed", "0"]
# Fields of a candidate that do not depend on timing.
CANDIDATE_FIELDS = ("name", "family", "strategy", "model", "status", "error", "test_records", "metrics", "per_class",
                    "confusion", "losses", "train_tokens", "params", "trainable_params", "settings")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


# -- running tunewise -------------------------------------------------------------------------------
def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}


def start(folder: Path, out: str = "run", store: str = "store") -> tuple[subprocess.Popen, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    n = len(list(folder.glob("invocation-*.log")))
    log = folder / f"invocation-{n:02d}-{out}.log"
    handle = open(log, "w")
    proc = subprocess.Popen([sys.executable, "-m", "tunewise.cli", *RUN_ARGS, "--store", store, "--out", out],
                            cwd=folder, stdout=handle, stderr=subprocess.STDOUT, env=_env(), start_new_session=True)
    handle.close()
    return proc, log


def last_line(log: Path) -> str:
    lines = [ANSI.sub("", x).strip() for x in log.read_text(errors="replace").splitlines()]
    lines = [x for x in lines if x and not x.startswith(("━", "─"))]
    return lines[-1][:100] if lines else ""


def stage_of(line: str) -> str:
    """Which part of the run a kill interrupted, from the last line the run printed."""
    rules = [("", "start-up (imports, reading, length check)"), ("Counting tokens", "profile"),
             ("Embedding", "profile"), ("Looking for", "profile"), ("Measuring the domain gap", "profile"),
             ("profile:", "profile (cached)"), ("compute:", "compute estimate (rate calibration)"),
             ("majority", "bake-off: majority"), ("classical", "bake-off: TF-IDF"), ("lora", "bake-off: LoRA"),
             ("Verdict", "verdict, report"), ("support tickets", "verdict, report"), ("time:", "verdict, report"),
             ("report:", "done")]
    found = rules[0][1]
    for key, stage in rules[1:]:
        if key in line:
            found = stage
    return found if line else rules[0][1]


# -- comparing results ------------------------------------------------------------------------------
def stable(results: dict) -> dict:
    """The parts of results.json that must not depend on timing or on interruptions."""
    out = {k: results.get(k) for k in ("task", "budget", "split", "data", "profile", "warnings", "comparisons",
                                        "test_scoring", "learning_curve", "forgetting", "overfitting")}
    out["candidates"] = [{k: c.get(k) for k in CANDIDATE_FIELDS} for c in results["candidates"]]
    v = results.get("verdict") or {}
    out["verdict"] = {k: v.get(k) for k in ("decision", "candidate", "model")}
    return out


def diff(a, b, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b), key=str) for d in diff(a.get(k), b.get(k), f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in diff(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {str(a)[:80]} != {str(b)[:80]}"]


def store_facts(db_path: Path) -> dict:
    with sqlite3.connect(db_path) as db:
        rows = db.execute("SELECT kind, key, value FROM entries").fetchall()
        integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
        distinct = db.execute("SELECT COUNT(*) FROM (SELECT DISTINCT kind, key FROM entries)").fetchone()[0]
    predictions = {}
    for kind, _, value in rows:
        if kind == "candidate":
            entry = json.loads(value)
            predictions[entry["name"]] = entry.get("predictions")
    return {"keys": sorted((k, key) for k, key, _ in rows), "rows": len(rows), "distinct": distinct,
            "integrity": integrity, "predictions": predictions}


def _comparable(keys) -> list[tuple]:
    """Store keys as comparable between two runs: a run's entry is keyed by its unique run id and its
    folder's path, so those two kinds are compared by count (one each per run folder), not by value."""
    per_run = {"run", "run_folder"}
    return sorted([tuple(k) for k in keys if k[0] not in per_run]
                  + [(kind, f"{sum(k[0] == kind for k in keys)} entries") for kind in sorted(per_run)])


def check_against(folder: Path, reference: Path, out: str = "run") -> dict:
    """Every check of one finished run folder + store against the reference's."""
    got, ref = store_facts(folder / "store" / "store.sqlite"), store_facts(reference / "store" / "store.sqlite")
    results = json.loads((folder / out / "results.json").read_text())
    differences = diff(stable(json.loads((reference / "run" / "results.json").read_text())), stable(results))
    leftovers = sorted(p.name for p in (folder / out).glob(".*.tmp"))
    checks = {
        "results_equal": not differences,
        "predictions_equal": got["predictions"] == ref["predictions"] and bool(got["predictions"]),
        "same_store_keys": _comparable(got["keys"]) == _comparable(ref["keys"]),
        "no_duplicates": got["rows"] == got["distinct"],
        "no_stage_clock_left": not any(kind == "stage_seconds" for kind, _ in got["keys"]),
        "integrity_ok": got["integrity"] == "ok",
        "no_temp_files": not leftovers,
    }
    return {"ok": all(checks.values()), "checks": checks, "differences": differences[:10],
            "missing_keys": sorted(set(_comparable(ref["keys"])) - set(_comparable(got["keys"])))[:10],
            "extra_keys": sorted(set(_comparable(got["keys"])) - set(_comparable(ref["keys"])))[:10],
            "stage_seconds": results.get("stage_seconds"), "lora_notes": next(
                (c.get("notes") for c in results["candidates"] if c["name"] == "lora"), None)}


def reference_run(work: Path) -> tuple[Path, float]:
    folder = work / "reference"
    if (folder / "run" / "results.json").is_file() and (folder / "seconds.txt").is_file():
        return folder, float((folder / "seconds.txt").read_text())
    shutil.rmtree(folder, ignore_errors=True)
    began = time.perf_counter()
    proc, log = start(folder)
    if proc.wait() != 0:
        raise SystemExit(f"the reference run failed: see {log}")
    seconds = time.perf_counter() - began
    (folder / "seconds.txt").write_text(f"{seconds:.1f}")
    return folder, seconds


# -- kill and resume ---------------------------------------------------------------------------------
def kill_resume(work: Path, kills: int, per_episode: int, seed: int) -> dict:
    reference, duration = reference_run(work)
    rng = random.Random(seed)
    landed, episodes, began = [], [], time.perf_counter()
    while len(landed) < kills:
        folder = work / f"episode{len(episodes)}"
        shutil.rmtree(folder, ignore_errors=True)
        episode_kills = 0
        while episode_kills < per_episode and len(landed) < kills:
            delay = rng.uniform(0.5, duration)
            proc, log = start(folder)
            try:
                rc = proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                line = last_line(log)
                landed.append({"episode": len(episodes), "at_s": round(delay, 1), "last_output": line,
                               "stage": stage_of(line)})
                episode_kills += 1
                print(f"kill {len(landed)}/{kills}: episode {len(episodes)} at {delay:.1f} s during "
                      f"{stage_of(line)} ({line[:60]!r})", flush=True)
                continue
            if rc != 0:
                raise SystemExit(f"a resumed run failed (exit {rc}): see {log}")
            break  # this invocation finished before its kill: the episode is complete
        proc, log = start(folder)  # resume to completion (a no-op reuse when it already finished)
        if proc.wait() != 0:
            raise SystemExit(f"the final resume failed: see {log}")
        result = check_against(folder, reference)
        result.update(episode=len(episodes), kills=episode_kills)
        episodes.append(result)
        print(f"episode {result['episode']}: {episode_kills} kills, {'ok' if result['ok'] else 'FAILED'} "
              f"{result['differences'] or ''}", flush=True)
    stages: dict[str, int] = {}
    for k in landed:
        stages[k["stage"]] = stages.get(k["stage"], 0) + 1
    return {"kills": len(landed), "episodes": len(episodes), "all_ok": all(e["ok"] for e in episodes),
            "reference_seconds": round(duration, 1), "wall_seconds": round(time.perf_counter() - began, 1),
            "kills_by_stage": stages, "kill_list": landed, "episode_results": episodes,
            "command": "tunewise " + " ".join(RUN_ARGS[:1] + ["examples/tickets.jsonl", "--task", "examples/tickets.yaml"]
                                              + RUN_ARGS[4:])}


# -- concurrency ------------------------------------------------------------------------------------
def concurrency(work: Path) -> dict:
    reference, _ = reference_run(work)
    folder = work / "concurrency"
    shutil.rmtree(folder, ignore_errors=True)
    began = time.perf_counter()
    procs = [start(folder, out=f"run{i}") for i in (1, 2, 3)]
    codes = [p.wait() for p, _ in procs]
    seconds = time.perf_counter() - began
    logs = [log.read_text(errors="replace") for _, log in procs]
    facts = store_facts(folder / "store" / "store.sqlite")
    counted = {
        "profile": sum("Counting tokens with" in text for text in logs),
        "rate calibration": sum("compute: calibrating" in text for text in logs),
        "lora": sum("lora: preparing" in text for text in logs),
        "waited": sum("waiting to reuse it" in text for text in logs),
    }
    runs = [check_against(folder, reference, out=f"run{i}") for i in (1, 2, 3)] if not any(codes) else []
    checks = {"all_finished": codes == [0, 0, 0], "integrity_ok": facts["integrity"] == "ok",
              "no_duplicates": facts["rows"] == facts["distinct"], "profile_once": counted["profile"] == 1,
              "calibration_once": counted["rate calibration"] == 1, "lora_once": counted["lora"] == 1,
              "results_equal_reference": bool(runs) and all(r["checks"]["results_equal"]
                                                            and r["checks"]["predictions_equal"] for r in runs)}
    return {"ok": all(checks.values()), "checks": checks, "computed_by_how_many_runs": counted,
            "exit_codes": codes, "wall_seconds": round(seconds, 1),
            "differences": [d for r in runs for d in r["differences"]][:10]}


# -- fuzz -------------------------------------------------------------------------------------------
def fuzz(files: int) -> dict:
    sys.path.insert(0, str(REPO / "tests"))
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st

    import fuzz_records as F
    from tunewise.config import TaskSpec

    many = settings(max_examples=files, deadline=None, database=None, derandomize=True, phases=[Phase.generate],
                    suppress_health_check=list(HealthCheck))
    terminator = st.sampled_from(["\n", "\r\n", "\r"])
    targets = {
        "JSONL field pairs": (given(items=F.jsonl_file(F.valid_pair_record(False), F.BAD_JSONL), t=terminator,
                                    skip=st.booleans()),
                              lambda items, t, skip: F.check_jsonl(items, t, TaskSpec(), skip)),
        "JSONL, declared labels": (given(items=F.jsonl_file(F.valid_pair_record(True), F.BAD_JSONL | st.just(
                                       '{"text": "a", "label": "not declared"}')), t=terminator, skip=st.booleans()),
                                   lambda items, t, skip: F.check_jsonl(items, t, TaskSpec(labels=F.LABELS), skip)),
        "chat JSONL": (given(items=F.jsonl_file(F.valid_chat_record(), F.BAD_CHAT), t=terminator, skip=st.booleans()),
                       lambda items, t, skip: F.check_jsonl(items, t, TaskSpec(), skip, name="chat.jsonl")),
        "CSV/TSV": (given(generated=F.csv_file(), skip=st.booleans()), lambda generated, skip: F.check_csv(generated, skip)),
        "task files, random": (given(text=F.TASK_TEXT), lambda text: F.check_task_text(text)),
        "task files, valid": (given(spec_format=F.VALID_TASK), lambda spec_format: F.check_valid_task(*spec_format)),
    }
    out, total = {}, F.Tally()
    for name, (decorate, check) in targets.items():
        tally = F.Tally()
        began = time.perf_counter()
        many(decorate(lambda **kw: tally.add(check(**kw))))()
        total.add(tally)
        out[name] = _tally(tally) | {"seconds": round(time.perf_counter() - began, 1)}
        print(f"fuzz {name}: {out[name]}", flush=True)
    return {"targets": out, "total": _tally(total), "ok": not total.foreign and not total.lost and total.records >= 10_000,
            "target_records": 10_000, "enough": total.records >= 10_000, "examples": total.examples}


def fuzz_baseline(src: Path, files: int) -> dict:
    """The same fuzz against another tunewise (its src folder), in a subprocess, for comparison."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        subprocess.run([sys.executable, __file__, "fuzz", "--fuzz-files", str(files), "--out", folder],
                       env={**os.environ, "PYTHONPATH": str(src)}, capture_output=True, text=True)
        other = json.loads((Path(folder) / "reliability.json").read_text())["fuzz"]
    return {"src": str(src), "total": other["total"], "targets": {n: t for n, t in other["targets"].items()},
            "examples": other["examples"][:3]}


def _tally(t) -> dict:
    return {"files": t.files, "records": t.records, "valid": t.valid, "bad": t.bad,
            "foreign_exceptions": sum(t.foreign.values()), "foreign_by_type": dict(t.foreign),
            "lost_or_altered": len(t.lost)}


# -- report -----------------------------------------------------------------------------------------
def markdown(report: dict) -> str:
    m = report["machine"]
    lines = ["# Reliability figures (issue 15)", "",
             f"Measured by `python benchmarks/reliability.py` (`make bench-reliability`) on {m['cpus']} CPU cores, "
             f"Python {m['python']}, commit {m['commit']}. Numbers are only what this run measured.", ""]
    f = report.get("fuzz")
    if f:
        t = f["total"]
        lines += ["## Fuzz", "", f"{t['records']:,} generated records in {t['files']:,} files ({t['valid']:,} valid "
                  f"with odd text, {t['bad']:,} bad): **{t['foreign_exceptions']} exceptions other than TunewiseError, "
                  f"{t['lost_or_altered']} valid records lost or altered**.", "",
                  "| target | files | records | valid | bad | other exceptions | lost or altered | s |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {n} | {x['files']} | {x['records']} | {x['valid']} | {x['bad']} | {x['foreign_exceptions']} "
                  f"| {x['lost_or_altered']} | {x['seconds']} |" for n, x in f["targets"].items()]
        lines += ["", "For task files, 'lost or altered' counts an error without the one-line form and a fix, "
                  "and a valid file refused or read with a value changed.", ""]
        lines += [f"- {e}" for e in f["examples"][:5]] + ([""] if f["examples"] else [])
        b = f.get("baseline")
        if b:
            bt = b["total"]
            lines += [f"The same generators and settings through the tunewise in `{b['src']}` "
                      f"(before this work): {bt['records']:,} records, **{bt['foreign_exceptions']} other exceptions** "
                      f"({', '.join(f'{n} {k}' for k, n in bt['foreign_by_type'].items()) or 'none'}), "
                      f"**{bt['lost_or_altered']} lost or altered**: " + "; ".join(
                          f"{n} {t['foreign_exceptions']}/{t['lost_or_altered']}" for n, t in b["targets"].items())
                      + " (other exceptions / lost or altered).", ""]
    k = report.get("kill_resume")
    if k:
        lines += ["## Kill and resume", "", f"`{k['command']}`, SIGKILL at a random moment (uniform over the "
                  f"{k['reference_seconds']} s uninterrupted run), resumed each time: **{k['kills']} kills in "
                  f"{k['episodes']} episodes, every episode {'equal to' if k['all_ok'] else 'NOT equal to'} the "
                  f"uninterrupted run** (results, predictions, store keys, no duplicates, integrity_check ok, "
                  f"no temporary files). Wall time {k['wall_seconds']} s.", "",
                  "| interrupted stage | kills |", "|---|---|"]
        lines += [f"| {s} | {n} |" for s, n in sorted(k["kills_by_stage"].items(), key=lambda x: -x[1])]
        lines += ["", "| episode | kills | results | predictions | store keys | no duplicates | integrity | "
                  "no temp files | LoRA notes |", "|---|---|---|---|---|---|---|---|---|"]
        for e in k["episode_results"]:
            c = e["checks"]
            lines.append(f"| {e['episode']} | {e['kills']} | {_yn(c['results_equal'])} | {_yn(c['predictions_equal'])} "
                         f"| {_yn(c['same_store_keys'])} | {_yn(c['no_duplicates'])} | {_yn(c['integrity_ok'])} "
                         f"| {_yn(c['no_temp_files'])} | {'; '.join(e['lora_notes'] or []) or '—'} |")
        lines.append("")
    c = report.get("concurrency")
    if c:
        n = c["computed_by_how_many_runs"]
        lines += ["## Concurrency", "", f"Three runs started at once on one store: exit codes {c['exit_codes']}, "
                  f"{c['wall_seconds']} s. Computed by how many runs: profile {n['profile']}, rate calibration "
                  f"{n['rate calibration']}, LoRA {n['lora']} (runs that waited for another: {n['waited']}). "
                  f"**{'All checks pass' if c['ok'] else 'FAILED'}**: " +
                  ", ".join(f"{k} {_yn(v)}" for k, v in c["checks"].items()) + ".", ""]
    return "\n".join(lines)


def _yn(value: bool) -> str:
    return "yes" if value else "**NO**"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sections", nargs="*", help="fuzz, kill and/or concurrency (default: all three)")
    ap.add_argument("--kills", type=int, default=20, help="SIGKILLs that must land on a live run (default 20)")
    ap.add_argument("--per-episode", type=int, default=5, help="kills per episode before resuming to completion")
    ap.add_argument("--fuzz-files", type=int, default=800, help="generated files per fuzz target")
    ap.add_argument("--fuzz-baseline", type=Path, default=None,
                    help="also fuzz the tunewise under this src folder (e.g. an export of main) for comparison")
    ap.add_argument("--seed", type=int, default=15)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.out / "reliability-work"
    path = args.out / "reliability.json"
    report = json.loads(path.read_text()) if path.is_file() else {}
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    report["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(), "commit": commit}
    args.sections = args.sections or ["fuzz", "kill", "concurrency"]  # (argparse rejects a list default with choices)
    unknown = set(args.sections) - {"fuzz", "kill", "concurrency"}
    if unknown:
        ap.error(f"unknown section(s) {', '.join(sorted(unknown))}: use fuzz, kill, concurrency")
    if "fuzz" in args.sections:
        report["fuzz"] = fuzz(args.fuzz_files)
        if args.fuzz_baseline:
            report["fuzz"]["baseline"] = fuzz_baseline(args.fuzz_baseline, args.fuzz_files)
    if "kill" in args.sections:
        report["kill_resume"] = kill_resume(work, args.kills, args.per_episode, args.seed)
    if "concurrency" in args.sections:
        report["concurrency"] = concurrency(work)
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    (args.out / "reliability.md").write_text(markdown(report))
    print(markdown(report))
    failed = [s for s in ("fuzz", "kill_resume", "concurrency") if s in report
              and not report[s].get("ok", report[s].get("all_ok"))]
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
