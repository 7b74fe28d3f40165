"""Chat history: the last-user-turn-only view (the history ablation) and truncation to a token limit.

Truncation keeps the system turns and the latest turns, dropping the oldest exchanges first, and never
the final user turn; callers count the records it cut and say so.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

from tunewise.data.records import Record

Messages = list[tuple[str, str]]


def last_turn_only(record: Record) -> Record:
    """The record with its system turns and its last user turn only (the history left out)."""
    system = [m for m in record.messages if m[0] == "system"]
    last_user = next(m for m in reversed(record.messages) if m[0] == "user")
    return replace(record, messages=tuple(system + [last_user]))


def truncate(messages: Messages, fits: Callable[[Messages], bool]) -> tuple[Messages, bool]:
    """(messages, whether any were cut): the oldest non-system turns dropped until `fits` says yes,
    keeping the system turns and at least the last user turn (and what follows it)."""
    if fits(messages):
        return messages, False
    system = [m for m in messages if m[0] == "system"]
    rest = [m for m in messages if m[0] != "system"]
    last_user = max(i for i, (role, _) in enumerate(rest) if role == "user")
    for start in range(1, last_user + 1):
        if rest[start][0] != "user":  # keep whole exchanges: a kept history starts with a user turn
            continue
        kept = system + rest[start:]
        if fits(kept):
            return kept, True
    return system + rest[last_user:], True
