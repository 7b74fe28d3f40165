"""`tunewise serve` benchmark: requests/s and p50/p95 latency at concurrency 1 and 4, on the demo's LoRA
and classical candidates.

    python benchmarks/serve.py [--run RUN_DIR] [--requests 64] [--out benchmarks/results]

Without --run, a demo run is made first in benchmarks/results/serve-run (drug-review sentiment, quick
budget, candidates majority, classical and lora; no learning curve or forgetting probe). Each candidate
is served by `tunewise serve`'s app under uvicorn on 127.0.0.1 (tests/servers.py: AppServer) and asked
with the official openai client: a chat request per test review (the run's first test records, from
candidates/<name>/saved/check.jsonl, cycled), 3 warm-up requests first. Every answer is checked
against the run's prediction for that review. Writes serve.json and serve.md: only what was measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

# Run as a script, this file's folder would come first on sys.path and benchmarks/http.py would hide the
# standard library's `http` package: drop the folder, add tests/ (the servers).
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent / "tests"))

from servers import AppServer  # noqa: E402

CANDIDATES = ("lora", "classical")
CONCURRENCY = (1, 4)
WARMUP = 3


def demo_run(folder: Path) -> Path:
    """A quick demo run with the candidates to serve (reused when it is already there)."""
    from tunewise.config import BUDGETS
    from tunewise.data.prepare import prepare
    from tunewise.runner import RunOptions, run
    from tunewise.store import Store
    from tunewise.ui import Progress

    if (folder / "results.json").is_file():
        return folder
    prep = prepare(None, demo="sentiment")
    opts = RunOptions(budget=BUDGETS["quick"], out_dir=folder, store=Store(folder.parent / ".tunewise-serve"),
                      candidates=["majority", *CANDIDATES], learning_curve=False, forgetting=False)
    run(prep, opts, Progress())
    return folder


def measure(url: str, name: str, texts: list[str], expected: list[str], requests: int, concurrency: int) -> dict:
    import openai

    client = openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=300)

    def ask(i: int) -> tuple[float, bool]:
        began = time.perf_counter()
        reply = client.chat.completions.create(model=name, messages=[{"role": "user", "content": texts[i % len(texts)]}])
        return time.perf_counter() - began, reply.choices[0].message.content == expected[i % len(texts)]

    for i in range(WARMUP):
        ask(i)
    began = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        done = list(pool.map(ask, range(requests)))
    wall = time.perf_counter() - began
    ms = np.array([s for s, _ in done]) * 1000
    return {"candidate": name, "concurrency": concurrency, "requests": requests, "seconds": round(wall, 3),
            "requests_per_s": round(requests / wall, 2), "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p95_ms": round(float(np.percentile(ms, 95)), 1), "same_as_run": sum(ok for _, ok in done)}


def markdown(rows: list[dict], meta: dict) -> str:
    lines = ["# `tunewise serve` benchmark", "",
             f"Run: `{meta['run']}`; {meta['machine']}, {meta['threads']} torch threads, {meta['requests']} "
             "requests per row after 3 warm-ups; chat requests with the openai client over loopback; "
             "`same as run`: answers equal to the run's prediction for that review.", "",
             "| candidate | concurrency | requests/s | p50 ms | p95 ms | same as run |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['candidate']} | {r['concurrency']} | {r['requests_per_s']} | {r['p50_ms']} | {r['p95_ms']} | "
              f"{r['same_as_run']}/{r['requests']} |" for r in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    import torch

    from tunewise.deploy.run_folder import choose_candidate
    from tunewise.deploy.server import create_app
    from tunewise.strategies.saved import load_candidate, read_check

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=None, help="a demo run folder with lora and classical saved")
    ap.add_argument("--requests", type=int, default=64, help="timed requests per candidate and concurrency")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.out.mkdir(parents=True, exist_ok=True)
    run_dir = args.run or demo_run(args.out / "serve-run")
    rows = []
    for name in CANDIDATES:
        _, _, folder = choose_candidate(run_dir, name)
        records, predictions = read_check(folder)
        candidate = load_candidate(folder, device="cpu")
        with AppServer(create_app(candidate)) as server:
            for concurrency in CONCURRENCY:
                row = measure(server.url, name, [r.text for r in records], predictions, args.requests, concurrency)
                print(json.dumps(row), flush=True)
                rows.append(row)
    meta = {"run": str(run_dir), "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
            "threads": torch.get_num_threads(), "requests": args.requests}
    (args.out / "serve.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    (args.out / "serve.md").write_text(markdown(rows, meta))
    print(markdown(rows, meta))


if __name__ == "__main__":
    main()
