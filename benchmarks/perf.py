"""Performance benchmark: tunewise against the hardware limit and against plain baselines.

    python benchmarks/perf.py [--examples 64] [--score-examples 40] [--repeats 1] [--out benchmarks/results]

In one run on this machine it measures
  (a) achievable matmul FLOP/s in fp32 and bf16 (2048x2048);
  (b) LoRA training tokens/s of tunewise's trainer and of a plain transformers Trainer + PEFT fp32
      baseline on the same drug reviews (interleaved `--repeats` times, the median run kept), and
      tunewise's model FLOPs utilisation (4*N*tokens/s over the measured matmul rate of the precision
      it trains in: bf16 on CPUs with native bf16, else fp32);
  (c) few-shot classification scoring examples/s of tunewise (shared-prefix KV cache, every label
      scored in the input's forward) against the naive scorer (one full forward of prompt + label
      per label).
It writes perf.json and perf.md. Numbers are only what was measured in this run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from tunewise.data.demo import load_demo
from tunewise.evidence.compute import measure_device_flops
from tunewise.models.lm import LanguageModel
from tunewise.models.load import count_params, load_model, pick_attention
from tunewise.models.train import Example, TrainConfig, train
from tunewise.strategies.prompts import example_turns, input_turns, system_turn

MODEL = "smollm2-135m"


def matmul_rates() -> dict:
    return {dtype: measure_device_flops("cpu", dtype=dtype, size=2048, seconds=3.0) for dtype in ("float32", "bfloat16")}


def demo_examples(n: int):
    task, train_set, _ = load_demo()
    model, tok = load_model(MODEL, dtype="float32")
    lm = LanguageModel(model, tok, MODEL)
    system = system_turn(task, task.labels)
    records = train_set.records[:n]
    examples = [Example(lm.encode(lm.render(system + input_turns(r), add_generation_prompt=True)),
                        lm.label_ids([r.output])[0]) for r in records]
    return task, lm, examples


def tunewise_training(examples, max_length: int, out: Path) -> dict:
    model, tok = load_model(MODEL, dtype="float32")
    params = count_params(model)[0]
    result = train(model, tok, examples, [], TrainConfig(epochs=1, max_length=max_length, batch_size=8),
                   out, progress=False)
    return {"tokens": result.tokens, "seconds": result.seconds, "tokens_per_s": result.tokens_per_s,
            "params": params}


def baseline_training(examples, max_length: int, out: Path, dropout: float, attention: str) -> dict:
    """What a team would write first: HF Trainer + PEFT LoRA, fp32, padded batches of 8, full LM head.

    Run twice: with transformers' and most tutorials' settings (sdpa attention, lora_dropout 0.05), and
    with tunewise's own settings (eager attention on CPU, dropout 0), so the loop itself is compared."""
    from peft import LoraConfig, get_peft_model
    from transformers import Trainer, TrainingArguments

    model, tok = load_model(MODEL, dtype="float32")
    model.set_attn_implementation(attention)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=dropout, task_type="CAUSAL_LM",
                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                             "up_proj", "down_proj"]))
    rows = []
    for ex in examples:
        ids = (ex.prompt_ids + ex.completion_ids)[-max_length:]
        labels = ([-100] * len(ex.prompt_ids) + ex.completion_ids)[-max_length:]
        rows.append({"input_ids": ids, "labels": labels})

    def collate(batch):
        width = max(len(r["input_ids"]) for r in batch)
        pad = tok.pad_token_id or 0
        return {"input_ids": torch.tensor([r["input_ids"] + [pad] * (width - len(r["input_ids"])) for r in batch]),
                "attention_mask": torch.tensor([[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"]))
                                                for r in batch]),
                "labels": torch.tensor([r["labels"] + [-100] * (width - len(r["labels"])) for r in batch])}

    args = TrainingArguments(output_dir=str(out), per_device_train_batch_size=8, num_train_epochs=1,
                             learning_rate=6e-4, use_cpu=True, report_to=[], save_strategy="no",
                             logging_strategy="no", disable_tqdm=True, remove_unused_columns=False)
    trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=collate)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    tokens = sum(len(r["input_ids"]) for r in rows)  # real (non-pad) tokens, as tunewise counts them
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds, "lora_dropout": dropout,
            "attention": attention}


