"""Deterministic, seeded splits: stratified for classification, a validation slice for fine-tuning."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from sklearn.model_selection import train_test_split

from tunewise.data.records import Record


@dataclass
class Split:
    train: list[Record]
    test: list[Record]
    source: str  # "test file" or "seeded split"
    seed: int

    def summary(self) -> dict:
        return {"train": len(self.train), "test": len(self.test), "source": self.source, "seed": self.seed}


def _stratify(records: list[Record], fraction: float) -> list[str] | None:
    """Labels to stratify on, or None when some class is too small to appear on both sides."""
    counts = Counter(r.output for r in records)
    if len(counts) < 2 or min(counts.values()) < 2 or len(counts) > 0.5 * len(records):
        return None
    if len(counts) > fraction * len(records) or len(counts) > (1 - fraction) * len(records):
        return None
    return [r.output for r in records]


def seeded_split(records: list[Record], *, fraction: float, seed: int, stratified: bool) -> tuple[list, list]:
    """(rest, held) with `fraction` of the records held out; stable for a given seed."""
    if len(records) < 2:
        return list(records), []
    labels = _stratify(records, fraction) if stratified else None
    # a count, not the fraction: sklearn's ceil(fraction * n) can overshoot by one on float error
    # (e.g. subsample(25 records, limit=7) held 8)
    n_held = min(len(records) - 1, max(1, math.ceil(fraction * len(records) - 1e-9)))
    rest, held = train_test_split(records, test_size=n_held, random_state=seed, stratify=labels)
    return list(rest), list(held)


def make_split(train: list[Record], test: list[Record] | None, *, seed: int = 0,
               test_fraction: float = 0.2, classification: bool = True) -> Split:
    if test is not None:
        return Split(train=list(train), test=list(test), source="test file", seed=seed)
    rest, held = seeded_split(train, fraction=test_fraction, seed=seed, stratified=classification)
    return Split(train=rest, test=held, source=f"seeded split, {test_fraction:.0%} held out", seed=seed)


def subsample(records: list[Record], limit: int | None, *, seed: int, stratified: bool) -> list[Record]:
    """At most `limit` records, stratified where possible (for budgets and learning curves)."""
    if limit is None or limit >= len(records):
        return list(records)
    _, kept = seeded_split(records, fraction=limit / len(records), seed=seed, stratified=stratified)
    return kept


def nested_fraction(records: list[Record], fraction: float, *, seed: int, stratified: bool) -> list[Record]:
    """The first `fraction` of a seeded per-class order: smaller fractions are subsets of larger ones
    (a learning curve must add data, not swap it) and every class keeps its share."""
    import math
    import random

    if fraction >= 1:
        return list(records)
    rng = random.Random(seed)
    groups: dict[str, list[Record]] = {}
    for r in records:
        groups.setdefault(r.output if stratified else "", []).append(r)
    chosen = []
    for key in sorted(groups):
        group = groups[key][:]
        rng.shuffle(group)
        chosen += group[: max(1, math.ceil(fraction * len(group)))]
    order = {id(r): i for i, r in enumerate(records)}
    return sorted(chosen, key=lambda r: order[id(r)])


def test_order(records: list[Record], first: int | None, *, seed: int, stratified: bool) -> list[Record]:
    """The whole test split in the fixed order adaptive scoring reads it: a stratified sample of
    `first` records (the first look), then the rest in a seeded shuffle. Later looks only add records."""
    import random

    head = subsample(records, first, seed=seed, stratified=stratified)
    chosen = {id(r) for r in head}
    rest = [r for r in records if id(r) not in chosen]
    random.Random(seed).shuffle(rest)
    return head + rest


def nested_order(records: list[Record], fractions: list[float], *, seed: int,
                 stratified: bool) -> tuple[list[Record], list[int]]:
    """All records, ordered so that every `nested_fraction` subset is a prefix: the smallest subset
    first, then what the next one adds, and so on. Returns the order and the prefix lengths (one per
    distinct subset, ending with all records)."""
    order, sizes, seen = [], [], set()
    for fraction in sorted({f for f in fractions if f < 1} | {1.0}):
        for r in nested_fraction(records, fraction, seed=seed, stratified=stratified):
            if id(r) not in seen:
                seen.add(id(r))
                order.append(r)
        if not sizes or sizes[-1] < len(order):
            sizes.append(len(order))
    return order, sizes
