"""Prompting family: the model as-is, static few-shot, and retrieved (k-nearest) few-shot.

All three build the same system turn and differ only in which training examples precede the
input. Examples come from the training records only, never from the test split. Classification
is scored by label likelihood; with `calibrate` the label scores are corrected by the scores the
model gives a content-free input ("N/A"), which removes its prior for some labels
(contextual calibration, Zhao et al. 2021). Calibration equalises the label prior, which helps a
model that favours a wrong label and hurts on skewed data, so by default (`calibrate: auto`) it is
used only when it scores better on the validation slice carved from train; the choice is noted.
"""

from __future__ import annotations

import random
from collections import defaultdict

import numpy as np

from tunewise.assets import DEFAULT_MODEL
from tunewise.data.records import Record
from tunewise.models.lm import Scored
from tunewise.strategies.base import CandidateSpec, Context, register
from tunewise.strategies.prompts import example_turns, input_turns, system_turn

CONTENT_FREE = "N/A"


class PromptStrategy:
    family = "prompting"
    uses_examples = False
    calibrate_default: bool | str = "auto"

    def __init__(self, spec: CandidateSpec):
        self.spec = spec
        self.model_name = spec.model or DEFAULT_MODEL
        self.k = spec.options.get("k")
        mode = spec.options.get("calibrate", self.calibrate_default)
        self.calibration_mode = mode if mode == "auto" else bool(mode)
        self.calibrate = bool(mode)
        self.max_new_tokens = int(spec.options.get("max_new_tokens", 64))

    def settings(self) -> dict:
        s = {"model": self.model_name, "calibrate": self.calibration_mode}
        if self.uses_examples:
            s["k"] = self.k
        return s

    def fit(self, ctx: Context) -> dict:
        if self.uses_examples and self.k is None:
            self.k = ctx.budget.shots
        self.lm = ctx.models.lm(self.model_name)
        self.system = system_turn(ctx.task, ctx.labels)
        self.prepare(ctx)
        self._shared_prefix: tuple | None = None
        self._label_ids = self.lm.label_ids(ctx.labels) if ctx.task.type == "classification" else None
        self._prior: dict[tuple, list[float]] = {}
        notes = []
        if self.calibration_mode == "auto":
            self.calibrate = False
            if ctx.task.type == "classification" and ctx.validation:
                self.calibrate, note = self._choose_calibration(ctx)
                notes.append(note)
        return {"notes": notes}

    def _choose_calibration(self, ctx: Context) -> tuple[bool, str]:
        """Calibrate or not, whichever scores better on the validation slice (ties: not)."""
        from tunewise.evaluate.stats import metric_value

        raw, calibrated = [], []
        for r in ctx.validation:
            scored, unadjusted = self._predict(ctx, r, calibrate=True)
            raw.append(unadjusted)
            calibrated.append(scored.prediction)
        refs = [r.output for r in ctx.validation]
        metric = ctx.task.primary_metric
        on, off = (metric_value(metric, p, refs, ctx.labels) for p in (calibrated, raw))
        use = bool(on > off)
        return use, (f"contextual calibration {'on' if use else 'off'}: {metric} on the {len(refs)} validation "
                     f"records {on:.2f} with it, {off:.2f} without")

    def prepare(self, ctx: Context) -> None:
        """Choose examples once (static) or build an index (retrieved)."""

    def examples_for(self, record: Record) -> list[Record]:
        return []

    def candidate_labels(self, ctx: Context, examples: list[Record]) -> list[str]:
        return ctx.labels

    def predict(self, ctx: Context, record: Record) -> Scored:
        return self._predict(ctx, record, self.calibrate)[0]

    def _predict(self, ctx: Context, record: Record, calibrate: bool) -> tuple[Scored, str]:
        """(scored, raw prediction): `scored.prediction` is calibrated when asked, the raw one is not."""
        examples = self.examples_for(record)
        shared = self.system + (example_turns(examples) if not self.per_record_examples else [])
        rest = (example_turns(examples) if self.per_record_examples else []) + input_turns(record)
        if ctx.task.type == "generation":
            scored = self.lm.generate(shared + rest, max_new_tokens=self.max_new_tokens)
            return scored, scored.prediction
        labels = self.candidate_labels(ctx, examples)
        label_ids = self._label_ids if labels is ctx.labels else self.lm.label_ids(labels)
        cache = self._cache(shared)
        scored = self.lm.classify(shared, rest, labels, cache=cache, label_ids=label_ids)
        raw = scored.prediction
        if calibrate:
            prior = self._content_free(shared, labels, label_ids, examples)
            adjusted = [lp - p for lp, p in zip(scored.label_logprobs, prior)]
            scored.prediction = labels[int(np.argmax(adjusted))]
        return scored, raw

    per_record_examples = False

    def _cache(self, shared):
        """The shared prefix's KV cache, built once (per distinct prefix) and reused."""
        key = tuple(shared)
        if self._shared_prefix is None or self._shared_prefix[0] != key:
            prefix_ids, _ = self.lm.split_prompt(shared, [("user", CONTENT_FREE)])
            self._shared_prefix = (key, self.lm.prefix_cache(prefix_ids))
        return self._shared_prefix[1]

    def _content_free(self, shared, labels, label_ids, examples) -> list[float]:
        key = (tuple(shared), tuple(labels), tuple(r.id for r in examples) if self.per_record_examples else ())
        if key not in self._prior:
            rest = (example_turns(examples) if self.per_record_examples else []) + [("user", CONTENT_FREE)]
            self._prior[key] = self.lm.classify(shared, rest, labels, cache=self._cache(shared),
                                                label_ids=label_ids).label_logprobs
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

    def examples_for(self, record: Record) -> list[Record]:
        return self.examples


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

    def examples_for(self, record: Record) -> list[Record]:
        from tunewise.models.embed import nearest

        q = self.embedder.encode([record.text])
        idx, _ = nearest(q, self.train_emb, max(self.k * 4, self.k))
        self._neighbours = [self.train[i] for i in idx[0]]
        return list(reversed(self._neighbours[: self.k]))

    def candidate_labels(self, ctx: Context, examples: list[Record]) -> list[str]:
        if not self.restrict:
            return ctx.labels
        seen = {r.output for r in self._neighbours}
        return [label for label in ctx.labels if label in seen]
