"""The bake-off: every candidate fitted on train and scored identically on the frozen test split.

Every candidate is scored on the first look's records; adaptive scoring then scores more of the
split, in its fixed order, for the options still in contention (evaluate/sequential.py). Each
candidate's result is cached in the store under a key of (data, task, strategy settings, model,
seed, budget) and grows chunk by chunk; a re-run skips finished work. A failing candidate is
recorded as failed with its error and the run goes on.
"""

from __future__ import annotations

import shutil
import time
import traceback
from pathlib import Path

import numpy as np

from tunewise.assets import DEFAULT_MODEL
from tunewise.config import Budget, TaskSpec, model_config
from tunewise.data.records import Record
from tunewise.evaluate import bootstrap_ci, confusion, per_class, score_all, sequential
from tunewise.results import AdaptiveScoring, CandidateResult, Comparison, EpochLoss, Look
from tunewise import __version__
from tunewise.store import Store, make_key
from tunewise.strategies import CandidateSpec, Context, ModelPool, build
from tunewise.strategies.base import FitFacts
from tunewise.strategies.retrieval import corpus_options
from tunewise.ui import Progress

LATENCY_SAMPLE = 16  # single requests timed per candidate; the rest goes through predict_many (batched on CUDA)
SCORE_CHUNK = 32  # records per predict_many call (the progress bar moves between calls)
PROMPTING = ("zero_shot", "few_shot", "knn_few_shot")
# Model settings that change no prediction: left out of the candidate key (a new price re-prices, not re-runs).
NOT_IN_KEY = {"api_key_env", "input_per_mtok", "output_per_mtok", "requests_per_second", "concurrency",
              "timeout_s", "max_retries"}
COUNT_NOTES = ("answers: ", "HTTP: ", "retrieval: ")  # notes rewritten after every chunk (counts so far)


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
        if task.corpus:  # rag_lora (a second LoRA, with passages) is opt-in: --candidates rag_lora
            specs.append(CandidateSpec(name=f"rag{suffix}", strategy="rag", model=m, options=corpus_options(task)))
        if full_ft:
            specs.append(CandidateSpec(name=f"full_ft{suffix}", strategy="full_ft", model=m))
    for m in prompt_models or []:
        short, _ = model_config(m, task.models)
        specs += [CandidateSpec(name=f"{s}@{short}", strategy=s, model=m) for s in PROMPTING]
    return specs


def candidate_key(spec: CandidateSpec, settings: dict, data_key: str, task: TaskSpec, budget: Budget,
                  seed: int) -> str:
    """What a candidate's fit depends on. Not how many test records it is scored on: those grow
    from look to look under the same key (`data_key` fixes the test order)."""
    caps = budget.model_dump(exclude={"name", "curve_fractions", "probe_limit", "bootstrap", "test_first",
                                      "test_max", "scoring_seconds"})
    served = model_config(spec.model, task.models)[1] if spec.model else None  # a models: entry or a server
    extra = [served.model_dump(exclude=NOT_IN_KEY)] if served and (served.is_http or spec.model in task.models) else []
    return make_key("candidate", __version__, spec.strategy, spec.model, settings, data_key,
                    task.model_dump(exclude={"target", "constraints", "name", "models", "judge"}), caps, seed, *extra)


def score_predictions(task: TaskSpec, labels: list[str], predictions: list[str], test: list[Record],
                      n_resamples: int, seed: int) -> dict:
    refs = [r.output for r in test]
    out = {"metrics": score_all(task.type, predictions, refs, labels=labels, n_resamples=n_resamples, seed=seed)}
    if task.type == "classification":
        out["per_class"] = per_class(predictions, refs, labels)
        out["confusion"] = confusion(predictions, refs, labels)
    return out


