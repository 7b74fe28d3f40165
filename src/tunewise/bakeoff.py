"""The bake-off: every candidate fitted on train and scored identically on the frozen test split.

Each candidate's result is cached in the store under a key of (data, task, strategy settings,
model, seed, budget); a re-run skips finished candidates. A failing candidate is recorded as
failed with its error and the run goes on.
"""

from __future__ import annotations

import time
import traceback
from pathlib import Path

import numpy as np

from tunewise.assets import DEFAULT_MODEL
from tunewise.config import Budget, TaskSpec, model_config
from tunewise.data.records import Record
from tunewise.evaluate import confusion, per_class, score_all
from tunewise.evaluate.stats import paired_bootstrap
from tunewise.results import CandidateResult, Comparison, EpochLoss
from tunewise import __version__
from tunewise.store import Store, make_key
from tunewise.strategies import CandidateSpec, Context, ModelPool, build
from tunewise.strategies.base import FitFacts
from tunewise.ui import Progress

LATENCY_SAMPLE = 16  # single requests timed per candidate; the rest goes through predict_many (batched on CUDA)
SCORE_CHUNK = 32  # records per predict_many call (the progress bar moves between calls)

PROMPTING = ("zero_shot", "few_shot", "knn_few_shot")
# Model settings that change no prediction: left out of the candidate key (a new price re-prices, not re-runs).
NOT_IN_KEY = {"api_key_env", "input_per_mtok", "output_per_mtok", "requests_per_second", "concurrency",
              "timeout_s", "max_retries"}


def default_candidates(task: TaskSpec, model: str = DEFAULT_MODEL, extra_models: list[str] | None = None,
                       full_ft: bool = False, prompt_models: list[str] | None = None) -> list[CandidateSpec]:
    """The standard line-up: floors first, then prompting, then fine-tuning, per model; then prompting
    only on each --prompt-model (served or local)."""
    specs = []
    if task.type == "classification":
        specs += [CandidateSpec(name="majority", strategy="majority"),
                  CandidateSpec(name="classical", strategy="classical")]
    for m in [model, *(extra_models or [])]:
        suffix = "" if m == model else f"@{Path(m).stem or m}"
        specs += [CandidateSpec(name=f"zero_shot{suffix}", strategy="zero_shot", model=m),
                  CandidateSpec(name=f"few_shot{suffix}", strategy="few_shot", model=m),
                  CandidateSpec(name=f"knn_few_shot{suffix}", strategy="knn_few_shot", model=m),
                  CandidateSpec(name=f"lora{suffix}", strategy="lora", model=m)]
        if full_ft:
            specs.append(CandidateSpec(name=f"full_ft{suffix}", strategy="full_ft", model=m))
    for m in prompt_models or []:
        short, _ = model_config(m, task.models)
        specs += [CandidateSpec(name=f"{s}@{short}", strategy=s, model=m) for s in PROMPTING]
    return specs


def candidate_key(spec: CandidateSpec, settings: dict, data_key: str, task: TaskSpec, budget: Budget,
                  seed: int) -> str:
    caps = budget.model_dump(exclude={"name", "curve_fractions", "probe_limit", "bootstrap"})
    served = model_config(spec.model, task.models)[1].model_dump(exclude=NOT_IN_KEY) if spec.model else None
    return make_key("candidate", __version__, spec.strategy, spec.model, settings, data_key,
                    task.model_dump(exclude={"target", "constraints", "name", "models"}), caps, seed,
                    *([served] if served else []))


def score_predictions(task: TaskSpec, labels: list[str], predictions: list[str], test: list[Record],
                      n_resamples: int, seed: int) -> dict:
    refs = [r.output for r in test]
    out = {"metrics": score_all(task.type, predictions, refs, labels=labels, n_resamples=n_resamples, seed=seed)}
    if task.type == "classification":
        out["per_class"] = per_class(predictions, refs, labels)
        out["confusion"] = confusion(predictions, refs, labels)
    return out


