"""The typed shape of a run's results: what results.json holds and what every later stage reads.

Stages fill it in order (candidates -> comparisons -> evidence -> verdict); the report only reads it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tunewise.config import Budget, TaskSpec


class Interval(BaseModel):
    """A point estimate with its 95% interval."""

    value: float
    ci_low: float
    ci_high: float


class ClassScore(BaseModel):
    precision: float
    recall: float
    f1: float
    support: int


class Confusion(BaseModel):
    labels: list[str]
    matrix: list[list[int]]  # rows: true label, columns: predicted label


class EpochLoss(BaseModel):
    epoch: float
    train_loss: float
    val_loss: float | None = None


class ApiUse(BaseModel):
    """A candidate prompted over HTTP: where, at what price, and how its test requests went."""

    base_url: str  # never with credentials; the API key is never stored
    model: str
    input_per_mtok: float  # dollars per million input tokens
    output_per_mtok: float
    requests: int = 0  # test records asked
    retries: int = 0  # repeated after 429/5xx/timeouts/connection errors or bad responses
    cached: int = 0  # answered from the store's response cache (not paid again)


class CandidateResult(BaseModel):
    """One option of the bake-off, scored on the frozen test split."""

    name: str
    family: str  # prompting | retrieval | classical | finetune
    strategy: str  # registry name, e.g. zero_shot, lora
    model: str | None = None
    status: Literal["ok", "failed", "skipped"] = "ok"
    error: str | None = None
    metrics: dict[str, Interval] = Field(default_factory=dict)
    per_class: dict[str, ClassScore] | None = None
    confusion: Confusion | None = None
    latency_ms: dict[str, float] | None = None  # p50, p95, mean of single requests
    latency_samples: int | None = None  # how many single requests were timed (the rest were batched)
    scoring_seconds: float | None = None  # wall time spent predicting test records
    test_records: int | None = None  # test records scored (adaptive scoring stops early for some)
    prompt_tokens_mean: float | None = None
    output_tokens_mean: float | None = None
    train_seconds: float | None = None
    train_tokens: int | None = None
    train_tokens_per_s: float | None = None
    peak_memory_mb: float | None = None
    params: int | None = None  # model parameters (all), when a language model is used
    trainable_params: int | None = None
    losses: list[EpochLoss] = Field(default_factory=list)
    artifact: str | None = None  # saved adapter / model folder
    settings: dict = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)
    scoring: str | None = None  # how labels were scored: likelihood | chat_logprobs | generate
    unparsed: int | None = None  # answers that matched no label (counted as wrong)
    api: ApiUse | None = None  # prompted over HTTP: endpoint, prices, request counts
    predictions: list[str] = Field(default_factory=list, exclude=True)  # kept in the store, not the JSON
    answers: list[str] = Field(default_factory=list, exclude=True)  # generate-and-parse: raw answers (store only)
    retrieval_recall: Interval | None = None  # share of test records whose named source document was retrieved
    retrieval_records: int | None = None  # test records naming their source document (recall@k is over these)
    retrieval_hits: list[bool | None] = Field(default_factory=list, exclude=True)  # per record (store only)

    def rank(self, metric: str) -> tuple[int, float]:
        """(test records scored, score): the larger ranks higher. Adaptive scoring drops an option once it
        is separated below the leader, so its score rests on fewer records: a lucky early score must not
        outrank the leader's score on the whole split."""
        return self.test_records or 0, self.metrics[metric].value


class Comparison(BaseModel):
    """Paired test of the best candidate against another on the same test items."""

    a: str
    b: str
    metric: str
    diff: float  # a - b
    ci_low: float
    ci_high: float
    p_value: float
    test: str  # paired_bootstrap_z | paired_bootstrap | mcnemar
    n: int | None = None  # test records both were scored on
    alpha: float = 0.05  # significance level of this test (a look's share under adaptive scoring)

    @property
    def significant(self) -> bool:
        return self.p_value < self.alpha


class Look(BaseModel):
    """One look of adaptive test scoring."""

    n: int  # test records scored by the options in contention
    alpha: float  # this look's share of the 5% error
    leader: str
    dropped: list[str] = Field(default_factory=list)  # separated from the leader: scored no further
    open: list[str] = Field(default_factory=list)  # not yet separated from the leader
    floor_separated: bool | None = None  # leader vs the majority floor (None: no floor)
    final: bool = False  # the time cap ended scoring: these records re-tested with the alpha left


