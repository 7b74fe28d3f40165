"""The measured verdict: what the bake-off on the team's data says to do. Pure: RunResults in, Verdict out.

The rules, tried in order; the first that applies decides:

1. Nothing measured: no option produced a score -> INSUFFICIENT_EVIDENCE.
2. Majority floor: an option "learned the task" only if it beats the majority class significantly: by a
   paired test against it when the run has one, else by the lower bound of its 95% interval lying above
   the majority-class score. Options that did not are never recommended. If none did, the summary says
   so and names the next step: RETRIEVAL when knowledge changes daily/realtime; INSUFFICIENT_EVIDENCE
   when the best is above the floor and a test set up to 10x larger would show it (saying how many
   records); COLLECT_MORE_DATA when the data is small or the learning curve is still rising; else
   INSUFFICIENT_EVIDENCE (try a larger model, check the labels).
3. Limits: options over the p95 latency limit or the compute budget are not recommended; if that
   leaves none -> INSUFFICIENT_EVIDENCE naming the limit.
4. Target (argument, else results.task.target): among options that reach it, the CHEAPEST (cost per
   1,000 requests, else p95 latency, prompt length, family) wins; options whose lower bound reaches the
   target are preferred, point estimates alone are accepted with a stated uncertainty.
5. Target out of reach, but the learning curve projects it reachable with more data -> COLLECT_MORE_DATA,
   citing the projected training size.
6. Best option by score. If it is fine-tuned, it must beat the best other option in the paired test
   (p < 0.05, diff > 0; without a test, by non-overlapping intervals) -> FINE_TUNE. If it does not, cost
   decides between it and the options the paired tests cannot tell from it, when all are priced: a
   cheaper prompted (e.g. API) model wins (PROMPT; training left out, it can only add to fine-tuning's
   cost), and the fine-tuned model wins when it is cheaper at the stated monthly volume, training
   amortised (FINE_TUNE / SMALL_MODEL); else INSUFFICIENT_EVIDENCE with the test size that would
   separate them. If it is not fine-tuned, the cheapest option the paired tests cannot tell from it wins.
7. Freshness: with a time split (records dated), the measured ageing decides (decide/ageing.py): a
   winner whose score drops significantly after the cut-off gives way to a retrieval option that scores
   at least as well after it -> RETRIEVAL, unless the knowledge is declared never to change. Without
   one, knowledge that changes daily/realtime turns any verdict into RETRIEVAL unless the winner won
   clearly (a significant paired test, or reaching the target with its lower bound); then the summary
   warns that it would go stale.

Verdict mapping: prompting -> PROMPT, retrieval -> RETRIEVAL, classical -> CLASSICAL, finetune ->
FINE_TUNE, or SMALL_MODEL when the model has < 500M parameters and a latency limit, on-premises hosting
or a narrow scope is stated.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from tunewise.decide import ageing, fmt
from tunewise.decide.facts import Facts, label
from tunewise.decide.reasons import reasons
from tunewise.decide.whatif import would_change
from tunewise.results import CandidateResult, RunResults, Verdict


@dataclass(frozen=True)
class Choice:
    """A rule's answer. `clear` marks a measured, significant win that survives the freshness rule."""

    decision: str
    candidate: CandidateResult | None
    summary: str
    clear: bool = False


def decide(results: RunResults, target: float | None = None, latency_ms_limit: float | None = None) -> Verdict:
    """The verdict for a run; `target` and `latency_ms_limit` default to the task's own settings."""
    f = Facts.build(results, target, latency_ms_limit)
    choice = _choose(f)
    summary = choice.summary + _failures(f)
    c = choice.candidate
    return Verdict(decision=choice.decision, candidate=c.name if c else None, model=c.model if c else None,
                   summary=summary, reasons=reasons(f, choice.decision, c),
                   constraints=_stated(f), would_change=would_change(f, choice.decision, c))


def _choose(f: Facts) -> Choice:
    for rule in (_nothing_measured, _none_learned, _nothing_fits, _reaches_target, _more_data, _best):
        choice = rule(f)
        if choice is not None:
            return _freshness(f, choice)
    raise AssertionError("unreachable: _best always answers")  # pragma: no cover


def _nothing_measured(f: Facts) -> Choice | None:
    if f.options:
        return None
    return Choice("INSUFFICIENT_EVIDENCE", None,
                  f"No option produced a {f.metric} score ({len(f.failed)} failed): nothing to compare yet; "
                  "fix the failures listed in the report and run again.")


