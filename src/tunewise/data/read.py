"""Read JSONL (chat, prompt/completion, input/output, text/label) and CSV/TSV into Records.

Every bad record becomes an Issue naming file:line, field and reason. By default any issue stops
the read (InvalidRecords lists them all); with skip_invalid the read goes on and the Dataset
carries the skipped ones, so nothing is dropped silently.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from pathlib import Path

from tunewise.config import TaskSpec
from tunewise.data.records import Dataset, Issue, Record
from tunewise.errors import DataError

# Field pairs recognised in JSONL when the task file does not name them, in order of preference.
JSONL_FORMATS = [("prompt", "completion"), ("input", "output"), ("text", "label")]
ROLES = {"system", "user", "assistant"}
# Line breaks, as editors count them. Not str.splitlines(): it also breaks at U+2028, U+0085 and
# other characters that JSON allows raw inside a string.
_NEWLINE = re.compile(r"\r\n|\r|\n")
_NEWLINE_BYTES = re.compile(rb"\r\n|\r|\n")


class InvalidRecords(DataError):
    """The file has bad records and the user did not ask to skip them."""

    def __init__(self, path: str, issues: list[Issue]):
        self.issues = issues
        first = issues[0]
        field = f" field '{first.field}'" if first.field else ""
        super().__init__(path, f"{len(issues)} invalid record(s); first: line {first.line}{field}: {first.reason}",
                         fix="correct them, or pass --skip-invalid to skip and list them")


class _Bad(Exception):
    def __init__(self, field: str | None, reason: str):
        self.field, self.reason = field, reason


def read_text(path: str | Path) -> str:
    """The file's text, with one-line errors for the usual ways a path goes wrong."""
    p = Path(path)
    if p.is_dir():
        raise DataError(str(p), "is a directory, not a data file", fix="pass a .jsonl, .csv or .tsv file")
    if not p.exists():
        raise DataError(str(p), "no such file", fix="check the path")
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise DataError(str(p), f"cannot be read ({exc.strerror or exc})",
                        fix="check the path and its permissions") from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        start = exc.start + (len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0)  # BOM stripped first
        line = len(_NEWLINE_BYTES.split(raw[:start]))
        raise DataError(str(p), f"not valid UTF-8 at byte {start}", line=line,
                        fix="re-save the file as UTF-8") from exc
    if not text.strip():
        raise DataError(str(p), "the file is empty", fix="point at a file with records")
    return text


def load_records(path: str | Path, task: TaskSpec, *, skip_invalid: bool = False) -> Dataset:
    """Read a data file by its extension; see the module docstring for the error policy."""
    p = Path(path)
    text = read_text(p)
    if p.suffix.lower() in {".csv", ".tsv"}:
        pairs = _csv_rows(text, str(p), task)
    else:
        pairs = _jsonl_rows(text, str(p))
    return _dataset(pairs, task, str(p), skip_invalid)


def records_from_rows(rows, task: TaskSpec, *, source: str = "records", skip_invalid: bool = False) -> Dataset:
    """Records given in memory (the Python API): dicts shaped like JSONL lines, validated the same way;
    an issue's line is the row's 1-based position."""
    if isinstance(rows, (str, bytes, dict)) or not hasattr(rows, "__iter__"):
        raise DataError(source, f"expected a list of records (dicts), got {type(rows).__name__}",
                        fix="pass e.g. [{'text': 'great', 'label': 'pos'}, ...] or a data file's path")
    pairs = ((n, row if isinstance(row, dict) else _Bad(None, f"expected a dict, got {type(row).__name__}"))
             for n, row in enumerate(rows, start=1))
    return _dataset(pairs, task, source, skip_invalid)


def _dataset(pairs, task: TaskSpec, source: str, skip_invalid: bool) -> Dataset:
    records, issues = [], []
    for line, row in pairs:
        try:
            if isinstance(row, _Bad):
                raise row
            records.append(_to_record(row, task, source, line))
        except _Bad as bad:
            issues.append(Issue(source, line, bad.field, bad.reason))
    if issues and not skip_invalid:
        raise InvalidRecords(source, issues)
    if not records:
        raise DataError(source, f"no valid records ({len(issues)} skipped)", fix="check the file's format")
    return Dataset(records=records, source=source, skipped=issues)


def _jsonl_rows(text: str, source: str):
    for number, line in enumerate(_NEWLINE.split(text), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            yield number, _Bad(None, f"malformed JSON ({exc.msg} at column {exc.colno})")
            continue
        except (ValueError, RecursionError) as exc:  # an integer too long to convert, nesting too deep
            yield number, _Bad(None, f"malformed JSON ({str(exc).split(':')[0]})")
            continue
        yield number, row if isinstance(row, dict) else _Bad(None, f"expected a JSON object, got {type(row).__name__}")


def _csv_rows(text: str, source: str, task: TaskSpec):
    delimiter = task.delimiter or ("\t" if source.lower().endswith(".tsv") else ",")
    rows = _csv_lines(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter), source)
    header_line, columns = next(rows, (1, []))
    for needed in _csv_needed_columns(task, columns):
        if needed not in columns:
            raise DataError(source, f"no column {needed!r} (columns: {', '.join(map(repr, columns))})",
                            line=header_line, fix="map columns with input_field/output_field in the task file")
    for line, cells in rows:
        if len(cells) > len(columns):
            yield line, _Bad(None, f"{len(cells)} cells, header has {len(columns)}")
            continue
        yield line, dict(zip(columns, cells))  # cells missing at the end read as missing fields