class AdaptiveScoring(BaseModel):
    """How many test records were scored, and why scoring stopped."""

    method: str
    planned: list[int]  # look sizes fixed before scoring
    alphas: list[float]
    looks: list[Look] = Field(default_factory=list)
    stop: str  # separated | test split exhausted | time cap: ... | no option left to score
    records: dict[str, int] = Field(default_factory=dict)  # per candidate


class CurvePoint(BaseModel):
    fraction: float
    n: int
    value: float
    ci_low: float
    ci_high: float
    status: Literal["ok", "failed"] = "ok"
    error: str | None = None


class Projection(BaseModel):
    factor: float  # multiple of the current training size
    n: int
    value: float
    ci_low: float
    ci_high: float


class LearningCurve(BaseModel):
    candidate: str
    metric: str
    points: list[CurvePoint]
    fit: dict[str, float] | None = None  # A, b, E of error = A * n^-b + E
    extrapolable: bool = False
    reason: str = ""
    projections: list[Projection] = Field(default_factory=list)
    n_for_target: Interval | None = None
    target_reachable: bool | None = None  # None when no target or not extrapolable
    ceiling: Interval | None = None  # 1 - E, the metric the fit says the model can reach


class Overfitting(BaseModel):
    candidate: str
    epochs: list[EpochLoss]
    flag: bool
    reason: str


class ForgettingEntry(BaseModel):
    candidate: str
    score: Interval
    delta: Interval  # fine-tuned minus base, paired over probe items
    perplexity: float | None = None


class Forgetting(BaseModel):
    probe: str
    items: int
    base_score: Interval
    base_perplexity: float | None = None
    models: list[ForgettingEntry]


class ComputeEstimate(BaseModel):
    candidate: str
    params: int
    trainable_params: int
    tokens: int  # training tokens x epochs
    flops: float
    device_flops_per_s: float
    estimated_seconds: float
    measured_seconds: float | None = None
    budget_seconds: float | None = None
    within_budget: bool = True
    basis: str = ""  # where the rate came from: a calibration, or a measured training of this task


class CandidateCost(BaseModel):
    candidate: str
    hosting: Literal["api", "cpu", "gpu", "none"]
    per_1k_requests: float
    training_cost: float
    monthly_cost: float | None = None


class BreakEven(BaseModel):
    finetuned: str
    prompting: str
    monthly_requests: float | None  # None: never pays off
    explanation: str


class Cost(BaseModel):
    assumptions: dict
    candidates: list[CandidateCost]
    break_even: BreakEven | None = None


class FreshnessRow(BaseModel):
    """One candidate on the main split and on the time split; drop = main - time ("knowledge ageing")."""

    candidate: str
    family: str
    status: Literal["ok", "failed"] = "ok"
    error: str | None = None
    main: Interval | None = None
    time: Interval | None = None
    drop: Interval | None = None
    main_records: int | None = None
    time_records: int | None = None


class FrozenCorpus(BaseModel):
    """A retrieval candidate on the time split with its corpus frozen at the cut-off vs updated."""

    candidate: str
    frozen: Interval
    updated: Interval
    gain: Interval  # updated - frozen, paired on the same records
    p_value: float
    records: int


class Freshness(BaseModel):
    """The time split: trained/indexed up to `cutoff`, tested on records dated after it."""

    cutoff: str
    metric: str
    train_records: int
    test_records: int
    main_split: str  # what the main split is (seeded random split or a test file)
    rows: list[FreshnessRow]
    frozen: list[FrozenCorpus] = Field(default_factory=list)
    leakage: dict[str, int] = Field(default_factory=dict)  # records/documents dated after the cut-off (must be 0)

    def row(self, name: str) -> FreshnessRow | None:
        return next((r for r in self.rows if r.candidate == name and r.status == "ok"), None)


class HistoryAblation(BaseModel):
    """The best candidate on its multi-turn test records: whole history vs last user turn only."""

    candidate: str
    metric: str
    records: int
    whole_history: Interval
    last_turn: Interval
    gap: Interval  # whole history - last turn, paired on the same records
    p_value: float
    test: str


class JudgeScore(BaseModel):
    candidate: str
    score: Interval  # mean grade (evaluate/judge.py GRADES) over the records it was scored on
    records: int
    grades: dict[str, int]  # answers given each grade


class JudgeResult(BaseModel):
    """The optional judge model's grades of every candidate's answers (evaluate/judge.py)."""

    model: str
    method: str  # how the grade is scored: likelihood | chat_logprobs | generate
    system: str  # the judge's prompt, shown in the report
    prompt: str
    grades: dict[str, float]
    scores: list[JudgeScore]
    answers_graded: int
    seconds: float | None = None