class Contender:
    """One candidate of the bake-off: fitted once, scored on a growing prefix of the test order.

    Its state goes to the store after every chunk of predictions, so a killed run resumes without
    rescoring finished records. The strategy is fitted only when records remain to be scored: a
    finished candidate is reused as it is, and one resumed mid-scoring is fitted again (cheap for
    prompting and classical; a fine-tuned model loads its trained weights from the store)."""

    def __init__(self, spec: CandidateSpec, ctx: Context, store: Store, data_key: str, progress: Progress,
                 keep: bool = True, latency_sample: int | None = None):
        self.spec, self.ctx, self.store, self.progress = spec, ctx, store, progress
        self.keep = keep  # save the fitted candidate (strategies/saved.py) for serve and export
        # records scored one at a time to time a single request (0: all batched, no latency reported)
        self.latency_sample = LATENCY_SAMPLE if latency_sample is None else latency_sample
        self.key: str | None = None
        self.fitted = False
        self.single_seconds: list[float] = []  # single requests: the latency sample
        self.token_sums = [0.0, 0.0]  # prompt and output tokens over the scored records
        try:
            self.strategy = build(spec)
            settings = self.strategy.settings()
        except Exception as exc:  # a bad spec fails this candidate, not the run
            self.result = CandidateResult(name=spec.name, family="unknown", strategy=spec.strategy,
                                          model=spec.model, status="failed", error=_one_line(exc))
            return
        self.key = candidate_key(spec, settings, data_key, ctx.task, ctx.budget, ctx.seed)
        ctx.work_dir = ctx.work_dir / spec.name
        ctx.checkpoint_dir = store.root / "checkpoints" / self.key
        cached = store.get("candidate", self.key)
        if cached is not None:
            self._adopt(cached)
            progress.note(f"{spec.name}: {self.n} test records scored earlier, reused from the store")
        else:
            self.result = CandidateResult(name=spec.name, family=self.strategy.family, strategy=spec.strategy,
                                          model=spec.model, settings=settings, scoring_seconds=0.0)
        self.stopped: str | None = None  # why scoring beyond `n` records failed, if it did

    @property
    def ok(self) -> bool:
        return self.result.status == "ok"

    @property
    def n(self) -> int:
        return len(self.result.predictions)

    @property
    def seconds_per_record(self) -> float:
        return (self.result.scoring_seconds or 0.0) / max(self.n, 1)

    def _adopt(self, cached: dict) -> None:
        self.result = CandidateResult.model_validate(cached)
        self.result.predictions = list(cached.get("predictions", []))
        self.result.answers = list(cached.get("answers", []))
        self.result.retrieval_hits = list(cached.get("retrieval_hits", []))
        self.single_seconds = list(cached.get("single_seconds", []))
        self.token_sums = list(cached.get("token_sums", [0.0, 0.0]))

    def score_upto(self, test: list[Record], n: int) -> CandidateResult:
        """Score test[self.n:n], one run at a time per candidate: a run on the same store that is fitting
        or scoring it (and writing its checkpoints) is waited for, and what it stored is taken over."""
        if not self.ok or self.stopped or self.n >= n:
            return self.result
        with self.store.lock("candidate", self.key, on_wait=lambda: self.progress.note(
                f"{self.spec.name}: another run on this store is scoring it; waiting to reuse it")):
            cached = self.store.get("candidate", self.key)
            if cached is not None and len(cached.get("predictions", [])) > self.n:
                self._adopt(cached)
                self.progress.note(f"{self.spec.name}: {self.n} test records scored by another run, reused")
            return self._score_upto(test, n) if self.n < n else self.result

    def _score_upto(self, test: list[Record], n: int) -> CandidateResult:
        """Score test[self.n:n] (fitting first when needed). A failure before any record is scored
        fails the candidate (not cached: a re-run tries again); a later one stops its scoring, noted."""
        try:
            self._fit()
            many = getattr(self.strategy, "predict_many", None)
            with self.progress.task(f"{self.spec.name}: scoring test records {self.n + 1}-{n}",
                                    total=n - self.n) as advance:
                while self.n < n:
                    chunk = test[self.n:min(n, self.n + SCORE_CHUNK)]
                    began = time.perf_counter()
                    # the first latency_sample records go one at a time (a single request's latency),
                    # the rest in batches when the strategy can
                    singles = len(chunk) if many is None else max(0, min(len(chunk), self.latency_sample - self.n))
                    scored = [self.strategy.predict(self.ctx, r) for r in chunk[:singles]]
                    self.single_seconds += [s.seconds for s in scored]
                    if singles < len(chunk):
                        scored += many(self.ctx, chunk[singles:])
                    self.result.scoring_seconds = (self.result.scoring_seconds or 0.0) + time.perf_counter() - began
                    self.token_sums[0] += sum(s.prompt_tokens for s in scored)
                    self.token_sums[1] += sum(s.output_tokens for s in scored)
                    _count(self.result, scored)
                    self.result.predictions += [s.prediction for s in scored]
                    advance(len(chunk))
                    self._save(test)
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            (self.ctx.work_dir / "error.txt").write_text(traceback.format_exc())
            if self.n == 0:
                self.result.status, self.result.error = "failed", _one_line(exc)
                self.progress.note(f"[red]{self.spec.name} failed:[/red] {self.result.error}")
            else:
                self.stopped = _one_line(exc)
                self.result.notes.append(f"scoring beyond {self.n} test records failed: {self.stopped}")
                self.progress.note(f"[red]{self.spec.name}: scoring stopped at {self.n} records:[/red] {self.stopped}")
        return self.result

    def _fit(self) -> None:
        if self.fitted:
            return
        import torch

        self.ctx.work_dir.mkdir(parents=True, exist_ok=True)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        fresh = self.n == 0
        self.progress.note(f"{self.spec.name}: preparing" + ("" if fresh else " again to score more records"))
        self.ctx.notes = []
        facts = self.strategy.fit(self.ctx)
        if isinstance(facts, dict):  # an old-style strategy: its facts must still be ones FitFacts knows
            facts = FitFacts.model_validate(facts)
        if fresh:  # a refit (after a resume) keeps the facts of the original fit
            _fill(self.result, facts)
            self.result.notes += self.ctx.notes
        self.fitted = True
        self._save_fitted()

    @property
    def saved_in_store(self) -> Path:
        """The fitted candidate kept in the store, so a later run folder that reuses its cached result
        gets it too (copied by `publish`)."""
        return self.ctx.checkpoint_dir / "saved"

    def _save_fitted(self) -> None:
        """A candidate that cannot be saved still counts in the bake-off: noted, never hidden."""
        if not self.keep:
            return
        if not hasattr(self.strategy, "save"):
            self.result.notes.append(f"not saved for serve/export: strategy '{self.spec.strategy}' has no save")
            return
        from tunewise.strategies.saved import save_candidate

        try:
            save_candidate(self.spec, self.strategy, self.ctx, self.saved_in_store)
        except Exception as exc:  # noqa: BLE001 (any failure: the note says which)
            (self.ctx.work_dir / "save_error.txt").write_text(traceback.format_exc())
            self.result.notes.append(f"not saved for serve/export: {_one_line(exc)}")

    def publish(self, test: list[Record]) -> None:
        """Copy the saved candidate from the store into the run folder (RUN/candidates/<name>/saved),
        with the first test records it scored and its predictions: what export re-scores to check."""
        from tunewise.strategies.saved import CANDIDATE_FILE, write_check

        if self.keep and self.ok and (self.saved_in_store / CANDIDATE_FILE).is_file():
            folder = self.ctx.work_dir / "saved"
            shutil.rmtree(folder, ignore_errors=True)  # a resumed run's older copy is replaced whole
            shutil.copytree(self.saved_in_store, folder)
            write_check(folder, test[:self.n], self.result.predictions)

    def _save(self, test: list[Record]) -> None:
        """Scores, latency and tokens from the records scored so far; then into the store."""
        n, predictions = self.n, self.result.predictions
        scores = score_predictions(self.ctx.task, self.ctx.labels, predictions, test[:n],
                                   self.ctx.budget.bootstrap, self.ctx.seed)
        seconds = np.array(self.single_seconds) * 1000
        latency = {"p50": float(np.percentile(seconds, 50)), "p95": float(np.percentile(seconds, 95)),
                   "mean": float(seconds.mean())} if len(seconds) else None
        self.result.notes = [x for x in self.result.notes if not x.startswith(COUNT_NOTES)] + _count_notes(self.result)
        self.result = CandidateResult.model_validate(self.result.model_dump() | scores | {
            "predictions": predictions, "answers": self.result.answers, "test_records": n, "latency_samples": len(seconds), "latency_ms": latency,
            "retrieval_hits": self.result.retrieval_hits, "retrieval_recall": _recall(self.result.retrieval_hits,
                                                                                      self.ctx.budget.bootstrap, self.ctx.seed),
            "retrieval_records": sum(h is not None for h in self.result.retrieval_hits) or None,
            "prompt_tokens_mean": self.token_sums[0] / n, "output_tokens_mean": self.token_sums[1] / n,
            "peak_memory_mb": self.result.peak_memory_mb or _peak_rss_mb()})
        self.store.put("candidate", self.key, self.result.model_dump(mode="json") | {
            "predictions": predictions, "answers": self.result.answers, "single_seconds": self.single_seconds,
            "retrieval_hits": self.result.retrieval_hits,
            "token_sums": self.token_sums})


