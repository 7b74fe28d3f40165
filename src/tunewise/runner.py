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
from tunewise.bakeoff import compare, default_candidates, run_bakeoff, run_candidate, score_predictions
from tunewise.clock import StageClock
from tunewise.config import Budget, TaskSpec
from tunewise.data.prepare import Prepared, carve_validation
from tunewise.data.split import nested_fraction, subsample, test_order
from tunewise.decide import decide
from tunewise.evaluate.stats import joint_resamples
from tunewise.evidence import detect_overfitting, fit_learning_curve
from tunewise.evidence import measure
from tunewise.report import write_report
from tunewise.results import DataProfile, RunResults, SplitSummary
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
    prompt_models: list[str] = field(default_factory=list)  # prompting candidates only (served or local)
    candidates: list[str] | None = None  # names or registered strategies to run; None: the default line-up
    full_ft: bool = False
    seed: int = 0
    device: str = "auto"
    learning_curve: bool = True
    forgetting: bool = True
    # the time split (a second bake-off): None runs it when the task has a date_field and declares knowledge
    # that changes (knowledge_update other than never)
    freshness: bool | None = None
    profile: DataProfile | None = None
    profile_seconds: float | None = None  # measured by the caller, which profiles before the run
    clock: StageClock | None = None  # the caller's, when it times stages before the run (and across resumes)
    warnings: list[str] = field(default_factory=list)  # shown at the top of the report
    write_report: bool = True  # the report files and the run's store entry (False: the API without out=)


def run(prep: Prepared, opts: RunOptions, progress: Progress) -> RunResults:
    task, budget, seed = prep.task, opts.budget, opts.seed
    classification = task.type == "classification"
    test = test_order(prep.split.test, budget.test_first, seed=seed, stratified=classification)
    pool_train = subsample(prep.split.train, budget.train_limit, seed=seed, stratified=classification)
    train, validation = carve_validation(pool_train, seed=seed, classification=classification,
                                         limit=budget.validation_limit)
    data_key = make_key(prep.data_key, [r.id for r in test], [r.id for r in train])
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    results = RunResults(
        tunewise_version=__version__, run_id=new_run_id(opts.out_dir),
        created=dt.datetime.now().isoformat(timespec="seconds"),
        task=task.model_dump() | {"labels": prep.labels}, budget=budget,
        split=SplitSummary(**prep.split.summary(), train_used=len(train), validation=len(validation)),
        data=prep.data_summary(), profile=opts.profile,
        environment={"python": platform.python_version(), "machine": platform.machine(), "device": opts.device,
                     "seed": seed, "store": str(opts.store.path)}, warnings=list(opts.warnings))
    specs = _select(default_candidates(task, opts.model, opts.extra_models, opts.full_ft, opts.prompt_models),
                    opts.candidates, opts.model, task)
    clock = opts.clock or StageClock(first="compute_estimate")
    if opts.clock is None and opts.profile_seconds is not None:
        clock.laps["profile"] = opts.profile_seconds
    progress.on_activity = clock.beat

    # Compute: estimated before any training, from a short calibration on this device.
    finetunes = [s for s in specs if s.strategy in ("lora", "full_ft")]
    pool = ModelPool(device=opts.device)
    cal_key = make_key("calibration", opts.model, opts.device, budget.max_length, budget.lora_layers_share,
                       __version__, platform.node(), data_key)  # per device and task: rates follow text lengths
    if finetunes:
        results.compute = _estimate(prep, opts, finetunes, train, pool, progress, cal_key)
        over = {e.candidate for e in results.compute if not e.within_budget}
        for e in results.compute:
            progress.note(f"compute: {e.candidate} ~{e.flops:.2e} FLOPs, estimated {e.estimated_seconds:.0f} s")
        specs = [s for s in specs if s.name not in over]
    clock.lap("compute_estimate", then="bakeoff")
    results.candidates, results.test_scoring = run_bakeoff(
        specs, task=task, labels=prep.labels, train=train, validation=validation, test=test,
        budget=budget if opts.learning_curve else _no_curve(budget),
        seed=seed, run_dir=opts.out_dir, store=opts.store, data_key=data_key, progress=progress, device=opts.device)
    results.split.test_scored = max(results.test_scoring.records.values(), default=0)
    clock.lap("bakeoff", then="learning_curve")
    for e in results.compute:
        c = results.candidate(e.candidate)
        if c is None:
            results.candidates.append(_skipped(e, next(s.strategy for s in finetunes if s.name == e.candidate)))
        elif c.train_seconds is not None:
            e.measured_seconds = c.train_seconds
    _refresh_calibration(results, opts, cal_key, progress)
    metric = task.primary_metric
    scoring = results.test_scoring
    looks = [(lk.n, lk.alpha) for lk in scoring.looks] or list(zip(scoring.planned, scoring.alphas))
    results.comparisons = compare(results.candidates, test, metric, prep.labels if classification else None,
                                  budget.bootstrap, seed, looks)

    lora = next((c for c in results.candidates if c.strategy == "lora" and c.status == "ok"), None)
    if lora and opts.learning_curve:  # on the first look's records: a fixed set for every point
        curve_items = test[:results.test_scoring.planned[0]]
        results.learning_curve = _learning_curve(lora, prep, opts, train, validation, curve_items, data_key,
                                                 progress)
    clock.lap("learning_curve", then="forgetting")
    results.overfitting = [detect_overfitting(c.name, c.losses) for c in results.candidates
                           if c.family == "finetune" and c.status == "ok" and c.losses]
    tuned = [c for c in results.candidates if c.family == "finetune" and c.status == "ok" and c.artifact]
    if tuned and opts.forgetting:
        results.forgetting = _cached(opts.store, "forgetting", make_key(data_key, [c.model_dump(mode="json")
                                     for c in tuned], budget.probe_limit, seed),
                                     lambda: measure.forgetting(pool.lm(tuned[0].model or opts.model), tuned,
                                                                budget, seed, opts.device, progress), progress)
    clock.lap("forgetting", then="freshness")
    if task.date_field and (opts.freshness if opts.freshness is not None
                            else task.constraints.knowledge_update != "never"):
        results.freshness = _time_split(prep, opts, specs, results, test, progress)
    clock.lap("freshness", then="history")
    if any(r.multi_turn for r in test):
        results.history = _history_ablation(prep, opts, specs, results, test, train, validation, data_key, progress)
    clock.lap("history", then="judge" if task.judge else "cost_and_verdict")
    if task.judge:
        results.judge = _judge(task, opts, results, test, progress)
        clock.lap("judge", then="cost_and_verdict")
    c = task.constraints
    import torch

    results.cost = measure.cost_table(results.candidates, c.prices, c.monthly_requests, metric,
                                      on_gpu=torch.cuda.is_available())
    results.verdict = decide(results, task.target, c.latency_ms_limit)
    clock.lap("cost_and_verdict")
    progress.on_activity = None
    results.stage_seconds = clock.totals()
    if opts.write_report:
        opts.store.save_run(results.run_id, opts.out_dir, results.model_dump(mode="json"))
        write_report(results, opts.out_dir)
    clock.finish()
    return results