class Reason(BaseModel):
    criterion: str  # id from decide.criteria
    finding: str  # the sentence, citing numbers
    vote: str | None = None  # the verdict this finding supports, if any


class Verdict(BaseModel):
    decision: Literal["PROMPT", "RETRIEVAL", "FINE_TUNE", "SMALL_MODEL", "CLASSICAL",
                      "COLLECT_MORE_DATA", "INSUFFICIENT_EVIDENCE"]
    candidate: str | None = None
    model: str | None = None
    summary: str
    reasons: list[Reason]
    constraints: list[str] = Field(default_factory=list)
    would_change: list[str] = Field(default_factory=list)


class RunTask(TaskSpec):
    """The task as it was run: the task file's keys, the target override applied and the labels resolved
    (inferred from train when the file declares none; empty for generation). Its `metric` is always set:
    the one home of the metric default is TaskSpec's validator."""

    labels: list[str] = Field(default_factory=list, description="the label set the run scored")

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: list[str]) -> list[str]:  # replaces TaskSpec's check: generation has none
        return value


class SplitSummary(BaseModel):
    """The frozen split and how much of it the run used."""

    train: int
    test: int
    source: str  # "test file" or "seeded split, 20% held out"
    seed: int
    test_scored: int | None = None  # most test records any candidate was scored on
    train_used: int | None = None  # after the budget's cap and the validation slice
    validation: int | None = None  # carved from train


class DataSummary(BaseModel):
    """Where the records came from, their hash, and what was skipped or filtered."""

    source: str = ""
    hash: str = ""
    skipped_count: int = 0
    skipped: list[str] = Field(default_factory=list)  # file:line field: reason, at most 200
    filtered: dict[str, int] = Field(default_factory=dict)  # deliberate filters, e.g. rare demo labels


class DataProfile(BaseModel):
    """The data profile (`tunewise profile`). The fields the verdict reads are typed; the nested
    measurements (tokens, duplicates, leakage, dates, domain gap) stay mappings, and keys this version
    does not know are kept."""

    model_config = ConfigDict(extra="allow")

    records: dict[str, int] = Field(default_factory=dict)  # train, test
    train_records: int | None = None
    test_records: int | None = None
    split_source: str | None = None
    task_type: str | None = None
    labels: dict[str, dict[str, int]] | None = None  # per split: label -> count (classification)
    label_count: int | None = None
    examples_per_class_min: int | None = None
    examples_per_class_median: float | None = None
    majority_share: float | None = None
    majority_label: str | None = None
    unseen_test_labels: list[str] | None = None
    tokens: dict | None = None
    duplicates: dict | None = None
    leakage: dict | None = None
    embedder: str | None = None
    multi_turn_share: float | None = None
    multi_turn_count: int | None = None
    dates: dict | None = None
    domain_gap: dict | None = None
    settings: dict | None = None
    skipped: dict | None = None  # count, records
    filtered: dict[str, int] | None = None


class RunResults(BaseModel):
    tunewise_version: str
    run_id: str  # unique per run (the store keys the run by it); older runs used their folder's name
    created: str
    task: RunTask
    budget: Budget
    split: SplitSummary
    data: DataSummary = Field(default_factory=DataSummary)
    profile: DataProfile | None = None
    candidates: list[CandidateResult] = Field(default_factory=list)
    comparisons: list[Comparison] = Field(default_factory=list)
    test_scoring: AdaptiveScoring | None = None
    learning_curve: LearningCurve | None = None
    overfitting: list[Overfitting] = Field(default_factory=list)
    forgetting: Forgetting | None = None
    freshness: Freshness | None = None
    history: HistoryAblation | None = None
    judge: JudgeResult | None = None
    compute: list[ComputeEstimate] = Field(default_factory=list)
    cost: Cost | None = None
    verdict: Verdict | None = None
    environment: dict = Field(default_factory=dict)
    stage_seconds: dict[str, float] = Field(default_factory=dict)  # wall time per stage, summed over resumed invocations
    warnings: list[str] = Field(default_factory=list)  # what the user allowed but must not miss (e.g. unseen test labels)

    def candidate(self, name: str) -> CandidateResult | None:
        return next((c for c in self.candidates if c.name == name), None)

    @property
    def metric(self) -> str:
        return self.task.primary_metric
