"""The strategy interface, the registry, and what every strategy is handed.

A strategy is one option of the bake-off. It is built from a CandidateSpec, fitted on the training
records (choose examples, train a model, or nothing) and asked to predict the test records. Each
family lives in its own module and registers its strategies by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from tunewise.config import Budget, ModelConfig, Prices, TaskSpec, model_config
from tunewise.data.records import Record
from tunewise.errors import ConfigError
from tunewise.models.backend import Scored
from tunewise.results import ApiUse, EpochLoss

Family = Literal["baseline", "classical", "prompting", "retrieval", "finetune"]


class CandidateSpec(BaseModel):
    """One candidate to run: a registered strategy, a model, and its options."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="unique name shown in results, e.g. lora or few_shot@gemma")
    strategy: str = Field(description="registered strategy name")
    model: str | None = Field(None, description="language model (alias, folder, GGUF or hub id)")
    options: dict = Field(default_factory=dict, description="strategy options, e.g. {r: 8}")


@dataclass
class Context:
    """What a strategy may use: the task, the training data only, budget caps and shared services."""

    task: TaskSpec
    labels: list[str]
    train: list[Record]
    validation: list[Record]
    budget: Budget
    seed: int
    work_dir: Path  # this candidate's folder in the run (artifacts)
    models: "ModelPool"
    checkpoint_dir: Path | None = None  # in the store, keyed by the candidate: survives a new run folder
    device: str = "auto"
    progress: Callable[[str, int], Callable[[], None]] | None = None  # (description, total) -> advance
    notes: list[str] = field(default_factory=list)


class FitFacts(BaseModel):
    """What fitting measured; every field optional (prompting trains nothing, majority knows nothing)."""

    model_config = ConfigDict(extra="forbid")
    train_records: int | None = None
    train_seconds: float | None = None
    train_tokens: int | None = None
    train_tokens_per_s: float | None = None
    peak_memory_mb: float | None = None
    artifact: str | None = None  # saved adapter / model folder
    params: int | None = None
    trainable_params: int | None = None
    losses: list[EpochLoss] = Field(default_factory=list)
    scoring: str | None = None  # how labels are scored: likelihood | chat_logprobs | generate
    api: ApiUse | None = None  # prompted over HTTP: endpoint and prices
    notes: list[str] = Field(default_factory=list)


class Strategy(Protocol):
    family: Family

    def settings(self) -> dict:
        """Every setting that changes the result (goes into the cache key and the report)."""

    def fit(self, ctx: Context) -> FitFacts:
        """Prepare on training data; returns what it measured (seconds, tokens, losses, artifact...)."""

    def predict(self, ctx: Context, record: Record) -> Scored:
        """Predict one test record (a single request: the bake-off times these for latency)."""

    def predict_many(self, ctx: Context, records: list[Record]) -> list[Scored]:
        """Predict many records at once (batched or concurrent), in order."""

    def save(self, folder: Path) -> None:
        """Write what fit decided into `folder` (strategies/saved.py adds the spec and the task)."""

    def load(self, ctx: Context, folder: Path) -> None:
        """Restore what `save` wrote, instead of fitting: predictions are then those of the run."""


class OneAtATime:
    """predict_many for strategies with nothing to batch."""

    def predict_many(self, ctx: Context, records: list[Record]) -> list[Scored]:
        return [self.predict(ctx, r) for r in records]  # type: ignore[attr-defined]


_REGISTRY: dict[str, Callable[[CandidateSpec], Strategy]] = {}


def answer_cap(ctx: Context) -> int:
    """New tokens per generated answer: enough for the longest training answer (the most, 64, without
    any), the same for every candidate so that their answers compare."""
    from tunewise.models.backend import answer_tokens

    return answer_tokens([r.output for r in ctx.train] or ["x" * 112])


def require_answer_cap(ctx: Context, folder, max_new_tokens: int | None) -> None:
    """A loaded generation candidate answers at the length it was scored with; saves from before tunewise
    kept that length have none, and a guessed one would answer differently from the run."""
    if ctx.task.type == "generation" and max_new_tokens is None:
        raise ConfigError(f"{folder}: saved by an older tunewise without its answer length cap",
                          fix="run `tunewise run` again to save the candidate with it")


def register(name: str):
    def wrap(factory):
        _REGISTRY[name] = factory
        return factory
    return wrap


def build(spec: CandidateSpec) -> Strategy:
    if spec.strategy not in _REGISTRY:
        raise ConfigError(f"candidate '{spec.name}': unknown strategy '{spec.strategy}'",
                          fix=f"use one of {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[spec.strategy](spec)


def known() -> list[str]:
    return sorted(_REGISTRY)


class ModelPool:
    """Loads each base model once per run and shares it between prompting strategies; builds the HTTP
    backends of served models (`models:` in the task file, --prompt-model)."""

    def __init__(self, device: str = "auto", dtype: str = "auto", *, models: dict[str, ModelConfig] | None = None,
                 store=None, prices: Prices | None = None):
        self.device, self.dtype = device, dtype
        self.models, self.store, self.prices = models or {}, store, prices or Prices()
        self._lms: dict[str, object] = {}
        self._http: dict[str, object] = {}

    def config(self, name: str) -> tuple[str, ModelConfig]:
        """(short name, settings) of a model as the candidate names it (see config.model_config)."""
        return model_config(name, self.models)

    def backend(self, name: str):
        """The backend for a model name: local (LanguageModel) or HTTP (HttpBackend)."""
        short, cfg = self.config(name)
        if not cfg.is_http:
            return self.lm(cfg.model or name)
        if name not in self._http:
            from tunewise.models.chat_format import ChatFormat
            from tunewise.models.http import HttpBackend

            self._http[name] = HttpBackend(short, cfg, self.store, ChatFormat(self._tokenizer(cfg)))
        return self._http[name]

    def api_use(self, name: str) -> ApiUse | None:
        """Endpoint and prices of an HTTP model (its own, else the task's API prices); None when local."""
        _, cfg = self.config(name)
        if not cfg.is_http:
            return None
        from tunewise.models.endpoint import public_url

        return ApiUse(base_url=public_url(cfg.base_url or ""), model=cfg.model or name,
                      input_per_mtok=self.prices.api_input_per_mtok if cfg.input_per_mtok is None
                      else cfg.input_per_mtok,
                      output_per_mtok=self.prices.api_output_per_mtok if cfg.output_per_mtok is None
                      else cfg.output_per_mtok)

    @staticmethod
    def _tokenizer(cfg: ModelConfig):
        """The local tokenizer that renders prompts for likelihood scoring over HTTP, when there is one."""
        from tunewise.models.load import ALIASES, load_tokenizer

        name = cfg.tokenizer or (cfg.model if cfg.model in ALIASES or Path(cfg.model or "").is_dir() else None)
        return load_tokenizer(name) if name else None

    def lm(self, name: str):
        from tunewise.models.lm import LanguageModel
        from tunewise.models.load import load_model

        if name not in self._lms:
            model, tokenizer = load_model(name, device=self.device, dtype=self.dtype)
            self._lms[name] = LanguageModel(model, tokenizer, name)
        return self._lms[name]

    def release(self, name: str) -> None:
        self._lms.pop(name, None)
