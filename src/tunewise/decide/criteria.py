"""The criteria of "fine-tune or not" as data, so the advisor, the verdict and the report share one list.

Each row of DESIGN.md's criteria table is one `Criterion`; two more (classical_enough, majority_floor)
cover the baselines every measured verdict is checked against. A `Reason` names its criterion by `id`.
"""

from __future__ import annotations

from dataclasses import dataclass

DECISIONS = ("PROMPT", "RETRIEVAL", "FINE_TUNE", "SMALL_MODEL", "CLASSICAL",
             "COLLECT_MORE_DATA", "INSUFFICIENT_EVIDENCE")


@dataclass(frozen=True)
class Criterion:
    """One question behind the verdict, how tunewise answers it, and which verdicts it can support."""

    id: str
    question: str
    measured_by: str
    votes: tuple[str, ...]


CRITERIA: tuple[Criterion, ...] = (
    Criterion("domain_knowledge", "Does the task need industry-specific knowledge?",
              "domain gap: base-model perplexity on the task's inputs vs. on general text; "
              "zero-shot quality vs. fine-tuned quality", ("FINE_TUNE", "PROMPT")),
    Criterion("accuracy_target", "Is high accuracy required?",
              "the user's target metric; which options reach it with the lower bound of a 95% interval",
              ("PROMPT", "RETRIEVAL", "CLASSICAL", "FINE_TUNE", "SMALL_MODEL")),
    Criterion("multi_turn", "Must the model keep context over a multi-turn dialogue?",
              "multi-turn data detected; scored on the last turn given the whole history", ("FINE_TUNE",)),
    Criterion("enough_data", "Is there enough domain data to learn from?",
              "learning curve over data fractions, fitted A*n^-b + E, projected to 2x/4x data and to the target",
              ("FINE_TUNE", "COLLECT_MORE_DATA")),
    Criterion("overfitting", "Is there too little data, so a fine-tuned model would overfit?",
              "train-vs-validation loss gap; flat or noisy curve; examples per class below thresholds",
              ("COLLECT_MORE_DATA", "PROMPT")),
    Criterion("general_task", "Is the task general, needing no specialisation?",
              "zero-/few-shot already within the interval of the fine-tuned result or above the target",
              ("PROMPT",)),
    Criterion("compute_budget", "Is compute limited?",
              "compute estimated before training (FLOPs from parameters x tokens x epochs, time from a measured "
              "device rate) against the user's budget", ("SMALL_MODEL", "PROMPT")),
    Criterion("prompting_enough", "Is prompt engineering enough?",
              "few-shot (static and retrieved examples) reaches the target", ("PROMPT",)),
    Criterion("realtime_updates", "Does the knowledge change faster than a model can be retrained?",
              "declared update frequency; time-split evaluation where records carry dates; "
              "retrieval instead of retraining", ("RETRIEVAL",)),
    Criterion("small_model_latency", "Would a small model do: narrow scope, little data, real-time latency?",
              "small-model candidates; measured p50/p95 latency against the user's latency limit",
              ("SMALL_MODEL",)),
    Criterion("forgetting", "Would fine-tuning lose general ability the task still needs?",
              "general-ability probe before and after fine-tuning, delta with interval", ("PROMPT",)),
    Criterion("classical_enough", "Is a non-LLM baseline already enough?",
              "TF-IDF + logistic regression scored like every other option", ("CLASSICAL",)),
    Criterion("majority_floor", "Did the option learn the task at all?",
              "each option's interval against the majority-class score; below it, the option did not learn",
              ("COLLECT_MORE_DATA", "INSUFFICIENT_EVIDENCE", "RETRIEVAL")),
)

_BY_ID = {c.id: c for c in CRITERIA}


def get(criterion_id: str) -> Criterion:
    """Look a criterion up by id; an unknown id fails with the list of known ones."""
    try:
        return _BY_ID[criterion_id]
    except KeyError:
        raise KeyError(f"unknown criterion '{criterion_id}'; known: {', '.join(_BY_ID)}") from None
