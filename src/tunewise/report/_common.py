"""Shared lookups and number formatting for the report (plots, HTML and Markdown read the same facts)."""

from __future__ import annotations

import math

from tunewise.results import CandidateResult, Interval, RunResults

NOT_MEASURED = "not measured in this run"
MAX_CONFUSION_LABELS = 30


def ok_candidates(results: RunResults) -> list[CandidateResult]:
    return [c for c in results.candidates if c.status == "ok"]


def primary_metric(results: RunResults) -> str | None:
    """The task's metric (always set: TaskSpec holds its default)."""
    return results.metric


def metric_names(results: RunResults) -> list[str]:
    """Every metric reported by any candidate, the primary one first."""
    names: list[str] = []
    first = primary_metric(results)
    if first:
        names.append(first)
    for c in results.candidates:
        names.extend(m for m in c.metrics if m not in names)
    return names


def target(results: RunResults) -> float | None:
    value = results.task.target
    return float(value) if value is not None else None


def latency_limit(results: RunResults) -> float | None:
    value = results.task.constraints.latency_ms_limit
    return float(value) if value is not None else None


def cost_per_1k(results: RunResults) -> dict[str, float]:
    if results.cost is None:
        return {}
    return {c.candidate: c.per_1k_requests for c in results.cost.candidates}


def score(c: CandidateResult, metric: str | None) -> float:
    iv = c.metrics.get(metric) if metric else None
    return iv.value if iv is not None else -math.inf


def focus_candidate(results: RunResults, need: str | None = None) -> CandidateResult | None:
    """The recommended candidate when it carries `need` (an attribute name); else the best such one."""
    def has(c: CandidateResult) -> bool:
        return c.status == "ok" and (need is None or bool(getattr(c, need)))

    if results.verdict and results.verdict.candidate:
        chosen = results.candidate(results.verdict.candidate)
        if chosen is not None and has(chosen):
            return chosen
    metric = primary_metric(results)
    pool = [c for c in results.candidates if has(c)]
    return max(pool, key=lambda c: score(c, metric)) if pool else None


def confusion_subject(results: RunResults) -> tuple[CandidateResult, int, int] | None:
    """(candidate, labels shown, labels in total) for the confusion matrix, or None."""
    c = focus_candidate(results, "confusion")
    if c is None or c.confusion is None or not c.confusion.labels:
        return None
    total = len(c.confusion.labels)
    return c, min(total, MAX_CONFUSION_LABELS), total


def fmt(x: float | int | None, digits: int = 3) -> str:
    """A number for people: '—' when absent, thousands separators for big ones."""
    if x is None:
        return "—"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return f"{x:,}"
    if not math.isfinite(x):
        return str(x)
    if x != 0 and (abs(x) >= 1e6 or abs(x) < 1e-4):
        return f"{x:.{digits}g}" if abs(x) < 1e6 else f"{x:.3g}"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.{min(digits, 1)}f}"
    return f"{x:.{digits}f}"


def fmt_any(x: float | int | None) -> str:
    """A number of unknown meaning (profile, settings): 4 significant digits, no padding."""
    if isinstance(x, float) and math.isfinite(x) and abs(x) < 1e4:
        return f"{x:.4g}"
    return fmt(x)


def fmt_iv(iv: Interval | None, digits: int = 3) -> str:
    if iv is None:
        return "—"
    return f"{fmt(iv.value, digits)} [{fmt(iv.ci_low, digits)}, {fmt(iv.ci_high, digits)}]"


def fmt_signed_iv(iv: Interval | None, digits: int = 3) -> str:
    if iv is None:
        return "—"
    return f"{iv.value:+.{digits}f} [{iv.ci_low:+.{digits}f}, {iv.ci_high:+.{digits}f}]"


def fmt_money(x: float | None) -> str:
    if x is None:
        return "—"
    if x == 0:
        return "$0"
    return f"${x:,.2f}" if abs(x) >= 1 else f"${x:.4f}"


def fmt_seconds(x: float | None) -> str:
    if x is None:
        return "—"
    if x >= 3600:
        return f"{x / 3600:.1f} h"
    if x >= 120:
        return f"{x / 60:.1f} min"
    return f"{x:.1f} s"


def fmt_latency(lat: dict[str, float] | None) -> str:
    if not lat:
        return "—"
    def ms(x: float | None) -> str:
        return fmt(x, 1 if x is None or x >= 10 else 2)
    return f"{ms(lat.get('p50'))} / {ms(lat.get('p95'))} ms"


def fmt_tokens(c: CandidateResult) -> str:
    """Mean tokens per request, in / out ('—' for options that use none)."""
    if not c.prompt_tokens_mean and not c.output_tokens_mean:
        return "—"
    return f"{fmt(c.prompt_tokens_mean, 0)} / {fmt(c.output_tokens_mean, 0)}"


def fmt_method(c: CandidateResult) -> str:
    """How a candidate's labels were scored, and where: 'generate (HTTP), 3 unparsed'."""
    if not c.scoring:
        return "—"
    text = c.scoring + (" (HTTP)" if c.api else "")
    return text + (f", {c.unparsed} unparsed" if c.unparsed else "")


def fmt_p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def curve_fit_text(fit: dict[str, float] | None) -> str:
    if not fit:
        return "no fit"
    a, b, e = fit.get("A"), fit.get("b"), fit.get("E")
    return f"error = {fmt(a)} · n^-{fmt(b)} + {fmt(e)}"


def scoring_summary(s) -> str:
    """One sentence on adaptive test scoring: where it stopped and why, and records per candidate."""
    records = ", ".join(f"{name} {n}" for name, n in s.records.items())
    return (f"Scored in {sum(not lk.final for lk in s.looks)} of {len(s.planned)} planned looks ({', '.join(map(str, s.planned))} records); "
            f"stopped: {s.stop}. Test records per candidate: {records}.")


RECALL_NOTE = ("share of the test records that name their source document (the task's `source_field`) whose "
               "document was among the top-k passages put in the prompt")


def retrieval_rows(results: RunResults) -> list[tuple[str, object, Interval, int | None]]:
    """(candidate, k, recall@k with its interval, records naming a source) per retrieval candidate measured."""
    return [(c.name, c.settings.get("top_k"), c.retrieval_recall, c.retrieval_records)
            for c in results.candidates if c.family == "retrieval" and c.status == "ok" and c.retrieval_recall]


def recall_unmeasured(results: RunResults) -> str | None:
    """Why recall@k is absent for the retrieval candidates that lack it, or None."""
    names = [c.name for c in results.candidates
             if c.family == "retrieval" and c.status == "ok" and c.retrieval_recall is None]
    return (f"Recall@k not measured for {', '.join(names)}: no test record names its source document (set "
            "`source_field` in the task file)") if names else None