def _csv_lines(reader, source: str):
    """(first line, cells) for each non-blank row. A row's line is where it starts: quoted cells can
    span lines and blank lines are skipped, so it is counted from where the previous row ended."""
    end = 0
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise DataError(source, f"unreadable CSV ({exc})", line=end + 1,
                            fix="check the quoting of this row") from exc
        line, end = end + 1, reader.line_num
        if cells:
            yield line, cells


def _csv_needed_columns(task: TaskSpec, columns: list[str]) -> list[str]:
    out = task.output_field
    if task.input_field or task.input_template:
        needed = [task.input_field] if task.input_field else _template_fields(task.input_template or "")
        return [c for c in needed if c] + [out or "label"]
    for inp, default_out in JSONL_FORMATS:
        if inp in columns and (out or default_out) in columns:
            return [inp, out or default_out]
    return ["text", out or "label"]


def _template_fields(template: str) -> list[str]:
    import string
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


def _to_record(row: dict, task: TaskSpec, source: str, line: int) -> Record:
    out = task.output_field
    if task.input_field or task.input_template:
        out_name = out or "label"
        messages = (("user", _input(row, task)),)
        output = _field(row, out_name)
    elif "messages" in row:
        out_name = "messages"
        messages, output = _chat(row["messages"])
    else:
        # prefer a pair whose two fields are both there (as the CSV column check does)
        pair = next(((i, o) for i, o in JSONL_FORMATS if i in row and (out or o) in row), None) \
            or next(((i, o) for i, o in JSONL_FORMATS if i in row), None)
        if pair is None:
            raise _Bad(None, "no recognised fields: expected messages, prompt/completion, input/output or text/label")
        out_name = out or pair[1]
        messages, output = (("user", _field(row, pair[0])),), _field(row, out_name)
    if task.labels is not None and task.type == "classification" and output not in task.labels:
        raise _Bad(out_name, f"label {output!r} is not in the declared set {task.labels}")  # repr: one line
    date = str(row[task.date_field]) if task.date_field and row.get(task.date_field) not in (None, "") else None
    if date is not None:
        _unicode(task.date_field, date)
    doc = str(row[task.source_field]) if task.source_field and row.get(task.source_field) not in (None, "") else None
    return Record(id=f"{Path(source).name}:{line}", messages=messages, output=output,
                  source=source, line=line, date=date, doc=doc)


def _field(row: dict, name: str) -> str:
    if name not in row or row[name] is None:
        raise _Bad(name, "missing field")
    value = row[name]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _Bad(name, f"wrong type: expected text, got {type(value).__name__}")
    value = str(value).strip()
    if not value:
        raise _Bad(name, "empty text")
    return _unicode(name, value)


def _unicode(name: str | None, text: str) -> str:
    """JSON escapes can spell half of a UTF-16 pair (\\ud800), which no file, hash or report can hold."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _Bad(name, f"not valid Unicode: a lone surrogate \\u{ord(text[exc.start]):04x} at character "
                         f"{exc.start + 1}") from None
    return text


def _input(row: dict, task: TaskSpec) -> str:
    if task.input_template is None:
        return _field(row, task.input_field or "text")
    values = {name: _field(row, name) for name in _template_fields(task.input_template)}
    return task.input_template.format_map(values)


def _chat(messages) -> tuple[tuple[tuple[str, str], ...], str]:
    if not isinstance(messages, list) or not messages:
        raise _Bad("messages", "expected a non-empty list of {role, content} objects")
    turns = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or m["role"] not in ROLES:
            raise _Bad(f"messages[{i}].role", f"expected one of {sorted(ROLES)}")
        content = m.get("content")
        if not isinstance(content, str):
            raise _Bad(f"messages[{i}].content", f"wrong type: expected text, got {type(content).__name__}")
        if not content.strip():
            raise _Bad(f"messages[{i}].content", "empty text")
        turns.append((m["role"], _unicode(f"messages[{i}].content", content.strip())))
    if turns[-1][0] != "assistant":
        raise _Bad(f"messages[{len(turns) - 1}].role", "the last message must be the assistant's answer to learn")
    history = tuple(turns[:-1])
    if not any(role == "user" for role, _ in history):
        raise _Bad("messages", "no user message before the assistant's answer")
    return history, turns[-1][1]
