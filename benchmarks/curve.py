"""Learning-curve benchmark: points from one warmup-stable-decay pass against separately trained points.

    python benchmarks/curve.py [--test-limit 0] [--out benchmarks/results] [--cache DIR]
                               [--decay-share S] [--decay-shape linear|1-sqrt] [--learning-rate LR]

The WSD settings default to the LoRA candidate's; the flags try other ones. `--cache DIR` keeps
each curve's predictions in DIR (separate.json; one-pass-SETTINGS.json per WSD setting) and reads
them from there when present, so that trying settings trains the separate points once; a cache made
on all test records serves a --test-limit run. The results say which curves came from the cache.

On the drug-review demo with the quick budget's training settings (all 540 training reviews after
the validation carve, 1 epoch, LoRA in the top half of the layers, max 192 tokens) it trains
  (a) separately, as tunewise did before: one LoRA per nested fraction 1/8, 1/4, 1/2 and 1, each a
      full run on its subset with the linear schedule (the 1 run is the old LoRA candidate);
  (b) once, as tunewise does now: one pass over train in nested order with a warmup-stable-decay
      schedule and a decay branch at the end of each fraction's subset (the pass itself is the 1
      point and the LoRA candidate).
Every model is scored on the same test reviews (all 379 by default) by label likelihood. It reports
each pair of points with 95% intervals and a paired bootstrap of their difference, and the cost of
each curve in optimizer steps over one full training's steps (the issue's count: the separate
curve costs 1/8 + 1/4 + 1/2 + 1 trainings). Targets: the one-pass curve costs <= 1.3 trainings and
each of its points lies within the interval of the separately trained point, and the reverse.
Writes curve.json and curve.md. Numbers are only what was measured in this run.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from tunewise.config import BUDGETS
from tunewise.data.demo import load_demo
from tunewise.data.prepare import carve_validation
from tunewise.data.split import nested_fraction, nested_order
from tunewise.evaluate.stats import bootstrap_ci, paired_bootstrap
from tunewise.models.lm import LanguageModel
from tunewise.models.load import cast_weights, load_model, pick_dtype
from tunewise.models.train import Example, TrainConfig, train
from tunewise.strategies.prompts import input_turns, system_turn

MODEL = "smollm2-135m"
QUICK = BUDGETS["quick"]


class Demo:
    """The demo task, its split as a quick run makes it, and the scorer."""

    def __init__(self, test_limit: int):
        self.task, train_set, test_set = load_demo()
        self.train, self.val = carve_validation(train_set.records, seed=0, classification=True)
        self.test = test_set.records[:test_limit or None]
        self.refs = [r.output for r in self.test]
        model, self.tok = load_model(MODEL, dtype="float32")
        self.lm = LanguageModel(model, self.tok, MODEL)
        self.system = system_turn(self.task, self.task.labels)

    def examples(self, records) -> list[Example]:
        return [Example(self.lm.encode(self.lm.render(self.system + input_turns(r), add_generation_prompt=True)),
                        self.lm.label_ids([r.output])[0]) for r in records]

    def score(self, peft_model) -> tuple[list[str], float]:
        """Predictions of the LoRA merged and cast as tunewise scores its fine-tuned candidates."""
        import copy

        merged = cast_weights(copy.deepcopy(peft_model).merge_and_unload(), pick_dtype("auto", "cpu")).eval()
        scorer = LanguageModel(merged, self.tok, MODEL)
        cache = scorer.prefix_cache(scorer.split_prompt(self.system, [("user", "x")])[0])
        start = time.perf_counter()
        scored = scorer.classify_many(self.system, [input_turns(r) for r in self.test], self.task.labels,
                                      cache=cache)
        return [s.prediction for s in scored], time.perf_counter() - start

    def config(self, **kw) -> TrainConfig:
        return TrainConfig(epochs=QUICK.epochs, max_length=QUICK.max_length, layers_share=QUICK.lora_layers_share,
                           **kw)


def separate(demo: Demo, fractions: list[float], work: Path) -> list[dict]:
    """One LoRA per fraction, each trained on its subset alone with the linear schedule."""
    points = []
    for f in fractions:
        records = nested_fraction(demo.train, f, seed=0, stratified=True)
        model, tok = load_model(MODEL, dtype="float32")
        result = train(model, tok, demo.examples(records), demo.examples(demo.val), demo.config(schedule="linear"),
                       work / f"separate-{f:g}", progress=False)
        predictions, score_s = demo.score(result.model)
        points.append({"fraction": f, "n": len(records), "steps": result.steps, "train_seconds": result.seconds,
                       "score_seconds": score_s, "predictions": predictions})
    return points


def cached(path: Path | None, demo: Demo, fractions: list[float], compute) -> tuple[list[dict], dict, bool]:
    """`compute()` -> (points, info), kept in `path` (when given) with the test records and fractions
    it was made for; read back when present. Returns the points, the info and whether they were read."""
    if path is not None and path.is_file():
        saved = json.loads(path.read_text())
        if saved["refs"][:len(demo.refs)] != demo.refs or saved["fractions"] != fractions:
            raise SystemExit(f"{path}: made for other test records or fractions; delete it or pass another --cache")
        return [p | {"predictions": p["predictions"][:len(demo.refs)]} for p in saved["points"]], saved["info"], True
    started = time.perf_counter()
    points, info = compute()
    info = info | {"wall_seconds": time.perf_counter() - started}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"refs": demo.refs, "fractions": fractions, "points": points, "info": info}))
    return points, info, False


def one_pass(demo: Demo, fractions: list[float], work: Path, wsd: dict) -> tuple[list[dict], dict]:
    """One WSD pass in nested order; the branches give the points below 1, the pass the point at 1."""
    records, sizes = nested_order(demo.train, fractions, seed=0, stratified=True)
    model, tok = load_model(MODEL, dtype="float32")
    cfg = demo.config(schedule="wsd", nested_sizes=sizes, **wsd)
    result = train(model, tok, demo.examples(records), demo.examples(demo.val), cfg, work / "one-pass",
                   progress=False)
    run = {"steps": result.steps, "branch_steps": result.branch_steps, "seconds": result.seconds,
           "branch_seconds": result.branch_seconds, "decay_share": cfg.decay_share, "decay_shape": cfg.decay_shape,
           "learning_rate": cfg.lr()}
    params = dict(result.model.named_parameters())
    final = {name: params[name].detach().clone() for name in next(iter(result.branches.values()))}
    points = []
    for f, n in zip(sorted(fractions), sizes, strict=True):
        weights = result.branches.get(n, final)  # the whole set: the pass itself
        with torch.no_grad():
            for name, value in weights.items():
                params[name].copy_(value)
        predictions, score_s = demo.score(result.model)
        points.append({"fraction": f, "n": n, "score_seconds": score_s, "predictions": predictions})
    return points, run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--test-limit", type=int, default=0, help="test reviews to score (0: all 379)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--cache", type=Path, help="folder keeping each curve's predictions (see above)")
    ap.add_argument("--decay-share", type=float, help="WSD: share of each run's steps spent decaying")
    ap.add_argument("--decay-shape", choices=["linear", "1-sqrt"], help="WSD: how the rate decays")
    ap.add_argument("--learning-rate", type=float, help="WSD pass: peak learning rate")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.out / "curve-work"
    fractions = list(QUICK.curve_fractions)
    demo = Demo(args.test_limit)
    wsd = demo.config(**{k: v for k, v in {"decay_share": args.decay_share, "decay_shape": args.decay_shape,
                                           "learning_rate": args.learning_rate}.items() if v is not None})
    wsd = {"decay_share": wsd.decay_share, "decay_shape": wsd.decay_shape, "learning_rate": wsd.lr()}
    key = "-".join(f"{v:g}" if isinstance(v, float) else v for v in wsd.values())
    sep, sep_info, sep_cached = cached(args.cache and args.cache / "separate.json", demo, fractions,
                                       lambda: (separate(demo, fractions, work), {}))
    one, run, one_cached = cached(args.cache and args.cache / f"one-pass-{key}.json", demo, fractions,
                                  lambda: one_pass(demo, fractions, work, wsd))

    full_steps = sep[-1]["steps"]  # one full training
    report = {"machine": {"cpus": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
                          "load_1min": os.getloadavg()[0]},
              "command": "python benchmarks/curve.py " + " ".join(os.sys.argv[1:]),
              "from_cache": {"separate": sep_cached, "one_pass": one_cached},
              "train_records": len(demo.train), "test_records": len(demo.refs), "fractions": fractions,
              "one_pass": run,
              "cost_separate": sum(p["steps"] for p in sep) / full_steps,
              "cost_one_pass": (run["steps"] + run["branch_steps"]) / full_steps,
              "seconds_separate": sep_info["wall_seconds"], "seconds_one_pass": run["wall_seconds"], "points": []}
    for a, b in zip(sep, one, strict=True):
        acc_a = bootstrap_ci("accuracy", a["predictions"], demo.refs, demo.task.labels, 1000, 0)
        acc_b = bootstrap_ci("accuracy", b["predictions"], demo.refs, demo.task.labels, 1000, 0)
        diff = paired_bootstrap("accuracy", b["predictions"], a["predictions"], demo.refs, demo.task.labels, 1000, 0)
        report["points"].append({
            "fraction": a["fraction"], "n": a["n"], "separate": acc_a, "one_pass": acc_b, "one_pass_minus_separate": diff,
            "agree": acc_a["ci_low"] <= acc_b["value"] <= acc_a["ci_high"] and acc_b["ci_low"] <= acc_a["value"] <= acc_b["ci_high"],
            "separate_steps": a["steps"], "same_predictions": sum(x == y for x, y in zip(a["predictions"], b["predictions"]))
            / len(demo.refs)})
    (args.out / "curve.json").write_text(json.dumps(report, indent=2))
    md = markdown(report)
    (args.out / "curve.md").write_text(md)
    print(md)


def markdown(r: dict) -> str:
    ci = lambda x: f"{x['value']:.3f} [{x['ci_low']:.3f}, {x['ci_high']:.3f}]"  # noqa: E731
    run = r["one_pass"]
    rows = [f"| {p['fraction']:g} | {p['n']} | {ci(p['separate'])} | {ci(p['one_pass'])} | "
            f"{p['one_pass_minus_separate']['diff']:+.3f} [{p['one_pass_minus_separate']['ci_low']:+.3f}, "
            f"{p['one_pass_minus_separate']['ci_high']:+.3f}] | {'yes' if p['agree'] else 'no'} |" for p in r["points"]]
    return "\n".join([
        "# tunewise learning-curve benchmark: one warmup-stable-decay pass vs. separate trainings", "",
        f"Drug-review demo, {r['train_records']} training reviews, quick budget (1 epoch, LoRA in the top half of "
        f"the layers, max 192 tokens); {r['test_records']} test reviews scored; torch {r['machine']['torch']}, "
        f"{r['machine']['cpus']} CPUs, {r['machine']['threads']} torch threads, load average "
        f"{r['machine']['load_1min']:.1f} at the end.", "",
        "| fraction | n | separate (linear schedule) | one pass (WSD branch) | one pass - separate (paired) | "
        "within each other's interval |", "|---|---|---|---|---|---|", *rows, "",
        f"One pass: peak learning rate {run['learning_rate']:g}, {run['decay_shape']} decay over the last "
        f"{run['decay_share']:.0%} of the run and of each subset's steps (its decay branch).", "",
        f"Cost in optimizer steps over one full training's: separate {r['cost_separate']:.3f} trainings, one pass "
        f"{r['cost_one_pass']:.3f} ({run['steps']} steps + {run['branch_steps']} in decay branches). Target: <= 1.3.",
        "",
        f"Wall time, training and scoring: separate {r['seconds_separate']:.0f} s, one pass {r['seconds_one_pass']:.0f} s "
        f"(its training {run['seconds']:.0f} s, of which branches {run['branch_seconds']:.0f} s), each measured when "
        f"computed{cache_note(r['from_cache'])}.", "", f"Command: `{r['command']}`", ""])


def cache_note(from_cache: dict) -> str:
    read = [name.replace("_", " ") for name, hit in from_cache.items() if hit]
    return f"; read from the cache this run: {', '.join(read)}" if read else ""


if __name__ == "__main__":
    main()
