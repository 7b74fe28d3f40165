"""Reading data: every JSONL shape and CSV/TSV, every kind of bad record (file:line, field, reason),
file-level errors, property-based checks that nothing is lost and nothing but TunewiseError escapes,
the seeded splits, and the embedded demo."""

from __future__ import annotations

import csv
import io
import json
import math
import re
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import banking77_or_skip
from tunewise.config import TaskSpec, load_task
from tunewise.data.demo import load_demo
from tunewise.data.prepare import carve_validation
from tunewise.data.read import InvalidRecords, load_records
from tunewise.data.records import Record
from tunewise.data.split import make_split, nested_fraction, nested_order, seeded_split, subsample
from tunewise.errors import ConfigError, DataError, TunewiseError

TASK = TaskSpec()
GEN = TaskSpec(type="generation")
PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NEWLINE = re.compile(r"\r\n|\r|\n")


def write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", newline="")
    return path


def jsonl(path: Path, *rows) -> Path:
    """Rows as JSON lines; a str row is written as it is (for broken lines)."""
    lines = [row if isinstance(row, str) else json.dumps(row, ensure_ascii=False) for row in rows]
    return write(path, "\n".join(lines) + "\n")


def issue_at(issues, line: int):
    found = [i for i in issues if i.line == line]
    assert len(found) == 1, (line, [str(i) for i in issues])
    return found[0]


# -- every format reads ------------------------------------------------------------------------------
def test_chat_messages_keep_the_history_and_score_the_last_assistant_turn(tmp_path):
    chat = {"messages": [
        {"role": "system", "content": "You are a support agent."},
        {"role": "user", "content": "My card is lost."},
        {"role": "assistant", "content": "I can block it. Shall I?"},
        {"role": "user", "content": " Yes please. "},
        {"role": "assistant", "content": " Blocked. A new card is on its way. "},
    ]}
    single = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}
    ds = load_records(jsonl(tmp_path / "chat.jsonl", chat, single), GEN)
    first, second = ds.records
    assert first.messages == (("system", "You are a support agent."), ("user", "My card is lost."),
                              ("assistant", "I can block it. Shall I?"), ("user", "Yes please."))
    assert first.output == "Blocked. A new card is on its way."
    assert first.multi_turn and first.user_turns == 2 and first.line == 1
    assert first.text == "My card is lost.\nI can block it. Shall I?\nYes please."  # system turn left out
    assert second.messages == (("user", "Hi"),) and second.output == "Hello!" and not second.multi_turn
    assert second.id == "chat.jsonl:2" and ds.skipped == []


@pytest.mark.parametrize("inp, out", [("prompt", "completion"), ("input", "output"), ("text", "label")])
def test_jsonl_field_pairs(tmp_path, inp, out):
    path = jsonl(tmp_path / "d.jsonl", {inp: "  What is 2+2? ", out: " four "}, {inp: "Capital of France?", out: "Paris"})
    ds = load_records(path, GEN)
    assert [(r.messages, r.output, r.line) for r in ds.records] == [
        ((("user", "What is 2+2?"),), "four", 1), ((("user", "Capital of France?"),), "Paris", 2)]
    assert ds.source == str(path) and not ds.skipped and not any(r.multi_turn for r in ds.records)


def test_integer_labels_read_as_text_and_blank_lines_are_skipped(tmp_path):
    path = write(tmp_path / "d.jsonl", '{"text": "one", "label": 1}\n\n   \n{"text": "two", "label": 2}\n')
    ds = load_records(path, TASK)
    assert [(r.output, r.line) for r in ds.records] == [("1", 1), ("2", 4)]


def test_output_field_and_date_field_from_the_task(tmp_path):
    task = TaskSpec(output_field="intent", date_field="when")
    path = jsonl(tmp_path / "d.jsonl", {"text": "hello", "intent": "greet", "when": "2024-01-02"},
                 {"text": "bye", "intent": "leave"})
    a, b = load_records(path, task).records
    assert (a.output, a.date, b.output, b.date) == ("greet", "2024-01-02", "leave", None)


