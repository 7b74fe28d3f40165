"""From what the user pointed at (a file, a demo) to a validated, frozen split: the first stage."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from tunewise.config import TaskSpec, load_task
from tunewise.data.demo import load_demo
from tunewise.data.read import InvalidRecords, load_records, records_from_rows
from tunewise.data.records import Dataset, Issue, Record, records_hash
from tunewise.data.split import Split, make_split
from tunewise.errors import ConfigError


@dataclass
class Prepared:
    task: TaskSpec
    split: Split
    labels: list[str]
    source: str
    skipped: list[Issue] = field(default_factory=list)
    filtered: dict[str, int] = field(default_factory=dict)

    @property
    def data_key(self) -> str:
        return records_hash(self.split.train, self.split.test)

    def data_summary(self) -> dict:
        return {"source": self.source, "hash": self.data_key, "skipped_count": len(self.skipped),
                "skipped": [str(i) for i in self.skipped[:200]], "filtered": self.filtered}


def prepare(data: str | list[dict] | None, *, demo: str | None = None, task_file: str | None = None,
            overrides: dict | None = None, test_file: str | list[dict] | None = None, skip_invalid: bool = False,
            seed: int = 0, model: str | None = None) -> Prepared:
    """Read, validate and split. Exactly one of `data` and `demo` is given; `data` and `test_file` are
    a file's path or records in memory (dicts shaped like JSONL lines)."""
    if (data is None) == (demo is None):
        raise ConfigError("give a DATA file or --demo, not both and not neither",
                          fix="e.g. `tunewise profile data.jsonl --task task.yaml` or `tunewise profile --demo`")
    if demo is not None:
        task, train, test = load_demo(demo)
        if task_file or overrides:
            task = load_task(task_file, task.model_dump(exclude_none=True) | (overrides or {}))
        source = f"demo:{demo}"
    else:
        task = load_task(task_file, overrides)
        if task.corpus and isinstance(task_file, (str, os.PathLike)) and not Path(task.corpus).is_absolute():
            task = task.model_copy(update={"corpus": str(Path(task_file).parent / task.corpus)})  # beside the task file
        test_path = test_file if test_file is not None else task.test_file
        train = _load(data, task, skip_invalid, "records")
        test = _load(test_path, task, skip_invalid, "test records") if test_path is not None else None
        source = train.source + (f" + {test.source}" if test else "")
    skipped = train.skipped + (test.skipped if test else [])
    if model is not None:
        skipped += _check_lengths(model, [train] + ([test] if test else []), skip_invalid)
        bad = {(i.source, i.line) for i in skipped}
        train.records = [r for r in train.records if (r.source, r.line) not in bad]
        if test:
            test.records = [r for r in test.records if (r.source, r.line) not in bad]
    split = make_split(train.records, test.records if test else None, seed=seed,
                       classification=task.type == "classification")
    labels = task.labels or (sorted({r.output for r in split.train}) if task.type == "classification" else [])
    if task.type == "classification" and len(labels) < 2:
        raise ConfigError(f"{source}: the training data has {len(labels)} distinct label(s); need at least 2",
                          fix="check output_field in the task file")
    filtered = {k: v for d in (train, test) if d for k, v in d.filtered.items()}
    return Prepared(task=task, split=split, labels=labels, source=source, skipped=skipped, filtered=filtered)


def _load(data, task: TaskSpec, skip_invalid: bool, name: str) -> Dataset:
    if isinstance(data, (str, bytes)) or hasattr(data, "__fspath__"):
        return load_records(data, task, skip_invalid=skip_invalid)
    return records_from_rows(data, task, source=name, skip_invalid=skip_invalid)


def _check_lengths(model: str, datasets: list[Dataset], skip_invalid: bool) -> list[Issue]:
    """Records longer than the model's context cannot be scored or trained on: refuse them (listed, with
    their length), or with skip_invalid skip and list them. The context comes from the model's config
    when the tokenizer's model_max_length is a placeholder (1e30 for many)."""
    from tunewise.models.load import context_length, load_tokenizer

    tokenizer = load_tokenizer(model)
    limit = context_length(model, tokenizer)
    if limit is None:
        return []
    issues = []
    for ds in datasets:
        lengths = _token_counts(tokenizer, [r.text + " " + r.output for r in ds.records])
        for r, n in zip(ds.records, lengths):
            if n > limit:
                issues.append(Issue(r.source, r.line, None, f"{n:,} tokens, longer than the context of {model} "
                                                            f"({limit:,} tokens)"))
    if issues and not skip_invalid:
        raise InvalidRecords(issues[0].source, issues)
    return issues


def _token_counts(tokenizer, texts: list[str], batch: int = 512) -> list[int]:
    out: list[int] = []
    for start in range(0, len(texts), batch):
        ids = tokenizer(texts[start:start + batch], add_special_tokens=False)["input_ids"]
        out += [len(x) for x in ids]
    return out


def carve_validation(train: list[Record], *, seed: int, classification: bool, fraction: float = 0.1,
                     minimum: int = 8, limit: int | None = None) -> tuple[list[Record], list[Record]]:
    """A validation slice carved from train for fine-tuning's early stopping and the prompting
    calibration choice (test stays frozen): `fraction` of train, at most `limit` records, so that its
    cost follows the budget rather than the size of train."""
    from tunewise.data.split import seeded_split

    n_val = max(minimum, int(round(fraction * len(train))))
    n_val = min(n_val, limit) if limit is not None else n_val
    if len(train) < 2 * n_val:
        return train, train[:0]
    return seeded_split(train, fraction=n_val / len(train), seed=seed, stratified=classification)