def scoring(task, n: int, k: int) -> dict:
    model, tok = load_model(MODEL, dtype="auto")
    lm = LanguageModel(model, tok, MODEL)
    _, train_set, test_set = load_demo()
    shots = train_set.records[:k]
    shared = system_turn(task, task.labels) + example_turns(shots)
    records = test_set.records[:n]
    label_ids = lm.label_ids(task.labels)

    start = time.perf_counter()
    prefix_ids, _ = lm.split_prompt(shared, [("user", "x")])
    cache = lm.prefix_cache(prefix_ids)
    fast = lm.classify_many(shared, [input_turns(r) for r in records], task.labels, cache=cache,
                            label_ids=label_ids)  # the bake-off's path: batched on CUDA, one at a time on CPU
    fast_s = time.perf_counter() - start

    start = time.perf_counter()
    naive = []
    with torch.inference_mode():
        for r in records:
            prompt = lm.encode(lm.render(shared + input_turns(r), add_generation_prompt=True))
            scores = []
            for ids in label_ids:
                logp = torch.log_softmax(model(torch.tensor([prompt + ids])).logits[0].float(), -1)
                scores.append(sum(logp[len(prompt) - 1 + j, t].item() for j, t in enumerate(ids)))
            naive.append(task.labels[max(range(len(scores)), key=scores.__getitem__)])
    naive_s = time.perf_counter() - start
    agree = sum(f.prediction == p for f, p in zip(fast, naive)) / n
    return {"examples": n, "shots": k, "prompt_tokens_mean": sum(f.prompt_tokens for f in fast) / n,
            "tunewise_examples_per_s": n / fast_s, "naive_examples_per_s": n / naive_s,
            "speedup": naive_s / fast_s, "same_predictions": agree, "dtype": str(model.dtype)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=64, help="training examples (drug reviews)")
    ap.add_argument("--score-examples", type=int, default=40)
    ap.add_argument("--shots", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=1, help="interleaved training runs of each kind (median kept)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.out / "perf-work"

    from tunewise.models.load import cpu_has_bf16

    report = {"machine": {"native_bf16": cpu_has_bf16(), "cpus": os.cpu_count(), "processor": platform.processor(), "torch": torch.__version__,
                          "threads": torch.get_num_threads(), "cuda": torch.cuda.is_available(),
                          "load_1min_before": os.getloadavg()[0]}}
    report["matmul_flops_per_s"] = matmul_rates()
    task, _, examples = demo_examples(args.examples)
    runs = {"train_tunewise": [], "train_baseline": [], "train_baseline_same_config": []}
    for _ in range(args.repeats):  # interleaved, so that a change in machine load hits every kind alike
        runs["train_tunewise"].append(tunewise_training(examples, args.max_length, work / "tunewise"))
        runs["train_baseline"].append(baseline_training(examples, args.max_length, work / "baseline", dropout=0.05,
                                                        attention="sdpa"))
        runs["train_baseline_same_config"].append(baseline_training(
            examples, args.max_length, work / "baseline0", dropout=0.0, attention=pick_attention("cpu") or "sdpa"))
    for kind, measured in runs.items():  # the median run by tokens/s, with every run's rate kept
        report[kind] = sorted(measured, key=lambda m: m["tokens_per_s"])[len(measured) // 2] | {
            "runs_tokens_per_s": [m["tokens_per_s"] for m in measured]}
    report["machine"]["load_1min_after_training"] = os.getloadavg()[0]
    n = report["train_tunewise"]["params"]
    from tunewise.models.load import cpu_has_bf16

    report["train_precision"] = "bfloat16" if cpu_has_bf16() else "float32"  # what tunewise trains in here
    peak = report["matmul_flops_per_s"][report["train_precision"]]
    report["train_speedup"] = report["train_tunewise"]["tokens_per_s"] / report["train_baseline"]["tokens_per_s"]
    report["train_speedup_same_config"] = (report["train_tunewise"]["tokens_per_s"]
                                           / report["train_baseline_same_config"]["tokens_per_s"])
    report["mfu"] = 4 * n * report["train_tunewise"]["tokens_per_s"] / peak
    report["scoring"] = scoring(task, args.score_examples, args.shots)
    (args.out / "perf.json").write_text(json.dumps(report, indent=2))
    md = markdown(report)
    (args.out / "perf.md").write_text(md)
    print(md)


def markdown(r: dict) -> str:
    t, b, s, m = r["train_tunewise"], r["train_baseline"], r["scoring"], r["matmul_flops_per_s"]
    b0 = r["train_baseline_same_config"]
    return "\n".join([
        "# tunewise performance benchmark", "",
        f"machine: {r['machine']['cpus']} CPUs, {r['machine']['threads']} torch threads, torch {r['machine']['torch']}, "
        f"CUDA {r['machine']['cuda']}, native bf16 {r['machine'].get('native_bf16', 'unknown')} (tunewise trains in bf16 "
        f"where the CPU has it, fp32 otherwise; the baselines always fp32); load average {r['machine']['load_1min_before']:.1f} before, "
        f"{r['machine']['load_1min_after_training']:.1f} after training; training rates are the median of "
        f"{len(t['runs_tokens_per_s'])} interleaved run(s) of each kind", "",
        "| measure | value | target |", "|---|---|---|",
        f"| matmul fp32 | {m['float32'] / 1e9:.0f} GFLOP/s | |",
        f"| matmul bf16 | {m['bfloat16'] / 1e9:.0f} GFLOP/s | |",
        f"| LoRA training, tunewise | {t['tokens_per_s']:.0f} tokens/s ({t['tokens']} tokens, {t['seconds']:.0f} s) | |",
        f"| LoRA training, Trainer + PEFT fp32, {b['attention']} attention, lora_dropout 0.05 (defaults) | "
        f"{b['tokens_per_s']:.0f} tokens/s ({b['seconds']:.0f} s) | |",
        f"| LoRA training, Trainer + PEFT fp32, {b0['attention']} attention, lora_dropout 0 (tunewise's settings) "
        f"| {b0['tokens_per_s']:.0f} tokens/s ({b0['seconds']:.0f} s) | |",
        f"| training speed-up vs. the plain baseline | {r['train_speedup']:.2f}x | >= 5x |",
        f"| training speed-up vs. the same-config baseline | {r['train_speedup_same_config']:.2f}x | |",
        f"| model FLOPs utilisation (4*N*tokens/s / {r['train_precision']} matmul; the shared prompt prefix is "
        f"computed once per batch, so this counts the tokens served, not the FLOPs done) | {r['mfu']:.0%} | >= 35% |",
        f"| few-shot scoring, tunewise | {s['tunewise_examples_per_s']:.2f} examples/s | |",
        f"| few-shot scoring, naive | {s['naive_examples_per_s']:.2f} examples/s | |",
        f"| scoring speed-up ({s['shots']} shots, {s['prompt_tokens_mean']:.0f} prompt tokens) | {s['speedup']:.1f}x "
        f"(same predictions {s['same_predictions']:.0%}) | >= 5x |", ""])


if __name__ == "__main__":
    main()
