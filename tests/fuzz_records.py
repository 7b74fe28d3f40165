"""Fuzzing the readers and the task-file loader with hypothesis: bad and odd records mixed with valid
ones, in JSONL (every field pair), chat JSONL, CSV/TSV and YAML task files.

Each `check_*` function reads one generated file and returns a Tally: how many records it held (valid
and bad or odd), exceptions other than TunewiseError (by type), and valid records lost or altered
(a valid record must come back with its line, its input and its output, stripped of surrounding
whitespace and nothing else). tests/test_fuzz.py runs a few hundred files and asserts both counts are
zero; `benchmarks/reliability.py fuzz` runs enough for at least 10,000 records and reports the figures.
"""

from __future__ import annotations

import csv
import io
import json
import re
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import strategies as st

from tunewise.config import TaskSpec, load_task
from tunewise.data.read import load_records
from tunewise.data.records import records_hash
from tunewise.errors import DataError, TunewiseError


NEWLINE = re.compile(r"\r\n|\r|\n")  # line breaks as the CSV reader counts them


@dataclass
class Tally:
    files: int = 0
    records: int = 0  # records (lines, rows, task files) generated
    valid: int = 0
    bad: int = 0  # bad or odd records that must be refused
    foreign: Counter = field(default_factory=Counter)  # exceptions other than TunewiseError, by type
    lost: list[str] = field(default_factory=list)  # valid records lost or altered, described
    examples: list[str] = field(default_factory=list)  # the first few failures, for the report

    def add(self, other: "Tally") -> None:
        self.files += other.files
        self.records += other.records
        self.valid += other.valid
        self.bad += other.bad
        self.foreign.update(other.foreign)
        self.lost += other.lost
        self.examples += other.examples[: max(0, 10 - len(self.examples))]


# -- text --------------------------------------------------------------------------------------------
HOSTILE = ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "\"><svg onload=alert(1)>",
           "[x](javascript:alert(1))", "``` code", "| a | b |", "{text}", "%s%d", "\\u0000", "null", "NaN",
           "\u202eevil\u202c", "e\u0301", "\U0001f600", "\ufeffbom", "a\u2028b", "a\u0085b", "\x00", "\x1b[31m"]
ANY_CHAR = st.characters(blacklist_categories=("Cs",))  # every code point a UTF-8 file can hold
ODD_TEXT = st.one_of(st.text(ANY_CHAR, max_size=30), st.sampled_from(HOSTILE),
                     st.tuples(st.sampled_from(HOSTILE), st.text(ANY_CHAR, max_size=10)).map("".join),
                     st.text(ANY_CHAR, min_size=300, max_size=2000))
PAD = st.text(alphabet=" \t\u3000\u00a0\x0c", max_size=3)
# Valid text: non-blank after str.strip(); padding around it is stripped by the reader (documented).
VALID_TEXT = st.tuples(PAD, ODD_TEXT.filter(lambda s: s.strip()), PAD).map("".join)
LABELS = ["billing", "bug", "<b>other</b>"]


# -- JSONL: text/label, prompt/completion, input/output ----------------------------------------------
PAIRS = [("text", "label"), ("prompt", "completion"), ("input", "output")]
RECOGNISED = {"messages", *[k for pair in PAIRS for k in pair]}
EXTRA = st.dictionaries(st.text(max_size=6).filter(lambda k: k not in RECOGNISED),
                        st.none() | st.integers() | st.text(max_size=5), max_size=2)
JSON_VALUE = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(ANY_CHAR, max_size=8),
                          lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                                      max_size=3), max_leaves=6)


@st.composite
def valid_pair_record(draw, labelled: bool):
    inp, out = draw(st.sampled_from(PAIRS))
    label = draw(st.sampled_from(LABELS)) if labelled else draw(VALID_TEXT | st.integers(-10**6, 10**6))
    row = draw(EXTRA) | {inp: draw(VALID_TEXT), out: label}
    expected = ((("user", row[inp].strip()),), str(label).strip())
    return json.dumps(row, ensure_ascii=draw(st.booleans())), expected


BAD_JSONL = st.one_of(
    st.text(ANY_CHAR, max_size=20).map(lambda s: "{bad" + s.replace("\n", " ").replace("\r", " ")),  # malformed
    st.sampled_from(['{"text": "a", "label": "b"', "[1, 2]", '"text"', "42", "null", "true", "NaN",
                     '{"text": NaN, "label": "x"}', '{"text": "a", "label": 1e999}', '{"text": "\\ud800", "label": "x"}',
                     '{"text": "ok", "label": "\\udfff"}', "[" * 5000 + "]" * 5000, '{"text": "a", "label": ' + "9" * 5000 + "}",
                     '{"text": "a"}', '{"label": "a"}', '{"text": "  ", "label": "a"}', '{"text": "a", "label": ""}',
                     '{"text": ["a"], "label": "b"}', '{"text": true, "label": "b"}', '{"text": {"a": 1}, "label": "b"}',
                     '{"prompt": "a", "output": "b"}', '{"other": 1}', "{}"]),
    st.dictionaries(st.sampled_from(sorted(RECOGNISED - {"messages"})), JSON_VALUE, max_size=3).filter(
        lambda d: not any(i in d and o in d and _ok(d[i]) and _ok(d[o]) for i, o in PAIRS)).map(json.dumps),
)


