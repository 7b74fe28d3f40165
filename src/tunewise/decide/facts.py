"""A read-only view of RunResults for the verdict: which options count, what they cost, how they compare.

Why: the verdict's rules and reasons ask the same questions (did it beat the majority floor? is it within
the latency limit? what does it cost? what did the paired test say?); answering them once here keeps
the rules short and makes missing evidence (None, absent keys) a concern of one module.
"""

from __future__ import annotations

from dataclasses import dataclass

from tunewise.results import CandidateResult, ComputeEstimate, Interval, RunResults

FREQUENT = ("daily", "realtime")
SMALL_PARAMS = 500_000_000
ALPHA = 0.05
FAMILY_DECISION = {"prompting": "PROMPT", "retrieval": "RETRIEVAL", "classical": "CLASSICAL",
                   "finetune": "FINE_TUNE"}
_FAMILY_COST_ORDER = {"classical": 0, "prompting": 1, "retrieval": 2, "finetune": 3}
_PRETTY = {"zero_shot": "zero-shot", "few_shot": "few-shot", "knn_few_shot": "retrieved few-shot",
           "classical": "TF-IDF classifier", "majority": "majority class", "lora": "LoRA",
           "full_ft": "full fine-tuning"}


@dataclass(frozen=True)
class Paired:
    """A paired test read in the direction asked: diff = x - y."""

    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    alpha: float = ALPHA  # the test's own level (a look's share under adaptive scoring)

    @property
    def significant(self) -> bool:
        return self.p_value < self.alpha


