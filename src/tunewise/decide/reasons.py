"""One finding per criterion from the measured evidence, each citing its numbers: 0.83 [0.77, 0.89].

Why separate from the decision rules: the reasons explain every criterion the run measured, whichever
rule decided, and a criterion with no evidence in the run simply gives no finding.
"""

from __future__ import annotations

from typing import Callable

from tunewise.decide import fmt
from tunewise.decide.facts import FREQUENT, Facts, label
from tunewise.results import CandidateResult, Reason

_UPDATES = {"never": "0 updates", "yearly": "about 1 update", "monthly": "about 12 updates",
            "weekly": "about 52 updates", "daily": "about 365 updates", "realtime": "more than 365 updates"}
DOMAIN_GAP = 1.5  # base-model perplexity on the inputs vs. general text above this: unlike general text

Finder = Callable[[Facts, str, "CandidateResult | None"], list[Reason]]


def _named(f: Facts, c: CandidateResult) -> str:
    return f"{label(c)} {fmt.iv(f.score(c))}"


def majority_floor(f: Facts, decision: str, win) -> list[Reason]:
    if f.majority is None:
        return []
    learned = [c for c in f.options if f.learned(c)]
    missed = [c for c in f.options if not f.learned(c)]
    text = (f"the majority class scores {fmt.iv(f.score(f.majority))}; {len(learned)} of {len(f.options)} "
            "options beat it significantly (paired test, else lower bound above it)")
    if missed:
        text += "; did not learn the task: " + ", ".join(_named(f, c) for c in missed)
    return [Reason(criterion="majority_floor", finding=text, vote=None if learned else decision)]


def accuracy_target(f: Facts, decision: str, win) -> list[Reason]:
    if f.target is None:
        best = f.best(f.eligible) or f.best(f.options)
        if best is None:
            return []
        return [Reason(criterion="accuracy_target",
                       finding=f"no target set; the best option is {_named(f, best)}")]
    sure = [c for c in f.options if f.score(c).ci_low >= f.target]
    text = f"target {f.target:.2f}: "
    if sure:
        text += f"{len(sure)} option(s) reach it with their lower bound (" + ", ".join(
            _named(f, c) for c in sure) + ")"
    else:
        best = f.best(f.options)
        text += f"no option reaches it with its lower bound; best {_named(f, best)}" if best else "nothing scored"
    if f.majority is not None and f.score(f.majority).value >= f.target:
        text += f"; the majority class alone scores {f.score(f.majority).value:.2f}, so the target is no bar"
    return [Reason(criterion="accuracy_target", finding=text, vote=decision if sure else None)]


def _vs_best(f: Facts, c: CandidateResult, vote: str) -> Reason | None:
    """How the best option of one family stands against the target, or else against the overall best."""
    criterion = {"PROMPT": "prompting_enough", "CLASSICAL": "classical_enough"}[vote]
    family_word = f"{c.family} option,"
    if not f.learned(c):
        return Reason(criterion=criterion, finding=f"best {family_word} {_named(f, c)}, does not beat the "
                      f"majority class ({f.score(f.majority).value:.2f})")
    if f.target is not None:
        ok = f.score(c).ci_low >= f.target
        return Reason(criterion=criterion, vote=vote if ok else None,
                      finding=f"best {family_word} {_named(f, c)}, {'reaches' if ok else 'does not reach'} "
                              f"the target {f.target:.2f} with its lower bound")
    top = f.best(f.options)
    if top is c:
        return Reason(criterion=criterion, vote=vote,
                      finding=f"{family_word} {_named(f, c)}, is the best measured option")
    test = f.paired(top, c)
    gap = f"{f.score(top).value - f.score(c).value:.2f} below {_named(f, top)}"
    if test is None:
        return Reason(criterion=criterion, finding=f"best {family_word} {_named(f, c)}, is {gap} "
                      "(no paired test)")
    return Reason(criterion=criterion, vote=None if test.significant else vote,
                  finding=f"best {family_word} {_named(f, c)}, is {gap} (paired {fmt.p(test.p_value, test.alpha)}"
                          f"{'' if test.significant else ', not a significant difference'})")


def prompting_enough(f: Facts, decision: str, win) -> list[Reason]:
    best = f.best(c for c in f.options if c.family in ("prompting", "retrieval"))
    r = _vs_best(f, best, "PROMPT") if best else None
    return [r] if r else []


def classical_enough(f: Facts, decision: str, win) -> list[Reason]:
    best = f.best(c for c in f.options if c.family == "classical")
    r = _vs_best(f, best, "CLASSICAL") if best else None
    return [r] if r else []


