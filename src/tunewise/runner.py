"""`tunewise run`: the stages in order, each result written to the store so a run can resume.

prepare -> profile -> compute estimate -> bake-off -> comparisons -> learning curve ->
overfitting -> forgetting -> cost -> verdict -> report.
"""

from __future__ import annotations

import datetime as dt
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

from tunewise import __version__
from tunewise.assets import DEFAULT_MODEL
from tunewise.bakeoff import compare, default_candidates, run_bakeoff, run_candidate
from tunewise.config import Budget
from tunewise.data.prepare import Prepared, carve_validation
from tunewise.data.split import nested_fraction, subsample
from tunewise.decide import decide
from tunewise.evaluate.stats import joint_resamples
from tunewise.evidence import detect_overfitting, fit_learning_curve
from tunewise.evidence import measure
from tunewise.report import write_report
from tunewise.results import RunResults
from tunewise.store import Store, make_key
from tunewise.strategies import CandidateSpec, Context, ModelPool
from tunewise.strategies.prompts import system_turn
from tunewise.ui import Progress


@dataclass
class RunOptions:
    budget: Budget
    out_dir: Path
    store: Store
    model: str = DEFAULT_MODEL
    extra_models: list[str] = field(default_factory=list)
    candidates: list[str] | None = None  # registry names to keep; None: the default line-up
    full_ft: bool = False
    seed: int = 0
    device: str = "auto"
    learning_curve: bool = True
    forgetting: bool = True
    profile: dict | None = None
    profile_seconds: float | None = None  # measured by the caller, which profiles before the run


def run(prep: Prepared, opts: RunOptions, progress: Progress) -> RunResults:
    task, budget, seed = prep.task, opts.budget, opts.seed
    classification = task.type == "classification"
    test = subsample(prep.split.test, budget.test_limit, seed=seed, stratified=classification)
    pool_train = subsample(prep.split.train, budget.train_limit, seed=seed, stratified=classification)
    train, validation = carve_validation(pool_train, seed=seed, classification=classification)
    data_key = make_key(prep.data_key, [r.id for r in test], [r.id for r in train])
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    results = RunResults(
        tunewise_version=__version__, run_id=opts.out_dir.name, created=dt.datetime.now().isoformat(timespec="seconds"),
        task=task.model_dump() | {"labels": prep.labels}, budget=budget.model_dump(),
        split=prep.split.summary() | {"test_scored": len(test), "train_used": len(train),
                                      "validation": len(validation)},
        data=prep.data_summary(), profile=opts.profile,
        environment={"python": platform.python_version(), "machine": platform.machine(), "device": opts.device,
                     "seed": seed, "store": str(opts.store.path)})
    specs = _select(default_candidates(task, opts.model, opts.extra_models, opts.full_ft), opts.candidates)
    clock = _Clock(results.stage_seconds)
    if opts.profile_seconds is not None:
        results.stage_seconds["profile"] = round(opts.profile_seconds, 1)

    # Compute: estimated before any training, from a short calibration on this device.
    finetunes = [s for s in specs if s.strategy in ("lora", "full_ft")]
    pool = ModelPool(device=opts.device)
    if finetunes:
        results.compute = _estimate(prep, opts, finetunes, train, pool, progress)
        over = {e.candidate for e in results.compute if not e.within_budget}
        for e in results.compute:
            progress.note(f"compute: {e.candidate} ~{e.flops:.2e} FLOPs, estimated {e.estimated_seconds:.0f} s")
        specs = [s for s in specs if s.name not in over]
    clock.lap("compute_estimate")
    results.candidates = run_bakeoff(specs, task=task, labels=prep.labels, train=train, validation=validation,
                                     test=test, budget=budget, seed=seed, run_dir=opts.out_dir, store=opts.store,
                                     data_key=data_key, progress=progress, device=opts.device)
    clock.lap("bakeoff")
    for e in results.compute:
        c = results.candidate(e.candidate)
        if c is None:
            results.candidates.append(_skipped(e, next(s.strategy for s in finetunes if s.name == e.candidate)))
        elif c.train_seconds is not None:
            e.measured_seconds = c.train_seconds
    metric = task.primary_metric
    results.comparisons = compare(results.candidates, test, metric, prep.labels if classification else None,
                                  budget.bootstrap, seed)

    lora = next((c for c in results.candidates if c.strategy == "lora" and c.status == "ok"), None)
    if lora and opts.learning_curve:
        results.learning_curve = _learning_curve(lora, prep, opts, train, validation, test, data_key, progress)
    clock.lap("learning_curve")
    results.overfitting = [detect_overfitting(c.name, c.losses) for c in results.candidates
                           if c.family == "finetune" and c.status == "ok" and c.losses]
    tuned = [c for c in results.candidates if c.family == "finetune" and c.status == "ok" and c.artifact]
    if tuned and opts.forgetting:
        results.forgetting = _cached(opts.store, "forgetting", make_key(data_key, [c.model_dump(mode="json")
                                     for c in tuned], budget.probe_limit, seed),
                                     lambda: measure.forgetting(pool.lm(tuned[0].model or opts.model), tuned,
                                                                budget, seed, opts.device, progress))
    clock.lap("forgetting")
    c = task.constraints
    import torch

    results.cost = measure.cost_table(results.candidates, c.prices, c.monthly_requests, metric,
                                      on_gpu=torch.cuda.is_available())
    results.verdict = decide(results, task.target, c.latency_ms_limit)
    clock.lap("cost_and_verdict")
    opts.store.put("run", results.run_id, {"dir": str(opts.out_dir), "results": results.model_dump(mode="json")})
    write_report(results, opts.out_dir)
    return results


