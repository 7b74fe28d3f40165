"""The run report: a self-contained HTML page, a Markdown twin and the raw results.json."""

from __future__ import annotations

from pathlib import Path

from tunewise.files import write_atomic
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