@pytest.mark.parametrize("suffix, sep", [(".csv", ","), (".tsv", "\t")])
def test_csv_and_tsv_with_mapped_columns(tmp_path, suffix, sep):
    rows = [["id", "review", "rating"], ["1", "Works, mostly", "positive"], ["2", 'Said "meh"', "neutral"]]
    buf = io.StringIO()
    csv.writer(buf, delimiter=sep, lineterminator="\n").writerows(rows)
    path = write(tmp_path / f"d{suffix}", buf.getvalue())
    ds = load_records(path, TaskSpec(input_field="review", output_field="rating"))
    assert [(r.text, r.output, r.line) for r in ds.records] == [
        ("Works, mostly", "positive", 2), ('Said "meh"', "neutral", 3)]


def test_csv_input_template_over_two_columns(tmp_path):
    path = write(tmp_path / "d.csv", "drug,review,label\nAspirin,Helped my headache,positive\n"
                                     "Ibuprofen,\"Did nothing, sadly\",negative\n")
    ds = load_records(path, TaskSpec(input_template="{drug}: {review}"))
    assert [(r.text, r.output) for r in ds.records] == [("Aspirin: Helped my headache", "positive"),
                                                        ("Ibuprofen: Did nothing, sadly", "negative")]


def test_csv_without_mapping_finds_the_pair_and_an_output_field_alone_is_enough(tmp_path):
    path = write(tmp_path / "d.csv", "prompt,completion\nhi,hello\n")
    assert load_records(path, GEN).records[0].output == "hello"
    path = write(tmp_path / "e.csv", "text,category\nwhere is my card,card_arrival\n")
    assert load_records(path, TaskSpec(output_field="category")).records[0].output == "card_arrival"


def test_quoted_multiline_cells_and_blank_lines_keep_line_numbers(tmp_path):
    content = ("text,label\n"                       # 1
               '"first line\nsecond line",a\n'      # 2-3
               "\n"                                 # 4 (blank)
               '"x\r\ny\r\nz",b\n'                  # 5-7
               ",a\n"                               # 8: empty text
               '"multi\nline",\n'                   # 9-10: empty label
               "ok,b,extra\n"                       # 11: too many cells
               "last,a\n")                          # 12
    path = write(tmp_path / "d.csv", content)
    ds = load_records(path, TASK, skip_invalid=True)
    assert [(r.line, r.output, r.text) for r in ds.records] == [
        (2, "a", "first line\nsecond line"), (5, "b", "x\r\ny\r\nz"), (12, "a", "last")]
    assert [(i.line, i.field) for i in ds.skipped] == [(8, "text"), (9, "label"), (11, None)]
    assert "3 cells, header has 2" in ds.skipped[2].reason


def test_banking77_reads_from_the_shared_folder():
    folder = banking77_or_skip()
    ds = load_records(folder / "train.csv", TaskSpec(output_field="category"))
    assert len(ds.records) == 10003 and not ds.skipped
    assert len({r.output for r in ds.records}) == 77
    assert ds.records[0].line == 2 and ds.records[0].output == "card_arrival"


# -- bad records -------------------------------------------------------------------------------------
BAD_JSONL = [
    '{"text": "fine", "label": "a"}',                                        # 1 valid
    '{"text": "broken", "label": ',                                          # 2 malformed JSON
    '["a", "list"]',                                                         # 3 not an object
    '{"text": "no label here"}',                                             # 4 missing field
    '{"text": "   ", "label": "a"}',                                         # 5 empty text
    '{"text": "declared?", "label": "c"}',                                   # 6 label outside the set
    '{"text": ["a", "list"], "label": "a"}',                                 # 7 wrong type: list
    '{"text": {"a": 1}, "label": "a"}',                                      # 8 wrong type: dict
    '{"text": true, "label": "a"}',                                          # 9 wrong type: bool
    '{"messages": [{"role": "assistant", "content": "hi"}, {"role": "user", "content": "bye"}]}',  # 10
    '{"text": "also fine", "label": "b"}',                                   # 11 valid
    '{"stuff": 1}',                                                          # 12 no recognised fields
    '{"messages": [{"role": ["user"], "content": "x"}, {"role": "assistant", "content": "y"}]}',  # 13
    '{"text": 1' + "1" * 5000 + ', "label": "a"}',                           # 14 integer too long
    "[" * 50_000 + "]" * 50_000,                                             # 15 nested too deep
]
EXPECTED = {  # line -> (field, words in the reason)
    2: (None, "malformed JSON"), 3: (None, "expected a JSON object, got list"), 4: ("label", "missing field"),
    5: ("text", "empty text"), 6: ("label", "not in the declared set"), 7: ("text", "wrong type"),
    8: ("text", "wrong type"), 9: ("text", "wrong type: expected text, got bool"),
    10: ("messages[1].role", "last message must be the assistant"), 12: (None, "no recognised fields"),
    13: ("messages[0].role", "expected one of"), 14: (None, "malformed JSON"), 15: (None, "malformed JSON"),
}
LABELLED = TaskSpec(labels=["a", "b"])


