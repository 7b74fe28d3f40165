"""Evidence that needs models: the learning-curve points, the forgetting probe, the compute
calibration, and the cost table built from measured candidates."""

from __future__ import annotations

import json
import time
from pathlib import Path


from tunewise.assets import DEFAULT_MODEL
from tunewise.assets import general_probe, general_text
from tunewise.config import Budget, Prices
from tunewise.evaluate.stats import bootstrap_ci, paired_bootstrap
from tunewise.evidence.compute import estimate_compute, measure_device_flops, training_flops
from tunewise.evidence.cost import DEFAULT_ASSUMPTIONS, break_even, candidate_cost
from tunewise.results import (CandidateResult, ComputeEstimate, Cost, CurvePoint, Forgetting,
                              ForgettingEntry, Interval)

PROBE_SYSTEM = "Answer the question with the correct choice."


def curve_point(c: CandidateResult, fraction: float, n: int, metric: str) -> CurvePoint:
    if c.status != "ok":
        return CurvePoint(fraction=fraction, n=n, value=0.0, ci_low=0.0, ci_high=0.0, status="failed",
                          error=c.error or c.status)
    m = c.metrics[metric]
    return CurvePoint(fraction=fraction, n=n, value=m.value, ci_low=m.ci_low, ci_high=m.ci_high)