def _ok(value) -> bool:
    """Would the reader accept this value as text?"""
    return isinstance(value, (str, int)) and not isinstance(value, bool) and bool(str(value).strip())


# -- chat --------------------------------------------------------------------------------------------
@st.composite
def valid_chat_record(draw):
    turns = []
    if draw(st.booleans()):
        turns.append(("system", draw(VALID_TEXT)))
    for _ in range(draw(st.integers(1, 3))):
        turns.append(("user", draw(VALID_TEXT)))
        turns.append(("assistant", draw(VALID_TEXT)))
    row = draw(EXTRA) | {"messages": [{"role": r, "content": c} for r, c in turns]}
    expected = (tuple((r, c.strip()) for r, c in turns[:-1]), turns[-1][1].strip())
    return json.dumps(row, ensure_ascii=draw(st.booleans())), expected


BAD_CHAT = st.one_of(
    st.sampled_from([
        '{"messages": []}', '{"messages": "hi"}', '{"messages": null}', '{"messages": [1, 2]}',
        '{"messages": [{"role": "user", "content": "a"}]}',
        '{"messages": [{"role": "assistant", "content": "a"}]}',
        '{"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}]}',
        '{"messages": [{"role": "bot", "content": "a"}, {"role": "assistant", "content": "b"}]}',
        '{"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "b"}]}',
        '{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "  "}]}',
        '{"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "b"}]}',
        '{"messages": [{"role": "user", "content": "\\ud83d"}, {"role": "assistant", "content": "b"}]}',
        '{"messages": [{"role": ["user"], "content": "a"}, {"role": "assistant", "content": "b"}]}',
        '{"messages": [{"content": "a"}, {"role": "assistant", "content": "b"}]}']),
    st.lists(st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant", "tool", ""]) | JSON_VALUE,
                                    "content": st.text(ANY_CHAR, max_size=6) | JSON_VALUE}), max_size=4)
    .filter(lambda ms: not _valid_chat(ms)).map(lambda ms: json.dumps({"messages": ms})),
)


def _valid_chat(messages) -> bool:
    try:
        turns = [(m["role"], m["content"]) for m in messages]
    except (TypeError, KeyError):
        return False
    return (bool(turns) and all(isinstance(r, str) and r in {"system", "user", "assistant"} and isinstance(c, str)
                                and c.strip() for r, c in turns)
            and turns[-1][0] == "assistant" and any(r == "user" for r, _ in turns[:-1]))


# -- one JSONL file ----------------------------------------------------------------------------------
def jsonl_file(valid, bad):
    """(lines, expected valid records by line, bad line numbers) for a mix of valid, bad and blank lines."""
    item = st.one_of(valid.map(lambda v: ("valid", v)), bad.map(lambda b: ("bad", b)),
                     st.sampled_from(["", "   ", "\t"]).map(lambda b: ("blank", b)))
    return st.lists(item, min_size=1, max_size=30)


def _layout(items, terminator: str):
    lines, expected, bad = [], {}, set()
    for kind, value in items:
        if kind == "valid":
            lines.append(value[0])
            expected[len(lines)] = value[1]
        else:
            lines.append(value)
            if kind == "bad":
                bad.add(len(lines))
    return terminator.join(lines) + terminator, expected, bad


def check_jsonl(items, terminator: str, task: TaskSpec, skip: bool, name: str = "data.jsonl") -> Tally:
    text, expected, bad = _layout(items, terminator)
    return _check_file(name, text.encode("utf-8"), task, skip, expected, bad)


