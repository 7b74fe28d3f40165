"""HTTP backend benchmark: requests/s at concurrency 1 and 4, and the overhead over local scoring.

    python benchmarks/http_backend.py [--records 24] [--out benchmarks/results]

On the shipped SmolLM2-135M and the demo's drug reviews (zero-shot prompt), the same records are
answered five ways:
- local likelihood: LanguageModel.score_labels (shared-prefix cache, labels in the input's forward);
- HTTP likelihood: /v1/completions echo + logprobs on tests/servers.py's EchoServer (same process,
  real loopback HTTP; the server runs one full forward per label prompt, as a server without prefix
  caching would), with the largest label-score difference to local;
- local generate and HTTP generate on `transformers serve` (a separate process, same dtype and
  attention): the same greedy answers, so the difference is the server's and the transport's cost;
- a canned server that answers at once: what the openai client, JSON and loopback cost per request.
HTTP runs use no response cache. Writes http.json and http.md; numbers are only what was measured.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path and its name would hide the standard
# library's `http` package: drop the folder, add tests/ (the servers).
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent / "tests"))

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from servers import CannedServer, EchoServer, TransformersServe  # noqa: E402

from tunewise.config import ModelConfig  # noqa: E402
from tunewise.data.demo import load_demo  # noqa: E402
from tunewise.models.backend import answer_tokens  # noqa: E402
from tunewise.models.chat_format import ChatFormat  # noqa: E402
from tunewise.models.http import HttpBackend  # noqa: E402
from tunewise.models.lm import LanguageModel  # noqa: E402
from tunewise.models.load import load_model, model_folder, pick_dtype  # noqa: E402
from tunewise.strategies.prompts import input_turns, system_turn  # noqa: E402

MODEL = "smollm2-135m"
CONCURRENCY = (1, 4)


def timed(fn) -> tuple[list, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def summary(scored, wall: float) -> dict:
    ms = np.array([s.seconds for s in scored]) * 1000
    return {"requests": len(scored), "seconds": wall, "requests_per_s": len(scored) / wall,
            "latency_ms_p50": float(np.percentile(ms, 50)), "latency_ms_p95": float(np.percentile(ms, 95)),
            "latency_ms_mean": float(ms.mean())}


def http(url: str, model: str, lm: LanguageModel, concurrency: int, scoring: str) -> HttpBackend:
    """A backend without response cache (every request reaches the server), prompts built like local."""
    cfg = ModelConfig(base_url=url, model=model, concurrency=concurrency, scoring=scoring)
    return HttpBackend(f"bench-c{concurrency}", cfg, None, ChatFormat(lm.tokenizer))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=24, help="demo test reviews per measurement")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process (local, echo server, "
                    "transformers serve): 1 keeps shared CPUs from stalling multi-threaded kernels")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    task, _, test_set = load_demo()
    shared = system_turn(task, task.labels)
    rests = [input_turns(r) for r in test_set.records[:args.records]]
    convs = [shared + rest for rest in rests]
    dtype = "bfloat16" if pick_dtype("auto", "cpu") == torch.bfloat16 else "float32"
    model, tok = load_model(MODEL, dtype=dtype)
    lm = LanguageModel(model, tok, MODEL)
    lm.score_labels(shared, rests[:1], task.labels)  # warm-up: prefix cache, lazy init
    report = {"machine": {"cpus": os.cpu_count(), "processor": platform.processor(), "torch": torch.__version__,
                          "load_average_start": os.getloadavg()},
              "records": len(rests), "labels": task.labels, "dtype": dtype, "threads": args.threads}

    local, wall = timed(lambda: lm.score_labels(shared, rests, task.labels))
    report["local_likelihood"] = summary(local, wall)
    with EchoServer(lm) as server:
        for c in CONCURRENCY:
            backend = http(server.url, MODEL, lm, c, "likelihood")
            served, wall = timed(lambda: backend.score_labels(shared, rests, task.labels, "likelihood"))
            diff = max(abs(a - b) for s, t in zip(local, served) for a, b in zip(s.label_logprobs, t.label_logprobs))
            report[f"http_likelihood_c{c}"] = summary(served, wall) | {"max_abs_logprob_diff": diff}

    n_new = answer_tokens(task.labels)
    generated, wall = timed(lambda: lm.generate(convs, n_new))
    report["local_generate"] = summary(generated, wall) | {"max_new_tokens": n_new}
    with TransformersServe(model_folder(MODEL), args.out / "http-serve.log", dtype, threads=args.threads) as server:
        for c in CONCURRENCY:
            backend = http(server.url, server.folder, lm, c, "generate")
            answers, wall = timed(lambda: backend.generate(convs, n_new))
            same = sum(a.prediction == b.prediction for a, b in zip(answers, generated)) / len(convs)
            report[f"http_generate_c{c}"] = summary(answers, wall) | {"same_answers_as_local": same}

    with CannedServer() as server:
        for c in CONCURRENCY:
            backend = http(server.url, "canned", lm, c, "generate")
            answers, wall = timed(lambda: backend.generate([convs[0]] * 200, 4))
            report[f"http_canned_c{c}"] = summary(answers, wall)
    report["machine"]["load_average_end"] = os.getloadavg()
    (args.out / "http.json").write_text(json.dumps(report, indent=2))
    md = markdown(report)
    (args.out / "http.md").write_text(md)
    print(md)


def markdown(r: dict) -> str:
    def row(name: str, key: str, extra: str = "") -> str:
        x = r[key]
        return (f"| {name} | {x['requests']} | {x['requests_per_s']:.2f} | {x['latency_ms_p50']:.0f} | "
                f"{x['latency_ms_p95']:.0f} | {extra} |")

    ll, lg = r["local_likelihood"], r["local_generate"]
    over = lambda key, base: r[key]["latency_ms_mean"] - base["latency_ms_mean"]  # noqa: E731
    lines = [
        "# tunewise HTTP backend benchmark", "",
        f"SmolLM2-135M ({r['dtype']}), {r['records']} demo reviews, zero-shot, labels {', '.join(r['labels'])}; "
        f"torch {r['machine']['torch']}, {r['threads']} torch thread(s) per process, {r['machine']['cpus']} CPUs, "
        "load average "
        f"{r['machine']['load_average_start'][0]:.1f} at the start and {r['machine']['load_average_end'][0]:.1f} at "
        "the end (the CPUs were shared with other work while measuring: absolute rates are noisy).", "",
        "| path | requests | requests/s | p50 ms | p95 ms | note |", "|---|---|---|---|---|---|",
        row("local likelihood (prefix cache)", "local_likelihood")]
    for c in CONCURRENCY:
        k = f"http_likelihood_c{c}"
        lines.append(row(f"HTTP likelihood, echo server, concurrency {c}", k,
                         f"max label-score diff {r[k]['max_abs_logprob_diff']:.1e} nats"))
    lines.append(row(f"local generate ({lg['max_new_tokens']} new tokens max)", "local_generate"))
    for c in CONCURRENCY:
        k = f"http_generate_c{c}"
        lines.append(row(f"HTTP generate, transformers serve, concurrency {c}", k,
                         f"same answers as local: {r[k]['same_answers_as_local']:.0%}"))
    for c in CONCURRENCY:
        lines.append(row(f"HTTP canned reply (client + loopback only), concurrency {c}", f"http_canned_c{c}",
                         "200 requests"))
    lines += ["", "Overhead over local, mean per request at concurrency 1: "
              f"likelihood {over('http_likelihood_c1', ll):+.0f} ms ({r['http_likelihood_c1']['latency_ms_mean'] / ll['latency_ms_mean']:.1f}x; "
              "the echo server runs one full forward per label, local one forward per record with a cached prefix), "
              f"generate {over('http_generate_c1', lg):+.0f} ms "
              f"({r['http_generate_c1']['latency_ms_mean'] / lg['latency_ms_mean']:.2f}x, the same greedy decoding "
              f"in another process); the client and loopback alone cost {r['http_canned_c1']['latency_ms_mean']:.1f} ms "
              "a request.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
