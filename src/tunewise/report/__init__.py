"""The run report: a self-contained HTML page, a Markdown twin and the raw results.json."""

from __future__ import annotations

import os
from pathlib import Path

from tunewise.report.html import render_html
from tunewise.report.markdown import render_markdown
from tunewise.results import RunResults

__all__ = ["render_html", "render_markdown", "write_report"]


def write_report(results: RunResults, out_dir: Path) -> dict[str, Path]:
    """Write results.json, report.html and report.md into out_dir (created if needed); return their paths.

    All three are rendered first, then each is written to a temporary name and renamed, results.json
    first: a kill at any moment leaves every file either complete or as it was before."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    texts = {"json": results.model_dump_json(indent=2), "html": render_html(results),
             "markdown": render_markdown(results)}
    paths = {"json": out / "results.json", "html": out / "report.html", "markdown": out / "report.md"}
    for kind, path in paths.items():
        write_atomic(path, texts[kind])
    return paths


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, flush it to disk, then rename it over `path`."""
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a writer that was killed
        stale.unlink(missing_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
