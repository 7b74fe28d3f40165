"""The plain typed records that flow through every stage."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Record:
    """One example: the conversation up to the turn to predict, and the expected output.

    Plain inputs become a single user message, so prompting, retrieval and fine-tuning all see the
    same shape; multi-turn chat keeps its whole history and is scored on its last assistant turn.
    """

    id: str
    messages: tuple[tuple[str, str], ...]  # (role, content), ending with a user turn
    output: str
    source: str = ""
    line: int = 0
    date: str | None = None  # ISO date when the record carries one
    doc: str | None = None  # the corpus document that holds the answer, when the record names it

    @property
    def text(self) -> str:
        """The input as plain text (for embeddings, TF-IDF, hashing): non-system turns joined."""
        return "\n".join(content for role, content in self.messages if role != "system")

    @property
    def user_turns(self) -> int:
        return sum(1 for role, _ in self.messages if role == "user")

    @property
    def multi_turn(self) -> bool:
        return self.user_turns > 1


def record_to_json(record: Record) -> dict:
    return {"id": record.id, "messages": [list(m) for m in record.messages], "output": record.output,
            "source": record.source, "line": record.line, "date": record.date}


def record_from_json(data: dict) -> Record:
    return Record(id=data["id"], messages=tuple((role, text) for role, text in data["messages"]),
                  output=data["output"], source=data.get("source", ""), line=data.get("line", 0),
                  date=data.get("date"))


@dataclass(frozen=True)
class Issue:
    """A bad record: where it is and why it was refused."""

    source: str
    line: int
    field: str | None
    reason: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" + (f" field '{self.field}'" if self.field else "")
        return f"{where}: {self.reason}"


@dataclass
class Dataset:
    """Records read from one file, with whatever was skipped (never dropped silently)."""

    records: list[Record]
    source: str
    skipped: list[Issue] = field(default_factory=list)
    filtered: dict[str, int] = field(default_factory=dict)  # deliberate filters, e.g. rare demo labels

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for r in self.records:
            h.update(json.dumps([r.messages, r.output], ensure_ascii=False).encode())
        return h.hexdigest()[:16]


def records_hash(*groups: list[Record]) -> str:
    h = hashlib.sha256()
    for group in groups:
        h.update(b"|")
        for r in group:
            h.update(json.dumps([r.messages, r.output], ensure_ascii=False).encode())
    return h.hexdigest()[:16]
