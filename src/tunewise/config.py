"""Typed settings: the task file (YAML), its constraints, and the run budgets.

A task file is YAML validated by pydantic; command-line flags override its keys. Validation errors
name the YAML key at fault (see `load_task`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from tunewise.errors import ConfigError

TaskType = Literal["classification", "generation"]
MetricName = Literal["accuracy", "macro_f1", "exact_match", "token_f1", "rouge_l", "json_field_f1"]
UpdateFrequency = Literal["never", "yearly", "monthly", "weekly", "daily", "realtime"]
ScoringChoice = Literal["auto", "likelihood", "chat_logprobs", "generate"]
SCORING_CHOICES: tuple[str, ...] = ("auto", "likelihood", "chat_logprobs", "generate")
OPENAI_BASE_URL = "https://api.openai.com/v1"
CLASSIFICATION_METRICS = ("accuracy", "macro_f1")
GENERATION_METRICS = ("exact_match", "token_f1", "rouge_l", "json_field_f1")
TASK_FILE_HELP = "see 'Data and task files' in the README for every key"
KEY_FIXES = {  # task-file keys whose errors need more than the expected type
    "metric": f"classification takes {' or '.join(CLASSIFICATION_METRICS)}; generation takes "
              f"{', '.join(GENERATION_METRICS)}",
    "labels": "list the label set, e.g. `labels: [billing, bug, other]`, or leave it out to infer it from train",
    "input_template": "name record fields in braces, e.g. `input_template: \"{subject}: {body}\"`",
    "api_key_env": "give the NAME of the environment variable that holds the key, e.g. OPENAI_API_KEY "
                   "(never the key itself)",
}


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


class ModelConfig(_Strict):
    """A model to prompt (`models:` in the task file): local, or behind an OpenAI-compatible server."""

    model: str | None = Field(None, description="served model name (HTTP) or local alias/folder/hub id; "
                              "default: the entry's key")
    base_url: str | None = Field(None, description="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1; "
                                 "absent: a local model")
    api_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                                    description="NAME of the environment variable that holds the API key "
                                    "(the key itself never goes in a file)")
    input_per_mtok: float | None = Field(None, ge=0, description="dollars per million input tokens "
                                         "(default: constraints.prices.api_input_per_mtok)")
    output_per_mtok: float | None = Field(None, ge=0, description="dollars per million output tokens "
                                          "(default: constraints.prices.api_output_per_mtok)")
    requests_per_second: float | None = Field(None, gt=0, description="request rate cap (absent: none)")
    concurrency: int = Field(4, ge=1, le=64, description="requests in flight at once")
    scoring: ScoringChoice = Field("auto", description="how labels are scored: auto (probe the server once), "
                                   "likelihood, chat_logprobs or generate")
    tokenizer: str | None = Field(None, description="local model (alias/folder) whose chat template and "
                                  "tokenizer build prompts for likelihood scoring over /v1/completions; "
                                  "default: the served name when it is a local model, else plain 'Role: text'")
    calibrate: bool | None = Field(None, description="contextual calibration of the prompting candidates on "
                                   "this model: true or false (e.g. false for a served fine-tuned model, which "
                                   "answers as trained); absent: each strategy's default (zero-shot and few-shot "
                                   "choose on the validation slice)")
    timeout_s: float = Field(60.0, gt=0, description="seconds before a request times out (then retried)")
    max_retries: int = Field(4, ge=0, le=20, description="retries after 429/5xx/timeouts/connection errors")

    @property
    def is_http(self) -> bool:
        return self.base_url is not None


class RetrievalSettings(_Strict):
    """How the corpus is cut, searched and shown to the model (the `rag` candidates)."""

    chunk_words: int = Field(120, ge=10, le=2000, description="words per corpus chunk")
    chunk_overlap: int = Field(20, ge=0, description="words shared by consecutive chunks of a document")
    top_k: int = Field(3, ge=1, le=20, description="chunks put in the prompt, best first")
    faiss_above: int = Field(20_000, ge=0, description="chunks above which the index is FAISS (faiss-cpu), "
                             "else exact numpy search; both are exact inner-product search")

    @field_validator("chunk_overlap")
    @classmethod
    def _overlap(cls, value: int, info: ValidationInfo) -> int:
        if value >= info.data.get("chunk_words", value + 1):
            raise ValueError("must be smaller than chunk_words")
        return value


class TaskSpec(_Strict):
    """What the task is and how it is judged."""

    name: str = Field("task", description="a short name used in reports")
    type: TaskType = Field("classification", description="classification or generation")
    input_field: str | None = Field(None, description="record field holding the input (auto-detected for JSONL)")
    input_template: str | None = Field(
        None, description="Python format string over record fields, e.g. '{drugName}: {review}'")
    output_field: str | None = Field(None, description="record field holding the label or answer")
    date_field: str | None = Field(None, description="record field holding a date (enables a time split)")
    corpus: str | None = Field(None, description="documents to retrieve from: a folder of .txt/.md files or a "
                               "JSONL of {id, text, date?}; relative to the task file (adds the rag candidates)")
    source_field: str | None = Field(None, description="record field naming the corpus document (or folder of "
                                     "documents) that holds the answer (enables retrieval recall@k)")
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    labels: list[str] | None = Field(None, description="the label set; inferred from train when absent")
    metric: MetricName | None = Field(None, validate_default=True,
                                      description="target metric; accuracy / rouge_l by default")
    instruction: str | None = Field(None, description="what the model is asked to do, shown before the input")
    system_prompt: str | None = Field(None, description="system message for chat models")
    target: float | None = Field(None, ge=0, le=1, description="the score the task needs, on the metric")
    test_file: str | None = Field(None, description="a held-out test file; otherwise a seeded split")
    delimiter: str | None = Field(None, description="CSV/TSV delimiter; from the file extension by default")
    constraints: Constraints = Field(default_factory=Constraints)
    models: dict[str, ModelConfig] = Field(default_factory=dict,
                                           description="models to prompt, by name (see --prompt-model)")
    judge: str | None = Field(None, description="generation: a model that grades each answer against the "
                              "reference (as --prompt-model names one); its scores go beside the task's metric")

    @field_validator("metric")
    @classmethod
    def _metric(cls, value: str | None, info: ValidationInfo) -> str | None:
        kind = info.data.get("type")
        if kind is None:  # `type` itself is invalid: its own error is reported
            return value
        if value is None:
            return "accuracy" if kind == "classification" else "rouge_l"
        if (kind == "classification") != (value in CLASSIFICATION_METRICS):
            raise ValueError(f"'{value}' does not fit a {kind} task")
        return value

    @field_validator("judge")
    @classmethod
    def _judge(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("type") == "classification":
            raise ValueError("grades generated answers (--judge): set it on a generation task only")
        return value

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) < 2:
            raise ValueError("must list at least two distinct labels")
        return value

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


def model_config(spec: str, models: dict[str, ModelConfig] | None = None) -> tuple[str, ModelConfig]:
    """(short name, settings) of a --prompt-model: a `models:` key, `openai:NAME`, `http(s)://HOST/v1#NAME`
    or a local model (alias, folder, .gguf, hub id). A `models:` entry named NAME adds its settings."""
    models = models or {}
    if spec in models:
        cfg = models[spec]
        return spec, cfg if cfg.model else cfg.model_copy(update={"model": spec})
    if spec.startswith("openai:"):
        name = spec.split(":", 1)[1]
        base = ModelConfig(base_url=OPENAI_BASE_URL, api_key_env="OPENAI_API_KEY")
    elif spec.startswith(("http://", "https://")):
        url, _, name = spec.partition("#")
        if not name:
            raise ConfigError(f"--prompt-model '{spec}': no served model name after '#'",
                              fix="name it, e.g. http://127.0.0.1:8000/v1#smollm2 (GET /v1/models lists them)")
        base = ModelConfig(base_url=url.rstrip("/"))
    else:
        return Path(spec).stem or spec, ModelConfig(model=spec)
    if not name:
        raise ConfigError(f"--prompt-model '{spec}': no model name", fix="e.g. openai:gpt-4o-mini")
    extra = models.get(name)
    update = {"model": name, "base_url": base.base_url}
    cfg = (extra.model_copy(update=update) if extra is not None else base.model_copy(update=update))
    if extra is None or extra.api_key_env is None:
        cfg = cfg.model_copy(update={"api_key_env": base.api_key_env})
    return Path(name).name or name, cfg


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
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{what} {p}: cannot be read ({exc.strerror or exc})",
                          fix="check the path and its permissions") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {p}: not valid UTF-8 at byte {exc.start}", fix="re-save the file as UTF-8") from exc
    try:
        raw = _json_or_yaml(text) or {}
    except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:  # YAML constructors raise ValueError
        # on values that look typed but are not, e.g. the date 2001-02-30
        mark = getattr(exc, "problem_mark", None)
        where = f"{p}:{mark.line + 1}" if mark is not None else str(p)
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"{what} {where}: not valid YAML/JSON ({reason})",
                          fix="check the indentation and quoting there; quote values meant as text") from exc
    except RecursionError as exc:
        raise ConfigError(f"{what} {p}: nested too deeply to read", fix="write it as a flat mapping of keys") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{what} {p}: expected a mapping of keys, got {type(raw).__name__}",
                          fix="write one `key: value` per line, e.g. `type: classification`")
    return raw


def _json_or_yaml(text: str):
    """JSON when the text is JSON (YAML 1.1 refuses characters that JSON allows, such as a raw DEL), else YAML."""
    import json

    try:
        return json.loads(text)
    except ValueError:  # not JSON (or nested too deeply): read it as YAML
        return yaml.safe_load(text)


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
        key = key if key.isprintable() else repr(key)[1:-1]  # a key with a line break must not break the one line
        where = f"task file {path}" if path else "task settings"
        message = err["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{where}: key '{key}': {message}", fix=_task_fix(err)) from exc


def _task_fix(err: dict) -> str:
    """How to fix one pydantic error in a task file, by its kind."""
    kind, loc = err.get("type", ""), err.get("loc", ())
    if kind == "extra_forbidden":
        model = TaskSpec
        for part in loc[:-1]:
            field = model.model_fields.get(str(part)) if isinstance(model, type) else None
            model = field.annotation if field is not None else None
        known = sorted(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else []
        return "remove it or correct its spelling" + (f"; known keys: {', '.join(known)}" if known else "")
    if str(loc[-1] if loc else "") in KEY_FIXES and kind in ("value_error", "string_pattern_mismatch"):
        return KEY_FIXES[str(loc[-1])]
    ctx = err.get("ctx") or {}
    if ctx.get("expected"):
        return f"use {ctx['expected']}"
    for prefix, fix in (("string", "write it as text, in quotes if it looks like a number, date or yes/no"), ("float", "write a number"), ("int", "write a whole number"),
                        ("bool", "write true or false"), ("list", "write a list, e.g. [a, b]"),
                        ("dict", "write a mapping of keys, e.g. {cpu_hour: 0.1}"), ("model", "write a mapping of keys")):
        if kind.startswith(prefix):
            return fix
    bounds = [f"{sign} {ctx[k]}" for k, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")) if k in ctx]
    if bounds:
        return "use a number " + " and ".join(bounds)
    return TASK_FILE_HELP


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