def test_each_bad_record_kind_is_an_issue_with_line_and_field(tmp_path):
    path = jsonl(tmp_path / "bad.jsonl", *BAD_JSONL)
    with pytest.raises(InvalidRecords) as err:
        load_records(path, LABELLED)
    issues = err.value.issues
    assert sorted(i.line for i in issues) == sorted(EXPECTED)  # all of them, not just the first
    for line, (field, words) in EXPECTED.items():
        issue = issue_at(issues, line)
        assert issue.source == str(path) and issue.field == field and words in issue.reason, str(issue)
        assert str(issue).startswith(f"{path}:{line}") and "\n" not in str(issue)
    message = str(err.value)
    assert message.startswith(f"{path}: {len(EXPECTED)} invalid record(s); first: line 2") and "\n" not in message
    assert isinstance(err.value, DataError) and isinstance(err.value, TunewiseError)


def test_skip_invalid_returns_the_valid_records_and_lists_the_skipped(tmp_path):
    path = jsonl(tmp_path / "bad.jsonl", *BAD_JSONL)
    ds = load_records(path, LABELLED, skip_invalid=True)
    assert [(r.line, r.text, r.output) for r in ds.records] == [(1, "fine", "a"), (11, "also fine", "b")]
    assert sorted(i.line for i in ds.skipped) == sorted(EXPECTED)


def test_label_outside_the_set_names_the_output_field_and_stays_on_one_line(tmp_path):
    path = jsonl(tmp_path / "d.jsonl", {"input": "q", "output": "multi\nline"})
    with pytest.raises(InvalidRecords) as err:
        load_records(path, LABELLED)
    (issue,) = err.value.issues
    assert issue.field == "output" and "'multi\\nline'" in issue.reason and "\n" not in str(err.value)


@pytest.mark.parametrize("line, field", [
    ('{"text": "a\\ud800b", "label": "x"}', "text"),
    ('{"text": "a", "label": "\\udfff"}', "label"),
    ('{"messages": [{"role": "user", "content": "\\ud83d"}, {"role": "assistant", "content": "b"}]}',
     "messages[0].content"),
])
def test_a_lone_surrogate_escape_is_an_invalid_record(tmp_path, line, field):
    """Valid JSON, but no file, hash or report can hold half a UTF-16 pair (it raised UnicodeEncodeError)."""
    path = jsonl(tmp_path / "s.jsonl", line, {"text": "fine", "label": "y"})
    with pytest.raises(InvalidRecords) as err:
        load_records(path, TASK)
    assert str(err.value.issues[0]).startswith(f"{path}:1 field '{field}': not valid Unicode: a lone surrogate")
    assert [r.line for r in load_records(path, TASK, skip_invalid=True).records] == [2]


def test_a_file_of_only_bad_records_is_an_error_even_when_skipping(tmp_path):
    path = jsonl(tmp_path / "d.jsonl", "{oops", '{"text": ""}')
    with pytest.raises(DataError, match=r"no valid records \(2 skipped\)"):
        load_records(path, TASK, skip_invalid=True)


def test_line_separators_inside_json_strings_do_not_split_records(tmp_path):
    # str.splitlines() would break these records apart; JSON allows the characters raw in strings
    texts = ["a\u2028b", "c\u2029d", "e\x85f", "g\x0bh", "i\x1cj"]
    path = jsonl(tmp_path / "d.jsonl", *({"text": t, "label": "x"} for t in texts))
    ds = load_records(path, TASK)
    assert [(r.line, r.text) for r in ds.records] == list(enumerate(texts, start=1))


