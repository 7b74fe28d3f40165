"""The bake-off on BANKING77 (77 intents, real customer queries) from ../shared/data/banking77.

    python benchmarks/banking77.py [--test-limit 300] [--train-limit 2000] [--no-evidence] [--out DIR]

Budget (documented, fits the 2-core CPU in about half an hour): 300 stratified test queries,
2,000 stratified training queries (validation carved from them), 1 LoRA epoch at max 96 tokens,
8 shots, learning curve at 1/8, 1/4, 1/2, 1, forgetting probe on 60 questions. Writes
banking77.json (the full results) and banking77.md (the table) next to the run's report.
Skips with a reason when the shared data is absent.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tunewise.config import Budget, TaskSpec
from tunewise.data.prepare import prepare
from tunewise.runner import RunOptions, run
from tunewise.store import Store
from tunewise.ui import Progress

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "banking77"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--test-limit", type=int, default=300)
    ap.add_argument("--train-limit", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--store", type=Path, default=Path(".tunewise"))
    ap.add_argument("--no-evidence", action="store_true", help="skip the learning curve and forgetting probe")
    args = ap.parse_args()
    if not (DATA / "train.csv").is_file():
        print(f"skipped: banking77 not found at {DATA} (the shared data folder is absent)")
        return 0
    task = TaskSpec(name="banking77 intents", type="classification", input_field="text", output_field="category",
                    labels=json.loads((DATA / "categories.json").read_text()),
                    instruction="Which banking customer-support intent does this query express?")
    overrides = task.model_dump(exclude_none=True)
    prep = prepare(str(DATA / "train.csv"), overrides=overrides, test_file=str(DATA / "test.csv"))
    budget = Budget(name="banking77-bench", test_first=args.test_limit, test_max=args.test_limit,
                    train_limit=args.train_limit,
                    epochs=args.epochs, shots=8, max_length=96, curve_fractions=[0.125, 0.25, 0.5, 1.0],
                    probe_limit=60)
    out = args.out / "banking77-run"
    start = time.perf_counter()
    opts = RunOptions(budget=budget, out_dir=out, store=Store(args.store), learning_curve=not args.no_evidence,
                      forgetting=not args.no_evidence)
    results = run(prep, opts, Progress())
    seconds = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "banking77.json").write_text(results.model_dump_json(indent=2))
    (args.out / "banking77.md").write_text(table(results, seconds))
    print(table(results, seconds))
    return 0


def table(results, seconds: float) -> str:
    lines = [f"# BANKING77 bake-off ({results.split.test_scored} test / {results.split.train_used} train, "
             f"budget {results.budget.name}, {seconds / 60:.0f} min on this machine)", "",
             "| candidate | accuracy [95% CI] | macro-F1 | p50 ms | train s | notes |", "|---|---|---|---|---|---|"]
    for c in results.candidates:
        if c.status != "ok":
            lines.append(f"| {c.name} | {c.status}: {c.error} | | | | |")
            continue
        a, f = c.metrics["accuracy"], c.metrics["macro_f1"]
        lines.append(f"| {c.name} | {a.value:.3f} [{a.ci_low:.3f}, {a.ci_high:.3f}] | {f.value:.3f} | "
                     f"{c.latency_ms['p50']:.0f} | {c.train_seconds or 0:.0f} | {'; '.join(c.notes)} |")
    if results.verdict:
        lines += ["", f"Verdict: **{results.verdict.decision}** — {results.verdict.summary}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
