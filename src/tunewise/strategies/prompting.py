"""Prompting family: the model as-is, static few-shot, and retrieved (k-nearest) few-shot.

All three build the same system turn and differ only in which training examples precede the
input. Examples come from the training records only, never from the test split. Classification
is scored through the model's backend (models/backend.py: local or HTTP) by the best method it
supports (label likelihood, chat answer log-probabilities, or generate and parse), or the one the
model's `scoring:` or the `scoring` option names; the method goes into the candidate's notes.
With `calibrate` (likelihood only) the label scores are corrected by the scores the
model gives a content-free input ("N/A"), which removes its prior for some labels
(contextual calibration, Zhao et al. 2021). Calibration equalises the label prior, which helps a
model that favours a wrong label and hurts on skewed data, so by default (`calibrate: auto`) it is
used only when it scores better on the validation slice carved from train; the choice is noted. A
model's `calibrate:` setting (task file `models:`) fixes it instead, e.g. off for a served fine-tuned model.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path

import numpy as np

from tunewise.assets import DEFAULT_MODEL
from tunewise.config import SCORING_CHOICES
from tunewise.data.records import Record, record_from_json, record_to_json
from tunewise.errors import ConfigError
from tunewise.models.backend import Scored, answer_tokens
from tunewise.strategies.base import (CandidateSpec, Context, Family, FitFacts, answer_cap, register,
                                      require_answer_cap)
from tunewise.strategies.prompts import example_turns, input_turns, parse_label, system_turn

CONTENT_FREE = "N/A"
PROMPT_FILE = "prompt.json"
EXAMPLES_FILE = "examples.jsonl"
METHOD_NOTES = {
    "likelihood": "labels scored by their full log-likelihood",
    "chat_logprobs": "labels scored by the chat answer's token log-probabilities (top {k}; exact for the label "
                     "the model wrote, an upper bound for the others)",
    "generate": "labels read from a short greedy answer (generate and parse; an answer naming no single label "
                "counts as wrong)",
}


class PromptStrategy:
    family: Family = "prompting"
    uses_examples = False
    per_record_examples = False  # examples differ per input (retrieved): they follow the shared prefix
    calibrate_default: bool | str = "auto"

    def __init__(self, spec: CandidateSpec):
        self.spec = spec
        self.model_name = spec.model or DEFAULT_MODEL
        self.k = spec.options.get("k")
        mode = spec.options.get("calibrate", self.calibrate_default)
        self.calibration_mode = mode if mode == "auto" else bool(mode)
        self.calibrate = bool(mode)
        self.max_new_tokens = spec.options.get("max_new_tokens")  # None: enough for the longest training answer
        self.scoring = spec.options.get("scoring")  # None: the model's `scoring:`, else the best it supports
        if self.scoring is not None and self.scoring not in SCORING_CHOICES:
            raise ConfigError(f"candidate '{spec.name}': option scoring '{self.scoring}' is unknown",
                              fix=f"use one of {', '.join(SCORING_CHOICES)}")

    def settings(self) -> dict:
        s = {"model": self.model_name, "calibrate": self.calibration_mode}
        if self.uses_examples:
            s["k"] = self.k
        if self.scoring is not None:
            s["scoring"] = self.scoring
        return s

    def fit(self, ctx: Context) -> FitFacts:
        if self.uses_examples and self.k is None:
            self.k = ctx.budget.shots
        self.backend = ctx.models.backend(self.model_name)
        self.method = self._method(ctx)
        if self.max_new_tokens is None and ctx.task.type == "generation":
            self.max_new_tokens = answer_cap(ctx)
        self.system = system_turn(ctx.task, ctx.labels)
        self.prepare(ctx)
        self._prior: dict[tuple, list[float]] = {}
        notes = [self._method_note(ctx)] if ctx.task.type == "classification" else []
        short, cfg = ctx.models.config(self.model_name)
        if ctx.task.type == "classification" and cfg.calibrate is not None and "calibrate" not in self.spec.options:
            self.calibration_mode = self.calibrate = cfg.calibrate  # the model's `calibrate:` setting
            notes.append(f"contextual calibration {'on' if cfg.calibrate else 'off'}: set by model '{short}' "
                         f"(calibrate: {str(cfg.calibrate).lower()})")
        if self.method != "likelihood" and self.calibrate and self.calibration_mode != "auto":
            raise ConfigError(f"candidate '{self.spec.name}': calibrate needs full label log-likelihoods, and "
                              f"this model is scored by {self.method}", fix="set calibrate: auto or false")
        if self.calibration_mode == "auto":
            self.calibrate = False
            if self.method == "likelihood" and ctx.validation:
                self.calibrate, note = self._choose_calibration(ctx)
                notes.append(note)
        classification = ctx.task.type == "classification"
        return FitFacts(scoring=self.method if classification else None, api=ctx.models.api_use(self.model_name),
                        notes=notes)

    def _method(self, ctx: Context) -> str:
        """Option `scoring`, else the model's `scoring:`, else the best its backend supports."""
        if ctx.task.type == "generation":
            return "generate"
        _, cfg = ctx.models.config(self.model_name)
        chosen = self.scoring or cfg.scoring
        caps = self.backend.capabilities()
        if chosen == "auto":
            return caps.best_method()
        if not caps.supports(chosen):
            raise ConfigError(f"candidate '{self.spec.name}': model '{self.model_name}' cannot score labels by "
                              f"{chosen}", fix=f"use scoring: auto or {caps.best_method()}")
        return chosen

    def _method_note(self, ctx: Context) -> str:
        from tunewise.models.http import TOP_LOGPROBS

        note = f"{METHOD_NOTES[self.method].format(k=TOP_LOGPROBS)} ({self.backend.name}"
        probe = getattr(self.backend, "probe_note", "")
        return note + (f"; {probe})" if probe else ")")

    def _choose_calibration(self, ctx: Context) -> tuple[bool, str]:
        """Calibrate or not, whichever scores better on the validation slice (ties: not). The slice is
        small (capped per budget), so the note gives the paired difference and says when it is uncertain."""
        from tunewise.evaluate.sequential import paired_test
        from tunewise.evaluate.stats import metric_value

        scored = self._predict_many(ctx, ctx.validation, calibrate=True, full=True)  # every label: both choices
        calibrated = [s.prediction for s in scored]
        label_sets = [self.candidate_labels(ctx, r) for r in ctx.validation]
        raw = [labels[int(np.argmax(s.label_logprobs))] for s, labels in zip(scored, label_sets)]
        refs = [r.output for r in ctx.validation]
        metric = ctx.task.primary_metric
        on, off = (metric_value(metric, p, refs, ctx.labels) for p in (calibrated, raw))
        use = bool(on > off)
        note = (f"contextual calibration {'on' if use else 'off'}: {metric} on the {len(refs)} validation "
                f"records {on:.2f} with it, {off:.2f} without")
        if calibrated != raw and len(refs) > 1:
            t = paired_test(metric, calibrated, raw, refs, ctx.labels, 0.05, ctx.budget.bootstrap, ctx.seed)
            if t["p_value"] >= 0.05:
                note += (f" (difference {t['diff']:+.2f} [{t['ci_low']:+.2f}, {t['ci_high']:+.2f}], p = "
                         f"{t['p_value']:.2g}: too few validation records to be sure of the choice)")
        return use, note

    def prepare(self, ctx: Context) -> None:
        """Choose examples once (static) or build an index (retrieved)."""

    def save(self, folder: Path) -> None:
        """The prompt, how labels are scored and the calibration choice (and the examples: subclasses)."""
        (folder / PROMPT_FILE).write_text(json.dumps(
            {"system": self.system, "method": self.method, "calibrate": self.calibrate, "k": self.k,
             "max_new_tokens": self.max_new_tokens}, indent=1))

    def load(self, ctx: Context, folder: Path) -> None:
        saved = json.loads((folder / PROMPT_FILE).read_text())
        self.system = [tuple(m) for m in saved["system"]]
        self.method, self.calibrate, self.k = saved["method"], saved["calibrate"], saved["k"]
        self.max_new_tokens = saved.get("max_new_tokens")  # generation: the run's answer length cap
        require_answer_cap(ctx, folder, self.max_new_tokens)
        self.backend = ctx.models.backend(self.model_name)
        self._prior = {}

    def examples_for(self, records: list[Record]) -> list[list[Record]]:
        """The examples shown before each record's input."""
        return [[] for _ in records]

    def candidate_labels(self, ctx: Context, record: Record) -> list[str]:
        return ctx.labels

    def turns(self, record: Record):
        """The record's own turns as the model sees them (retrieval adds its passages here)."""
        return input_turns(record)

    def predict(self, ctx: Context, record: Record) -> Scored:
        return self._predict_many(ctx, [record], self.calibrate)[0]

    def predict_many(self, ctx: Context, records: list[Record]) -> list[Scored]:
        return self._predict_many(ctx, records, self.calibrate)

    def _predict_many(self, ctx: Context, records: list[Record], calibrate: bool, full: bool = False) -> list[Scored]:
        """Classification over one label set (and one calibration prior) is scored in one backend call.
        Unless `full`, only the best label is wanted (a local model may search for it: lm.best_label)."""
        if not records:
            return []
        examples = self.examples_for(records)
        shared = self.system + (example_turns(examples[0]) if examples and not self.per_record_examples else [])
        rests = [(example_turns(ex) if self.per_record_examples else []) + self.turns(r)
                 for r, ex in zip(records, examples)]
        if self.method == "generate":
            return self._generate(ctx, shared, rests)
        label_sets = [self.candidate_labels(ctx, r) for r in records]
        if all(labels is ctx.labels for labels in label_sets) and not (calibrate and self.per_record_examples):
            prior = self._content_free(shared, ctx.labels, []) if calibrate else None
            return self.backend.score_labels(shared, rests, ctx.labels, self.method, prior=prior, full=full)
        # labels restricted per input, or a prior per input's examples: one at a time
        return [self.backend.score_labels(shared, [rest], labels, self.method, full=full,
                                          prior=self._content_free(shared, labels, ex) if calibrate else None)[0]
                for rest, labels, ex in zip(rests, label_sets, examples)]

    def _generate(self, ctx: Context, shared, rests) -> list[Scored]:
        """Greedy answers; for classification each is matched to a label ('' when it names none)."""
        if ctx.task.type == "generation":
            return self.backend.generate([shared + rest for rest in rests], int(self.max_new_tokens))
        answers = self.backend.generate([shared + rest for rest in rests], answer_tokens(ctx.labels))
        for s in answers:
            s.answer = s.prediction
            label = parse_label(s.prediction, ctx.labels)
            s.prediction, s.unparsed = (label, False) if label is not None else ("", True)
        return answers

    def _content_free(self, shared, labels, examples) -> list[float]:
        key = (tuple(shared), tuple(labels), tuple(r.id for r in examples) if self.per_record_examples else ())
        if key not in self._prior:
            rest = (example_turns(examples) if self.per_record_examples else []) + [("user", CONTENT_FREE)]
            self._prior[key] = self.backend.score_labels(shared, [rest], labels, self.method, full=True)[0].label_logprobs
        return self._prior[key]