def _none_learned(f: Facts) -> Choice | None:
    if f.majority is None or any(f.learned(c) for c in f.options):
        return None
    floor = f.score(f.majority).value
    best = f.best(f.options)
    head = (f"None of the options learned the task: none beats the majority-class score of {floor:.2f} "
            f"with the lower bound of its interval (best: {label(best)} {fmt.iv(f.score(best))}).")
    if f.frequent_updates:
        return Choice("RETRIEVAL", None, head + f" The knowledge changes {_rate(f)}: next, retrieve "
                      "live data into the prompt, and try a larger model.")
    need = _samples_needed(f.score(best).value, floor) if f.score(best).value > floor else None
    if need and f.test_size and f.test_size < need <= 10 * f.test_size:  # a realistic larger test set
        return Choice("INSUFFICIENT_EVIDENCE", None,
                      f"Not shown that any option learned the task: the best, {label(best)} "
                      f"{fmt.iv(f.score(best))}, is above the majority-class score of {floor:.2f}, but "
                      f"{fmt.count(f.test_size)} test records cannot separate them; about {fmt.count(need)} "
                      f"would. Next: {_more_test(f)}.")
    if _data_is_short(f):
        return Choice("COLLECT_MORE_DATA", None, head + " Next: collect more (or cleaner) labelled data"
                      f"{_size_note(f)}, then run again.")
    return Choice("INSUFFICIENT_EVIDENCE", None, head + " Next: try a larger model, or check the labels "
                  "(more or cleaner data).")


def _data_is_short(f: Facts) -> bool:
    """Too little data to expect learning: small training set, few examples per class, or a rising curve."""
    per_class = f.results.profile.examples_per_class_min if f.results.profile else None
    curve = f.results.learning_curve
    pts = [p for p in curve.points if p.status == "ok"] if curve else []
    rising = len(pts) >= 2 and pts[-1].ci_low > pts[0].value
    return (f.train_size is not None and f.train_size < 200) or (
        isinstance(per_class, (int, float)) and per_class < 20) or rising


def _size_note(f: Facts) -> str:
    return f" (the run trained on {fmt.count(f.train_size)} examples)" if f.train_size else ""


def _nothing_fits(f: Facts) -> Choice | None:
    if f.eligible:
        return None
    limits = []
    if any(f.too_slow(c) for c in f.options):
        limits.append(f"the p95 latency limit of {f.latency_ms_limit:g} ms")
    if any(f.over_budget(c) for c in f.options):
        limits.append("the compute budget")
    best = f.best(c for c in f.options if f.learned(c))
    return Choice("INSUFFICIENT_EVIDENCE", None,
                  f"Every option that learned the task breaks {' and '.join(limits)} (best: {label(best)} "
                  f"{fmt.iv(f.score(best))}); try a smaller model or relax the limit.")


def _reaches_target(f: Facts) -> Choice | None:
    if f.target is None:
        return None
    sure = [c for c in f.eligible if f.score(c).ci_low >= f.target]
    maybe = [c for c in f.eligible if f.score(c).value >= f.target and c not in sure]
    if not (sure or maybe):
        return None
    win = min(sure or maybe, key=f.cost_key)
    cost = f.cost(win)
    priced = f" at {fmt.dollars(cost)} per 1,000 requests" if cost is not None else ""
    summary = (f"{_verb(f, win)}: {label(win)} {fmt.iv(f.score(win))} is the cheapest option that reaches "
               f"the target of {f.target:.2f}{priced}.")
    if not sure:
        summary += (f" Only its point estimate reaches it, not its lower bound {f.score(win).ci_low:.2f}: "
                    "treat it as uncertain and confirm on more test examples.")
    return Choice(f.decision_for(win), win, summary, clear=bool(sure))


def _more_data(f: Facts) -> Choice | None:
    curve = f.results.learning_curve
    if f.target is None or curve is None or not curve.target_reachable or curve.n_for_target is None:
        return None
    need, have = curve.n_for_target, f.train_size
    if have and need.value <= have:
        return None
    times = f", about {need.value / have:.0f}x the {fmt.count(have)} used" if have else ""
    cand = next((c for c in f.options if c.name == curve.candidate), None)
    return Choice("COLLECT_MORE_DATA", cand,
                  f"No option reaches the target of {f.target:.2f} yet; the learning curve of {curve.candidate} "
                  f"projects it at about {fmt.count_iv(need)} training examples{times}: collect more labelled "
                  "data.")


