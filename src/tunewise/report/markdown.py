"""The Markdown report: the same facts as the HTML page, as text (verdict and reasons first).

Record text, labels, names and error messages can carry HTML or Markdown: every such string goes
through `_t` (HTML special characters as entities, link syntax escaped, one line), and free-form
values (the profile, the settings) are code-formatted with fences longer than any backtick run in
them, so nothing from the data renders as markup.
"""

from __future__ import annotations

import html
import json
import re

from tunewise.report import _common as C
from tunewise.results import RunResults


def _t(x: object) -> str:
    """User-derived text, inert in Markdown: no raw HTML, no links or images, no line breaks."""
    text = re.sub(r"\](?=[(\[:])", r"\\]", html.escape(str(x), quote=False))  # `](`, `][`, `]:` start links
    return re.sub(r"\s*[\r\n]+\s*", " ", text)


def _code(x: object) -> str:
    """An inline code span that no backtick inside `x` can close early."""
    text = re.sub(r"[\r\n]+", " ", str(x))
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    return f"{fence} {text} {fence}"


def _block(text: str, lang: str = "") -> list[str]:
    """A fenced code block that no backtick run inside `text` can close early."""
    fence = "`" * max(3, max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    return [fence + lang, text, fence]


def _cell(x: object) -> str:
    return _t(x).replace("|", "\\|")


def _table(head: list[str], rows: list[list[object]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(_cell(x) for x in row) + " |" for row in rows]
    return out + [""]


def _absent(what: str) -> list[str]:
    return [f"_{what}: {C.NOT_MEASURED}._", ""]


def _verdict(r: RunResults) -> list[str]:
    v = r.verdict
    if v is None:
        return ["## Verdict", "", "**No verdict** was reached in this run; the measurements below stand on their own.", ""]
    out = ["## Verdict", "", f"# **{v.decision}**", ""]
    if v.candidate or v.model:
        out += [f"Recommended: **{_t(v.candidate or '—')}**" + (f" with model {_code(v.model)}" if v.model else ""), ""]
    out += [_t(v.summary), "", "### Reasons", ""]
    out += [f"- `{x.criterion}` {_t(x.finding)}" + (f" _(supports {x.vote})_" if x.vote else "") for x in v.reasons] \
        or ["- none"]
    out += ["", "### Constraints honoured", ""] + ([f"- {_t(x)}" for x in v.constraints] or ["- none stated"])
    out += ["", "### What would change it", ""] + ([f"- {_t(x)}" for x in v.would_change] or ["- nothing recorded"])
    return out + [""]


def _warnings(r: RunResults) -> list[str]:
    if not r.warnings:
        return []
    return ["## Warnings", ""] + [f"- **warning:** {_t(w)}" for w in r.warnings] + [""]


def _candidates(r: RunResults) -> list[str]:
    out = ["## Candidates", ""]
    if not r.candidates:
        return out + _absent("candidates")
    metrics, costs = C.metric_names(r), C.cost_per_1k(r)
    head = ["name", "family", "model", "scoring", "status", "test records"] + [f"{m} [95% CI]" for m in metrics] + [
        "latency p50/p95", "tokens in/out", "cost/1k", "train time", "tokens/s", "error"]
    rows = [[c.name, c.family, c.model or "—", C.fmt_method(c), c.status, C.fmt_any(c.test_records)]
            + [C.fmt_iv(c.metrics.get(m)) for m in metrics]
            + [C.fmt_latency(c.latency_ms), C.fmt_tokens(c), C.fmt_money(costs.get(c.name)),
               C.fmt_seconds(c.train_seconds), C.fmt(c.train_tokens_per_s, 0), c.error or ""] for c in r.candidates]
    return out + _table(head, rows)


def _retrieval(r: RunResults) -> list[str]:
    rows, unmeasured = C.retrieval_rows(r), C.recall_unmeasured(r)
    if not rows and not unmeasured:
        return []
    out = ["## Retrieval recall@k", "", f"Recall@k: {C.RECALL_NOTE}.", ""]
    if rows:
        out += _table(["candidate", "k", "recall@k [95% CI]", "records naming a source"],
                      [[name, C.fmt_any(k), C.fmt_iv(iv), C.fmt_any(n)] for name, k, iv, n in rows])
    return out + ([_t(unmeasured) + ".", ""] if unmeasured else [])


def _comparisons(r: RunResults) -> list[str]:
    out = ["## Paired comparisons", ""]
    if not r.comparisons:
        return out + _absent("paired comparisons")
    rows = [[x.a, x.b, x.metric, C.fmt_any(x.n), f"{x.diff:+.3f} [{x.ci_low:+.3f}, {x.ci_high:+.3f}]",
             C.fmt_p(x.p_value), f"{x.alpha:.2g}", x.test] for x in r.comparisons]
    return out + _table(["a", "b", "metric", "records", "a − b [interval at 1 − level]", "p", "level", "test"], rows)


def _test_scoring(r: RunResults) -> list[str]:
    out = ["## Test scoring", ""]
    s = r.test_scoring
    if s is None:
        return out + _absent("adaptive test scoring")
    out += [_t(C.scoring_summary(s)), "", f"Method: {_t(s.method)}.", ""]
    rows = [[f"{i + 1} (final)" if lk.final else i + 1, lk.n, f"{lk.alpha:.2g}", lk.leader, ", ".join(lk.dropped) or "—", ", ".join(lk.open) or "—",
             C.fmt_any(lk.floor_separated)] for i, lk in enumerate(s.looks)]
    return out + _table(["look", "records", "level", "leader", "separated (stopped)", "not yet separated",
                         "leader above the floor"], rows)


def _learning_curve(r: RunResults) -> list[str]:
    out = ["## Learning curve", ""]
    lc = r.learning_curve
    if lc is None:
        return out + _absent("learning curve")
    out += [f"Candidate **{_t(lc.candidate)}**, metric {lc.metric}. Fit: `{C.curve_fit_text(lc.fit)}`"
            + (f"; ceiling (1 − E) {C.fmt_iv(lc.ceiling)}" if lc.ceiling else "") + ".", ""]
    if not lc.extrapolable:
        out += [f"**Not extrapolable:** {_t(lc.reason or 'no reason given')}", ""]
    rows = [[C.fmt(p.fraction), C.fmt(p.n), f"{C.fmt(p.value)} [{C.fmt(p.ci_low)}, {C.fmt(p.ci_high)}]"
             if p.status == "ok" else f"failed: {p.error}"] for p in lc.points]
    out += _table(["fraction", "n", f"{lc.metric} [95% CI]"], rows)
    if lc.projections:
        rows = [[f"{p.factor:g}×", C.fmt(p.n), f"{C.fmt(p.value)} [{C.fmt(p.ci_low)}, {C.fmt(p.ci_high)}]"]
                for p in lc.projections]
        out += ["Projections:", ""] + _table(["× current n", "n", f"projected {lc.metric} [95% CI]"], rows)
    if lc.n_for_target:
        out += [f"Training examples needed for the target: {C.fmt_iv(lc.n_for_target, 0)}.", ""]
    if lc.target_reachable is not None:
        out += [f"Target {'reachable' if lc.target_reachable else 'not reachable'} by the fit.", ""]
    return out


def _overfitting(r: RunResults) -> list[str]:
    out = ["## Overfitting", ""]
    if not r.overfitting:
        return out + _absent("overfitting checks")
    return out + [f"- **{_t(o.candidate)}**: {'FLAGGED' if o.flag else 'not flagged'} — {_t(o.reason)}"
                  for o in r.overfitting] + [""]


def _forgetting(r: RunResults) -> list[str]:
    out = ["## Forgetting (general ability)", ""]
    fg = r.forgetting
    if fg is None:
        return out + _absent("forgetting")
    rows = [["base model", C.fmt_iv(fg.base_score), "—", C.fmt(fg.base_perplexity, 2)]]
    rows += [[m.candidate, C.fmt_iv(m.score), C.fmt_signed_iv(m.delta), C.fmt(m.perplexity, 2)] for m in fg.models]
    return out + [f"Probe **{_t(fg.probe)}**, {fg.items} items.", ""] + _table(
        ["model", "probe score [95% CI]", "Δ vs base [95% CI]", "perplexity"], rows)


def _freshness(r: RunResults) -> list[str]:
    fr = r.freshness
    if fr is None:
        return ["## Knowledge ageing (time split)", ""] + _absent("time split") if r.task.date_field else []
    out = ["## Knowledge ageing (time split)", "",
           f"Trained and indexed on {fr.train_records} records dated up to **{_t(fr.cutoff)}**, tested on "
           f"{fr.test_records} records dated after it; main split: {_t(fr.main_split)}. Drop = main - time split "
           f"({_t(fr.metric)}); an interval above 0 is significant ageing.", ""]
    rows = [[x.candidate, x.family, C.fmt_iv(x.main), C.fmt_iv(x.time), C.fmt_signed_iv(x.drop)] if x.status == "ok"
            else [x.candidate, x.family, "failed", _t(x.error or ""), "—"] for x in fr.rows]
    out += _table(["candidate", "family", "main split [95% CI]", "time split [95% CI]", "drop [95% CI]"], rows)
    if fr.frozen:
        out += ["Retrieval with the corpus frozen at the cut-off vs updated (same time-split records, paired):", ""]
        out += _table(["candidate", "frozen corpus", "updated corpus", "gain [95% CI]", "p"],
                      [[x.candidate, C.fmt_iv(x.frozen), C.fmt_iv(x.updated), C.fmt_signed_iv(x.gain),
                        C.fmt(x.p_value, 3)] for x in fr.frozen])
    if fr.leakage:
        out += ["Leakage check (dated after the cut-off, must be 0): "
                + ", ".join(f"{_t(k)} {v}" for k, v in fr.leakage.items()), ""]
    return out


def _history(r: RunResults) -> list[str]:
    h = r.history
    if h is None:
        return []
    return ["## Multi-turn context (history ablation)", "",
            f"{_t(h.candidate)} on its {h.records} multi-turn test records ({_t(h.metric)}); gap = whole history - "
            f"last user turn only, paired ({_t(h.test)}, p = {C.fmt(h.p_value, 3)}).", ""] + _table(
        ["whole history [95% CI]", "last user turn only [95% CI]", "gap [95% CI]"],
        [[C.fmt_iv(h.whole_history), C.fmt_iv(h.last_turn), C.fmt_signed_iv(h.gap)]])


def _judge(r: RunResults) -> list[str]:
    j = r.judge
    if j is None:
        return []
    grades = ", ".join(f"{g} {v:g}" for g, v in j.grades.items())
    out = ["## Judge model", "",
           f"Every candidate's answers graded by {_code(j.model)} ({_t(j.method)}; {j.answers_graded} distinct "
           f"answers): the grade it scores highest among {_t(grades)}, averaged per candidate. The verdict uses "
           f"the task's metric ({_t(r.metric)}); these scores stand beside it.", ""]
    out += _table(["candidate", "judge score [95% CI]", "records", "grades given"],
                  [[s.candidate, C.fmt_iv(s.score), C.fmt_any(s.records),
                    ", ".join(f"{g} {n}" for g, n in s.grades.items())] for s in j.scores])
    return out + ["The judge's prompt (system turn, then the user turn per answer):", ""] + _block(
        f"{j.system}\n\n{j.prompt}") + [""]


def _compute(r: RunResults) -> list[str]:
    out = ["## Compute", ""]
    if not r.compute:
        return out + _absent("compute estimates")
    rows = [[x.candidate, C.fmt(x.params), C.fmt(x.trainable_params), C.fmt(x.tokens), C.fmt(x.flops),
             C.fmt_seconds(x.estimated_seconds), C.fmt_seconds(x.measured_seconds), C.fmt_seconds(x.budget_seconds),
             "yes" if x.within_budget else "NO"] for x in r.compute]
    return out + _table(["candidate", "params", "trainable", "tokens", "FLOPs", "estimated", "measured", "budget",
                         "within budget"], rows)


def _cost(r: RunResults) -> list[str]:
    out = ["## Cost and break-even", ""]
    if r.cost is None:
        return out + _absent("cost")
    rows = [[x.candidate, x.hosting, C.fmt_money(x.per_1k_requests), C.fmt_money(x.training_cost),
             C.fmt_money(x.monthly_cost)] for x in r.cost.candidates]
    out += _table(["candidate", "hosting", "per 1k requests", "training", "monthly"], rows)
    be = r.cost.break_even
    if be is None:
        out += [f"Break-even: {C.NOT_MEASURED}.", ""]
    else:
        when = f"{C.fmt(be.monthly_requests, 0)} requests per month" if be.monthly_requests is not None else "never pays off"
        out += [f"**Break-even** ({_t(be.finetuned)} vs {_t(be.prompting)}): {when}. {_t(be.explanation)}", ""]
    return out + ["Assumptions: " + _code(_compact(r.cost.assumptions)), ""]


def _per_class(r: RunResults) -> list[str]:
    c = C.focus_candidate(r, "per_class")
    if c is None or not c.per_class:
        return ["## Per-class results", ""] + _absent("per-class results")
    rows = [[k, C.fmt(s.precision), C.fmt(s.recall), C.fmt(s.f1), C.fmt(s.support)] for k, s in c.per_class.items()]
    return [f"## Per-class results: {_t(c.name)}", ""] + _table(["label", "precision", "recall", "F1", "support"], rows)


def _compact(value: object, limit: int = 300) -> str:
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _profile(r: RunResults) -> list[str]:
    out = ["## Data profile", ""]
    if not r.profile:
        return out + _absent("data profile")
    shown = r.profile.model_dump(mode="json", exclude_unset=True)  # the keys the profile measured
    return out + [f"- **{_t(k)}**: {_code(_compact(v))}" for k, v in shown.items()] + [""]


def _settings(r: RunResults) -> list[str]:
    out = ["## Settings", ""]
    typed = {name: getattr(r, name).model_dump(mode="json") for name in ("task", "budget", "split", "data")}
    blocks = typed | {"environment": r.environment,
              "time per stage (seconds)": r.stage_seconds}
    blocks.update({f"candidate {c.name}": {"strategy": c.strategy, "model": c.model, "params": c.params,
                                            "trainable_params": c.trainable_params, "artifact": c.artifact,
                                            "scoring": c.scoring, "api": c.api.model_dump() if c.api else None,
                                            "settings": c.settings, "notes": c.notes} for c in r.candidates})
    for name, value in blocks.items():
        out += [f"### {_t(name)}", ""] + _block(json.dumps(value, indent=2, default=str, ensure_ascii=False), "json") + [""]
    return out


def render_markdown(results: RunResults) -> str:
    """The report as Markdown: verdict and reasons first, then the evidence, then every setting."""
    r = results
    name = r.task.name or "task"
    head = [f"# tunewise report: {_t(name)}", "",
            f"run {_code(r.run_id)} · {_t(r.created)} · tunewise {r.tunewise_version}"
            + (f" · budget {_t(r.budget.name)}" if r.budget.name else "")
            + (f" · metric {C.primary_metric(r)}" if C.primary_metric(r) else "")
            + (f" · target {C.target(r):g}" if C.target(r) is not None else ""), ""]
    sections = [_warnings, _verdict, _candidates, _retrieval, _comparisons, _test_scoring, _learning_curve,
                _overfitting, _forgetting,
                _freshness, _history, _judge, _compute, _cost,
                _per_class, _profile, _settings]
    lines = head + [line for section in sections for line in section(r)]
    return "\n".join(lines).rstrip() + "\n"
