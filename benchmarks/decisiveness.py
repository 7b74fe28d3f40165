"""Decisiveness: does the quick budget reach the decision the standard budget reaches, and how fast?

    python benchmarks/decisiveness.py [--cases demo-quick,demo-standard,banking77-quick] [--out benchmarks/results]

Each case runs the real CLI (`tunewise run`) in its own folder with a fresh store, so its wall time
includes everything a user waits for (profile, calibration, bake-off, adaptive scoring, curve,
forgetting, report). It records the verdict, why adaptive scoring stopped, the test records each
candidate was scored on, and the compute estimate against the measured training time, into
decisiveness.json and decisiveness.md. banking77 cases read ../shared/data/banking77 and are
skipped, with the reason, when it is absent. Measure on an idle machine: the file notes the load.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BANKING77 = ROOT.parent / "shared" / "data" / "banking77"
CASES = {
    "demo-quick": (["--demo", "--budget", "quick"], None),
    "demo-standard": (["--demo", "--budget", "standard"], None),
    "banking77-quick": (["{data}/train.csv", "--test", "{data}/test.csv", "--task", "{task}", "--budget", "quick"],
                        BANKING77),
}
BANKING77_TASK = """name: banking77 intents
type: classification
input_field: text
output_field: category
instruction: Which banking customer-support intent does this query express?
"""


def run_case(name: str, work: Path) -> dict:
    args, data = CASES[name]
    if data is not None and not (data / "train.csv").is_file():
        return {"case": name, "skipped": f"{data} not found (the shared data folder is absent)"}
    folder = work / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / "task.yaml").write_text(BANKING77_TASK)
    argv = [a.format(data=data, task=folder / "task.yaml") for a in args]
    load = os.getloadavg()[0]
    began = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "tunewise.cli", "run", *argv, "--out", "run", "--store", "store"],
                          cwd=folder, capture_output=True, text=True)
    seconds = time.perf_counter() - began
    (folder / "output.txt").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        return {"case": name, "failed": f"exit {proc.returncode}", "seconds": seconds,
                "tail": (proc.stdout + proc.stderr)[-2000:]}
    r = json.loads((folder / "run" / "results.json").read_text())
    scoring = r.get("test_scoring") or {}
    return {"case": name, "seconds": round(seconds, 1), "load_before": load, "decision": r["verdict"]["decision"],
            "summary": r["verdict"]["summary"], "stop": scoring.get("stop"), "looks": len(scoring.get("looks", [])),
            "records": scoring.get("records"), "test_split": r["split"]["test"],
            "compute": [{"candidate": e["candidate"], "estimated_s": round(e["estimated_seconds"], 1),
                         "measured_s": e["measured_seconds"] and round(e["measured_seconds"], 1)}
                        for e in r.get("compute", [])],
            "stage_seconds": r.get("stage_seconds")}


def table(rows: list[dict]) -> str:
    lines = ["# Decisiveness: quick against standard", "",
             f"machine: {os.cpu_count()} CPUs; wall time of `tunewise run` with a fresh store, load average "
             "before each run in the last column", "",
             "| case | wall time | verdict | scoring stopped | records scored (per candidate) | "
             "compute estimate / measured | load |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "skipped" in r or "failed" in r:
            lines.append(f"| {r['case']} | | {r.get('skipped') or r.get('failed')} | | | | |")
            continue
        records = ", ".join(f"{k} {v}" for k, v in (r["records"] or {}).items())
        compute = "; ".join(f"{e['estimated_s']:.0f} s / {e['measured_s']:.0f} s" for e in r["compute"]
                            if e["measured_s"])
        lines.append(f"| {r['case']} | {r['seconds'] / 60:.1f} min | {r['decision']} | {r['stop']} ({r['looks']} looks) "
                     f"| {records} (split {r['test_split']}) | {compute} | {r['load_before']:.1f} |")
    lines += [""] + [f"- **{r['case']}**: {r['summary']}" for r in rows if "summary" in r]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    work = args.out / "decisiveness-work"
    # cases run one at a time (each needs the idle machine) accumulate in one results file
    saved = args.out / "decisiveness.json"
    previous = {r["case"]: r for r in json.loads(saved.read_text())} if saved.is_file() else {}
    rows = []
    for name in args.cases.split(","):
        print(f"running {name} ...", flush=True)
        rows.append(run_case(name.strip(), work))
        print(json.dumps(rows[-1], indent=1), flush=True)
    rows = list({**previous, **{r["case"]: r for r in rows}}.values())
    args.out.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(rows, indent=2))
    (args.out / "decisiveness.md").write_text(table(rows))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