def general_task(f: Facts, decision: str, win) -> list[Reason]:
    zs = next((c for c in f.options if c.strategy == "zero_shot"), None)
    ft = f.best(c for c in f.options if c.family == "finetune")
    if zs is None or ft is None:
        return []
    inside = f.score(zs).value >= f.score(ft).ci_low
    return [Reason(criterion="general_task", vote="PROMPT" if inside else "FINE_TUNE",
                   finding=f"zero-shot {fmt.iv(f.score(zs))} is {'within' if inside else 'below'} the "
                           f"fine-tuned interval of {_named(f, ft)}: the task "
                           f"{'needs no' if inside else 'gains from'} specialisation")]


def domain_knowledge(f: Facts, decision: str, win) -> list[Reason]:
    gap = f.results.profile.domain_gap if f.results.profile else None
    if isinstance(gap, dict):
        gap = gap.get("ratio", gap.get("perplexity_ratio"))
    if not isinstance(gap, (int, float)) or isinstance(gap, bool):
        return []
    unlike = gap >= DOMAIN_GAP
    return [Reason(criterion="domain_knowledge", vote="FINE_TUNE" if unlike else None,
                   finding=f"base-model perplexity on the task's inputs is {gap:.1f}x that on general text: the "
                           f"inputs are {'unlike' if unlike else 'close to'} general text")]


def multi_turn(f: Facts, decision: str, win) -> list[Reason]:
    share = f.results.profile.multi_turn_share if f.results.profile else None
    h = f.results.history
    if (not isinstance(share, (int, float)) or not share) and h is None:
        return []
    text = (f"{share:.0%} of records are multi-turn dialogues" if isinstance(share, (int, float)) and share
            else "the test split holds multi-turn dialogues") + ", scored on the last turn given the whole history"
    if h is not None:
        sig = "the history matters" if h.gap.ci_low > 0 else (
            "the history hurts" if h.gap.ci_high < 0 else "no significant difference")
        text += (f"; {h.candidate} on {h.records} of them: {fmt.iv(h.whole_history)} with the whole history, "
                 f"{fmt.iv(h.last_turn)} with the last user turn only (gap {fmt.iv(h.gap)}, {fmt.p(h.p_value)}: "
                 f"{sig})")
    return [Reason(criterion="multi_turn", finding=text)]


def enough_data(f: Facts, decision: str, win) -> list[Reason]:
    out = []
    curve = f.results.learning_curve
    pts = [p for p in curve.points if p.status == "ok"] if curve else []
    if curve and pts:
        text = (f"learning curve of {curve.candidate} over n = {fmt.count(pts[0].n)}..{fmt.count(pts[-1].n)}: "
                f"{pts[0].value:.2f} -> {pts[-1].value:.2f}")
        vote = None
        if curve.extrapolable:
            text += "".join(f"; at {p.factor:g}x data (n = {fmt.count(p.n)}) it projects {p.value:.2f} "
                            f"[{p.ci_low:.2f}, {p.ci_high:.2f}]" for p in curve.projections)
            if curve.ceiling is not None:
                text += f"; ceiling {fmt.iv(curve.ceiling)}"
            if curve.n_for_target is not None and curve.target_reachable:
                text += f"; the target needs about {fmt.count_iv(curve.n_for_target)} examples"
                vote = "COLLECT_MORE_DATA" if decision == "COLLECT_MORE_DATA" else None
            elif curve.target_reachable is False:
                text += "; the fit says the target is out of reach with more of this data"
        else:
            text += f"; not extrapolable: {curve.reason or 'too few points'}"
        out.append(Reason(criterion="enough_data", finding=text, vote=vote))
    prof = f.results.profile
    n, per_class = (prof.train_records, prof.examples_per_class_min) if prof else (None, None)
    if isinstance(n, int) and not (curve and pts):
        out.append(Reason(criterion="enough_data", finding=f"{fmt.count(n)} training records"))
    if isinstance(per_class, (int, float)):
        few = per_class < 20
        out.append(Reason(criterion="overfitting" if few else "enough_data", vote="COLLECT_MORE_DATA" if few else None,
                          finding=f"the rarest class has {per_class:g} training examples"
                                  f"{' (< 20): too few to learn it reliably' if few else ''}"))
    return out