def load_probe(limit: int) -> list[dict]:
    lines = general_probe().read_text("utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()][:limit]


def probe_predictions(lm, items: list[dict]) -> list[str]:
    """Multiple choice by choice likelihood, the same scorer as classification."""
    system = [("system", PROBE_SYSTEM)]
    cache = lm.prefix_cache(lm.split_prompt(system, [("user", "x")])[0])
    out = []
    for item in items:
        question = item["question"] + "\nChoices: " + "; ".join(item["choices"])
        out.append(lm.classify(system, [("user", question)], item["choices"], cache=cache).prediction)
    return out


def load_finetuned(c: CandidateResult, device: str):
    """The fine-tuned model back from its saved artifact (adapter on the base, or full model)."""
    from tunewise.models.lm import LanguageModel
    from tunewise.models.load import load_model

    path = Path(c.artifact or "")
    if (path / "adapter_config.json").is_file():
        from peft import PeftModel

        base, tokenizer = load_model(c.model or DEFAULT_MODEL, device=device, dtype="auto")
        model = PeftModel.from_pretrained(base, str(path)).merge_and_unload().eval()  # merged: scores faster
    else:
        model, tokenizer = load_model(str(path), device=device, dtype="auto")
    return LanguageModel(model, tokenizer, c.name)


def forgetting(base_lm, finetuned: list[CandidateResult], budget: Budget, seed: int, device: str,
               progress) -> Forgetting:
    """General-ability probe and general-text perplexity before and after fine-tuning."""
    items = load_probe(budget.probe_limit)
    refs = [item["choices"][item["answer"]] for item in items]
    texts = general_text()
    progress.note(f"forgetting probe: {len(items)} general questions, base model")
    base_preds = probe_predictions(base_lm, items)
    base = bootstrap_ci("accuracy", base_preds, refs, n_resamples=budget.bootstrap, seed=seed)
    entries = []
    for c in finetuned:
        progress.note(f"forgetting probe: {c.name}")
        lm = load_finetuned(c, device)
        preds = probe_predictions(lm, items)
        score = bootstrap_ci("accuracy", preds, refs, n_resamples=budget.bootstrap, seed=seed)
        d = paired_bootstrap("accuracy", preds, base_preds, refs, n_resamples=budget.bootstrap, seed=seed)
        entries.append(ForgettingEntry(candidate=c.name, score=Interval(**score),
                                       delta=Interval(value=d["diff"], ci_low=d["ci_low"], ci_high=d["ci_high"]),
                                       perplexity=lm.perplexity(texts)))
    return Forgetting(probe="tunewise general probe (multiple choice, written for the project)",
                      items=len(items), base_score=Interval(**base), base_perplexity=base_lm.perplexity(texts),
                      models=entries)


def training_tokens(lm, records, system, max_length: int) -> int:
    """Tokens one epoch processes: prompt + answer per example, capped at max_length."""
    from tunewise.strategies.prompts import input_turns

    total = 0
    for r in records:
        n = len(lm.encode(lm.render(system + input_turns(r), add_generation_prompt=True)))
        total += min(n + len(lm.label_ids([r.output])[0]), max_length)
    return total


CAL_RECORDS = 16  # per repeat: two optimizer steps of 8
CAL_REPEATS = 3  # timed repeats after one warm-up run; their median is the rate
STALE_SECONDS = 30 * 86400  # a calibration older than this is measured again
PEAK_SAMPLES, PEAK_SECONDS = 3, 0.25  # device_peak: median of 3 samples of 0.25 s


def calibrate(lm, records, system, work_dir: Path, max_length: int, device: str, layers_share: float = 1.0,
              seed: int = 0) -> dict:
    """Short real training runs on a seeded sample of the task's own records: the share of the
    device's matmul rate that training achieves (`efficiency`) and the fixed cost of a training
    (`overhead_seconds`: set-up, not steps). One warm-up run first (thread pools, allocator, first
    casts), then CAL_REPEATS timed runs: the median overhead, and the median rate of the runs that were
    not stalled (steady_rate), so one slow moment does not decide."""
    import random
    import statistics
    import time

    from tunewise.models.load import count_params, load_model
    from tunewise.models.train import Example, TrainConfig, train
    from tunewise.strategies.prompts import input_turns

    sample = random.Random(seed).sample(list(records), min(CAL_RECORDS, len(records)))
    examples = [Example(lm.encode(lm.render(system + input_turns(r), add_generation_prompt=True)),
                        lm.label_ids([r.output])[0]) for r in sample]
    params = count_params(lm.model)[0]
    cfg = TrainConfig(epochs=1, max_length=max_length, batch_size=8, layers_share=layers_share)
    start, efficiencies, overheads = time.perf_counter(), [], []
    for repeat in range(CAL_REPEATS + 1):
        model, tokenizer = load_model(lm.name, device=device, dtype="float32")
        result = train(model, tokenizer, examples, [], cfg, work_dir / f"repeat{repeat}", progress=False)
        del model
        step_seconds = result.tokens / max(result.tokens_per_s, 1e-9)
        peak = device_peak(device)  # right after the run: the rate the machine gives now
        if repeat:  # the warm-up run is not counted
            efficiencies.append(training_flops(params, result.tokens, "lora", layers_share) / step_seconds / peak)
            overheads.append(max(0.0, result.seconds - step_seconds))
    return {"device_flops_per_s": peak, "efficiency": steady_rate(efficiencies),
            "overhead_seconds": statistics.median(overheads), "repeats": efficiencies,
            "seconds": time.perf_counter() - start, "params": params, "created": time.time(),
            "basis": f"calibration: median of the unstalled of {CAL_REPEATS} short runs on {len(sample)} of the "
                     "task's records"}


STALLED = 0.5  # a repeat below this share of the fastest one was stalled


def steady_rate(rates: list[float]) -> float:
    """The median of the repeats' rates, leaving out stalled ones (below STALLED x the fastest).

    Beside another process that keeps the cores busy, a short run either shares them (about half the
    idle rate) or stalls: an OpenMP thread waits at a barrier for a thread the other process preempted.
    Measured on 2 cores beside a torch matmul loop, a 2-step calibration run took 3 s or 60 s, the two
    mixed at random; the LoRA it calibrated trained at 8.3x the plain median of three repeats
    [0.86, 0.05, 0.05], which had estimated 8,741 s for a training of 771 s. A long training averages
    the stalls in, and measured trainings refresh the rate (refreshed)."""
    import statistics

    fastest = max(rates)
    return statistics.median([r for r in rates if r >= STALLED * fastest])


def device_peak(device: str) -> float:
    """The matmul rate the device gives at this moment, in the dtype training computes in (bf16 where
    the device has it natively, fp32 otherwise): estimates scale with it, so a machine busier (or
    idler) than at calibration time is accounted for. The median of PEAK_SAMPLES short samples: one
    sample beside a busy process can catch a stall and misjudge the rate severalfold."""
    import statistics

    from tunewise.models.load import pick_dtype

    device = "cuda" if device.startswith("cuda") else "cpu"
    dtype = pick_dtype("auto", device)
    return statistics.median(measure_device_flops(device, dtype=dtype, seconds=PEAK_SECONDS)
                             for _ in range(PEAK_SAMPLES))


def stale(calibration: dict, now: float) -> str | None:
    """Why a stored calibration must be measured again, or None to reuse it."""
    created = calibration.get("created")
    if created is None or "overhead_seconds" not in calibration:
        return "stored by an older tunewise"
    if now - created > STALE_SECONDS:
        return f"{(now - created) / 86400:.0f} days old"
    return None


def refreshed(calibration: dict, measured: list[tuple[str, int, int, float, float]], device: str,
              layers_share: float) -> tuple[dict, list[str]]:
    """The calibration updated from trainings just measured in this run ((candidate, params, tokens,
    step seconds, wall seconds) of each): real trainings of this task are the better evidence. A rate
    more than 2x off the stored one is said so, never replaced silently."""
    out, notes = dict(calibration), []
    for name, params, tokens, step_seconds, wall_seconds in measured:
        peak = device_peak(device)
        efficiency = training_flops(params, tokens, "lora", layers_share) / max(step_seconds, 1e-9) / peak
        ratio = efficiency / calibration["efficiency"]
        if not 0.5 <= ratio <= 2:
            notes.append(f"compute: {name} trained at {ratio:.1f}x the calibrated rate; the stored rate is "
                         "replaced by the measured one")
        out.update(efficiency=efficiency, overhead_seconds=max(0.0, wall_seconds - step_seconds),
                   device_flops_per_s=peak, basis=f"measured: {name}'s training of this task on this device",
                   created=time.time())
    return out, notes


def compute_estimate(name: str, method: str, params: int, trainable: int, tokens: int, calibration: dict,
                     budget_hours: float | None, layers_share: float = 1.0,
                     peak_now: float | None = None) -> ComputeEstimate:
    """The estimate from a calibration, at the device's matmul rate now (`peak_now`) when given."""
    estimate = estimate_compute(name, params, trainable, tokens, method,
                                peak_now or calibration["device_flops_per_s"], calibration["efficiency"],
                                budget_hours * 3600 if budget_hours else None, layers_share,
                                overhead_seconds=calibration.get("overhead_seconds", 0.0))
    estimate.basis = calibration.get("basis", "")
    return estimate


def cost_table(candidates: list[CandidateResult], prices: Prices, monthly: int | None, metric: str,
               on_gpu: bool) -> Cost:
    """Cost per 1,000 requests from measured latency and tokens (HTTP candidates: their token usage at their
    model's prices); break-even of fine-tuning vs prompting (an API model when one was prompted)."""
    rows = {}
    for c in candidates:
        if c.status != "ok" or c.latency_ms is None:
            continue
        if c.api is not None:
            own = prices.model_copy(update={"api_input_per_mtok": c.api.input_per_mtok,
                                            "api_output_per_mtok": c.api.output_per_mtok})
            rows[c.name] = candidate_cost(c.name, "api", c.prompt_tokens_mean, c.output_tokens_mean, None, 0.0,
                                          own, monthly)
            continue
        hosting = "none" if c.family in ("classical", "baseline") else ("gpu" if on_gpu else "cpu")
        rows[c.name] = candidate_cost(c.name, hosting, c.prompt_tokens_mean, c.output_tokens_mean,
                                      c.latency_ms["mean"] / 1000, c.train_seconds or 0.0, prices, monthly,
                                      train_on="gpu" if on_gpu else "cpu")
    cost = Cost(assumptions=DEFAULT_ASSUMPTIONS, candidates=list(rows.values()))

    def best(family: str, api: bool | None = None):
        pool = [c for c in candidates if c.name in rows and c.family == family
                and (api is None or (c.api is not None) == api)]
        return max(pool, key=lambda c: c.metrics[metric].value, default=None)

    ft, prompt = best("finetune"), best("prompting", api=True) or best("prompting")
    if ft and prompt:
        cost.break_even = break_even(rows[ft.name], rows[prompt.name])
    return cost

