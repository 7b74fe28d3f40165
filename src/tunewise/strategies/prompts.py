"""Prompt pieces shared by every language-model strategy, so all are asked the same way."""

from __future__ import annotations

import re

from tunewise.config import TaskSpec
from tunewise.data.records import Record

Messages = list[tuple[str, str]]
MAX_LISTED_LABELS = 40  # beyond this the label list is left out of the prompt (it would dwarf the input)


def system_turn(task: TaskSpec, labels: list[str]) -> Messages:
    parts = [task.system_prompt or "You are a careful assistant that follows the instruction exactly."]
    if task.instruction:
        parts.append(task.instruction)
    if task.type == "classification" and len(labels) <= MAX_LISTED_LABELS:
        parts.append("Answer with exactly one of: " + ", ".join(labels) + ".")
    return [("system", " ".join(parts))]


def example_turns(examples: list[Record]) -> Messages:
    """Few-shot examples as earlier chat turns: each input, then its answer."""
    turns: Messages = []
    for r in examples:
        turns.extend(r.messages if r.messages[0][0] != "system" else r.messages[1:])
        turns.append(("assistant", r.output))
    return turns


def input_turns(record: Record) -> Messages:
    """The record's own conversation (its system turns dropped: the task's system turn comes first)."""
    return [m for m in record.messages if m[0] != "system"]


def parse_label(answer: str, labels: list[str]) -> str | None:
    """The label a generated answer names, or None (counted as wrong, never dropped).

    The whole answer equal to a label (case, quotes, markdown and end punctuation ignored) names it;
    else the answer must name exactly one label as a whole word or phrase (a label inside a longer
    named label, like 'card' in 'card declined', does not count). Two labels named: None (ambiguous)."""
    text = answer.strip().strip("\"'`*.!:;, \n").lower()
    by_text = {label.lower(): label for label in labels}
    if text in by_text:
        return by_text[text]
    found = []
    for label in labels:
        for m in re.finditer(r"(?<!\w)" + re.escape(label.lower()) + r"(?!\w)", text):
            found.append((m.start(), m.end(), label))
    named = {label for start, end, label in found
             if not any(s <= start and end <= e and (e - s) > (end - start) for s, e, _ in found)}
    return named.pop() if len(named) == 1 else None