def run_candidate(spec: CandidateSpec, ctx: Context, test: list[Record], store: Store, data_key: str,
                  progress: Progress, latency_sample: int | None = None) -> CandidateResult:
    """Fit and score one candidate on every record of `test`, or return its cached result.
    `latency_sample`: records timed one at a time (default LATENCY_SAMPLE); 0 where no latency is
    reported, so every record is batched (batched answers equal single ones: test_bakeoff)."""
    return Contender(spec, ctx, store, data_key, progress, keep=False,
                     latency_sample=latency_sample).score_upto(test, len(test))


def _fill(result: CandidateResult, facts: FitFacts) -> None:
    """Training facts and the scoring method from fit; request counts start at zero."""
    for name in ("train_seconds", "train_tokens", "train_tokens_per_s", "peak_memory_mb", "artifact",
                 "params", "trainable_params", "scoring", "api"):
        if getattr(facts, name) is not None:
            setattr(result, name, getattr(facts, name))
    result.losses = [EpochLoss.model_validate(x, from_attributes=True) for x in facts.losses]
    result.notes += facts.notes
    if facts.scoring in ("generate", "chat_logprobs"):
        result.unparsed = 0


def _count(result: CandidateResult, scored) -> None:
    """Answers that named no label, and HTTP requests, retries and cache hits, over the records scored."""
    if result.unparsed is not None:
        result.unparsed += sum(s.unparsed for s in scored)
    if result.scoring == "generate":
        result.answers += [s.answer or "" for s in scored]
    if result.family == "retrieval":
        result.retrieval_hits += [s.retrieval_hit for s in scored]
    if result.api is not None:
        result.api = result.api.model_copy(update={
            "requests": result.api.requests + len(scored), "retries": result.api.retries + sum(s.retries for s in scored),
            "cached": result.api.cached + sum(s.cached for s in scored)})