def test_crlf_lines_and_byte_order_mark(tmp_path):
    path = write(tmp_path / "d.jsonl", b'\xef\xbb\xbf{"text": "a", "label": "x"}\r\n{"text": "b", "label": "y"}\r\n')
    assert [(r.line, r.output) for r in load_records(path, TASK).records] == [(1, "x"), (2, "y")]


# -- file-level errors -------------------------------------------------------------------------------
def _one_line_data_error(path: Path, task: TaskSpec = TASK) -> DataError:
    with pytest.raises(DataError) as err:
        load_records(path, task)
    message = str(err.value)
    assert message.startswith(str(path)) and "\n" not in message, message
    return err.value


def test_empty_file(tmp_path):
    assert "empty" in _one_line_data_error(write(tmp_path / "e.jsonl", " \n\n \t\n")).reason


def test_directory(tmp_path):
    (tmp_path / "d.jsonl").mkdir()
    assert "directory" in _one_line_data_error(tmp_path / "d.jsonl").reason


def test_missing_file(tmp_path):
    assert "no such file" in _one_line_data_error(tmp_path / "nope.jsonl").reason


@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"])
def test_bad_utf8_names_the_line(tmp_path, bom):
    content = bom + b'{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n{"text": "caf\xe9", "label": "x"}\n'
    err = _one_line_data_error(write(tmp_path / "d.jsonl", content))
    assert err.line == 3 and "UTF-8" in err.reason and str(err).startswith(f"{tmp_path / 'd.jsonl'}:3:")
    assert f"byte {content.index(b'caf') + 3}" in err.reason


def test_csv_without_the_mapped_column_names_it(tmp_path):
    path = write(tmp_path / "d.csv", "text,rating\nhello,5\n")
    err = _one_line_data_error(path, TaskSpec(input_field="text", output_field="label"))
    assert "no column 'label'" in err.reason and "'rating'" in err.reason and err.line == 1
    err = _one_line_data_error(path, TaskSpec(input_template="{title}: {text}", output_field="rating"))
    assert "no column 'title'" in err.reason


def test_csv_cell_over_the_field_limit_is_a_data_error(tmp_path):
    path = write(tmp_path / "d.csv", "text,label\nok,a\n" + "x" * 200_000 + ",b\n")
    assert _one_line_data_error(path).line == 3


@pytest.mark.parametrize("template", ["{", "{}", "{0}", "{a.b}", "{a[0]}", "no fields", "{a:{b}}"])
def test_bad_input_template_is_a_config_error_naming_the_key(template):
    with pytest.raises(ConfigError, match="key 'input_template'"):
        load_task(None, {"input_template": template})


# -- properties --------------------------------------------------------------------------------------
NO_NEWLINE = st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n")
KEYS = st.sampled_from(["text", "label", "prompt", "completion", "input", "output", "messages", "role",
                        "content"]) | st.text(max_size=6)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=8)
MESSAGES = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant", "bot"]) | JSON_VALUES,
                                           "content": st.text(max_size=10) | JSON_VALUES}), max_size=4)
DICTS = st.dictionaries(KEYS, JSON_VALUES | MESSAGES, max_size=4)


def _dump(value, ascii_only: bool) -> str:
    return json.dumps(value, ensure_ascii=ascii_only)


LINE_BYTES = st.one_of(
    st.text(alphabet=NO_NEWLINE, max_size=30).map(lambda s: s.encode("utf-8")),
    st.binary(max_size=20),
    st.tuples(JSON_VALUES, st.booleans()).map(lambda v: _dump(*v).encode("utf-8")),
    st.tuples(DICTS, st.booleans()).map(lambda v: _dump(*v).encode("utf-8")),
)


def _tmpfile(name: str, content: str | bytes):
    folder = tempfile.TemporaryDirectory()
    return folder, write(Path(folder.name) / name, content)


def _check_error(exc: TunewiseError, path: Path, n_lines: int) -> None:
    assert isinstance(exc, TunewiseError)
    message = str(exc)
    assert "\n" not in message, message
    if isinstance(exc, DataError):
        assert message.startswith(str(path)), message
    if isinstance(exc, InvalidRecords):
        assert exc.issues and all(1 <= i.line <= n_lines for i in exc.issues)
        first = exc.issues[0]
        assert f"line {first.line}" + (f" field '{first.field}'" if first.field else "") + ":" in message
        assert all(str(i).startswith(f"{path}:{i.line}") for i in exc.issues)
    elif isinstance(exc, DataError) and exc.line is not None:
        assert message.startswith(f"{path}:{exc.line}"), message