@dataclass(frozen=True)
class Facts:
    results: RunResults
    metric: str
    target: float | None
    latency_ms_limit: float | None
    knowledge_update: str
    on_premises: bool
    narrow: bool
    options: tuple[CandidateResult, ...]  # ok, scored on the metric, not a baseline
    majority: CandidateResult | None
    failed: tuple[CandidateResult, ...]

    @classmethod
    def build(cls, results: RunResults, target: float | None, latency_ms_limit: float | None) -> "Facts":
        task, cons = results.task, results.task.constraints
        metric = results.metric
        scored = [c for c in results.candidates if c.status == "ok" and metric in c.metrics]
        majority = next((c for c in scored if c.strategy == "majority"), None)
        return cls(
            results=results, metric=metric,
            target=target if target is not None else task.target,
            latency_ms_limit=latency_ms_limit if latency_ms_limit is not None else cons.latency_ms_limit,
            knowledge_update=cons.knowledge_update,
            on_premises=cons.on_premises,
            narrow=False,  # a task file states no scope (only the advisor asks it)
            options=tuple(c for c in scored if c.family != "baseline" and c.strategy != "majority"),
            majority=majority,
            failed=tuple(c for c in results.candidates if c.status == "failed"),
        )

    # -- scores -------------------------------------------------------------------------------------
    def score(self, c: CandidateResult) -> Interval:
        return c.metrics[self.metric]

    def learned(self, c: CandidateResult) -> bool:
        """Beats the majority class significantly: by a paired test against it when the run has one,
        else by the lower bound of its interval lying above majority's score."""
        if self.majority is None:
            return True
        test = self.paired(c, self.majority)
        if test is not None:
            return test.significant and test.diff > 0
        return self.score(c).ci_low > self.score(self.majority).value

    def best(self, pool) -> CandidateResult | None:
        """Highest score among the options scored longest (CandidateResult.rank); ties go to the cheaper."""
        pool = list(pool)
        return min(pool, key=lambda c: (tuple(-x for x in c.rank(self.metric)), self.cost_key(c))) if pool else None

    def paired(self, x: CandidateResult, y: CandidateResult) -> Paired | None:
        for cmp in self.results.comparisons:
            if cmp.metric != self.metric:
                continue
            if (cmp.a, cmp.b) == (x.name, y.name):
                return Paired(cmp.diff, cmp.ci_low, cmp.ci_high, cmp.p_value, cmp.alpha)
            if (cmp.a, cmp.b) == (y.name, x.name):
                return Paired(-cmp.diff, -cmp.ci_high, -cmp.ci_low, cmp.p_value, cmp.alpha)
        return None

    def beats(self, x: CandidateResult, y: CandidateResult) -> bool | None:
        """x significantly better than y: by paired test, else by non-overlapping intervals; None if unknown."""
        test = self.paired(x, y)
        if test is not None:
            return test.significant and test.diff > 0
        if self.score(x).ci_low > self.score(y).ci_high:
            return True
        return None

    # -- constraints --------------------------------------------------------------------------------
    def p95(self, c: CandidateResult) -> float | None:
        return (c.latency_ms or {}).get("p95")

    def too_slow(self, c: CandidateResult) -> bool:
        p95 = self.p95(c)
        return self.latency_ms_limit is not None and p95 is not None and p95 > self.latency_ms_limit

    def compute(self, c: CandidateResult) -> ComputeEstimate | None:
        return next((e for e in self.results.compute if e.candidate == c.name), None)

    def over_budget(self, c: CandidateResult) -> bool:
        est = self.compute(c)
        return est is not None and not est.within_budget

    @property
    def eligible(self) -> list[CandidateResult]:
        """Options that learned the task and respect the stated limits: the ones a verdict may recommend."""
        return [c for c in self.options if self.learned(c) and not self.too_slow(c) and not self.over_budget(c)]

    @property
    def frequent_updates(self) -> bool:
        return self.knowledge_update in FREQUENT

    # -- cost ---------------------------------------------------------------------------------------
    def cost(self, c: CandidateResult) -> float | None:
        """Cost per 1,000 requests when the cost model priced it; training is spread over a year of traffic
        when the monthly volume is known (task constraints or cost assumptions), else left out."""
        if self.results.cost is None:
            return None
        priced = next((x for x in self.results.cost.candidates if x.candidate == c.name), None)
        if priced is None:
            return None
        volume = self.monthly_requests
        training = priced.training_cost / (12 * volume / 1000) if volume else 0.0
        return priced.per_1k_requests + training

    @property
    def monthly_requests(self) -> float | None:
        assumed = self.results.cost.assumptions.get("monthly_requests") if self.results.cost else None
        volume = self.results.task.constraints.monthly_requests or assumed
        return float(volume) if isinstance(volume, (int, float)) and volume > 0 else None

    def cost_key(self, c: CandidateResult) -> tuple:
        """Cheapest first: priced cost, then p95 latency, then prompt length, then family, then name."""
        inf = float("inf")
        cost, p95 = self.cost(c), self.p95(c)
        return (inf if cost is None else cost, inf if p95 is None else p95,
                inf if c.prompt_tokens_mean is None else c.prompt_tokens_mean,
                _FAMILY_COST_ORDER.get(c.family, 9), c.name)

    # -- sizes --------------------------------------------------------------------------------------
    @property
    def train_size(self) -> int | None:
        curve = self.results.learning_curve
        ns = [p.n for p in curve.points if p.status == "ok"] if curve else []
        if ns:
            return max(ns)
        return self.results.profile.train_records if self.results.profile else None

    @property
    def test_size(self) -> int | None:
        split = self.results.split  # scored, not split size
        return split.test_scored or split.test or None

    def decision_for(self, c: CandidateResult) -> str:
        """The verdict a winning candidate stands for; small fine-tuned models under limits are SMALL_MODEL."""
        decision = FAMILY_DECISION.get(c.family, "PROMPT")
        small = c.params is not None and c.params < SMALL_PARAMS
        if decision == "FINE_TUNE" and small and (self.latency_ms_limit is not None or self.on_premises
                                                  or self.narrow):
            return "SMALL_MODEL"
        return decision


def label(c: CandidateResult) -> str:
    """How a candidate is named in sentences: its name, or a readable strategy when the name is just that."""
    return _PRETTY.get(c.name, c.name) if c.name == c.strategy else c.name

