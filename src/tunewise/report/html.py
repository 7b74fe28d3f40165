"""The HTML report: one self-contained page (inline CSS and SVG, no scripts, no external resources)."""

from __future__ import annotations

from dataclasses import dataclass

from jinja2 import Environment, PackageLoader
from markupsafe import Markup

from tunewise.report import _common as C
from tunewise.report import plots
from tunewise.results import RunResults


@dataclass
class Figure:
    id: str
    title: str
    svg: Markup | None
    caption: str
    absent: str  # what to say when the evidence is missing


def _captions(results: RunResults) -> dict[str, tuple[str, str, str]]:
    """plot id -> (title, caption when present, note when absent)."""
    metric = C.primary_metric(results) or "metric"
    subject = C.confusion_subject(results)
    conf = "Rows are true labels, columns predicted; colour is the share of each true label."
    if subject:
        c, shown, total = subject
        conf = f"Confusion matrix of {c.name}. " + conf
        if total > shown:
            conf += f" Only the {shown} most frequent of {total} labels are shown, for readability."
    lc = results.learning_curve
    lc_caption = "Measured points with 95% intervals; dashed: fitted curve 1 - (A n^-b + E) extended to 4x n; " \
                 "band: projection intervals."
    if lc is not None and not lc.extrapolable:
        lc_caption += f" Not extrapolable: {lc.reason or 'no reason given'}."
    tgt = "; dashed line: the task's target." if C.target(results) is not None else "."
    no_cost = C.NOT_MEASURED + (" (no serving costs)" if results.cost is None else "")
    return {
        "plot-quality-cost": ("Quality vs cost", f"{metric} (95% CI) against serving cost per 1,000 requests; "
                              "failed candidates are absent.", no_cost),
        "plot-quality": ("Quality per candidate", f"{metric} with 95% intervals" + tgt, C.NOT_MEASURED),
        "plot-learning-curve": ("Learning curve", lc_caption, C.NOT_MEASURED),
        "plot-latency": ("Latency", "Median (p50, filled) and p95 (open) latency per request; dashed line: "
                         "the p95 limit when one is set.", C.NOT_MEASURED),
        "plot-forgetting": ("General ability (forgetting)", "Probe score of the base model and of each "
                            "fine-tuned model, with 95% intervals; Δ is the paired difference.", C.NOT_MEASURED),
        "plot-confusion": ("Confusion matrix", conf, C.NOT_MEASURED),
        "plot-losses": ("Training and validation loss", "Loss per epoch for each fine-tuned candidate "
                        "(solid: train, dashed: validation).", C.NOT_MEASURED),
    }


def figures(results: RunResults) -> list[Figure]:
    caps = _captions(results)
    out = []
    for plot_id, draw in plots.ALL_PLOTS.items():
        svg = draw(results)
        title, caption, absent = caps[plot_id]
        # The SVG comes from matplotlib, never from user text unescaped: names are XML-escaped by the writer.
        out.append(Figure(plot_id, title, Markup(svg) if svg else None, caption, absent))
    return out


def _env() -> Environment:
    env = Environment(loader=PackageLoader("tunewise.report", "templates"), autoescape=True,
                      trim_blocks=True, lstrip_blocks=True)
    env.filters.update(num=C.fmt, anynum=C.fmt_any, iv=C.fmt_iv, siv=C.fmt_signed_iv, money=C.fmt_money, secs=C.fmt_seconds,
                       lat=C.fmt_latency, pval=C.fmt_p, fit=C.curve_fit_text, tokens=C.fmt_tokens,
                       method=C.fmt_method)
    return env


def render_html(results: RunResults) -> str:
    """The report as one HTML string: verdict first, then the evidence, then every setting."""
    metric = C.primary_metric(results)
    focus = C.focus_candidate(results, "per_class")
    lc = results.learning_curve
    return _env().get_template("report.html.j2").render(
        r=results,
        metric=metric,
        metrics=C.metric_names(results),
        costs=C.cost_per_1k(results),
        target=C.target(results),
        limit=C.latency_limit(results),
        focus=focus,
        figures=figures(results),
        lc_points=[p for p in lc.points] if lc else [],
        task_name=results.task.name or "task",
        not_measured=C.NOT_MEASURED,
        scoring_summary=C.scoring_summary,
        retrieval=C.retrieval_rows(results),
        recall_unmeasured=C.recall_unmeasured(results),
        recall_note=C.RECALL_NOTE,
    )