@PROPERTY
@given(lines=st.lists(LINE_BYTES, max_size=8), skip=st.booleans(),
       task=st.sampled_from([TASK, GEN, LABELLED, TaskSpec(input_field="input", output_field="output")]))
def test_property_random_jsonl_lines_raise_only_tunewise_errors(lines, skip, task):
    data = b"\n".join(lines)
    n_lines = len(re.split(rb"\r\n|\r|\n", data))  # random bytes may hold line breaks of their own
    folder, path = _tmpfile("random.jsonl", data)
    with folder:
        try:
            ds = load_records(path, task, skip_invalid=skip)
        except TunewiseError as exc:
            _check_error(exc, path, n_lines=n_lines)
        else:
            assert ds.records
            assert all(r.output == r.output.strip() and r.output for r in ds.records)
            assert len(ds.records) + len(ds.skipped) <= n_lines


STRIPPED = st.text(min_size=1, max_size=20).filter(lambda s: s.strip())
VALID = st.fixed_dictionaries({"text": STRIPPED, "label": STRIPPED | st.integers()})
WHITESPACE = st.text(alphabet=" \t\u3000\x0c", max_size=3)
INVALID_LINE = st.one_of(
    st.text(alphabet=NO_NEWLINE, max_size=15).map(lambda s: "{bad" + s),                        # malformed
    (st.lists(JSON_VALUES, max_size=3) | st.integers() | st.text(max_size=5) | st.none()).map(json.dumps),
    st.fixed_dictionaries({"text": STRIPPED}).map(json.dumps),                                 # no label
    st.fixed_dictionaries({"text": WHITESPACE, "label": STRIPPED}).map(json.dumps),            # empty text
    st.fixed_dictionaries({"text": st.lists(st.integers(), max_size=2) | st.booleans()
                           | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)
                           | st.floats() | st.none(),
                           "label": STRIPPED}).map(json.dumps),                                # wrong type
    st.dictionaries(st.sampled_from(["label", "completion", "output", "role"]), STRIPPED).map(json.dumps),
)
BLANK = st.sampled_from(["", " ", "\t", "  \t "])


@PROPERTY
@given(items=st.lists(st.one_of(st.tuples(st.just("valid"), VALID, st.booleans()),
                                st.tuples(st.just("invalid"), INVALID_LINE, st.just(False)),
                                st.tuples(st.just("blank"), BLANK, st.just(False))), max_size=25)
       .filter(lambda xs: any(kind == "valid" for kind, _, _ in xs)))
def test_property_skip_invalid_jsonl_loses_no_valid_record(items):
    lines, expected = [], []
    for kind, value, ascii_only in items:
        if kind == "valid":
            lines.append(_dump(value, ascii_only))
            expected.append((len(lines), value["text"].strip(), str(value["label"]).strip()))
        else:
            lines.append(value)
    folder, path = _tmpfile("mixed.jsonl", "\n".join(lines) + "\n")
    with folder:
        ds = load_records(path, TASK, skip_invalid=True)
    assert [(r.line, r.text, r.output) for r in ds.records] == expected
    assert len(ds.records) + len(ds.skipped) == sum(1 for line in lines if line.strip())
    valid_lines = {line for line, _, _ in expected}
    assert all(i.line not in valid_lines for i in ds.skipped)


CELL = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
CSV_VALID = st.tuples(CELL.filter(lambda s: s.strip()), CELL.filter(lambda s: s.strip()))
CSV_INVALID = st.one_of(
    st.tuples(WHITESPACE, CELL.filter(lambda s: s.strip())),   # empty text
    st.tuples(CELL.filter(lambda s: s.strip()), WHITESPACE),   # empty label
    st.tuples(CELL, CELL, CELL),                               # too many cells
    st.tuples(CELL.filter(lambda s: s.strip())),               # too few: label missing
)


