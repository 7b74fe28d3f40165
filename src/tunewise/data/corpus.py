"""The retrieval corpus: documents read from a folder or a JSONL, hashed, and cut into chunks.

A folder holds .txt/.md files (the id is the path inside the folder; a `date:` in a front-matter
block dates it); a JSONL holds one
{"id", "text", "date"?} object a line. Bad documents stop the read with one line naming the file,
line and field: a corpus silently missing documents would make retrieval look worse than it is.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from tunewise.errors import ConfigError, DataError

TEXT_SUFFIXES = (".txt", ".md")
_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?)\n---[ \t]*(?:\n|\Z)", re.S)


@dataclass(frozen=True)
class Document:
    id: str
    text: str
    date: str | None = None  # ISO date: a frozen corpus keeps the documents dated up to its cut-off


@dataclass(frozen=True)
class Chunk:
    doc_id: str
    text: str
    date: str | None = None


def read_corpus(path: str | Path) -> list[Document]:
    p = Path(path)
    if p.is_dir():
        docs = [_file_document(f, f.relative_to(p).as_posix()) for f in sorted(p.rglob("*"))
                if f.is_file() and f.suffix.lower() in TEXT_SUFFIXES]
    elif p.is_file():
        docs = list(_jsonl(p))
    else:
        raise ConfigError(f"corpus {p}: not found", fix="set `corpus:` to a folder of .txt/.md files or a .jsonl")
    docs = [d for d in docs if d.text.strip()]
    if not docs:
        raise ConfigError(f"corpus {p}: no documents with text",
                          fix="a folder needs .txt/.md files; a JSONL needs {\"id\", \"text\"} lines")
    return docs


def _text(f: Path) -> str:
    try:
        return f.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(str(f), f"not valid UTF-8 at byte {exc.start}", fix="re-save the file as UTF-8") from exc


def _file_document(f: Path, doc_id: str) -> Document:
    """A file's text; a front-matter block (`---` lines around YAML, as Jekyll and Hugo write it) may
    give its `date`, and is left out of the text."""
    text = _text(f)
    m = _FRONT_MATTER.match(text)
    if m is None:
        return Document(id=doc_id, text=text)
    try:
        meta = yaml.safe_load(m.group(1))
    except yaml.YAMLError as exc:
        raise DataError(str(f), f"front matter is not valid YAML ({str(exc).splitlines()[0]})",
                        fix="write `date: YYYY-MM-DD` between the two `---` lines") from exc
    date = meta.get("date") if isinstance(meta, dict) else None
    return Document(id=doc_id, text=text[m.end():], date=str(date) if date not in (None, "") else None)


def _jsonl(p: Path):
    seen: set[str] = set()
    for line, raw in enumerate(_text(p).splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except ValueError as exc:
            raise DataError(str(p), f"malformed JSON ({exc})", line=line, fix="one JSON object per line") from exc
        for name in ("id", "text"):
            if not isinstance(row, dict) or not isinstance(row.get(name), (str, int)) or str(row[name]) == "":
                raise DataError(str(p), "missing or not text", line=line, field=name,
                                fix='each line needs {"id": ..., "text": ...} (and an optional "date")')
        doc_id = str(row["id"])
        if doc_id in seen:
            raise DataError(str(p), f"document id {doc_id!r} repeated", line=line, fix="give each document its own id")
        seen.add(doc_id)
        date = row.get("date")
        yield Document(id=doc_id, text=str(row["text"]), date=str(date) if date not in (None, "") else None)


def corpus_hash(docs: list[Document]) -> str:
    """Content hash (ids, texts, dates): an edited corpus is a new cache key, a touched file is not."""
    h = hashlib.sha256()
    for d in docs:
        h.update(json.dumps([d.id, d.text, d.date], ensure_ascii=False).encode())
    return h.hexdigest()[:16]


def chunk(docs: list[Document], words: int, overlap: int) -> list[Chunk]:
    """Windows of `words` words, consecutive windows sharing `overlap`; a document's tail shorter than
    the overlap is already in the window before it, so it makes no chunk of its own."""
    if not 0 <= overlap < words:
        raise ValueError(f"overlap {overlap} must be in [0, {words})")
    step = words - overlap
    out = []
    for d in docs:
        tokens = d.text.split()
        starts = range(0, max(len(tokens) - overlap, 1), step)
        out += [Chunk(d.id, " ".join(tokens[s:s + words]), d.date) for s in starts]
    return out


def frozen_at(docs: list[Document], cutoff: str) -> list[Document]:
    """The corpus as it stood at `cutoff` (ISO date): documents dated after it left out; undated ones kept."""
    return [d for d in docs if d.date is None or d.date[:10] <= cutoff]
