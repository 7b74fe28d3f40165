"""Label-scoring cost per record, by attention kernel: eager matmuls against torch's SDPA.

    python benchmarks/scoring.py [--records 20] [--out benchmarks/results]

Label scoring (LanguageModel.classify_many) runs on SDPA; training keeps eager (load.pick_attention).
This measures why, on the prompt shapes the bake-off scores, with the shipped 135M model:
  zero-shot    a demo review after the system turn (cached prefix);
  few-shot     the same after 3 cached example reviews;
  kNN-style    3 example reviews inside each input (nothing shared but the system turn);
  banking77    77 intents scored in full, and by the best-label search (only when ../shared/data/banking77
               is present; skipped with the reason otherwise).
For each: ms a record with each kernel (interleaved, the faster of two rounds), whether the predictions
agree and the largest label log-probability difference. Writes scoring.json and scoring.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from tunewise.data.demo import load_demo
from tunewise.models.lm import LanguageModel
from tunewise.models.load import load_model

MODEL = "smollm2-135m"
BANKING77 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "banking77"


def cases(n: int) -> tuple[dict, str | None]:
    _, train, test = load_demo()
    system = [("system", "Classify the sentiment of the drug review as negative, neutral or positive.")]
    shots = [turn for r in train.records[:3] for turn in (("user", r.text), ("assistant", r.output))]
    inputs = [[("user", r.text)] for r in test.records[:n]]
    labels = ["negative", "neutral", "positive"]
    out = {"zero-shot": (system, inputs, labels, True), "few-shot (3 cached)": (system + shots, inputs, labels, True),
           "kNN-style (3 in the input)": (system, [shots + x for x in inputs], labels, True)}
    if not (BANKING77 / "test.csv").is_file():
        return out, f"banking77 cases skipped: {BANKING77} not found (the shared data folder is absent)"
    with open(BANKING77 / "train.csv") as f:
        intents = sorted({row["category"] for row in csv.DictReader(f)})
    with open(BANKING77 / "test.csv") as f:
        queries = [[("user", row["text"])] for row in list(csv.DictReader(f))[:n]]
    b_system = [("system", "Which banking customer-support intent does this query express? One of: "
                 + ", ".join(intents))]
    out["banking77, 77 intents, all scored"] = (b_system, queries, intents, True)
    out["banking77, best-label search"] = (b_system, queries, intents, False)
    return out, None


def timed(lm: LanguageModel, kernel: str, case) -> tuple[float, list]:
    system, inputs, labels, full = case
    lm.model.set_attn_implementation(kernel)
    lm.classify_many(system, inputs[:1], labels, full=full)  # the prefix cache and warm-up
    start = time.perf_counter()
    scored = lm.classify_many(system, inputs, labels, full=full)
    return (time.perf_counter() - start) / len(inputs), scored


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=20)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    model, tok = load_model(MODEL, dtype="float32")
    lm = LanguageModel(model, tok, MODEL)
    lm._attention = lambda name: nullcontext()  # keep the kernel this benchmark sets
    shapes, skipped = cases(args.records)
    rows = []
    for name, case in shapes.items():
        seconds = {"eager": [], "sdpa": []}
        scored = {}
        for _ in range(2):
            for kernel in seconds:
                s, scored[kernel] = timed(lm, kernel, case)
                seconds[kernel].append(s)
        same = sum(a.prediction == b.prediction for a, b in zip(scored["eager"], scored["sdpa"]))
        diffs = [abs(x - y) for a, b in zip(scored["eager"], scored["sdpa"]) if a.label_logprobs
                 for x, y in zip(a.label_logprobs, b.label_logprobs)]
        rows.append({"case": name, "records": len(case[1]), "eager_ms": 1000 * min(seconds["eager"]),
                     "sdpa_ms": 1000 * min(seconds["sdpa"]), "same_predictions": same,
                     "max_logprob_diff": max(diffs) if diffs else None})
        print(json.dumps(rows[-1]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scoring.json").write_text(json.dumps({"rows": rows, "skipped": skipped,
                                                       "threads": torch.get_num_threads(),
                                                       "load_before": os.getloadavg()[0]}, indent=2))
    lines = ["# Label scoring per record: eager against SDPA attention", "",
             f"machine: {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, fp32, shipped {MODEL}; "
             "the faster of two interleaved rounds per kernel", "",
             "| prompt shape | records | eager ms | SDPA ms | SDPA / eager | same predictions | max label log-prob diff |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        diff = "-" if r["max_logprob_diff"] is None else f"{r['max_logprob_diff']:.1e}"
        lines.append(f"| {r['case']} | {r['records']} | {r['eager_ms']:.0f} | {r['sdpa_ms']:.0f} | "
                     f"{r['sdpa_ms'] / r['eager_ms']:.2f} | {r['same_predictions']}/{r['records']} | {diff} |")
    if skipped:
        lines += ["", skipped]
    (args.out / "scoring.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
