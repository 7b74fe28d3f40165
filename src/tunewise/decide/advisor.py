"""The no-data advisor: a verdict from a short questionnaire, before any data is measured.

Why a vote table: each answer triggers rules (one criterion each) that vote for a verdict with a
weight; the verdict with the most weight wins, ties go to the cheaper option. The table reads like
the criteria, and `would_change` is found by re-running it on altered answers, not by hand-written
guesses. Weights: stale knowledge (daily/realtime) outweighs everything (10), prompting that already
meets the target is next (5), then "general task" (3), then the need-for-specialisation signals (2 each),
which vote FINE_TUNE with >= 200 labelled examples and COLLECT_MORE_DATA below. SMALL_MODEL votes count
with FINE_TUNE; when that side wins and any SMALL_MODEL rule fired, the verdict is SMALL_MODEL.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tunewise.errors import ConfigError
from tunewise.results import Reason, Verdict

UpdateFrequency = Literal["never", "yearly", "monthly", "weekly", "daily", "realtime"]
FREQUENT = ("daily", "realtime")
FEW_EXAMPLES = 200  # below this, fine-tuning is likely to overfit
ENOUGH_EXAMPLES = 1000  # from here, fine-tuning is well supplied
FAST_MS = 200  # p95 limits below this favour small models
SMALL_BUDGET_GPU_H = 1.0
UPDATES_PER_YEAR = {"never": "0 updates", "yearly": "about 1 update", "monthly": "about 12 updates",
                    "weekly": "about 52 updates", "daily": "about 365 updates",
                    "realtime": "more than 365 updates"}
_CHEAPEST_FIRST = ("PROMPT", "RETRIEVAL", "CLASSICAL", "COLLECT_MORE_DATA", "SMALL_MODEL", "FINE_TUNE",
                   "INSUFFICIENT_EVIDENCE")


class Answers(BaseModel):
    """What the team knows about the task before measuring anything."""

    model_config = ConfigDict(extra="forbid")

    domain_knowledge: bool = Field(description="does the task need industry-specific knowledge "
                                               "(legal, medical, in-house jargon)?")
    error_cost: Literal["low", "medium", "high"] = Field(description="how costly is a wrong answer?")
    multi_turn: bool = Field(False, description="must the model keep context over a multi-turn dialogue?")
    labelled_examples: int = Field(ge=0, description="how many labelled input/output examples exist?")
    task_general: bool = Field(description="is it a general task a capable model already does "
                                           "(summarise, answer FAQs, classify sentiment)?")
    compute_budget_gpu_hours: float | None = Field(None, ge=0, description="GPU hours available for "
                                                   "training (empty: no stated budget)")
    prompting_score: float | None = Field(None, ge=0, le=1, description="what prompting achieved, 0-1 "
                                          "(empty: not tried)")
    target_score: float | None = Field(None, ge=0, le=1, description="the score the task needs, 0-1 "
                                       "(empty: no target)")
    knowledge_update: UpdateFrequency = Field("never", description="how often the task's knowledge changes")
    latency_ms_limit: float | None = Field(None, gt=0, description="p95 latency limit per request, ms "
                                           "(empty: none)")
    on_premises: bool = Field(False, description="must the model run on your own hardware?")
    narrow_scope: bool = Field(False, description="is the task narrow (one kind of input, a fixed set of "
                                                  "outputs)?")
    description: str = Field("", description="a sentence describing the task, for the report")


@dataclass(frozen=True)
class Question:
    """One interactive prompt: the text, the Python type to read, and the default offered."""

    text: str
    type: type
    default: Any = None
    choices: tuple[str, ...] | None = None


QUESTIONS: dict[str, Question] = {
    "description": Question("Describe the task in a sentence", str, ""),
    "domain_knowledge": Question("Does the task need industry-specific knowledge (legal, medical, "
                                 "in-house jargon)?", bool, False),
    "error_cost": Question("How costly is a wrong answer?", str, "medium", ("low", "medium", "high")),
    "multi_turn": Question("Must the model keep context over a multi-turn dialogue?", bool, False),
    "labelled_examples": Question("How many labelled examples (input with the right output) do you have?",
                                  int, 0),
    "task_general": Question("Is it a general task a capable model already does (summarise, answer FAQs, "
                             "classify sentiment)?", bool, False),
    "compute_budget_gpu_hours": Question("GPU hours available for training (empty: no stated budget)",
                                         float, None),
    "prompting_score": Question("If you tried prompting, what score did it reach, 0-1 (empty: not tried)",
                                float, None),
    "target_score": Question("What score does the task need, 0-1 (empty: no target)", float, None),
    "knowledge_update": Question("How often does the knowledge the task needs change?", str, "never",
                                 ("never", "yearly", "monthly", "weekly", "daily", "realtime")),
    "latency_ms_limit": Question("p95 latency limit per request in ms (empty: none)", float, None),
    "on_premises": Question("Must the model run on your own hardware?", bool, False),
    "narrow_scope": Question("Is the task narrow (one kind of input, a fixed set of outputs)?", bool, False),
}


def ask(prompt_fn: Callable[[str, str, Any, type], Any]) -> Answers:
    """Ask every question through `prompt_fn(field, question, default, type)` and validate the answers.

    The caller owns the I/O (rich/typer prompts, tests); an empty answer to an optional question means None.
    """
    raw: dict[str, Any] = {}
    for field, q in QUESTIONS.items():
        text = f"{q.text} ({'/'.join(q.choices)})" if q.choices else q.text
        value = prompt_fn(field, text, q.default, q.type)
        raw[field] = None if value == "" and q.default is None else value
    return _validate(raw, "answers")


def load_answers(path: str | Path) -> Answers:
    """Read answers from a YAML or JSON file; errors name the file and the key at fault."""
    from tunewise.config import read_mapping

    return _validate(read_mapping(path, "answers file", "--answers"), f"answers file {path}")


def _validate(raw: dict, where: str) -> Answers:
    try:
        return Answers.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(x) for x in err["loc"]) or "(answers)"
        fix = (f"known keys: {', '.join(Answers.model_fields)}" if err["type"] == "extra_forbidden"
               else Answers.model_fields[key].description if key in Answers.model_fields else None)
        raise ConfigError(f"{where}: key '{key}': {err['msg']}", fix=fix) from exc


# ---- the vote table -------------------------------------------------------------------------------

def _rate(update: str) -> str:
    return "in real time" if update == "realtime" else update


def _needs_specialising(a: Answers) -> bool:
    return a.domain_knowledge or a.error_cost == "high" or not a.task_general


def _specialise(a: Answers) -> str:
    """Where a need for specialisation points: fine-tuning if there is data to learn from."""
    return "FINE_TUNE" if a.labelled_examples >= FEW_EXAMPLES else "COLLECT_MORE_DATA"


def _prompting_meets(a: Answers) -> bool:
    return a.prompting_score is not None and a.target_score is not None and a.prompting_score >= a.target_score


def _prompting_short(a: Answers) -> bool:
    return a.prompting_score is not None and a.target_score is not None and a.prompting_score < a.target_score


def _fast_or_local(a: Answers) -> bool:
    return (a.latency_ms_limit is not None and a.latency_ms_limit < FAST_MS) or a.on_premises


def _always(vote: str | None) -> Callable[[Answers], str | None]:
    return lambda a: vote


@dataclass(frozen=True)
class Rule:
    """If `when` holds, `vote` gets `weight`, and `finding` explains it citing the answer."""

    criterion: str
    when: Callable[[Answers], bool]
    vote: Callable[[Answers], str | None]
    weight: int
    finding: Callable[[Answers], str]


RULES: tuple[Rule, ...] = (
    Rule("realtime_updates", lambda a: a.knowledge_update in FREQUENT, _always("RETRIEVAL"), 10,
         lambda a: f"knowledge changes {_rate(a.knowledge_update)} ({UPDATES_PER_YEAR[a.knowledge_update]} a year): "
                   "a fine-tuned model would go stale between retrainings; retrieval serves current data"),
    Rule("realtime_updates", lambda a: a.knowledge_update == "weekly", _always("RETRIEVAL"), 2,
         lambda a: "knowledge changes weekly (about 52 updates a year): retraining that often is costly; "
                   "retrieval keeps answers current"),
    Rule("prompting_enough", _prompting_meets, _always("PROMPT"), 5,
         lambda a: f"prompting already scored {a.prompting_score:.2f}, at or above the target "
                   f"{a.target_score:.2f}"),
    Rule("prompting_enough", _prompting_short, _specialise, 1,
         lambda a: f"prompting scored {a.prompting_score:.2f}, {a.target_score - a.prompting_score:.2f} "
                   f"below the target {a.target_score:.2f}"),
    Rule("general_task", lambda a: a.task_general and not a.domain_knowledge, _always("PROMPT"), 3,
         lambda a: "the task is general and needs no industry-specific knowledge: a capable base model "
                   "already does it"),
    Rule("general_task", lambda a: not a.task_general, _specialise, 1,
         lambda a: f"the task is specialised, not one a base model already does "
                   f"({a.labelled_examples:,} labelled examples to teach it)"),
    Rule("domain_knowledge", lambda a: a.domain_knowledge, _specialise, 2,
         lambda a: "the task needs industry-specific knowledge a base model may lack"),
    Rule("accuracy_target", lambda a: a.error_cost == "high", _specialise, 2,
         lambda a: "errors are costly (error_cost: high)"
                   + (f"; target {a.target_score:.2f}" if a.target_score is not None else "")),
    Rule("accuracy_target", lambda a: a.error_cost == "low", _always("PROMPT"), 1,
         lambda a: "errors are cheap (error_cost: low): a good-enough prompt is acceptable"),
    Rule("enough_data", lambda a: a.labelled_examples >= ENOUGH_EXAMPLES, _always("FINE_TUNE"), 2,
         lambda a: f"{a.labelled_examples:,} labelled examples: enough to fine-tune "
                   f"(>= {ENOUGH_EXAMPLES:,})"),
    Rule("enough_data", lambda a: FEW_EXAMPLES <= a.labelled_examples < ENOUGH_EXAMPLES,
         _always("FINE_TUNE"), 1,
         lambda a: f"{a.labelled_examples:,} labelled examples: enough for LoRA, perhaps not for full "
                   "fine-tuning; the learning curve will tell"),
    Rule("overfitting", lambda a: a.labelled_examples < FEW_EXAMPLES,
         lambda a: "COLLECT_MORE_DATA" if _needs_specialising(a) else "PROMPT", 2,
         lambda a: f"only {a.labelled_examples:,} labelled examples (< {FEW_EXAMPLES}): a fine-tuned model "
                   "would likely overfit"),
    Rule("multi_turn", lambda a: a.multi_turn, _specialise, 1,
         lambda a: "the task is multi-turn dialogue: training on whole conversations helps keep context "
                   "over turns"),
    Rule("small_model_latency", lambda a: a.narrow_scope and _fast_or_local(a), _always("SMALL_MODEL"), 2,
         lambda a: "narrow scope with "
                   + (f"a p95 limit of {a.latency_ms_limit:g} ms" if a.latency_ms_limit else "")
                   + (" and " if a.latency_ms_limit and a.on_premises else "")
                   + ("on-premises hosting" if a.on_premises else "")
                   + ": a small fine-tuned model fits"),
    Rule("small_model_latency",
         lambda a: not a.narrow_scope and a.latency_ms_limit is not None and a.latency_ms_limit < FAST_MS,
         _always(None), 0,
         lambda a: f"a p95 limit of {a.latency_ms_limit:g} ms rules out large models; the scope is broad, "
                   "so a small model may not cover it"),
    Rule("compute_budget",
         lambda a: a.compute_budget_gpu_hours is not None and a.compute_budget_gpu_hours < SMALL_BUDGET_GPU_H
         and a.labelled_examples >= ENOUGH_EXAMPLES, _always("SMALL_MODEL"), 1,
         lambda a: f"a budget of {a.compute_budget_gpu_hours:g} GPU hours is small for "
                   f"{a.labelled_examples:,} examples: use LoRA on a small model"),
    Rule("compute_budget",
         lambda a: a.compute_budget_gpu_hours is not None and (a.compute_budget_gpu_hours >= SMALL_BUDGET_GPU_H
                                                               or a.labelled_examples < ENOUGH_EXAMPLES),
         _always(None), 0,
         lambda a: f"a budget of {a.compute_budget_gpu_hours:g} GPU hours; `tunewise run` estimates the "
                   "training compute before training"),
    Rule("forgetting", lambda a: not a.narrow_scope and _specialise(a) == "FINE_TUNE", _always("PROMPT"), 1,
         lambda a: "the scope is broad: fine-tuning can erode general ability the task still needs"),
    Rule("classical_enough", lambda a: a.labelled_examples >= ENOUGH_EXAMPLES and not a.multi_turn,
         _always(None), 0,
         lambda a: f"with {a.labelled_examples:,} labelled examples a classical classifier (TF-IDF + "
                   "logistic regression) is a cheap baseline to beat"),
)


def _tally(a: Answers) -> tuple[str, Counter, list[Rule]]:
    """Run the table: the winning verdict, the vote weights, and the rules that fired."""
    fired = [r for r in RULES if r.when(a)]
    votes: Counter = Counter()
    for r in fired:
        vote = r.vote(a)
        if vote and r.weight:
            votes[vote] += r.weight
    sides = Counter({k: v for k, v in votes.items() if k not in ("FINE_TUNE", "SMALL_MODEL")})
    if votes["FINE_TUNE"] + votes["SMALL_MODEL"]:
        sides["FINE_TUNE"] = votes["FINE_TUNE"] + votes["SMALL_MODEL"]
    if not sides:
        return "PROMPT", votes, fired
    decision = max(sides, key=lambda d: (sides[d], -_CHEAPEST_FIRST.index(d)))
    if decision == "FINE_TUNE" and votes["SMALL_MODEL"]:
        decision = "SMALL_MODEL"
    return decision, votes, fired


_SUMMARY = {
    "PROMPT": "Prompt: use a capable model as-is or with a few examples in the prompt; "
              "nothing in your answers calls for training.",
    "RETRIEVAL": "Retrieve: the knowledge changes {update}, so serve it live by retrieval (RAG) instead of "
                 "training it into a model that would go stale.",
    "FINE_TUNE": "Fine-tune: {n} labelled examples and a need for specialisation favour fine-tuning "
                 "(LoRA first; full fine-tuning only if the learning curve says LoRA saturates).",
    "SMALL_MODEL": "Fine-tune a small model: a narrow task under tight latency, hosting or compute limits "
                   "favours LoRA on a small model (100M-1B parameters), trained on your {n} examples.",
    "COLLECT_MORE_DATA": "Collect more data: the task needs specialisation but {n} labelled examples are "
                         "too few to fine-tune (aim for {enough}+); prompt in the meantime.",
}

_MEASURES = {
    "PROMPT": ["zero-shot, few-shot and retrieved few-shot against majority-class and TF-IDF baselines, "
               "with 95% intervals on one frozen test split"],
    "RETRIEVAL": ["retrieved few-shot vs. static prompting, and a time-split evaluation when records "
                  "carry dates"],
    "FINE_TUNE": ["learning curve over 1/8..1 of your data, projected to 2x/4x data",
                  "paired test LoRA vs. few-shot on the same test items",
                  "general-ability probe before and after fine-tuning",
                  "compute estimate against your budget before training"],
    "SMALL_MODEL": ["p50/p95 latency of each candidate against your limit",
                    "paired test LoRA on a small model vs. few-shot",
                    "learning curve over 1/8..1 of your data"],
    "COLLECT_MORE_DATA": ["learning curve over 1/8..1 of your data, projected to the size your target needs",
                          "train-vs-validation loss gap (overfitting)"],
}


def _constraints(a: Answers, decision: str) -> list[str]:
    lines = [f"tunewise run measures: {m}" for m in _MEASURES.get(decision, _MEASURES["PROMPT"])]
    stated = []
    if a.target_score is not None:
        stated.append(f"target score {a.target_score:g}")
    if a.latency_ms_limit is not None:
        stated.append(f"p95 latency <= {a.latency_ms_limit:g} ms")
    if a.compute_budget_gpu_hours is not None:
        stated.append(f"compute budget {a.compute_budget_gpu_hours:g} GPU hours")
    if a.on_premises:
        stated.append("runs on premises")
    if a.knowledge_update != "never":
        stated.append(f"knowledge updates {_rate(a.knowledge_update)}")
    return lines + [f"stated: {text}" for text in stated]


def _what_ifs(a: Answers) -> list[tuple[str, dict]]:
    """Plausible changes to the answers, each with the words that describe it."""
    t = a.target_score
    changes = [
        ("if the knowledge changed monthly or less", {"knowledge_update": "monthly"})
        if a.knowledge_update in FREQUENT else
        ("if the knowledge had to be current daily", {"knowledge_update": "daily"}),
        (f"with {ENOUGH_EXAMPLES:,} labelled examples", {"labelled_examples": ENOUGH_EXAMPLES})
        if a.labelled_examples < ENOUGH_EXAMPLES else
        (f"with fewer than {FEW_EXAMPLES} labelled examples", {"labelled_examples": FEW_EXAMPLES // 2}),
        ("if the task did not need industry-specific knowledge" if a.domain_knowledge
         else "if the task needed industry-specific knowledge", {"domain_knowledge": not a.domain_knowledge}),
        ("if errors were cheap" if a.error_cost == "high" else "if errors were costly",
         {"error_cost": "low" if a.error_cost == "high" else "high"}),
        ("with a p95 latency limit of 100 ms" + ("" if a.narrow_scope else " and a narrow scope"),
         {"narrow_scope": True, "latency_ms_limit": 100.0}),
    ]
    if t is not None and (a.prompting_score is None or a.prompting_score < t):
        changes.append((f"if prompting reached the target of {t:.2f}", {"prompting_score": t}))
    if t is not None and a.prompting_score is not None and a.prompting_score >= t:
        changes.append((f"with a target above {a.prompting_score:.2f} (what prompting reached)",
                        {"target_score": min(1.0, a.prompting_score + 0.05)}))
    return changes


def advise(a: Answers) -> Verdict:
    """A verdict from answers alone: the vote table's winner, its reasons, and what would flip it."""
    decision, votes, fired = _tally(a)
    reasons = [Reason(criterion=r.criterion, finding=r.finding(a), vote=r.vote(a) if r.weight else None)
               for r in fired]
    tally = ", ".join(f"{k} {v}" for k, v in sorted(votes.items(), key=lambda kv: (-kv[1], kv[0])))
    summary = _SUMMARY[decision].format(update=_rate(a.knowledge_update), n=f"{a.labelled_examples:,}",
                                        enough=f"{ENOUGH_EXAMPLES:,}")
    summary += f" Votes: {tally}. Advice from your answers; `tunewise run` measures it on your data."
    would_change = []
    for words, update in _what_ifs(a):
        other, _, _ = _tally(a.model_copy(update=update))
        if other != decision:
            would_change.append(f"{words}, the advice would be {other}")
    return Verdict(decision=decision, summary=summary, reasons=reasons,
                   constraints=_constraints(a, decision), would_change=would_change)
