"""Multi-turn context: the last-turn view, truncation that keeps the system turn, and the ablation."""

from __future__ import annotations

import json

import pytest

from tunewise.config import BUDGETS
from tunewise.data.history import last_turn_only, truncate
from tunewise.data.prepare import prepare
from tunewise.data.records import Record
from tunewise.models.backend import Scored
from tunewise.runner import RunOptions, run
from tunewise.store import Store
from tunewise.strategies import register
from tunewise.ui import Progress

CHAT = [("system", "be brief"), ("user", "my name is Ada"), ("assistant", "hello Ada"),
        ("user", "I live in Oslo"), ("assistant", "nice"), ("user", "what is my name?")]


def test_last_turn_only_keeps_the_system_turn_and_the_last_question():
    r = Record(id="x", messages=tuple(CHAT), output="Ada")
    assert last_turn_only(r).messages == (("system", "be brief"), ("user", "what is my name?"))


def test_truncation_keeps_system_and_latest_exchanges():
    def under(n):
        return lambda turns: sum(len(t.split()) for _, t in turns) <= n

    assert truncate(CHAT, under(100)) == (CHAT, False)
    kept, cut = truncate(CHAT, under(11))  # drops the first exchange, keeps 'I live in Oslo' onwards
    assert cut and kept == [CHAT[0]] + CHAT[3:]
    kept, cut = truncate(CHAT, under(1))  # nothing fits: system turn and the last question remain
    assert cut and kept == [CHAT[0], CHAT[-1]]


@register("recalls_name_for_test")
class RecallsName:
    """Answers with the name said in an earlier turn: right only when it sees the history."""

    family = "prompting"

    def __init__(self, spec):
        pass

    def settings(self):
        return {}

    def fit(self, ctx):
        return {}

    def predict(self, ctx, record):
        said = [t for role, t in record.messages if role == "user" and t.startswith("my name is ")]
        return Scored(said[0].removeprefix("my name is ") if said else "unknown", 0.001, 5, 1)


def test_history_ablation_measures_the_gap_on_a_small_chat_set(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    names = ["Ada", "Bo", "Cy", "Di", "Ed", "Flo", "Gus", "Hal", "Ivy", "Jo"] * 3
    rows = [{"messages": [{"role": "user", "content": f"my name is {n}"}, {"role": "assistant", "content": "hi"},
                          {"role": "user", "content": "what is my name?"}, {"role": "assistant", "content": n}]}
            if i % 3 else {"messages": [{"role": "user", "content": f"say {n}"}, {"role": "assistant", "content": n}]}
            for i, n in enumerate(names)]
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = tmp_path / "task.yaml"
    task.write_text("type: generation\nmetric: exact_match\n")
    prep = prepare(str(data), task_file=str(task), seed=0)
    opts = RunOptions(budget=BUDGETS["quick"].model_copy(update={"bootstrap": 200}), out_dir=tmp_path / "run",
                      store=Store(tmp_path / "s"), candidates=["recalls_name_for_test"], learning_curve=False,
                      forgetting=False)
    results = run(prep, opts, Progress(quiet=True))
    h = results.history
    multi = sum(r.multi_turn for r in prep.split.test)
    assert h is not None and h.candidate == "recalls_name_for_test" and h.records == multi > 0
    assert h.whole_history.value == 1.0 and h.last_turn.value == 0.0 and h.gap.value == pytest.approx(1.0)
    finding = next(r.finding for r in results.verdict.reasons if r.criterion == "multi_turn")
    assert "last user turn only" in finding and "the history matters" in finding
    assert "Multi-turn context (history ablation)" in (tmp_path / "run" / "report.md").read_text()