def _best(f: Facts) -> Choice:
    best = f.best(f.eligible)
    short = (f"No option reaches the target of {f.target:.2f} (best lower bound "
             f"{max(f.score(c).ci_low for c in f.eligible):.2f}). " if f.target is not None else "")
    if best.family == "finetune":
        return _finetune_vs_rest(f, best, short)
    ties = [c for c in f.eligible if c is not best and c.family != "finetune"
            and (t := f.paired(best, c)) is not None and not t.significant]
    win = min([best, *ties], key=f.cost_key)
    if win is best:
        text = f"{label(best)} {fmt.iv(f.score(best))} scores best."
    else:
        text = (f"{label(win)} {fmt.iv(f.score(win))} is the cheapest option the paired tests cannot tell "
                f"from the best, {label(best)} {fmt.iv(f.score(best))} ({fmt.p(f.paired(best, win).p_value, f.paired(best, win).alpha)}).")
    retrieval = [c for c in f.options if c.family == "retrieval" and c is not win]
    clear = bool(retrieval) and all(f.beats(win, r) for r in retrieval)
    return Choice(f.decision_for(win), win, f"{short}{_verb(f, win)}: {text}", clear=clear)


def _finetune_vs_rest(f: Facts, best: CandidateResult, short: str) -> Choice:
    rival = f.best(c for c in f.options if c.family != "finetune")
    if rival is None:
        return Choice(f.decision_for(best), best, f"{short}{_verb(f, best)}: {label(best)} "
                      f"{fmt.iv(f.score(best))} is the only kind of option measured; add a prompting "
                      "baseline to confirm it is needed.")
    test = f.paired(best, rival)
    versus = (f"{label(best)} {fmt.iv(f.score(best))} vs. best {rival.family} option {label(rival)} "
              f"{fmt.iv(f.score(rival))}")
    if f.beats(best, rival):
        evidence = f"paired {fmt.p(test.p_value, test.alpha)}" if test else "intervals do not overlap"
        return Choice(f.decision_for(best), best,
                      f"{short}{_verb(f, best)}: {versus}, {evidence}.{_curve_note(f)}", clear=True)
    by_cost = _cheaper_of_ties(f, best, short)
    if by_cost is not None:
        return by_cost
    need = _samples_needed(f.score(best).value, f.score(rival).value)
    have = f" (the test set has {fmt.count(f.test_size)})" if f.test_size else ""
    p_txt = f"paired {fmt.p(test.p_value, test.alpha)}" if test else "overlapping intervals"
    more = (f"about {fmt.count(need)} test examples would be needed to separate them{have}; next: {_more_test(f)}"
            if need else "no realistic test set would separate them")
    return Choice("INSUFFICIENT_EVIDENCE", best,
                  f"{short}Not shown that fine-tuning helps: {versus}, {p_txt}; {more}.")


def _cheaper_of_ties(f: Facts, best: CandidateResult, short: str) -> Choice | None:
    """A fine-tuned best that the paired tests cannot tell from other options: the cheaper side wins when
    every one is priced. The fine-tuned model must be cheaper at the stated volume (its training spread
    over a year of it); an option cheaper than it without training is cheaper at any volume."""
    ties = [c for c in f.eligible if c.family != "finetune"
            and (t := f.paired(best, c)) is not None and not t.significant]
    if not ties or f.cost(best) is None or any(f.cost(c) is None for c in ties):
        return None
    cheapest = min(ties, key=f.cost_key)
    test = f.paired(best, cheapest)
    same = (f"{label(cheapest)} {fmt.iv(f.score(cheapest))} cannot be told from {label(best)} "
            f"{fmt.iv(f.score(best))} (paired {fmt.p(test.p_value, test.alpha)})")
    volume = f" at {fmt.count(f.monthly_requests)} requests a month" if f.monthly_requests else ""
    if f.cost(cheapest) < f.cost(best):
        return Choice(f.decision_for(cheapest), cheapest,
                      f"{short}{_verb(f, cheapest)}: {same}, and costs {fmt.cost_ratio(f.cost(cheapest), f.cost(best))}"
                      f"{volume}.")
    if f.monthly_requests and f.cost(best) < f.cost(cheapest):
        return Choice(f.decision_for(best), best,
                      f"{short}{_verb(f, best)}: {same} on quality, and costs "
                      f"{fmt.cost_ratio(f.cost(best), f.cost(cheapest))}{volume}, training included.")
    return None


