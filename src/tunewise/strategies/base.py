"""The strategy interface, the registry, and what every strategy is handed.

A strategy is one option of the bake-off. It is built from a CandidateSpec, fitted on the training
records (choose examples, train a model, or nothing) and asked to predict the test records. Each
family lives in its own module and registers its strategies by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from pydantic import BaseModel, ConfigDict, Field

from tunewise.config import Budget, TaskSpec
from tunewise.data.records import Record
from tunewise.errors import ConfigError
from tunewise.models.lm import Scored


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


class Strategy(Protocol):
    family: str

    def settings(self) -> dict:
        """Every setting that changes the result (goes into the cache key and the report)."""

    def fit(self, ctx: Context) -> dict:
        """Prepare on training data; returns training facts (seconds, tokens, losses, artifact...)."""

    def predict(self, ctx: Context, record: Record) -> Scored:
        """Predict one test record."""

    # Optional: `predict_many(ctx, records) -> list[Scored]` predicts in batches; the bake-off then
    # times single requests on a sample for latency and batches the rest.


_REGISTRY: dict[str, Callable[[CandidateSpec], Strategy]] = {}


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
    """Loads each base model once per run and shares it between prompting strategies."""

    def __init__(self, device: str = "auto", dtype: str = "auto"):
        self.device, self.dtype = device, dtype
        self._lms: dict[str, object] = {}

    def lm(self, name: str):
        from tunewise.models.lm import LanguageModel
        from tunewise.models.load import load_model

        if name not in self._lms:
            model, tokenizer = load_model(name, device=self.device, dtype=self.dtype)
            self._lms[name] = LanguageModel(model, tokenizer, name)
        return self._lms[name]

    def release(self, name: str) -> None:
        self._lms.pop(name, None)