def _check_file(name: str, data: bytes, task: TaskSpec, skip: bool, expected: dict, bad: set) -> Tally:
    tally = Tally(files=1, records=len(expected) + len(bad), valid=len(expected), bad=len(bad))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(data)
        try:
            ds = load_records(path, task, skip_invalid=skip)
            records_hash(ds.records)  # every record can be hashed, written and reported
            json.dumps([[r.messages, r.output, r.date] for r in ds.records], ensure_ascii=False).encode("utf-8")
        except TunewiseError as exc:
            _expected_error(tally, exc, expected, bad, skip, data)
            return tally
        except Exception as exc:  # noqa: BLE001 - counting is the point
            tally.foreign[type(exc).__name__] += 1
            tally.examples.append(f"{type(exc).__name__}: {exc} on {data[:200]!r}")
            return tally
    got = {r.line: (r.messages, r.output) for r in ds.records}
    for line, want in expected.items():
        if got.get(line) != want:
            tally.lost.append(f"line {line}: expected {want!r}, got {got.get(line)!r}")
    for line in set(got) - set(expected):
        tally.lost.append(f"line {line}: a bad record was accepted as {got[line]!r}")
    if {i.line for i in ds.skipped} != bad:
        tally.lost.append(f"skipped lines {sorted(i.line for i in ds.skipped)} != bad lines {sorted(bad)}")
    if not skip and bad:
        tally.lost.append("bad records were not refused without --skip-invalid")
    if tally.lost:
        tally.examples.append(f"{tally.lost[0]} in {data[:300]!r}")
    return tally


def _expected_error(tally: Tally, exc: TunewiseError, expected: dict, bad: set, skip: bool, data: bytes) -> None:
    """A TunewiseError is right when records were bad (without skip) or no valid record exists."""
    message = str(exc)
    if "\n" in message or "\r" in message:
        tally.lost.append(f"a multi-line error: {message[:200]!r}")
    issues = getattr(exc, "issues", None)
    if issues is not None:  # InvalidRecords: must list exactly the bad lines
        if skip or {i.line for i in issues} != bad:
            tally.lost.append(f"refused lines {sorted(i.line for i in issues)} != bad lines {sorted(bad)}")
    elif isinstance(exc, DataError) and "no valid records" in message:
        if expected:
            tally.lost.append(f"'no valid records' with {len(expected)} valid")
    elif expected:
        tally.lost.append(f"{len(expected)} valid records refused: {message[:200]}")
    if tally.lost:
        tally.examples.append(f"{tally.lost[-1]} in {data[:300]!r}")


# -- CSV / TSV ---------------------------------------------------------------------------------------
CELL = st.text(ANY_CHAR, max_size=15) | st.sampled_from(HOSTILE + ['"', '""', ",", "\t", ";", "\r\n", "\n", "\r"])
VALID_CELL = st.tuples(PAD, CELL.filter(lambda s: s.strip()), PAD).map("".join)


@st.composite
def csv_file(draw):
    """(bytes, task, expected, bad) for a CSV/TSV with extra columns, any column order and odd cells."""
    sep = draw(st.sampled_from([",", "\t", ";", "|"]))
    terminator = draw(st.sampled_from(["\n", "\r\n"]))
    template = draw(st.booleans())
    columns = ["subject", "body", "label"] if template else ["text", "label"]
    columns += draw(st.lists(st.sampled_from(["id", "date", "notes"]), unique=True, max_size=2))
    columns = draw(st.permutations(columns))
    task = TaskSpec(input_template="{subject}: {body}", output_field="label", delimiter=sep) if template \
        else TaskSpec(delimiter=sep)
    rows, expected, bad, line = [list(columns)], {}, set(), 2
    buf = io.StringIO()
    for _ in range(draw(st.integers(1, 25))):
        kind = draw(st.sampled_from(["valid", "valid", "bad", "blank"]))
        cells = {c: draw(CELL) for c in columns}
        if kind == "valid":
            for c in ("subject", "body", "text", "label"):
                if c in cells:
                    cells[c] = draw(VALID_CELL)
            row = [cells[c] for c in columns]
            text = f"{cells['subject'].strip()}: {cells['body'].strip()}" if template else cells["text"].strip()
            expected[line] = ((("user", text),), cells["label"].strip())
        elif kind == "bad":
            how = draw(st.sampled_from(["empty", "extra", "short"]))
            row = [cells[c] for c in columns]
            if how == "empty":
                row[columns.index(draw(st.sampled_from(["subject", "body", "label"] if template else ["text", "label"])))] \
                    = draw(PAD)
            elif how == "extra":
                row += draw(st.lists(CELL, min_size=1, max_size=2))
            else:  # cut before the last needed column; a row of one empty cell is written as "" (not blank)
                needed = [columns.index(c) for c in ("subject", "body", "text", "label") if c in columns]
                row = row[: draw(st.integers(0, max(needed)))] or [""]
            bad.add(line)
        else:
            row = None
        written = _csv_row(row, sep, terminator) if row is not None else terminator
        buf.write(written)
        line += len(NEWLINE.split(written)) - 1  # quoted cells may hold line breaks of any kind
    header = _csv_row(rows[0], sep, terminator)
    return (header + buf.getvalue()).encode("utf-8"), task, expected, bad, sep


def _csv_row(cells: list[str], sep: str, terminator: str) -> str:
    out = io.StringIO()
    quoting = csv.QUOTE_ALL if any("\r" in c or "\n" in c for c in cells) else csv.QUOTE_MINIMAL
    csv.writer(out, delimiter=sep, lineterminator=terminator, quoting=quoting).writerow(cells)
    return out.getvalue()


