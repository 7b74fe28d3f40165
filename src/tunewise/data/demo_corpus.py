"""The `drug-condition` demo: "Which condition is <drug> taken for?" answered from the drug reviews.

One question per drug, dated by its first review, answered by the condition its reviews name most
often. The corpus is the reviews themselves, one document per review (id `<drug>/<review id>`, dated
by the review), headed with the drug and condition as drugs.com shows them. A time split at a cut-off
date leaves the drugs first reviewed after it only in the updated corpus: a model tuned before the
cut-off cannot know them; retrieval over the updated corpus can.
"""

from __future__ import annotations

import hashlib
import html
import json
from collections import Counter, defaultdict
from datetime import datetime

from tunewise.config import TaskSpec
from tunewise.data.records import Dataset, Record
from tunewise.files import write_atomic

_CONDITION_FIXES = {"Bipolar Disorde": "Bipolar Disorder"}  # truncated in the source data


def _condition(raw: str) -> str | None:
    """The condition, or None for the scraping debris some rows hold ('3</span> users found ...')."""
    text = raw.strip()
    if not text or "</span>" in text or "users found" in text:
        return None
    return _CONDITION_FIXES.get(text, text)


def _date(raw: str) -> str | None:
    try:
        return datetime.strptime(raw, "%B %d, %Y").date().isoformat()
    except ValueError:
        return None


def drug_questions(task: TaskSpec, rows: dict[str, list[dict]], source: str) -> tuple[TaskSpec, Dataset, None]:
    """(task with its corpus, one question per drug, no test file: the run splits them)."""
    reviews = [r | {"_date": _date(r["date"]), "_condition": _condition(r["condition"])}
               for split in ("train", "test") for r in rows[split]]
    usable = [r for r in reviews if r["_date"] and r["_condition"]]
    by_drug: dict[str, list[dict]] = defaultdict(list)
    for r in sorted(usable, key=lambda r: (r["_date"], r[""])):
        by_drug[r["drugName"].strip()].append(r)
    records = []
    for i, (drug, rs) in enumerate(sorted(by_drug.items()), start=1):
        counts = Counter(r["_condition"] for r in rs)
        top = max(counts.values())
        answer = next(r["_condition"] for r in rs if counts[r["_condition"]] == top)  # ties: the earliest
        records.append(Record(id=f"drug-{i}", messages=(("user", f"Which condition is {drug} taken for?"),),
                              output=answer, source=f"{source}!reviews", line=i, date=rs[0]["_date"], doc=drug))
    corpus = _write_corpus(usable)
    task = task.model_copy(update={"corpus": str(corpus), "source_field": "drug"})
    filtered = {"reviews without a date or a readable condition": len(reviews) - len(usable)}
    return task, Dataset(records=records, source=f"{source}!reviews", filtered=filtered), None


def _write_corpus(reviews: list[dict]):
    """The reviews as a JSONL corpus in the tunewise cache (written once per content)."""
    from tunewise.models.load import cache_dir

    lines = [json.dumps({"id": f"{r['drugName'].strip()}/{r['']}", "date": r["_date"],
                         "text": f"{r['drugName'].strip()}, reviewed for {r['_condition']}: "
                                 f"{html.unescape(r['review']).strip().strip(chr(34)).strip()}"},
                        ensure_ascii=False) for r in reviews]
    text = "\n".join(lines) + "\n"
    path = cache_dir() / "demo" / f"drug-reviews-{hashlib.sha256(text.encode()).hexdigest()[:12]}.jsonl"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, text)
    return path