def new_run_id(out_dir: Path) -> str:
    """The run folder's name and a random suffix: unique, so runs in `a/first` and `b/first` sharing a
    store never overwrite each other's entry."""
    import uuid

    return f"{out_dir.name}-{uuid.uuid4().hex[:8]}"


def _task_pool(task, opts) -> ModelPool:
    """The models a re-scoring stage needs: the task's served models and prices, as the bake-off had them."""
    return ModelPool(device=opts.device, models=task.models, store=opts.store, prices=task.constraints.prices)


def _history_ablation(prep, opts, specs, results, test, train, validation, data_key, progress):
    """The best candidate (not the majority floor) on its multi-turn test records again, with the last
    user turn only; its bake-off predictions are the whole-history side (evidence/history.py)."""
    from tunewise.bakeoff import Contender
    from tunewise.data.history import last_turn_only
    from tunewise.evidence.history import ablation

    task, metric = prep.task, prep.task.primary_metric
    scored = [c for c in results.candidates if c.status == "ok" and c.strategy != "majority" and metric in c.metrics]
    if not scored:
        return None
    best = max(scored, key=lambda c: c.rank(metric))  # as the verdict ranks: an early-dropped option never leads
    spec = next(s for s in specs if s.name == best.name)
    idx = [i for i in range(len(best.predictions)) if test[i].multi_turn]
    if not idx:
        return None
    progress.note(f"multi-turn: {best.name} on {len(idx)} multi-turn test records with the last user turn only")
    ctx = Context(task=task, labels=prep.labels, train=train, validation=validation, budget=opts.budget,
                  seed=opts.seed, work_dir=opts.out_dir / "history", models=_task_pool(task, opts),
                  device=opts.device, progress=progress.callback)
    contender = Contender(spec, ctx, opts.store, data_key, progress)
    contender._fit()  # a fine-tuned candidate loads its trained adapter from the store
    records = [last_turn_only(test[i]) for i in idx]
    many = getattr(contender.strategy, "predict_many", None)
    answers = many(ctx, records) if many else [contender.strategy.predict(ctx, r) for r in records]
    labels = prep.labels if task.type == "classification" else None
    return ablation(best.name, metric, [best.predictions[i] for i in idx], [a.prediction for a in answers],
                    [test[i].output for i in idx], labels, opts.budget.bootstrap, opts.seed)