def _count_notes(result: CandidateResult) -> list[str]:
    """The counts as notes (rewritten after every chunk; they start with COUNT_NOTES)."""
    notes, n = [], len(result.predictions)
    if result.unparsed is not None and n:
        what = "named no single label" if result.scoring == "generate" else "had no label among their top log-probs"
        unparsed = [a for a, p in zip(result.answers, result.predictions) if not p and a]
        examples = "; ".join(repr(a[:60] + ("…" if len(a) > 60 else "")) for a in unparsed[:3])
        notes.append(f"answers: {result.unparsed} of {n} ({result.unparsed / n:.1%}) {what}: counted as wrong"
                     + (f" (e.g. {examples})" if examples else ""))
    named = [h for h in result.retrieval_hits if h is not None]
    if named:
        notes.append(f"retrieval: recall@{result.settings.get('top_k')} {sum(named) / len(named):.2f} (the named source "
                     f"document among the passages for {sum(named)} of the {len(named)} test records naming one)")
    if result.api is not None:
        a = result.api
        notes.append(f"HTTP: {a.requests} test requests to {a.base_url} ({a.model}), {a.retries} retries "
                     f"(429/5xx/timeouts/connection/bad responses), {a.cached} answered from the store")
    return notes


def _recall(hits: list[bool | None], n_resamples: int, seed: int) -> dict | None:
    """Retrieval recall@k over the test records that name their source document, with its interval."""
    named = [h for h in hits if h is not None]
    if not named:
        return None
    preds = ["hit" if h else "miss" for h in named]
    return bootstrap_ci("accuracy", preds, ["hit"] * len(named), n_resamples=n_resamples, seed=seed)


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def compare(candidates: list[CandidateResult], test: list[Record], metric: str, labels: list[str] | None,
            n_resamples: int, seed: int, looks: list[tuple[int, float]] | None = None) -> list[Comparison]:
    """Paired tests of the best candidate against every other one, and of every option against the
    majority-class floor, on the test records both were scored on. `looks` are the (records, alpha)
    of adaptive scoring: a pair is tested at the largest look both reached, at that look's alpha
    (evaluate/sequential.py); without looks, on all of `test` at 5%."""
    ok = [c for c in candidates if c.status == "ok" and c.predictions]
    if len(ok) < 2:
        return []
    looks = looks or [(len(test), sequential.ALPHA)]
    best = max(ok, key=lambda c: (len(c.predictions), c.metrics[metric].value))  # the last look's leader
    refs = [r.output for r in test]
    floor = next((c for c in ok if c.strategy == "majority"), None)
    pairs = [(best, other) for other in ok if other is not best]
    pairs += [(c, floor) for c in ok if floor is not None and c not in (best, floor)]
    out = []
    for a, b in pairs:
        common = min(len(a.predictions), len(b.predictions))
        n, alpha = max(((n, al) for n, al in looks if n <= common), default=(common, looks[0][1]))
        t = sequential.paired_test(metric, a.predictions[:n], b.predictions[:n], refs[:n], labels, alpha,
                                n_resamples, seed)
        out.append(Comparison(a=a.name, b=b.name, metric=metric, **t))
    return out


