"""The freshness rule on measured knowledge ageing (results.freshness, the time split).

A winner whose score drops significantly from the main split to the records after the cut-off (the
drop's interval above 0) has aged. Then a retrieval option that scores at least as well as it after the
cut-off wins: RETRIEVAL, naming it and its numbers. The declared `knowledge_update` says how often the
ageing will bite: a task whose knowledge never changes keeps its winner, with the ageing stated.
"""

from __future__ import annotations

from tunewise.decide import fmt
from tunewise.decide.facts import Facts, label
from tunewise.results import CandidateResult, FreshnessRow


def row(f: Facts, c: CandidateResult | None) -> FreshnessRow | None:
    fr = f.results.freshness
    return fr.row(c.name) if fr is not None and c is not None else None


def aged(r: FreshnessRow | None) -> bool:
    return r is not None and r.drop is not None and r.drop.ci_low > 0


def one(f: Facts, c: CandidateResult) -> str:
    """'lora 0.62 [..] on the main split, 0.41 [..] after 2016-03-01 (drop 0.21 [..])'."""
    r, fr = row(f, c), f.results.freshness
    return (f"{label(c)} {fmt.iv(r.main)} on the main split, {fmt.iv(r.time)} after {fr.cutoff} "
            f"(drop {fmt.iv(r.drop)})")


def best_retrieval(f: Facts) -> CandidateResult | None:
    """The retrieval option with the best time-split score (among those that learned the task)."""
    pool = [c for c in f.eligible if c.family == "retrieval" and row(f, c) is not None]
    return max(pool, key=lambda c: row(f, c).time.value) if pool else None


def frozen_text(f: Facts, c: CandidateResult) -> str:
    fr = f.results.freshness
    frozen = next((x for x in fr.frozen if x.candidate == c.name), None) if fr else None
    if frozen is None:
        return ""
    return (f"; with its corpus frozen at {fr.cutoff} it scores {fmt.iv(frozen.frozen)} vs {fmt.iv(frozen.updated)} "
            f"updated (gain {fmt.iv(frozen.gain)}, p = {frozen.p_value:.2g})")


def figures(f: Facts) -> list[str]:
    """The ageing of every option measured on the time split, retrieval first."""
    opts = sorted((c for c in f.options if row(f, c) is not None), key=lambda c: c.family != "retrieval")
    return [one(f, c) + (frozen_text(f, c) if c.family == "retrieval" else "") for c in opts]


def decide_on_ageing(f: Facts, decision: str, win: CandidateResult | None, summary: str):
    """(decision, candidate, summary) after the measured freshness rule, or None when nothing was measured
    for the winner (the declared rule applies)."""
    r = row(f, win)
    if r is None:
        return None
    rate = "in real time" if f.knowledge_update == "realtime" else f.knowledge_update
    if win.family == "retrieval" or not aged(r):
        verdict = "" if aged(r) else ": no significant knowledge ageing"
        return decision, win, summary + f" Measured on a time split: {one(f, win)}{verdict}."
    retr = best_retrieval(f)
    if f.knowledge_update == "never":
        return decision, win, summary + (f" It ages on a time split ({one(f, win)}), but the task states its "
                                         "knowledge never changes.")
    if retr is None or row(f, retr).time.value < r.time.value:
        alt = f" (best retrieval option after the cut-off: {one(f, retr)})" if retr else ""
        return decision, win, summary + (f" It ages on a time split ({one(f, win)}) and no retrieval option "
                                         f"does better after the cut-off{alt}: retrain it at the rate the "
                                         f"knowledge changes ({rate}).")
    return "RETRIEVAL", retr, (
        f"Retrieve: measured knowledge ageing. {one(f, win)}; {one(f, retr)}{frozen_text(f, retr)}. The "
        f"knowledge changes {rate}, so a trained model would age like this between retrainings. Without "
        f"the time split the measured answer was {decision}: {summary}")