def overfitting(f: Facts, decision: str, win) -> list[Reason]:
    out = []
    for o in f.results.overfitting:
        last = next((e for e in reversed(o.epochs) if e.val_loss is not None), None)
        if last is not None:
            text = (f"{o.candidate}: train loss {last.train_loss:.2f} vs. validation {last.val_loss:.2f} at "
                    f"epoch {last.epoch:g}")
        else:
            text = f"{o.candidate}: {len(o.epochs)} epoch(s) logged without validation loss"
        text += f": overfitting ({o.reason})" if o.flag else f": no sign of overfitting{_why(o.reason)}"
        out.append(Reason(criterion="overfitting", finding=text, vote="COLLECT_MORE_DATA" if o.flag else None))
    return out


def forgetting(f: Facts, decision: str, win) -> list[Reason]:
    fg = f.results.forgetting
    if fg is None:
        return []
    out = []
    for m in fg.models:
        d = m.delta
        effect = ("it loses general ability" if d.ci_high < 0 else "it gains general ability" if d.ci_low > 0
                  else "no significant change")
        out.append(Reason(criterion="forgetting",
                          finding=f"{m.candidate} on the general-ability probe ({fg.probe}, {fmt.count(fg.items)} "
                                  f"items): {fmt.iv(m.score)} vs. base {fmt.iv(fg.base_score)}, change "
                                  f"{d.value:+.2f} [{d.ci_low:+.2f}, {d.ci_high:+.2f}]: {effect}"))
    return out


def compute_budget(f: Facts, decision: str, win) -> list[Reason]:
    out = []
    for e in f.results.compute:
        text = (f"{e.candidate}: estimated {e.estimated_seconds / 3600:.2g} device hours ({e.flops:.1e} FLOPs at "
                f"{e.device_flops_per_s / 1e9:.0f} GFLOP/s)")
        if e.measured_seconds is not None:
            text += f", measured {e.measured_seconds / 3600:.2g} h"
        if e.budget_seconds is not None:
            text += (f", {'within' if e.within_budget else 'over'} the budget of "
                     f"{e.budget_seconds / 3600:.2g} h")
        out.append(Reason(criterion="compute_budget", finding=text))
    return out


def small_model_latency(f: Facts, decision: str, win) -> list[Reason]:
    timed = [c for c in f.options if f.p95(c) is not None]
    if not timed:
        return []

    def one(c):
        return f"{label(c)} {f.p95(c):.0f} ms ({fmt.params(c.params)})"

    if f.latency_ms_limit is None:
        shown = [win] if win is not None and f.p95(win) is not None else timed
        return [Reason(criterion="small_model_latency",
                       finding="p95 latency " + ", ".join(one(c) for c in shown) + "; no latency limit set")]
    over = [c for c in timed if f.too_slow(c)]
    text = (f"p95 latency limit {f.latency_ms_limit:g} ms: {len(timed) - len(over)} of {len(timed)} timed "
            "options within it")
    if win is not None and f.p95(win) is not None:
        text += f", including the winner, {one(win)}"
    if over:
        text += "; over it: " + ", ".join(one(c) for c in over)
    return [Reason(criterion="small_model_latency", finding=text,
                   vote="SMALL_MODEL" if decision == "SMALL_MODEL" else None)]


def realtime_updates(f: Facts, decision: str, win) -> list[Reason]:
    from tunewise.decide import ageing

    measured = ageing.figures(f)
    out = [Reason(criterion="realtime_updates",
                  finding="knowledge ageing measured on a time split: " + "; ".join(measured),
                  vote="RETRIEVAL" if decision == "RETRIEVAL" else None)] if measured else []
    return out + _declared_updates(f)


def _declared_updates(f: Facts) -> list[Reason]:
    ku = f.knowledge_update
    if ku in FREQUENT:
        rate = "in real time" if ku == "realtime" else ku
        text = (f"knowledge changes {rate} ({_UPDATES[ku]} a year): a fine-tuned model would go stale between "
                "retrainings; retrieval serves current data")
        return [Reason(criterion="realtime_updates", finding=text, vote="RETRIEVAL")]
    text = f"knowledge changes {ku} ({_UPDATES.get(ku, 'an unknown number of updates')} a year)"
    text += ": a trained model stays current" if ku in ("never", "yearly") else ": plan to retrain at that rate"
    return [Reason(criterion="realtime_updates", finding=text)]


def _why(reason: str) -> str:
    return f" ({reason})" if reason else ""


FINDERS: tuple[Finder, ...] = (majority_floor, accuracy_target, prompting_enough, classical_enough, general_task,
                               domain_knowledge, multi_turn, enough_data, overfitting, forgetting, compute_budget,
                               small_model_latency, realtime_updates)


def reasons(f: Facts, decision: str, win: CandidateResult | None) -> list[Reason]:
    """Every finding the run's evidence supports, in the order of the criteria table."""
    return [r for finder in FINDERS for r in finder(f, decision, win)]