def run_candidate(spec: CandidateSpec, ctx: Context, test: list[Record], store: Store, data_key: str,
                  progress: Progress) -> CandidateResult:
    """Fit and score one candidate, or return its cached result."""
    try:
        strategy = build(spec)
        settings = strategy.settings()
    except Exception as exc:  # a bad spec fails this candidate, not the run
        return CandidateResult(name=spec.name, family="unknown", strategy=spec.strategy, model=spec.model,
                               status="failed", error=_one_line(exc))
    key = candidate_key(spec, settings, data_key, ctx.task, ctx.budget, ctx.seed)
    cached = store.get("candidate", key)
    if cached is not None:
        progress.note(f"{spec.name}: finished earlier, reused from the store")
        return CandidateResult.model_validate(cached)
    result = CandidateResult(name=spec.name, family=strategy.family, strategy=spec.strategy, model=spec.model,
                             settings=settings)
    ctx.work_dir = ctx.work_dir / spec.name
    ctx.work_dir.mkdir(parents=True, exist_ok=True)
    ctx.checkpoint_dir = store.root / "checkpoints" / key
    ctx.notes = []
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        progress.note(f"{spec.name}: preparing")
        facts = strategy.fit(ctx)
        if isinstance(facts, dict):  # an old-style strategy: its facts must still be ones FitFacts knows
            facts = FitFacts.model_validate(facts)
        began = time.perf_counter()
        with progress.task(f"{spec.name}: scoring", total=len(test)) as advance:
            scored, timed = predict_all(strategy, ctx, test, advance)
        result.scoring_seconds = time.perf_counter() - began
        _fill(result, facts, scored, timed)
        result.predictions = [s.prediction for s in scored]
        kept = {"predictions": result.predictions, "answers": result.answers}  # excluded from dumps
        scores = score_predictions(ctx.task, ctx.labels, result.predictions, test, ctx.budget.bootstrap, ctx.seed)
        result = result.model_validate(result.model_dump() | scores | kept)
        result.notes += ctx.notes
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        result.status, result.error = "failed", _one_line(exc)
        (ctx.work_dir / "error.txt").write_text(traceback.format_exc())
        progress.note(f"[red]{spec.name} failed:[/red] {result.error}")
        return result  # failures are not cached: a re-run tries again
    finally:
        ctx.work_dir = ctx.work_dir.parent
    store.put("candidate", key, result.model_dump(mode="json") | {"predictions": result.predictions,
                                                                   "answers": result.answers})
    return result


def predict_all(strategy, ctx: Context, test: list[Record], advance) -> tuple[list, int]:
    """(one Scored per test record, how many of the first were timed as single requests).

    A strategy that can predict in batches is asked one record at a time for the first
    LATENCY_SAMPLE records (their times are the latency a single request sees) and in chunks for
    the rest; the others go one at a time throughout."""
    many = getattr(strategy, "predict_many", None)
    timed = len(test) if many is None else min(LATENCY_SAMPLE, len(test))
    scored = []
    for record in test[:timed]:
        scored.append(strategy.predict(ctx, record))
        advance()
    for start in range(timed, len(test), SCORE_CHUNK):
        chunk = test[start:start + SCORE_CHUNK]
        scored += many(ctx, chunk)
        advance(len(chunk))
    return scored, timed


