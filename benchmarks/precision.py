"""Precision benchmark: does bf16 LoRA hold the accuracy of fp32 on the demo?

    python benchmarks/precision.py [--test-limit 0] [--layers-share 0.5] [--out benchmarks/results]

Trains the same LoRA twice on the drug-review demo (all 600 training reviews, validation carved
from them, 1 epoch, max 192 tokens, the quick budget's top-half layers by default): once with bf16
autocast and bf16 scoring (what tunewise does on a CPU with native bf16), once entirely in fp32.
Both are scored on the same test reviews (all 379 by default) by label likelihood; the difference
gets a paired bootstrap interval. The target is bf16 within 1 point of fp32. Writes precision.json
and precision.md. Numbers are only what was measured in this run.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from tunewise.data.demo import load_demo
from tunewise.data.prepare import carve_validation
from tunewise.evaluate.stats import bootstrap_ci, paired_bootstrap
from tunewise.models.lm import LanguageModel
from tunewise.models.load import cast_weights, load_model
from tunewise.models.train import Example, TrainConfig, train
from tunewise.strategies.prompts import input_turns, system_turn

MODEL = "smollm2-135m"


def run(precision: str, task, train_records, val_records, test_records, layers_share: float, work: Path) -> dict:
    model, tok = load_model(MODEL, dtype="float32")
    lm = LanguageModel(model, tok, MODEL)
    system = system_turn(task, task.labels)

    def examples(records):
        return [Example(lm.encode(lm.render(system + input_turns(r), add_generation_prompt=True)),
                        lm.label_ids([r.output])[0]) for r in records]

    cfg = TrainConfig(epochs=1, max_length=192, layers_share=layers_share, dtype=precision)
    result = train(model, tok, examples(train_records), examples(val_records), cfg, work / precision, progress=True)
    scoring = cast_weights(result.model.merge_and_unload(), getattr(torch, precision)).eval()
    scorer = LanguageModel(scoring, tok, MODEL)
    cache = scorer.prefix_cache(scorer.split_prompt(system, [("user", "x")])[0])
    start = time.perf_counter()
    scored = scorer.classify_many(system, [input_turns(r) for r in test_records], task.labels, cache=cache)
    return {"precision": precision, "train_seconds": result.seconds, "train_tokens_per_s": result.tokens_per_s,
            "val_loss": result.losses[-1].val_loss, "score_seconds": time.perf_counter() - start,
            "predictions": [s.prediction for s in scored]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--test-limit", type=int, default=0, help="test reviews to score (0: all 379)")
    ap.add_argument("--layers-share", type=float, default=0.5, help="share of the layers with LoRA adapters")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    task, train_set, test_set = load_demo()
    train_records, val_records = carve_validation(train_set.records, seed=0, classification=True)
    test_records = test_set.records[:args.test_limit or None]
    refs = [r.output for r in test_records]
    runs = {p: run(p, task, train_records, val_records, test_records, args.layers_share, args.out / "precision-work")
            for p in ("bfloat16", "float32")}
    report = {"machine": {"cpus": os.cpu_count(), "torch": torch.__version__}, "test_records": len(refs),
              "train_records": len(train_records), "layers_share": args.layers_share}
    for p, r in runs.items():
        report[p] = {k: v for k, v in r.items() if k != "predictions"} | {
            "accuracy": bootstrap_ci("accuracy", r["predictions"], refs, task.labels, 1000, 0)}
    report["bf16_minus_fp32"] = paired_bootstrap("accuracy", runs["bfloat16"]["predictions"],
                                                 runs["float32"]["predictions"], refs, task.labels, 1000, 0)
    report["same_predictions"] = sum(a == b for a, b in zip(runs["bfloat16"]["predictions"],
                                                           runs["float32"]["predictions"])) / len(refs)
    (args.out / "precision.json").write_text(json.dumps(report, indent=2))
    md = markdown(report)
    (args.out / "precision.md").write_text(md)
    print(md)


def markdown(r: dict) -> str:
    b, f, d = r["bfloat16"], r["float32"], r["bf16_minus_fp32"]
    row = lambda x: (f"| {x['precision']} | {x['accuracy']['value']:.3f} [{x['accuracy']['ci_low']:.3f}, "  # noqa: E731
                     f"{x['accuracy']['ci_high']:.3f}] | {x['val_loss']:.4f} | {x['train_tokens_per_s']:.0f} | "
                     f"{x['train_seconds']:.0f} s |")
    return "\n".join([
        "# tunewise precision benchmark: bf16 vs. fp32 LoRA on the demo", "",
        f"{r['train_records']} training reviews, 1 epoch, LoRA in the top {r['layers_share']:g} of the layers; "
        f"{r['test_records']} test reviews scored; torch {r['machine']['torch']}, {r['machine']['cpus']} CPUs", "",
        "| precision | accuracy [95% CI] | validation loss | training tokens/s | training time |",
        "|---|---|---|---|---|", row(b), row(f), "",
        f"bf16 - fp32: {d['diff']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] (paired bootstrap, p = {d['p_value']:.2f}); "
        f"same prediction on {r['same_predictions']:.0%} of the reviews. Target: within 1 point (|diff| <= 0.01).", ""])


if __name__ == "__main__":
    main()