def run_bakeoff(specs: list[CandidateSpec], *, task: TaskSpec, labels: list[str], train: list[Record],
                validation: list[Record], test: list[Record], budget: Budget, seed: int, run_dir: Path,
                store: Store, data_key: str, progress: Progress,
                device: str = "auto") -> tuple[list[CandidateResult], AdaptiveScoring]:
    """Every candidate fitted and scored on the first look's records, then adaptive scoring of the
    rest of `test` (in its fixed order) for the options still in contention."""
    pool = ModelPool(device=device, models=task.models, store=store, prices=task.constraints.prices)
    total = min(len(test), budget.test_max or len(test))
    sizes = sequential.look_sizes(budget.test_first or total, total)
    contenders = []
    for spec in specs:
        ctx = Context(task=task, labels=labels, train=train, validation=validation, budget=budget, seed=seed,
                      work_dir=run_dir / "candidates", models=pool, device=device, progress=progress.callback)
        start = time.perf_counter()
        contender = Contender(spec, ctx, store, data_key, progress)
        contender.score_upto(test, sizes[0])
        contender.publish(test)
        contenders.append(contender)
        progress.note(f"{spec.name}: {_summary(contender.result, task.primary_metric)} "
                      f"({time.perf_counter() - start:.0f} s)")
    scoring = score_until_decided(contenders, test, sizes, task.primary_metric,
                                  labels if task.type == "classification" else None, budget, seed, progress)
    return [c.result for c in contenders], scoring


