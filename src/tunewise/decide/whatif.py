"""What would change a measured verdict: the nearest target, data size, latency or update rate that flips it.

Why: a verdict is only as useful as its margins; each line names a concrete threshold computed from the
same evidence, so the team sees how close the call was.
"""

from __future__ import annotations

from tunewise.decide import fmt
from tunewise.decide.facts import Facts, label
from tunewise.results import CandidateResult


def _cheaper_at_lower_target(f: Facts, win: CandidateResult) -> list[str]:
    """The cheaper option a lower target would admit: the one with the highest lower bound."""
    cheaper = [c for c in f.eligible if c is not win and f.cost_key(c) < f.cost_key(win)
               and (f.target is None or f.score(c).ci_low < f.target)]
    if not cheaper:
        return []
    alt = max(sorted(cheaper, key=f.cost_key), key=lambda c: f.score(c).ci_low)  # ties: the cheaper
    cost_a, cost_w = f.cost(alt), f.cost(win)
    price = f" at {fmt.cost_ratio(cost_a, cost_w)}" if cost_a is not None and cost_w else ""
    return [f"with a target of {fmt.floor2(f.score(alt).ci_low):.2f}, {label(alt)} "
            f"({fmt.iv(f.score(alt))}) would do{price}"]


def _higher_target(f: Facts, win: CandidateResult) -> list[str]:
    if f.target is None or f.score(win).ci_low < f.target:
        return []
    low = f.score(win).ci_low
    better = [c for c in f.eligible if f.score(c).ci_low > low]
    nxt = min(better, key=f.cost_key) if better else None
    tail = (f"; {label(nxt)} ({fmt.iv(f.score(nxt))}) would be the cheapest that still does" if nxt
            else "; no option would reach it with its lower bound")
    return [f"a target above {low:.2f} would rule out {label(win)}{tail}"]


def _latency(f: Facts, win: CandidateResult) -> list[str]:
    out = []
    p95 = f.p95(win)
    if p95 is not None:
        out.append(f"a p95 latency limit below {p95:.0f} ms would rule out {label(win)}")
    slow = [c for c in f.options if f.too_slow(c) and f.learned(c)]
    best_slow = f.best(slow)
    if best_slow is not None and f.score(best_slow).value > f.score(win).value:
        out.append(f"without the {f.latency_ms_limit:g} ms limit, {label(best_slow)} "
                   f"({fmt.iv(f.score(best_slow))}, {f.p95(best_slow):.0f} ms p95) would be in the running")
    return out


def _curve(f: Facts) -> list[str]:
    curve = f.results.learning_curve
    if curve is None:
        return []
    if not curve.extrapolable:
        return [f"a learning curve that could be extrapolated ({curve.reason or 'too few points'}) would show "
                "whether more data helps"]
    proj = min(curve.projections, key=lambda p: abs(p.factor - 2), default=None)
    out = []
    if proj is not None:
        out.append(f"with about {proj.factor:g}x the data the curve of {curve.candidate} projects "
                   f"{proj.value:.2f} [{proj.ci_low:.2f}, {proj.ci_high:.2f}]")
    if curve.n_for_target is not None and curve.target_reachable:
        out.append(f"with about {fmt.count_iv(curve.n_for_target)} training examples the curve reaches the target")
    return out


def _budget(f: Facts) -> list[str]:
    return [f"a compute budget of {f.compute(c).estimated_seconds / 3600:.2g} device hours would admit {label(c)}"
            for c in f.options if f.over_budget(c) and f.learned(c)]


def _ageing(f: Facts, decision: str, win: CandidateResult | None) -> list[str]:
    """The measured ageing figures, and what would flip the verdict on them."""
    from tunewise.decide import ageing

    r = ageing.row(f, win)
    if r is None:
        return []
    if decision == "RETRIEVAL" and win is not None and win.family == "retrieval":
        aged = [c for c in f.eligible if c.family != "retrieval" and ageing.aged(ageing.row(f, c))]
        return [f"if {label(c)} kept its score after the cut-off (measured: {ageing.one(f, c)}), it would not "
                "need to give way to retrieval" for c in aged[:2]]
    if ageing.aged(r):
        return [f"knowledge ageing measured: {ageing.one(f, win)}; a retrieval option scoring at least "
                f"{r.time.value:.2f} after the cut-off would be chosen instead"]
    return [f"a significant drop after the time split's cut-off ({ageing.one(f, win)}) would call for retrieval "
            "or retraining"]


def _freshness(f: Facts, decision: str, win: CandidateResult | None) -> list[str]:
    if f.results.freshness is not None and ageing_measured(f, win):
        return _ageing(f, decision, win)
    if f.frequent_updates and decision == "RETRIEVAL":
        best = f.best(f.eligible)
        return [f"if the knowledge changed monthly or less, {label(best)} ({fmt.iv(f.score(best))}) could be "
                "used without retrieval"] if best is not None and best is not win else []
    if not f.frequent_updates and decision in ("FINE_TUNE", "SMALL_MODEL", "CLASSICAL"):
        return ["if the knowledge changed daily, retrieval would be needed: a trained model would go stale"]
    return []


def ageing_measured(f: Facts, win: CandidateResult | None) -> bool:
    from tunewise.decide import ageing

    return ageing.row(f, win) is not None


def _separation(f: Facts, decision: str, win: CandidateResult | None) -> list[str]:
    if decision != "INSUFFICIENT_EVIDENCE" or win is None:
        return []
    rival = f.best(c for c in f.options if c.family != win.family)
    if rival is None:
        return []
    return [f"a larger test set would settle {label(win)} {fmt.iv(f.score(win))} vs. {label(rival)} "
            f"{fmt.iv(f.score(rival))}"]


def would_change(f: Facts, decision: str, win: CandidateResult | None) -> list[str]:
    """Concrete changes to the target, data, limits or update rate that would flip the verdict."""
    out: list[str] = []
    if win is not None and f.options:
        if win in f.eligible:
            out += _cheaper_at_lower_target(f, win) + _higher_target(f, win)
        out += _latency(f, win)
    out += _curve(f) + _budget(f) + _freshness(f, decision, win) + _separation(f, decision, win)
    return out