def _more_test(f: Facts) -> str:
    """Where more test evidence comes from: the rest of the split when a cap stopped scoring, else new data."""
    scoring, total = f.results.test_scoring, f.results.split.test
    if scoring is not None and scoring.stop.startswith("time cap") and f.test_size and total and f.test_size < total:
        return (f"a larger budget (the time cap stopped scoring at {fmt.count(f.test_size)} of the "
                f"{fmt.count(total)} test records)")
    if total and f.test_size and f.test_size < total:
        return f"score more of the {fmt.count(total)} test records (a larger budget)"
    return "more labelled test data (every test record was scored)"


def _samples_needed(p_a: float, p_b: float) -> int | None:
    """Test examples to separate two scores; None when the stats module is not available or says never."""
    try:
        from tunewise.evaluate.stats import samples_to_separate
    except ImportError:
        return None
    try:
        return samples_to_separate(p_a, p_b)
    except ValueError:  # a metric outside [0, 1]: no proportion test applies
        return None


def _curve_note(f: Facts) -> str:
    curve = f.results.learning_curve
    if curve is None:
        return ""
    if not curve.extrapolable:
        return f" Learning curve not extrapolable: {curve.reason or 'too few points'}."
    proj = min(curve.projections, key=lambda p: abs(p.factor - 2), default=None)
    if proj is None:
        return ""
    return (f" With about {proj.factor:g}x the data the curve projects "
            f"{proj.value:.2f} [{proj.ci_low:.2f}, {proj.ci_high:.2f}].")


def _verb(f: Facts, c: CandidateResult) -> str:
    return {"PROMPT": "Prompt", "RETRIEVAL": "Retrieve", "CLASSICAL": "Use a classical model",
            "FINE_TUNE": "Fine-tune", "SMALL_MODEL": "Fine-tune a small model"}[f.decision_for(c)]


def _freshness(f: Facts, choice: Choice) -> Choice:
    measured = ageing.decide_on_ageing(f, choice.decision, choice.candidate, choice.summary)
    if measured is not None:  # a time split measured the winner: its ageing decides, not the declared rate
        return replace(choice, decision=measured[0], candidate=measured[1], summary=measured[2])
    if not f.frequent_updates:
        return choice
    if choice.decision == "RETRIEVAL":
        return replace(choice, summary=choice.summary + f" Knowledge changes {_rate(f)}: retrieval keeps answers "
                       "current where a fine-tuned model would go stale.")
    if choice.clear:
        return replace(choice, summary=choice.summary + f" Knowledge changes {_rate(f)}: it would "
                       "go stale; retrain it on fresh data or retrieve live data into its prompt.")
    retr = f.best(c for c in f.eligible if c.family == "retrieval")
    measured = f" Best retrieval option measured: {label(retr)} {fmt.iv(f.score(retr))}." if retr else ""
    return Choice("RETRIEVAL", retr,
                  f"Retrieve: knowledge changes {_rate(f)} (about 365 or more updates a year), so a "
                  f"fine-tuned model would go stale between retrainings; serve live data by retrieval. "
                  f"Without that, the measured answer was {choice.decision}: {choice.summary}{measured}")


def _rate(f: Facts) -> str:
    return "in real time" if f.knowledge_update == "realtime" else f.knowledge_update


def _failures(f: Facts) -> str:
    if not f.failed:
        return ""
    return f" ({len(f.failed)} option(s) failed and are not compared: {', '.join(c.name for c in f.failed)}.)"


def _stated(f: Facts) -> list[str]:
    """The limits this verdict respected, as stated by the task."""
    cons = f.results.task.constraints
    out = []
    if f.target is not None:
        out.append(f"target {f.metric} >= {f.target:g}")
    if f.latency_ms_limit is not None:
        out.append(f"p95 latency <= {f.latency_ms_limit:g} ms")
    if cons.compute_budget_hours is not None:
        out.append(f"compute budget {cons.compute_budget_hours:g} device hours")
    if f.knowledge_update != "never":
        out.append(f"knowledge updates {_rate(f)}")
    if f.on_premises:
        out.append("runs on premises")
    if f.monthly_requests:
        out.append(f"{fmt.count(f.monthly_requests)} requests a month")
    return out