def score_until_decided(contenders: list[Contender], test: list[Record], sizes: list[int], metric: str,
                        labels: list[str] | None, budget: Budget, seed: int, progress: Progress) -> AdaptiveScoring:
    """The looks of adaptive scoring (see evaluate/sequential.py): at each, the leader is tested against
    every option still in contention and the majority floor; separated options stop; the next look
    scores the rest. Ends when separated, when the split is exhausted or before the time cap."""
    alphas = sequential.look_alphas(sizes)
    refs = [r.output for r in test]
    floor = next((c for c in contenders if c.ok and c.result.strategy == "majority"), None)
    active = [c for c in contenders if c.ok and c.n >= sizes[0]]
    scoring = AdaptiveScoring(method=sequential.METHOD, planned=sizes, alphas=alphas, stop="test split exhausted")
    began = time.perf_counter()
    for k, (n, alpha) in enumerate(zip(sizes, alphas)):
        if k:
            more = sum(c.seconds_per_record * (n - c.n) for c in active)
            spent = time.perf_counter() - began
            if budget.scoring_seconds is not None and spent + more > budget.scoring_seconds:
                scoring.stop = (f"time cap: scoring {n} records would take about {spent + more:.0f} s of the "
                                f"budget's {budget.scoring_seconds:.0f} s")
                _final_look(scoring, active, floor, refs, metric, labels, budget, seed)
                break
            progress.note(f"adaptive scoring: look {k + 1} of {len(sizes)}, {n} test records for "
                          f"{', '.join(c.spec.name for c in active if c is not floor)}")
            for c in active:
                c.score_upto(test, n)
            active = [c for c in active if c.ok and c.n >= n]
        if not any(c is not floor for c in active):
            scoring.stop = "no option left to score"
            break
        lk = sequential.look(metric, {c.spec.name: c.result.predictions for c in active}, refs[:n], labels,
                             alpha, floor.spec.name if floor in active else None, budget.bootstrap, seed)
        scoring.looks.append(Look(n=n, alpha=alpha, leader=lk.leader, dropped=lk.dropped, open=lk.open,
                                  floor_separated=lk.floor_separated))
        active = [c for c in active if c.spec.name not in lk.dropped]
        if sequential.decided(lk):
            scoring.stop = "separated"
            break
    scoring.records = {c.spec.name: c.n for c in contenders if c.ok}
    progress.note(f"adaptive scoring: {scoring.stop}; records scored: "
                  + ", ".join(f"{name} {n}" for name, n in scoring.records.items()))
    return scoring

def _final_look(scoring: AdaptiveScoring, active: list[Contender], floor, refs: list[str], metric: str,
                labels: list[str] | None, budget: Budget, seed: int) -> None:
    """Scoring ended early for time (a cap fixed before any result, not the data): the records scored
    are the final analysis, so the alpha the later looks would have spent is spent here, on the same
    records (the union bound over all looks done still stays at 5%). Without it an early look's tiny
    share (about 0 for 100 of banking77's 3,080 test records) could separate nothing."""
    last = scoring.looks[-1] if scoring.looks else None
    left = sequential.ALPHA - sum(lk.alpha for lk in scoring.looks)
    if last is None or left <= last.alpha or not any(c is not floor for c in active):
        return
    lk = sequential.look(metric, {c.spec.name: c.result.predictions for c in active}, refs[:last.n], labels,
                         left, floor.spec.name if floor in active else None, budget.bootstrap, seed)
    scoring.looks.append(Look(n=last.n, alpha=left, leader=lk.leader, dropped=lk.dropped, open=lk.open,
                              floor_separated=lk.floor_separated, final=True))
    scoring.stop += f"; final look on the {last.n} records scored, at the {left:.3g} of alpha left"


def _summary(c: CandidateResult, metric: str) -> str:
    if c.status != "ok":
        return f"[red]{c.status}[/red] {c.error or ''}"
    m = c.metrics[metric]
    return f"{metric} {m.value:.3f} [{m.ci_low:.3f}, {m.ci_high:.3f}]"
