"""Compute estimate against measured training time, idle and beside a busy process (issue 12).

    python benchmarks/estimate.py [--cases demo,banking77,short3000] [--conditions idle,loaded] [--out benchmarks/results]

For each task and condition it runs the real CLI with a fresh store (so the rate calibration is
measured in that condition, as a new user's first run would), on the quick budget with only the
majority floor and LoRA (no curve, no forgetting probe: they do not change the estimate), and reads
from results.json the LoRA estimate made *before* training and the training time measured after.
"loaded" starts a second process beside it that keeps both cores busy with fp32 matmuls for the
whole run, as another torch job on a 2-core laptop would.

Tasks: the shipped demo (600 train); banking77 (../shared/data/banking77, 10k train, capped by the
quick budget); short3000: a seeded 3,000-record sample of banking77's train with 500 of its test
(short texts). banking77 tasks are skipped, with the reason, when the shared folder is absent.
Writes estimate.json and estimate.md (each case replaced when it is run again).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BANKING77 = ROOT.parent / "shared" / "data" / "banking77"
TASK = """name: banking77 intents
type: classification
input_field: text
output_field: category
instruction: Which banking customer-support intent does this query express?
"""
COMMON = ["--budget", "quick", "--candidates", "majority,lora", "--no-curve", "--no-forgetting"]
BUSY = ("import torch\ntorch.set_num_threads(2)\na = torch.randn(1024, 1024)\n"
        "while True:\n    a = torch.tanh(a @ a)\n")


def _sample(src: Path, dst: Path, n: int, seed: int) -> None:
    with open(src, newline="") as f:
        rows = list(csv.DictReader(f))
    random.Random(seed).shuffle(rows)
    with open(dst, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows[:n])


def task_args(name: str, folder: Path) -> list[str] | str:
    """The CLI arguments of a task, or why it is skipped."""
    if name == "demo":
        return ["--demo"]
    if not (BANKING77 / "train.csv").is_file():
        return f"{BANKING77} not found (the shared data folder is absent)"
    (folder / "task.yaml").write_text(TASK)
    if name == "banking77":
        return [str(BANKING77 / "train.csv"), "--test", str(BANKING77 / "test.csv"), "--task", "task.yaml"]
    _sample(BANKING77 / "train.csv", folder / "train.csv", 3000, seed=0)
    _sample(BANKING77 / "test.csv", folder / "test.csv", 500, seed=0)
    return ["train.csv", "--test", "test.csv", "--task", "task.yaml"]


def run_case(task: str, condition: str, work: Path) -> dict:
    case = f"{task}-{condition}"
    folder = work / case
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    args = task_args(task, folder)
    if isinstance(args, str):
        return {"case": case, "skipped": args}
    busy = subprocess.Popen([sys.executable, "-c", BUSY]) if condition == "loaded" else None
    try:
        if busy:
            time.sleep(5)  # the load is there before the calibration starts
        load = os.getloadavg()[0]
        began = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "tunewise.cli", "run", *args, *COMMON, "--out", "run",
                               "--store", "store"], cwd=folder, capture_output=True, text=True)
        seconds = time.perf_counter() - began
    finally:
        if busy:
            busy.kill()
            busy.wait()
    (folder / "output.txt").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        return {"case": case, "failed": f"exit {proc.returncode}", "tail": (proc.stdout + proc.stderr)[-2000:]}
    r = json.loads((folder / "run" / "results.json").read_text())
    lora = next(e for e in r["compute"] if e["candidate"] == "lora")
    est, measured = lora["estimated_seconds"], lora["measured_seconds"]
    return {"case": case, "task": task, "condition": condition, "load_at_start": round(load, 1),
            "train_records": r["split"]["train"], "tokens": lora["tokens"], "estimated_s": round(est, 1),
            "measured_s": measured and round(measured, 1), "ratio": measured and round(est / measured, 2),
            "within_2x": bool(measured) and 0.5 <= est / measured <= 2.0, "basis": lora.get("basis"),
            "wall_s": round(seconds, 1)}


def table(rows: list[dict]) -> str:
    lines = ["# Compute estimate against measured LoRA training time", "",
             f"machine: {os.cpu_count()} CPUs; `tunewise run --budget quick --candidates majority,lora` with a "
             "fresh store per case; loaded: a second process keeps both cores busy with fp32 matmuls", "",
             "| case | train records | training tokens | estimated | measured | estimate / measured | within 2x | "
             "load at start |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "skipped" in r or "failed" in r:
            lines.append(f"| {r['case']} | {r.get('skipped') or r.get('failed')} | | | | | | |")
            continue
        lines.append(f"| {r['case']} | {r['train_records']} | {r['tokens']} | {r['estimated_s']:.0f} s | "
                     f"{r['measured_s']:.0f} s | {r['ratio']:.2f} | {'yes' if r['within_2x'] else 'NO'} | "
                     f"{r['load_at_start']} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="demo,banking77,short3000")
    ap.add_argument("--conditions", default="idle,loaded")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    saved = args.out / "estimate.json"
    rows = {r["case"]: r for r in json.loads(saved.read_text())} if saved.is_file() else {}
    for task in args.cases.split(","):
        for condition in args.conditions.split(","):
            print(f"running {task} ({condition}) ...", flush=True)
            row = run_case(task.strip(), condition.strip(), args.out / "estimate-work")
            print(json.dumps(row), flush=True)
            rows[row["case"]] = row
            args.out.mkdir(parents=True, exist_ok=True)
            saved.write_text(json.dumps(list(rows.values()), indent=2))
    (args.out / "estimate.md").write_text(table(list(rows.values())))
    print(table(list(rows.values())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
