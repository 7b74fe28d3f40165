"""Report figures drawn with matplotlib (Agg canvas) and returned as inline SVG strings.

Every function takes a RunResults and returns an SVG string, or None when the evidence is absent.
Output is deterministic (fixed hash salt, no date) and element ids are prefixed per figure so that
several SVGs can live in one HTML page.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import NullFormatter

from tunewise.report._common import (
    MAX_CONFUSION_LABELS, confusion_subject, cost_per_1k, latency_limit, ok_candidates, primary_metric,
    target,
)
from tunewise.report._mpl import (
    BASE_COLOUR, FAMILY_COLOURS, LINE_COLOUR, PALETTE, colour, err, family_legend, maybe_log, new, plot,
)
from tunewise.results import Interval, RunResults

__all__ = ["ALL_PLOTS", "FAMILY_COLOURS", "confusion", "forgetting", "latency", "learning_curve", "losses",
           "quality_bars", "quality_vs_cost"]

@plot("qc")
def quality_vs_cost(results: RunResults) -> Figure | None:
    metric, costs = primary_metric(results), cost_per_1k(results)
    pts = [c for c in ok_candidates(results) if metric in c.metrics and c.name in costs]
    if not pts:
        return None
    fig, ax = new(6.4, 3.8)
    for c in pts:
        iv = c.metrics[metric]
        ax.errorbar([costs[c.name]], [iv.value], yerr=err([iv]), fmt="o", ms=6, capsize=3, color=colour(c))
        ax.annotate(c.name, (costs[c.name], iv.value), xytext=(5, 4), textcoords="offset points", fontsize=8)
    maybe_log(ax, [costs[c.name] for c in pts])
    t = target(results)
    if t is not None:
        ax.axhline(t, color=LINE_COLOUR, ls="--", lw=1, label=f"target {t:g}")
    ax.set(xlabel="cost per 1,000 requests ($)", ylabel=metric, title=f"{metric} vs cost (95% CI)")
    family_legend(ax, pts, loc="lower right")
    return fig


@plot("q")
def quality_bars(results: RunResults) -> Figure | None:
    metric = primary_metric(results)
    cands = sorted((c for c in ok_candidates(results) if metric in c.metrics), key=lambda c: c.metrics[metric].value)
    if not cands:
        return None
    fig, ax = new(6.4, 0.9 + 0.38 * len(cands))
    ivs = [c.metrics[metric] for c in cands]
    y = np.arange(len(cands))
    ax.barh(y, [i.value for i in ivs], xerr=err(ivs), color=[colour(c) for c in cands], height=0.6, capsize=3)
    ax.set_yticks(y, [c.name for c in cands])
    t = target(results)
    if t is not None:
        ax.axvline(t, color=LINE_COLOUR, ls="--", lw=1, label=f"target {t:g}")
        ax.legend(loc="lower right")
    ax.set(xlabel=f"{metric} (95% CI)", xlim=(0, max(1.0, max(i.ci_high for i in ivs))))
    ax.grid(axis="y", visible=False)
    return fig


@plot("lc")
def learning_curve(results: RunResults) -> Figure | None:
    lc = results.learning_curve
    pts = [p for p in lc.points if p.status == "ok"] if lc else []
    if not lc or not pts:
        return None
    fig, ax = new(6.4, 3.6)
    ns = np.array([p.n for p in pts], dtype=float)
    ivs = [Interval(value=p.value, ci_low=p.ci_low, ci_high=p.ci_high) for p in pts]
    ax.errorbar(ns, [p.value for p in pts], yerr=err(ivs), fmt="o", capsize=3, color=PALETTE[0], label="measured")
    if lc.fit and {"A", "b", "E"} <= set(lc.fit):
        a, b, e = lc.fit["A"], lc.fit["b"], lc.fit["E"]
        far = max([4 * ns.max()] + [p.n for p in lc.projections])
        grid = np.geomspace(ns.min() * 0.9, far, 120)
        ax.plot(grid, 1 - (a * grid ** -b + e), "--", color=PALETTE[1], lw=1.2, label="fit 1-(A·n^-b+E)")
    if lc.projections:
        proj = sorted(lc.projections, key=lambda p: p.n)
        last = pts[-1]
        xs = [last.n] + [p.n for p in proj]
        ax.fill_between(xs, [last.ci_low] + [p.ci_low for p in proj], [last.ci_high] + [p.ci_high for p in proj],
                        color=PALETTE[1], alpha=0.18, lw=0, label="projection 95% band")
        ax.plot([p.n for p in proj], [p.value for p in proj], "s", ms=4, color=PALETTE[1], label="projected")
    t = target(results)
    if t is not None:
        ax.axhline(t, color=LINE_COLOUR, ls=":", lw=1, label=f"target {t:g}")
    ax.set_xscale("log")
    ticks = sorted({p.n for p in pts} | {p.n for p in lc.projections})
    ax.set_xticks(ticks, [f"{t:,}" for t in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())
    title = f"learning curve: {lc.candidate}"
    if not lc.extrapolable:
        title += " (not extrapolable)"
    ax.set(xlabel="training examples (n, log scale)", ylabel=lc.metric, title=title)
    ax.legend(loc="lower right")
    return fig


@plot("lat")
def latency(results: RunResults) -> Figure | None:
    cands = [c for c in ok_candidates(results) if c.latency_ms and ("p50" in c.latency_ms or "p95" in c.latency_ms)]
    if not cands:
        return None
    fig, ax = new(6.4, 0.9 + 0.38 * len(cands))
    values: list[float] = []
    for y, c in enumerate(cands):
        p50, p95 = c.latency_ms.get("p50"), c.latency_ms.get("p95")
        if p50 is not None and p95 is not None:
            ax.plot([p50, p95], [y, y], color=colour(c), lw=2, alpha=0.6)
        if p50 is not None:
            ax.plot([p50], [y], "o", color=colour(c), ms=6)
        if p95 is not None:
            ax.plot([p95], [y], "D", color=colour(c), ms=6, mfc="white")
        values += [v for v in (p50, p95) if v is not None]
    handles = [Line2D([], [], marker="o", ls="", color="#555", label="p50"),
               Line2D([], [], marker="D", ls="", color="#555", mfc="white", label="p95")]
    limit = latency_limit(results)
    if limit is not None:
        ax.axvline(limit, color=LINE_COLOUR, ls="--", lw=1)
        handles.append(Line2D([], [], color=LINE_COLOUR, ls="--", label=f"p95 limit {limit:g} ms"))
        values.append(limit)
    maybe_log(ax, values)
    ax.set_yticks(range(len(cands)), [c.name for c in cands])
    ax.set_ylim(-0.6, len(cands) - 0.4)
    ax.set(xlabel="latency per request (ms)")
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


@plot("fg")
def forgetting(results: RunResults) -> Figure | None:
    fg = results.forgetting
    if fg is None or not fg.models:
        return None
    names = ["base model"] + [m.candidate for m in fg.models]
    ivs = [fg.base_score] + [m.score for m in fg.models]
    cols = [BASE_COLOUR] + [PALETTE[i % len(PALETTE)] for i in range(len(fg.models))]
    fig, ax = new(6.4, 0.9 + 0.4 * len(names))
    y = np.arange(len(names))[::-1]
    for yi, iv, col in zip(y, ivs, cols):
        ax.errorbar([iv.value], [yi], xerr=err([iv]), fmt="o", capsize=3, color=col, ms=6)
    for yi, m in zip(y[1:], fg.models):
        ax.annotate(f"Δ {m.delta.value:+.3f}", (m.score.ci_high, yi), xytext=(6, -3), textcoords="offset points", fontsize=8)
    ax.axvline(fg.base_score.value, color=BASE_COLOUR, ls=":", lw=1)
    ax.set_yticks(y, names)
    ax.set_ylim(-0.6, len(names) - 0.4)
    ax.set(xlabel="probe score (95% CI)", title=f"general-ability probe: {fg.probe} ({fg.items} items)")
    return fig


@plot("cm")
def confusion(results: RunResults) -> Figure | None:
    subject = confusion_subject(results)
    if subject is None:
        return None
    c, shown, total = subject
    labels, matrix = c.confusion.labels, np.array(c.confusion.matrix, dtype=float)
    keep = np.sort(np.argsort(-matrix.sum(axis=1), kind="stable")[:shown])
    sub = matrix[np.ix_(keep, keep)]
    rows = matrix[keep].sum(axis=1, keepdims=True)  # share of all items with that true label
    frac = np.divide(sub, rows, out=np.zeros_like(sub), where=rows > 0)
    side = min(8.0, 2.8 + 0.2 * shown)
    fig, ax = new(side + 0.8, side)
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    names = [labels[i][:18] for i in keep]
    ax.set_xticks(range(shown), names, rotation=60, ha="right", fontsize=7 if shown > 12 else 8)
    ax.set_yticks(range(shown), names, fontsize=7 if shown > 12 else 8)
    ax.grid(False)
    if shown <= 12:
        for i in range(shown):
            for j in range(shown):
                ax.text(j, i, f"{int(sub[i, j])}", ha="center", va="center", fontsize=7,
                        color="white" if frac[i, j] > 0.6 else "#222")
    title = f"confusion: {c.name}"
    if total > shown:
        title += f"\n(showing {shown} of {total} labels, most frequent; cap {MAX_CONFUSION_LABELS})"
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.colorbar(im, ax=ax, shrink=0.7, label="fraction of true label")
    return fig


@plot("loss")
def losses(results: RunResults) -> Figure | None:
    cands = [c for c in results.candidates if c.losses]
    if not cands:
        return None
    fig, ax = new(6.4, 3.4)
    for i, c in enumerate(cands):
        col = PALETTE[i % len(PALETTE)]
        ax.plot([e.epoch for e in c.losses], [e.train_loss for e in c.losses], "-o", ms=3, color=col,
                label=f"{c.name} train")
        val = [e for e in c.losses if e.val_loss is not None]
        if val:
            ax.plot([e.epoch for e in val], [e.val_loss for e in val], "--s", ms=3, color=col, label=f"{c.name} val")
    ax.set(xlabel="epoch", ylabel="loss", title="fine-tuning loss")
    ax.legend(loc="upper right")
    return fig


ALL_PLOTS: dict[str, Callable[[RunResults], str | None]] = {
    "plot-quality-cost": quality_vs_cost, "plot-quality": quality_bars, "plot-learning-curve": learning_curve,
    "plot-latency": latency, "plot-forgetting": forgetting, "plot-confusion": confusion, "plot-losses": losses,
}