def check_csv(generated, skip: bool) -> Tally:
    data, task, expected, bad, sep = generated
    name = "data.tsv" if sep == "\t" else "data.csv"
    return _check_file(name, data, task, skip, expected, bad)


# -- task files --------------------------------------------------------------------------------------
KEYS = ["name", "type", "input_field", "input_template", "output_field", "date_field", "labels", "metric",
        "instruction", "system_prompt", "target", "test_file", "delimiter", "constraints"]
YAML_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
                        st.text(ANY_CHAR, max_size=12), st.sampled_from(HOSTILE), st.sampled_from(
                            ["classification", "generation", "accuracy", "rouge_l", "macro_f1", "{a} {b}", "2001-02-30",
                             "0x1G", ".inf", "yes", "~", "!!binary x", "{", "[a, a]"]))
YAML_VALUE = st.recursive(YAML_SCALAR, lambda inner: st.lists(inner, max_size=3) |
                          st.dictionaries(st.sampled_from(KEYS + ["latency_ms_limit", "prices", "x"]) | st.text(max_size=5),
                                          inner, max_size=3), max_leaves=8)
TASK_TEXT = st.one_of(
    st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), YAML_VALUE, max_size=5).map(
        lambda d: json.dumps(d, ensure_ascii=False, default=str) if len(d) % 2 else _yaml(d)),
    st.text(ANY_CHAR, max_size=80),
    st.lists(st.sampled_from(["name: a", "type: generation", "metric: accuracy", "labels: [a, b]", "labels: [a]",
                              "target: 2", "target: 0.5", "  bad indent: x", "- list", "key: [unclosed",
                              "name: 2001-02-30", "x: !!python/object:os.system ls", "&a [*a]", "? [a]\n: b",
                              "labels: &l [*l]", "name: !!binary '%%%'", "constraints: {latency_ms_limit: -1}",
                              "constraints:\n  prices: {cpu_hour: x}", "input_template: '{}'", "\t", "%YAML 9.9"]),
             max_size=5).map("\n".join),
)


def _yaml(value) -> str:
    import yaml

    return yaml.safe_dump(value, allow_unicode=True)


def valid_task(chars):
    text = st.text(chars, min_size=1, max_size=20).filter(lambda s: s.strip())
    return st.fixed_dictionaries({
        "name": text, "type": st.just("classification"),
        "labels": st.lists(st.text(chars, min_size=1, max_size=10), min_size=2, max_size=5, unique=True),
        "metric": st.sampled_from(["accuracy", "macro_f1"]), "target": st.floats(0, 1),
        "instruction": st.text(chars, max_size=40),
    })


VALID_TASK_JSON = valid_task(ANY_CHAR)
# YAML 1.1 reads NEL, LINE SEPARATOR and PARAGRAPH SEPARATOR as line breaks (folded to spaces in a
# scalar), so a YAML file cannot hold them as text: the YAML variant leaves them out.
VALID_TASK_YAML = valid_task(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x85\u2028\u2029"))
VALID_TASK = st.one_of(VALID_TASK_JSON.map(lambda spec: (spec, True)), VALID_TASK_YAML.map(lambda spec: (spec, False)))


def check_task_text(text: str) -> Tally:
    """A task file of random text: loads, or fails with a one-line ConfigError carrying a fix."""
    tally = Tally(files=1, records=1, bad=1)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "task.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            load_task(path)
        except TunewiseError as exc:
            if "\n" in str(exc) or not exc.fix:
                tally.lost.append(f"error without one line and a fix: {str(exc)[:200]!r}")
                tally.examples.append(f"{tally.lost[-1]} for {text[:200]!r}")
        except Exception as exc:  # noqa: BLE001
            tally.foreign[type(exc).__name__] += 1
            tally.examples.append(f"{type(exc).__name__}: {exc} for {text[:200]!r}")
    return tally


def check_valid_task(spec: dict, as_json: bool) -> Tally:
    """A valid task file loads with every value as written."""
    tally = Tally(files=1, records=1, valid=1)
    text = json.dumps(spec, ensure_ascii=False) if as_json else _yaml(spec)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "task.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            task = load_task(path)
        except Exception as exc:  # noqa: BLE001
            (tally.foreign if not isinstance(exc, TunewiseError) else Counter())[type(exc).__name__] += 1
            tally.lost.append(f"valid task refused: {exc}")
            tally.examples.append(f"{exc} for {text[:200]!r}")
            return tally
    got = {k: getattr(task, k) for k in spec}
    if got != spec:
        tally.lost.append(f"task altered: {spec!r} -> {got!r}")
        tally.examples.append(tally.lost[-1])
    return tally
