"""Matplotlib plumbing for the report figures: colours, rc settings, and Figure -> inline SVG."""

from __future__ import annotations

import functools
import io
import re
from typing import Callable

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from tunewise.results import CandidateResult, Interval, RunResults

FAMILY_COLOURS = {"prompting": "#4C72B0", "retrieval": "#8172B3", "classical": "#55A868",
                  "finetune": "#DD8452", "baseline": "#8C8C8C"}
OTHER_COLOUR = "#937860"
BASE_COLOUR = "#8C8C8C"
LINE_COLOUR = "#C44E52"  # target and limit lines
PALETTE = ["#DD8452", "#4C72B0", "#55A868", "#8172B3", "#C44E52", "#937860", "#DA8BC3", "#64B5CD"]
RC = {"svg.hashsalt": "tunewise", "svg.fonttype": "path", "font.size": 9, "axes.titlesize": 10,
      "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3,
      "legend.fontsize": 8, "legend.frameon": False}


def colour(c: CandidateResult) -> str:
    return FAMILY_COLOURS.get(c.family, OTHER_COLOUR)


def svg_text(fig: Figure, prefix: str) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)
    text = re.sub(r'\bid="([^"]+)"', rf'id="{prefix}-\1"', text)
    text = re.sub(r'href="#', f'href="#{prefix}-', text)
    text = text.replace("url(#", f"url(#{prefix}-")
    return text.strip()


def plot(prefix: str) -> Callable:
    """Run a figure builder under the report's rc settings; turn its Figure into SVG."""
    def deco(build: Callable[[RunResults], Figure | None]) -> Callable[[RunResults], str | None]:
        @functools.wraps(build)
        def wrapper(results: RunResults) -> str | None:
            with matplotlib.rc_context(RC):
                fig = build(results)
                return None if fig is None else svg_text(fig, prefix)
        return wrapper
    return deco


def new(width: float, height: float):
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def err(ivs: list[Interval]) -> np.ndarray:
    return np.array([[max(0.0, i.value - i.ci_low) for i in ivs], [max(0.0, i.ci_high - i.value) for i in ivs]])


def family_legend(ax, cands: list[CandidateResult], **kw) -> None:
    fams = list(dict.fromkeys(c.family for c in cands))
    handles = [Line2D([], [], marker="o", ls="", color=FAMILY_COLOURS.get(f, OTHER_COLOUR), label=f) for f in fams]
    ax.legend(handles=handles, **kw)


def maybe_log(ax, values: list[float], axis: str = "x", spread: float = 20.0) -> None:
    pos = [v for v in values if v > 0]
    if not pos or max(values) / min(pos) <= spread:
        return
    setter = ax.set_xscale if axis == "x" else ax.set_yscale
    if min(values) <= 0:
        setter("symlog", linthresh=min(pos))
    else:
        setter("log")