@register("zero_shot")
class ZeroShot(PromptStrategy):
    pass


@register("few_shot")
class FewShot(PromptStrategy):
    """k examples chosen once, balanced across classes (round-robin over labels, seeded)."""

    uses_examples = True

    def prepare(self, ctx: Context) -> None:
        rng = random.Random(ctx.seed)
        by_label: dict[str, list[Record]] = defaultdict(list)
        for r in ctx.train:
            by_label[r.output if ctx.task.type == "classification" else "_"].append(r)
        pools = [rng.sample(v, len(v)) for _, v in sorted(by_label.items())]
        rng.shuffle(pools)
        chosen: list[Record] = []
        while len(chosen) < self.k and any(pools):
            for pool in pools:
                if pool and len(chosen) < self.k:
                    chosen.append(pool.pop())
        rng.shuffle(chosen)
        self.examples = chosen

    def examples_for(self, records: list[Record]) -> list[list[Record]]:
        return [self.examples for _ in records]

    def save(self, folder: Path) -> None:
        super().save(folder)
        _write_records(folder / EXAMPLES_FILE, self.examples)

    def load(self, ctx: Context, folder: Path) -> None:
        super().load(ctx, folder)
        self.examples = _read_records(folder / EXAMPLES_FILE)


@register("knn_few_shot")
class KnnFewShot(PromptStrategy):
    """The k nearest training examples to each test input (MiniLM embeddings), nearest last.

    With many labels (more than `restrict_above`), scoring is restricted to the labels of the
    retrieved neighbours (the k*4 nearest): results say so in their notes.
    """

    uses_examples = True
    per_record_examples = True
    calibrate_default = False  # the prior would change with every input's examples: twice the cost
    def settings(self) -> dict:
        return super().settings() | {"embedder": "all-minilm-l6-v2",
                                     "restrict_above": self.spec.options.get("restrict_above", 20)}

    def prepare(self, ctx: Context) -> None:
        from tunewise.models.embed import get_embedder

        self.embedder = get_embedder()
        self.train = list(ctx.train)
        self.train_emb = self.embedder.encode([r.text for r in self.train])
        self.restrict = ctx.task.type == "classification" and len(ctx.labels) > self.settings()["restrict_above"]
        if self.restrict:
            ctx.notes.append(f"{self.spec.name}: labels restricted to those of the {self.k * 4} nearest "
                             "training examples for each input")

    def save(self, folder: Path) -> None:
        """The index: the training records and their embeddings, as retrieval saw them."""
        super().save(folder)
        _write_records(folder / EXAMPLES_FILE, self.train)
        np.save(folder / "embeddings.npy", self.train_emb)
        (folder / "index.json").write_text(json.dumps({"restrict": self.restrict}))

    def load(self, ctx: Context, folder: Path) -> None:
        from tunewise.models.embed import get_embedder

        super().load(ctx, folder)
        self.embedder = get_embedder()
        self.train = _read_records(folder / EXAMPLES_FILE)
        self.train_emb = np.load(folder / "embeddings.npy")
        self.restrict = json.loads((folder / "index.json").read_text())["restrict"]

    def examples_for(self, records: list[Record]) -> list[list[Record]]:
        from tunewise.models.embed import nearest

        idx, _ = nearest(self.embedder.encode([r.text for r in records]), self.train_emb, max(self.k * 4, self.k))
        neighbours = [[self.train[i] for i in row] for row in idx]
        self._neighbour_labels = {r.id: {n.output for n in near} for r, near in zip(records, neighbours)}
        return [list(reversed(near[: self.k])) for near in neighbours]

    def candidate_labels(self, ctx: Context, record: Record) -> list[str]:
        if not self.restrict:
            return ctx.labels
        seen = self._neighbour_labels[record.id]
        return [label for label in ctx.labels if label in seen]


def _write_records(path: Path, records: list[Record]) -> None:
    path.write_text("".join(json.dumps(record_to_json(r), ensure_ascii=False) + "\n" for r in records))


def _read_records(path: Path) -> list[Record]:
    return [record_from_json(json.loads(line)) for line in path.read_text().splitlines() if line]
