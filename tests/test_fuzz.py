"""Fuzz: generated files of valid, bad and odd records (hostile text, lone surrogates, deep nesting,
odd Unicode, CSV quoting) through every reader and the task-file loader. Nothing but TunewiseError
escapes, and no valid record is lost or altered. The same checks run at scale (>= 10,000 records)
in `make bench-reliability` (benchmarks/reliability.py fuzz)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fuzz_records as F
from tunewise.config import TaskSpec

FAST = settings(max_examples=40, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
TERMINATOR = st.sampled_from(["\n", "\r\n", "\r"])
LABELLED_BAD = F.BAD_JSONL | st.just('{"text": "a", "label": "not declared"}')


def clean(tally: F.Tally) -> None:
    assert not tally.foreign and not tally.lost, tally.examples


@FAST
@given(items=F.jsonl_file(F.valid_pair_record(False), F.BAD_JSONL), terminator=TERMINATOR, skip=st.booleans())
def test_fuzz_jsonl_field_pairs(items, terminator, skip):
    clean(F.check_jsonl(items, terminator, TaskSpec(), skip))


@FAST
@given(items=F.jsonl_file(F.valid_pair_record(True), LABELLED_BAD), terminator=TERMINATOR, skip=st.booleans())
def test_fuzz_jsonl_with_declared_labels(items, terminator, skip):
    clean(F.check_jsonl(items, terminator, TaskSpec(labels=F.LABELS), skip))


@FAST
@given(items=F.jsonl_file(F.valid_chat_record(), F.BAD_CHAT), terminator=TERMINATOR, skip=st.booleans())
def test_fuzz_chat(items, terminator, skip):
    clean(F.check_jsonl(items, terminator, TaskSpec(), skip, name="chat.jsonl"))


@FAST
@given(generated=F.csv_file(), skip=st.booleans())
def test_fuzz_csv_and_tsv(generated, skip):
    clean(F.check_csv(generated, skip))


@FAST
@given(text=F.TASK_TEXT)
def test_fuzz_task_files(text):
    clean(F.check_task_text(text))


@FAST
@given(spec_format=F.VALID_TASK)
def test_fuzz_valid_task_files_load_unaltered(spec_format):
    clean(F.check_valid_task(*spec_format))


def test_a_task_key_with_a_line_break_keeps_the_error_on_one_line():
    # found by the reliability benchmark's fuzzing: the unknown key was printed raw
    tally = F.check_task_text('{"\\nk\\u001e": null}')
    assert not tally.lost and not tally.foreign, tally.examples