class _Clock:
    """Wall time per stage, written into results.stage_seconds as the stages finish."""

    def __init__(self, laps: dict[str, float]):
        self.laps, self.last = laps, time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.laps[stage] = round(now - self.last, 1)
        self.last = now


def _select(specs: list[CandidateSpec], names: list[str] | None) -> list[CandidateSpec]:
    if not names:
        return specs
    from tunewise.errors import ConfigError

    known = {s.strategy for s in specs} | {s.name for s in specs}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"--candidates: unknown {', '.join(unknown)}", fix=f"use some of {', '.join(sorted(known))}")
    return [s for s in specs if s.strategy in names or s.name in names]


def _cached(store: Store, kind: str, key: str, compute):
    from tunewise.results import Forgetting

    hit = store.get(kind, key)
    if hit is not None:
        return Forgetting.model_validate(hit)
    value = compute()
    store.put(kind, key, value.model_dump(mode="json"))
    return value


def _estimate(prep, opts, finetunes, train, pool, progress):
    task, budget = prep.task, opts.budget
    lm = pool.lm(opts.model)
    system = system_turn(task, prep.labels)
    share = budget.lora_layers_share
    cal_key = make_key("calibration", opts.model, opts.device, budget.max_length, share, __version__,
                       platform.node())
    calibration = opts.store.get("calibration", cal_key)
    if calibration is None:
        progress.note("compute: calibrating the training rate on this device (a short real run)")
        calibration = measure.calibrate(lm, train, system, opts.out_dir / "calibration", budget.max_length,
                                        opts.device, share)
        opts.store.put("calibration", cal_key, calibration)
    tokens = measure.training_tokens(lm, train, system, budget.max_length) * budget.epochs
    from tunewise.models.load import count_params

    from tunewise.models.train import TrainConfig, lora_trainable_params

    params = count_params(lm.model)[0]
    out = []
    for s in finetunes:
        method = "lora" if s.strategy == "lora" else "full"
        options = {k: v for k, v in s.options.items() if k in TrainConfig.model_fields}
        trainable = params if method == "full" else lora_trainable_params(
            lm.model, TrainConfig(**({"layers_share": share} | options)))
        out.append(measure.compute_estimate(s.name, method, params, trainable, tokens, calibration,
                                            task.constraints.compute_budget_hours, share))
    return out


def _skipped(estimate, strategy: str):
    from tunewise.results import CandidateResult

    return CandidateResult(name=estimate.candidate, family="finetune", strategy=strategy, status="skipped",
                           error=f"over the compute budget: estimated {estimate.estimated_seconds:.0f} s > "
                                 f"{estimate.budget_seconds:.0f} s")


def _learning_curve(lora, prep, opts, train, validation, test, data_key, progress):
    """Points at the budget's nested fractions of train, all scored on the same test items. Each is
    a LoRA trained one epoch over its subset with a warmup-stable-decay schedule: the decay branches
    the LoRA run saved (the whole set in a one-epoch budget is the LoRA candidate itself)."""
    metric, seed = prep.task.primary_metric, opts.seed
    classification = prep.task.type == "classification"
    points, predictions = [], []
    pool = ModelPool(device=opts.device)
    for fraction in opts.budget.curve_fractions:
        n = len(nested_fraction(train, fraction, seed=seed, stratified=classification))
        if fraction >= 1 and opts.budget.epochs == 1:
            c = lora
        else:
            ctx = Context(task=prep.task, labels=prep.labels, train=train, validation=validation,
                          budget=opts.budget, seed=seed, work_dir=opts.out_dir / "curve", models=pool,
                          device=opts.device, progress=progress.callback)
            c = run_candidate(_curve_spec(lora, fraction, n, progress), ctx, test, opts.store, data_key, progress)
        points.append(measure.curve_point(c, fraction, n, metric))
        predictions.append(c.predictions)
    resampled = None
    if all(len(p) == len(test) for p in predictions):  # every point scored: resample them jointly
        resampled = joint_resamples(metric, predictions, [r.output for r in test],
                                    prep.labels if classification else None, opts.budget.bootstrap, seed)
    return fit_learning_curve(points, metric, lora.name, prep.task.target, n_full=len(train),
                              n_boot=opts.budget.bootstrap, seed=seed, resampled=resampled)


def _curve_spec(lora, fraction: float, n: int, progress) -> CandidateSpec:
    """The saved decay branch for `n` records, scored; without one (a LoRA stored by an older
    version, or its run folder gone) the point is trained on its own: one epoch over the subset."""
    from tunewise.strategies.finetune import branch_dir

    branch = branch_dir(lora.artifact, n) if lora.artifact else None
    if branch is not None and (branch / "adapter_config.json").is_file():
        progress.note(f"learning curve: scoring the LoRA branch at {fraction:g} of train ({n} examples)")
        options = {"fraction": fraction, "adapter": str(branch)}
    else:
        progress.note(f"learning curve: no saved branch, LoRA on {fraction:g} of train ({n} examples)")
        options = {"fraction": fraction, "epochs": 1}
    return CandidateSpec(name=f"lora@{fraction:g}", strategy="lora", model=lora.model, options=options)