@PROPERTY
@given(rows=st.lists(st.one_of(st.tuples(st.just("valid"), CSV_VALID), st.tuples(st.just("invalid"), CSV_INVALID),
                               st.tuples(st.just("blank"), st.just(()))), max_size=20)
       .filter(lambda xs: any(kind == "valid" for kind, _ in xs)),
       terminator=st.sampled_from(["\r\n", "\n"]), sep=st.sampled_from([",", "\t", ";"]))
def test_property_csv_rows_with_quotes_commas_and_newlines_lose_nothing(rows, terminator, sep):
    header = "text" + sep + "label" + terminator
    parts, expected, line, counted = [header], [], 2, 0
    for kind, cells in rows:
        buf = io.StringIO()
        # Python 3.11's writer leaves a bare \r unquoted when the terminator is \n: such a file has a
        # line break in the cell for every reader, so quote those rows in full.
        quoting = csv.QUOTE_ALL if any("\r" in c for c in cells) else csv.QUOTE_MINIMAL
        csv.writer(buf, delimiter=sep, lineterminator=terminator, quoting=quoting).writerow(cells)
        written = buf.getvalue() if cells else terminator   # an empty row is a blank line
        parts.append(written)
        if kind == "valid":
            expected.append((line, cells[0].strip(), cells[1].strip()))
        if kind != "blank":
            counted += 1
        line += len(NEWLINE.split(written)) - 1
    name = "rows.tsv" if sep == "\t" else "rows.csv"
    task = TaskSpec(delimiter=sep) if sep == ";" else TASK
    folder, path = _tmpfile(name, "".join(parts))
    with folder:
        ds = load_records(path, task, skip_invalid=True)
    assert [(r.line, r.text, r.output) for r in ds.records] == expected
    assert len(ds.records) + len(ds.skipped) == counted


@PROPERTY
@given(content=st.one_of(st.text(max_size=200), st.binary(max_size=200),
                         st.lists(st.lists(CELL, max_size=4), max_size=6).map(
                             lambda rows: "".join(_csv_line(r) for r in rows))),
       header=st.sampled_from(["", "text,label\n", "a,b\n", "text\tlabel\n"]), skip=st.booleans(),
       task=st.sampled_from([TASK, TaskSpec(input_field="a", output_field="b"), TaskSpec(input_template="{a} {b}"),
                             TaskSpec(output_field="b")]))
def test_property_random_csv_raises_only_tunewise_errors(content, header, skip, task):
    data = header.encode() + (content if isinstance(content, bytes) else content.encode("utf-8"))
    folder, path = _tmpfile("random.csv", data)
    with folder:
        try:
            ds = load_records(path, task, skip_invalid=skip)
        except TunewiseError as exc:
            _check_error(exc, path, n_lines=max(1, len(NEWLINE.split(data.decode("utf-8", "replace")))))
        else:
            assert ds.records and all(r.output and r.text for r in ds.records)


