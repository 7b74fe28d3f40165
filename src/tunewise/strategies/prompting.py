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
    per_record_examples = False  # examples differ per input (retrieved): they follow the shared prefix
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

        both = self._predict_many(ctx, ctx.validation, calibrate=True)
        calibrated, raw = [s.prediction for s, _ in both], [r for _, r in both]
        refs = [r.output for r in ctx.validation]
        metric = ctx.task.primary_metric
        on, off = (metric_value(metric, p, refs, ctx.labels) for p in (calibrated, raw))
        use = bool(on > off)
        return use, (f"contextual calibration {'on' if use else 'off'}: {metric} on the {len(refs)} validation "
                     f"records {on:.2f} with it, {off:.2f} without")

    def prepare(self, ctx: Context) -> None:
        """Choose examples once (static) or build an index (retrieved)."""

    def examples_for(self, records: list[Record]) -> list[list[Record]]:
        """The examples shown before each record's input."""
        return [[] for _ in records]

    def candidate_labels(self, ctx: Context, record: Record) -> list[str]:
        return ctx.labels

    def predict(self, ctx: Context, record: Record) -> Scored:
        return self._predict_many(ctx, [record], self.calibrate)[0][0]

    def predict_many(self, ctx: Context, records: list[Record]) -> list[Scored]:
        return [scored for scored, _ in self._predict_many(ctx, records, self.calibrate)]

    def _predict_many(self, ctx: Context, records: list[Record], calibrate: bool) -> list[tuple[Scored, str]]:
        """(scored, raw prediction) per record: `scored.prediction` is calibrated when asked, the raw
        one is not. Classification over one label set is scored in batches."""
        if not records:
            return []
        examples = self.examples_for(records)
        shared = self.system + (example_turns(examples[0]) if examples and not self.per_record_examples else [])
        rests = [(example_turns(ex) if self.per_record_examples else []) + input_turns(r)
                 for r, ex in zip(records, examples)]
        if ctx.task.type == "generation":
            return [(s, s.prediction) for s in
                    (self.lm.generate(shared + rest, max_new_tokens=self.max_new_tokens) for rest in rests)]
        label_sets = [self.candidate_labels(ctx, r) for r in records]
        label_id_sets = [self._label_ids if labels is ctx.labels else self.lm.label_ids(labels)
                         for labels in label_sets]
        if all(labels is ctx.labels for labels in label_sets):
            scored = self.lm.classify_many(shared, rests, ctx.labels, cache=self._cache(shared),
                                           label_ids=self._label_ids)
        else:  # labels restricted per input: one at a time
            scored = [self.lm.classify(shared, rest, labels, cache=self._cache(shared), label_ids=ids)
                      for rest, labels, ids in zip(rests, label_sets, label_id_sets)]
        out = []
        for s, labels, label_ids, ex in zip(scored, label_sets, label_id_sets, examples):
            raw = s.prediction
            if calibrate:
                prior = self._content_free(shared, labels, label_ids, ex)
                s.prediction = labels[int(np.argmax([lp - p for lp, p in zip(s.label_logprobs, prior)]))]
            out.append((s, raw))
        return out

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

    def examples_for(self, records: list[Record]) -> list[list[Record]]:
        return [self.examples for _ in records]


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
