"""The run report: a self-contained HTML page, a Markdown twin and the raw results.json."""

from __future__ import annotations

from pathlib import Path

from tunewise.report.html import render_html
from tunewise.report.markdown import render_markdown
from tunewise.results import RunResults

__all__ = ["render_html", "render_markdown", "write_report"]


def write_report(results: RunResults, out_dir: Path) -> dict[str, Path]:
    """Write report.html, report.md and results.json into out_dir (created if needed); return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"html": out / "report.html", "markdown": out / "report.md", "json": out / "results.json"}
    paths["html"].write_text(render_html(results), encoding="utf-8")
    paths["markdown"].write_text(render_markdown(results), encoding="utf-8")
    paths["json"].write_text(results.model_dump_json(indent=2), encoding="utf-8")
    return paths
