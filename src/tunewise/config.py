"""Typed settings: the task file (YAML), its constraints, and the run budgets.

A task file is YAML validated by pydantic; command-line flags override its keys. Validation errors
name the YAML key at fault (see `load_task`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tunewise.errors import ConfigError

TaskType = Literal["classification", "generation"]
MetricName = Literal["accuracy", "macro_f1", "exact_match", "token_f1", "rouge_l"]
UpdateFrequency = Literal["never", "yearly", "monthly", "weekly", "daily", "realtime"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Prices(_Strict):
    """What a request and an hour of compute cost. Defaults are documented list prices (2026)."""

    api_input_per_mtok: float = Field(0.15, description="API price, dollars per million input tokens")
    api_output_per_mtok: float = Field(0.60, description="API price, dollars per million output tokens")
    cpu_hour: float = Field(0.10, description="Self-hosted CPU box (2-4 vCPU), dollars per hour")
    gpu_hour: float = Field(2.50, description="Self-hosted single GPU, dollars per hour")


class Constraints(_Strict):
    """What the answer must respect. Every field is optional: absent means 'no limit stated'."""

    latency_ms_limit: float | None = Field(None, gt=0, description="p95 latency limit per request, ms")
    compute_budget_hours: float | None = Field(None, gt=0, description="training compute budget, device hours")
    monthly_requests: int | None = Field(None, ge=0, description="expected requests per month")
    knowledge_update: UpdateFrequency = Field("never", description="how often the task's knowledge changes")
    on_premises: bool = Field(False, description="must the model run on our own hardware?")
    prices: Prices = Field(default_factory=Prices)


class TaskSpec(_Strict):
    """What the task is and how it is judged."""

    name: str = Field("task", description="a short name used in reports")
    type: TaskType = Field("classification", description="classification or generation")
    input_field: str | None = Field(None, description="record field holding the input (auto-detected for JSONL)")
    input_template: str | None = Field(
        None, description="Python format string over record fields, e.g. '{drugName}: {review}'")
    output_field: str | None = Field(None, description="record field holding the label or answer")
    date_field: str | None = Field(None, description="record field holding a date (enables a time split)")
    labels: list[str] | None = Field(None, description="the label set; inferred from train when absent")
    metric: MetricName | None = Field(None, description="target metric; accuracy / rouge_l by default")
    instruction: str | None = Field(None, description="what the model is asked to do, shown before the input")
    system_prompt: str | None = Field(None, description="system message for chat models")
    target: float | None = Field(None, ge=0, le=1, description="the score the task needs, on the metric")
    test_file: str | None = Field(None, description="a held-out test file; otherwise a seeded split")
    delimiter: str | None = Field(None, description="CSV/TSV delimiter; from the file extension by default")
    constraints: Constraints = Field(default_factory=Constraints)

    @model_validator(mode="after")
    def _defaults(self) -> "TaskSpec":
        if self.metric is None:
            self.metric = "accuracy" if self.type == "classification" else "rouge_l"
        cls_metrics = {"accuracy", "macro_f1"}
        if (self.type == "classification") != (self.metric in cls_metrics):
            raise ValueError(f"metric '{self.metric}' does not fit a {self.type} task")
        if self.labels is not None and len(set(self.labels)) < 2:
            raise ValueError("labels must list at least two distinct labels")
        return self

    @field_validator("input_template")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is not None:
            _check_template(value)
        return value

    @property
    def primary_metric(self) -> str:
        assert self.metric is not None
        return self.metric


def _check_template(template: str) -> None:
    """input_template must be a format string over named record fields, e.g. '{drugName}: {review}'."""
    import string

    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
        if not names or any(not n or n.isdigit() or any(c in n for c in ".[]") for n in names):
            raise ValueError
        template.format_map({n: "x" for n in names})
    except (ValueError, KeyError, IndexError, AttributeError, TypeError):
        raise ValueError(f"input_template {template!r} must name record fields in braces, e.g. "
                         "'{title}: {body}'") from None


def read_mapping(path: str | Path, what: str, flag: str) -> dict:
    """A YAML (or JSON) file of keys, with one-line errors naming the file (task files, answers files)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} {p}: not found or not a file", fix=f"pass {flag} PATH to a YAML or JSON file")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} {p}: not valid YAML/JSON ({str(exc).splitlines()[0]})") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{what} {p}: expected a mapping of keys, got {type(raw).__name__}")
    return raw


def load_task(path: str | Path | None, overrides: dict | None = None) -> TaskSpec:
    """Read a task file (YAML) and apply flag overrides; errors name the file and key."""
    raw: dict = read_mapping(path, "task file", "--task") if path is not None else {}
    for key, value in (overrides or {}).items():
        if value is not None:
            raw[key] = value
    try:
        return TaskSpec.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(x) for x in err["loc"]) or "(task)"
        where = f"task file {path}" if path else "task settings"
        raise ConfigError(f"{where}: key '{key}': {err['msg']}") from exc


class Budget(_Strict):
    """Caps that keep a run within reach of the machine. Every cap in force goes into results.json."""

    name: str
    test_first: int | None = Field(description="test records scored in the first round (None: all); more are "
                                   "scored, doubling, while the decision is open (see evaluate/sequential.py)")
    test_max: int | None = Field(None, description="at most this many test records in all (None: the whole split)")
    scoring_seconds: float | None = Field(None, description="time cap on scoring beyond the first round (None: none)")
    validation_limit: int = Field(200, description="at most this many validation records carved from train "
                                  "(calibration choice, early stopping)")
    train_limit: int | None = Field(description="at most this many training records (None: all)")
    epochs: int = Field(description="fine-tuning epochs (early stopping may end sooner)")
    shots: int = Field(description="k for few-shot and retrieved few-shot")
    max_length: int = Field(description="max tokens per training example")
    lora_layers_share: float = Field(1.0, description="share of layers (from the top) that get LoRA adapters")
    curve_fractions: list[float] = Field(description="learning-curve train fractions")
    probe_limit: int = Field(description="general-ability probe items scored per model")
    bootstrap: int = Field(1000, description="bootstrap resamples for intervals")


BUDGETS: dict[str, Budget] = {
    # quick: about 8 minutes on 2 CPU cores for the demo; LoRA on the top half of the layers trains 1.5x
    # faster; training capped so that a 10k-record task still fits in about 15 minutes.
    "quick": Budget(name="quick", test_first=100, scoring_seconds=240, train_limit=2000, validation_limit=100,
                    epochs=1, shots=3, max_length=192, lora_layers_share=0.5,
                    curve_fractions=[0.125, 0.25, 0.5, 1.0], probe_limit=40),
    "standard": Budget(name="standard", test_first=200, train_limit=None, epochs=2, shots=4,
                       max_length=256, curve_fractions=[0.125, 0.25, 0.5, 1.0], probe_limit=150),
    "full": Budget(name="full", test_first=None, train_limit=None, validation_limit=400, epochs=3, shots=8,
                   max_length=512, curve_fractions=[0.125, 0.25, 0.5, 0.75, 1.0], probe_limit=400),
}


def get_budget(name: str) -> Budget:
    if name not in BUDGETS:
        raise ConfigError(f"--budget '{name}': unknown budget", fix=f"use one of {', '.join(BUDGETS)}")
    return BUDGETS[name]