def _judge(task, opts, results, test, progress):
    """The judge model's grades of every candidate's answers (evaluate/judge.py), kept in the store."""
    from tunewise.evaluate.judge import JUDGE_PROMPT, JUDGE_SYSTEM, judge_candidates
    from tunewise.results import JudgeResult

    scored = [c for c in results.candidates if c.status == "ok" and c.predictions]
    progress.note(f"judge: {task.judge} grading the answers of {len(scored)} candidates")
    served = task.models.get(task.judge)
    key = make_key("judge", __version__, task.judge, served.model_dump() if served else None, JUDGE_SYSTEM,
                   JUDGE_PROMPT, [(r.id, r.text, r.output) for r in test], [(c.name, c.predictions) for c in scored],
                   opts.budget.bootstrap, opts.seed)
    return JudgeResult.model_validate(opts.store.cached("judge", key, lambda: judge_candidates(
        _task_pool(task, opts), task.judge, scored, test, opts.budget.bootstrap, opts.seed).model_dump(mode="json"),
        on_wait=_waiting(progress, "judge")))


def _no_curve(budget):
    """The budget for a bake-off with no learning curve after it: a one-epoch LoRA then trains no
    decay branches (about 28% more steps, for points nobody scores)."""
    return budget.model_copy(update={"curve_fractions": []})


def _time_split(prep, opts, specs, results, main_test, progress):
    """Every candidate of the run fitted on the records up to the cut-off date and scored on those
    after it; a rag candidate also with its corpus frozen at the cut-off (evidence/freshness.py)."""
    from tunewise.evidence import freshness
    from tunewise.strategies import build

    task, budget, seed = prep.task, opts.budget, opts.seed
    classification = task.type == "classification"
    planned = freshness.plan(prep.split.train + prep.split.test, budget.train_limit, budget.test_first, seed,
                             classification)
    if planned is None:
        progress.note(f"freshness: too few records dated by '{task.date_field}' for a time split "
                      f"(at least {2 * freshness.MIN_SIDE} needed)")
        return None
    train, test, cutoff = planned
    train, validation = carve_validation(train, seed=seed, classification=classification,
                                         limit=budget.validation_limit)
    progress.note(f"freshness: time split at {cutoff}: {len(train)} training records up to it, "
                  f"{len(test)} test records after it")
    ok = {c.name for c in results.candidates if c.status == "ok"}
    run_specs = [s for s in specs if s.name in ok]
    run_specs += [freshness.frozen_spec(s, cutoff) for s in run_specs if s.strategy in ("rag", "rag_lora")]
    leakage = {"training records after the cut-off": sum(r.date[:10] > cutoff for r in train + validation)}
    for s in run_specs:
        if s.name.endswith(freshness.FROZEN_SUFFIX):
            leakage[f"{s.name} documents after the cut-off"] = sum(
                d.date is not None and d.date[:10] > cutoff for d in build(s).docs)
    data_key = make_key("time-split", prep.data_key, cutoff, [r.id for r in test], [r.id for r in train])
    pool = _task_pool(task, opts)
    timed = {}
    for s in run_specs:
        ctx = Context(task=task, labels=prep.labels, train=train, validation=validation, budget=_no_curve(budget),
                      seed=seed, work_dir=opts.out_dir / "time_split", models=pool, device=opts.device,
                      progress=progress.callback)
        # no latency sample: the ageing table reports scores only, so every record goes in batches
        timed[s.name] = run_candidate(s, ctx, test, opts.store, data_key, progress, latency_sample=0)
    main = [c for c in results.candidates if c.name in {s.name for s in specs}]
    return freshness.table(main, timed, test, main_test, task.primary_metric, prep.labels if classification else None,
                           cutoff, len(train), prep.split.source, budget.bootstrap, seed, leakage)


def _select(specs: list[CandidateSpec], names: list[str] | None, model: str = DEFAULT_MODEL,
            task: TaskSpec | None = None) -> list[CandidateSpec]:
    """The line-up's candidates named (by name or strategy), plus any registered strategy named that the
    line-up lacks (e.g. full_ft), on the --model."""
    if not names:
        return specs
    from tunewise.errors import ConfigError
    from tunewise.strategies import known

    lineup = {s.strategy for s in specs} | {s.name for s in specs}
    unknown = [n for n in names if n not in lineup and n not in known()]
    if unknown:
        raise ConfigError(f"--candidates: unknown {', '.join(unknown)}",
                          fix=f"use some of {', '.join(sorted(lineup | set(known())))}")
    from tunewise.strategies.retrieval import RETRIEVAL_STRATEGIES, corpus_options

    extra = [CandidateSpec(name=n, strategy=n, model=model,
                           options=corpus_options(task) if task is not None and n in RETRIEVAL_STRATEGIES else {})
             for n in dict.fromkeys(names) if n not in lineup]
    return [s for s in specs if s.strategy in names or s.name in names] + extra