def _fill(result: CandidateResult, facts: FitFacts, scored, timed: int) -> None:
    """Latency from the first `timed` (single-request) predictions, tokens and request counts from all,
    training facts from fit."""
    result.latency_samples = timed
    seconds = np.array([s.seconds for s in scored[:timed]]) * 1000
    result.latency_ms = {"p50": float(np.percentile(seconds, 50)), "p95": float(np.percentile(seconds, 95)),
                         "mean": float(seconds.mean())}
    result.prompt_tokens_mean = float(np.mean([s.prompt_tokens for s in scored]))
    result.output_tokens_mean = float(np.mean([s.output_tokens for s in scored]))
    for name in ("train_seconds", "train_tokens", "train_tokens_per_s", "peak_memory_mb", "artifact",
                 "params", "trainable_params", "scoring"):
        if getattr(facts, name) is not None:
            setattr(result, name, getattr(facts, name))
    result.losses = [EpochLoss.model_validate(x, from_attributes=True) for x in facts.losses]
    result.notes += facts.notes
    if facts.scoring in ("generate", "chat_logprobs"):
        unparsed = [s.answer or "" for s in scored if s.unparsed]
        result.unparsed = len(unparsed)
        what = "named no single label" if facts.scoring == "generate" else "had no label among their top log-probs"
        examples = "; ".join(repr(a[:60] + ("…" if len(a) > 60 else "")) for a in unparsed[:3] if a)
        result.notes.append(f"{result.unparsed} of {len(scored)} answers ({result.unparsed / len(scored):.1%}) "
                            f"{what}: counted as wrong" + (f" (e.g. {examples})" if examples else ""))
    if facts.scoring == "generate":
        result.answers = [s.answer or "" for s in scored]
    if facts.api is not None:
        result.api = facts.api.model_copy(update={"requests": len(scored), "retries": sum(s.retries for s in scored),
                                                  "cached": sum(s.cached for s in scored)})
        a = result.api
        result.notes.append(f"HTTP {a.base_url} ({a.model}): {a.requests} test requests, {a.retries} retries "
                            f"(429/5xx/timeouts/connection/bad responses), {a.cached} answered from the store")
    if result.peak_memory_mb is None:
        result.peak_memory_mb = _peak_rss_mb()


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def compare(candidates: list[CandidateResult], test: list[Record], metric: str, labels: list[str] | None,
            n_resamples: int, seed: int) -> list[Comparison]:
    """Paired bootstrap of the best candidate against every other one, and of every option against the
    majority-class floor, on the same test items."""
    ok = [c for c in candidates if c.status == "ok" and c.predictions]
    if len(ok) < 2:
        return []
    best = max(ok, key=lambda c: c.metrics[metric].value)
    refs = [r.output for r in test]
    floor = next((c for c in ok if c.strategy == "majority"), None)
    pairs = [(best, other) for other in ok if other is not best]
    pairs += [(c, floor) for c in ok if floor is not None and c not in (best, floor)]
    out = []
    for a, b in pairs:
        t = paired_bootstrap(metric, a.predictions, b.predictions, refs, labels=labels,
                             n_resamples=n_resamples, seed=seed)
        out.append(Comparison(a=a.name, b=b.name, metric=metric, **t))
    return out


def run_bakeoff(specs: list[CandidateSpec], *, task: TaskSpec, labels: list[str], train: list[Record],
                validation: list[Record], test: list[Record], budget: Budget, seed: int, run_dir: Path,
                store: Store, data_key: str, progress: Progress, device: str = "auto") -> list[CandidateResult]:
    pool = ModelPool(device=device, models=task.models, store=store, prices=task.constraints.prices)
    results = []
    for spec in specs:
        ctx = Context(task=task, labels=labels, train=train, validation=validation, budget=budget, seed=seed,
                      work_dir=run_dir / "candidates", models=pool, device=device, progress=progress.callback)
        start = time.perf_counter()
        results.append(run_candidate(spec, ctx, test, store, data_key, progress))
        progress.note(f"{spec.name}: {_summary(results[-1], task.primary_metric)} "
                      f"({time.perf_counter() - start:.0f} s)")
    return results


def _summary(c: CandidateResult, metric: str) -> str:
    if c.status != "ok":
        return f"[red]{c.status}[/red] {c.error or ''}"
    m = c.metrics[metric]
    return f"{metric} {m.value:.3f} [{m.ci_low:.3f}, {m.ci_high:.3f}]"