def _csv_line(cells: list[str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(cells)
    return buf.getvalue()


# -- splits ------------------------------------------------------------------------------------------
def records(counts: dict[str, int]) -> list[Record]:
    out = []
    for label, n in counts.items():
        out += [Record(id=f"{label}{i}", messages=(("user", f"{label} text {i}"),), output=label) for i in range(n)]
    # interleave so the input order is not grouped by class
    return sorted(out, key=lambda r: (int(r.id.lstrip("abcdefghijklmnopqrstuvwxyz")), r.id))


COUNTS = {"billing": 53, "cancel": 31, "delivery": 11, "refund": 5}


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_seeded_split_is_deterministic_and_stratified(seed):
    data = records(COUNTS)
    a = make_split(data, None, seed=seed, test_fraction=0.2)
    b = make_split(list(data), None, seed=seed, test_fraction=0.2)
    assert [r.id for r in a.train] == [r.id for r in b.train] and [r.id for r in a.test] == [r.id for r in b.test]
    assert {r.id for r in a.train} | {r.id for r in a.test} == {r.id for r in data}
    assert not {r.id for r in a.train} & {r.id for r in a.test}
    assert len(a.test) == 20 and a.source.startswith("seeded split") and a.seed == seed
    held = Counter(r.output for r in a.test)
    for label, n in COUNTS.items():
        assert abs(held[label] - 0.2 * n) <= 1, (label, held[label], n)
    other = make_split(data, None, seed=seed + 100, test_fraction=0.2)
    assert {r.id for r in other.test} != {r.id for r in a.test}


def test_a_given_test_file_is_used_as_it_is():
    train, test = records({"a": 5, "b": 5}), records({"a": 2, "b": 2})
    split = make_split(train, test, seed=3)
    assert split.train == train and split.test == test and split.source == "test file"


@pytest.mark.parametrize("n, limit", [(25, 7), (25, 14), (29, 15), (41, 23), (1000, 300), (10, 9)])
def test_subsample_returns_exactly_the_limit(n, limit):
    data = records({"a": n // 2, "b": n - n // 2})
    for stratified in (True, False):
        kept = subsample(data, limit, seed=0, stratified=stratified)
        assert len(kept) == limit and len({r.id for r in kept}) == limit


def test_seeded_split_of_tiny_inputs():
    one = records({"a": 1})
    assert seeded_split(one, fraction=0.2, seed=0, stratified=True) == (one, [])
    rest, held = seeded_split(records({"a": 1, "b": 1}), fraction=0.2, seed=0, stratified=True)
    assert len(rest) == 1 and len(held) == 1


def test_nested_fraction_gives_nested_subsets_that_keep_every_class():
    data = records(COUNTS)
    fractions = [0.125, 0.25, 0.5, 0.75, 1.0]
    subsets = [nested_fraction(data, f, seed=4, stratified=True) for f in fractions]
    for small, large in zip(subsets, subsets[1:]):
        assert {r.id for r in small} <= {r.id for r in large}
    for f, subset in zip(fractions, subsets):
        per_class = Counter(r.output for r in subset)
        assert set(per_class) == set(COUNTS)
        for label, n in COUNTS.items():
            assert per_class[label] == max(1, math.ceil(f * n)), (f, label)
        order = [data.index(r) for r in subset]
        assert order == sorted(order)  # input order kept
    assert subsets[-1] == data
    assert nested_fraction(data, 0.25, seed=4, stratified=True) == subsets[1]


def test_nested_order_puts_each_nested_subset_first():
    data = records(COUNTS)
    order, sizes = nested_order(data, [0.5, 0.125, 0.25], seed=4, stratified=True)
    assert sorted(r.id for r in order) == sorted(r.id for r in data) and sizes[-1] == len(data)
    for f, n in zip([0.125, 0.25, 0.5], sizes):
        assert {r.id for r in order[:n]} == {r.id for r in nested_fraction(data, f, seed=4, stratified=True)}


def test_carve_validation_never_touches_test():
    split = make_split(records(COUNTS), None, seed=0)
    test_before = list(split.test)
    rest, val = carve_validation(split.train, seed=0, classification=True)
    assert split.test == test_before
    assert val and not {r.id for r in val} & {r.id for r in split.test}
    assert not {r.id for r in rest} & {r.id for r in split.test}
    assert sorted(r.id for r in rest + val) == sorted(r.id for r in split.train)
    assert len(val) == 8  # max(minimum 8, 10% of 80)
    small = records({"a": 7, "b": 7})
    assert carve_validation(small, seed=0, classification=True) == (small, [])


# -- the demo ----------------------------------------------------------------------------------------
def test_demo_sentiment():
    task, train, test = load_demo()
    assert len(train.records) == 600 and len(test.records) == 379
    assert task.labels == ["negative", "neutral", "positive"] and task.type == "classification"
    assert Counter(r.output for r in train.records) == {"negative": 161, "neutral": 54, "positive": 385}
    assert {r.output for r in test.records} <= set(task.labels)
    assert all(r.text and r.text == r.text.strip() for r in train.records + test.records)
    assert all(r.date is None or re.fullmatch(r"\d{4}-\d\d-\d\d", r.date) for r in train.records)


def test_demo_condition_keeps_six_labels():
    task, train, test = load_demo("condition")
    assert len(task.labels) == 6 and "Bipolar Disorder" in task.labels
    assert {r.output for r in train.records} == set(task.labels)
    assert {r.output for r in test.records} <= set(task.labels)
    assert len(train.records) + train.filtered["condition outside the top conditions"] == 600
    assert len(test.records) + test.filtered["condition outside the top conditions"] == 379


def test_unknown_demo_is_a_config_error():
    with pytest.raises(ConfigError, match="--demo 'nope'"):
        load_demo("nope")