def _cached(store: Store, kind: str, key: str, compute, progress: Progress):
    from tunewise.results import Forgetting

    return Forgetting.model_validate(store.cached(kind, key, lambda: compute().model_dump(mode="json"),
                                                  on_wait=_waiting(progress, kind)))


def _waiting(progress: Progress, what: str):
    return lambda: progress.note(f"{what}: another run on this store is computing it; waiting to reuse it")


def _stored_calibration(store: Store, cal_key: str) -> tuple[dict | None, str | None]:
    """(the stored calibration, why it must be measured again or None)."""
    calibration = store.get("calibration", cal_key)
    return calibration, ("none stored for this task and device" if calibration is None
                         else measure.stale(calibration, time.time()))


def _estimate(prep, opts, finetunes, train, pool, progress, cal_key):
    task, budget = prep.task, opts.budget
    lm = pool.lm(opts.model)
    system = system_turn(task, prep.labels)
    share = budget.lora_layers_share
    calibration, why = _stored_calibration(opts.store, cal_key)
    if why:  # measured by one run at a time: concurrent runs wait and reuse it
        with opts.store.lock("calibration", cal_key, on_wait=_waiting(progress, "compute calibration")):
            calibration, why = _stored_calibration(opts.store, cal_key)
            if why:
                progress.note(f"compute: calibrating the training rate on this device ({why}; short real runs)")
                calibration = measure.calibrate(lm, train, system, opts.out_dir / "calibration", budget.max_length,
                                                opts.device, share, opts.seed)
                opts.store.put("calibration", cal_key, calibration)
    peak_now = measure.device_peak(opts.device)
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
                                            task.constraints.compute_budget_hours, share, peak_now))
    return out


def _refresh_calibration(results, opts, cal_key, progress) -> None:
    """The bake-off's own LoRA training is the best evidence of this task's rate: stored for the next run."""
    with opts.store.lock("calibration", cal_key):  # a read-modify-write: one run at a time
        _refresh_stored_calibration(results, opts, cal_key, progress)


def _refresh_stored_calibration(results, opts, cal_key, progress) -> None:
    calibration = opts.store.get("calibration", cal_key)
    trained = [(c.name, c.params, c.train_tokens, c.train_tokens / c.train_tokens_per_s, c.train_seconds)
               for c in results.candidates if c.strategy == "lora" and c.status == "ok" and c.train_tokens
               and c.train_tokens_per_s and c.params and c.train_seconds
               and "trained adapter loaded from the store" not in c.notes]
    if calibration is None or not trained:
        return
    updated, notes = measure.refreshed(calibration, trained, opts.device, opts.budget.lora_layers_share)
    for note in notes:
        progress.note(note)
    opts.store.put("calibration", cal_key, updated)


def _skipped(estimate, strategy: str):
    from tunewise.results import CandidateResult

    return CandidateResult(name=estimate.candidate, family="finetune", strategy=strategy, status="skipped",
                           error=f"over the compute budget: estimated {estimate.estimated_seconds:.0f} s > "
                                 f"{estimate.budget_seconds:.0f} s")


def _learning_curve(lora, prep, opts, train, validation, test, data_key, progress):
    """Points at the budget's nested fractions of train, all scored on the same test items. By default
    each point below 1 is a LoRA trained on its subset like the candidate, and the whole-set point is
    the candidate itself. A LoRA trained with `schedule: wsd` (the default on one-epoch budgets) saved a
    decay branch per subset: those are scored instead of training again (benchmarks/curve.py)."""
    from tunewise.strategies.finetune import branch_dir

    metric, seed = prep.task.primary_metric, opts.seed
    classification = prep.task.type == "classification"
    points, predictions = [], []
    pool = ModelPool(device=opts.device)
    for fraction in opts.budget.curve_fractions:
        n = len(nested_fraction(train, fraction, seed=seed, stratified=classification))
        branched = lora.artifact and (branch_dir(lora.artifact, n) / "adapter_config.json").is_file()
        if fraction >= 1 and not branched:  # the bake-off's own LoRA, on the curve's records only
            kept = lora.predictions[:len(test)]
            c = lora.model_validate(lora.model_dump() | {"predictions": kept} | score_predictions(
                prep.task, prep.labels, kept, test, opts.budget.bootstrap, seed))
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
        progress.note(f"learning curve: LoRA on {fraction:g} of train ({n} examples)")
        options = {"fraction": fraction}
    return CandidateSpec(name=f"lora@{fraction:g}", strategy="lora", model=lora.model, options=options)
