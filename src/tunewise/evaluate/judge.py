"""An optional judge model (task file `judge:`, or --judge): grades each generated answer against the
reference, through any backend the candidates use (a local model, or a served one over HTTP).

The judge is asked with one fixed prompt (JUDGE_SYSTEM and JUDGE_PROMPT, shown in the report) and its
grade is the grade it scores highest among GRADES, by the best method its backend offers (label
likelihood, chat answer log-probabilities, or a short greedy answer matched to a grade), never parsed
from free text. A candidate's judge score is its mean grade with a bootstrap interval over the records
it was scored on. The verdict keeps the task's metric: the judge's scores are evidence beside it.
"""

from __future__ import annotations

import time
from collections import Counter

from tunewise.data.records import Record
from tunewise.evaluate.stats import mean_ci
from tunewise.results import CandidateResult, Interval, JudgeResult, JudgeScore

GRADES = {"correct": 1.0, "partial": 0.5, "incorrect": 0.0}
UNGRADED = "ungraded"  # generate-and-match: the judge's answer named no grade (scored 0, counted)
JUDGE_SYSTEM = ("You grade answers. Compare the answer to grade with the reference answer and reply with one "
                "word: correct, partial or incorrect.")
JUDGE_PROMPT = ("Question:\n{question}\n\nReference answer:\n{reference}\n\nAnswer to grade:\n{answer}\n\n"
                "Is the answer to grade correct, partial or incorrect?")


def check_judge(task) -> None:
    """Fail early (one line, exit 2) on a judge model that cannot be resolved or lacks its key."""
    from tunewise.errors import ConfigError
    from tunewise.models.endpoint import check_prompt_models

    if task.judge is None:
        return
    try:
        check_prompt_models([task.judge], task.models)
    except ConfigError as exc:
        what = str(exc).split(" (fix: ")[0].replace("--prompt-model ", "")
        raise ConfigError(f"judge (--judge or the task file's judge:): {what}", fix=exc.fix) from None


def judge_turns(question: str, reference: str, answer: str) -> list[tuple[str, str]]:
    return [("user", JUDGE_PROMPT.format(question=question, reference=reference, answer=answer))]


def judge_method(pool, model: str) -> str:
    """The model's `scoring:` when it names one, else the best method its backend supports."""
    _, cfg = pool.config(model)
    backend = pool.backend(model)
    return backend.capabilities().best_method() if cfg.scoring == "auto" else cfg.scoring


def grade(backend, method: str, items: list[tuple[str, str, str]]) -> list[str]:
    """The judge's grade for each (question, reference, answer)."""
    if not items:
        return []
    system, grades = [("system", JUDGE_SYSTEM)], list(GRADES)
    turns = [judge_turns(*item) for item in items]
    if method == "generate":  # a short greedy answer matched to one grade (as classification does)
        from tunewise.models.backend import answer_tokens
        from tunewise.strategies.prompts import parse_label

        answers = backend.generate([system + t for t in turns], answer_tokens(grades))
        return [parse_label(a.prediction, grades) or UNGRADED for a in answers]
    scored = backend.score_labels(system, turns, grades, method, full=False)
    return [s.prediction if s.prediction in GRADES else UNGRADED for s in scored]


def judge_candidates(pool, model: str, candidates: list[CandidateResult], test: list[Record], n_resamples: int,
                     seed: int) -> JudgeResult:
    """Every scored candidate's answers graded (each distinct answer to a record once), with the mean grade
    and its interval per candidate."""
    start = time.perf_counter()
    backend, method = pool.backend(model), judge_method(pool, model)
    scored = [c for c in candidates if c.status == "ok" and c.predictions]
    wanted = {(i, p) for c in scored for i, p in enumerate(c.predictions)}
    keys = sorted(wanted)
    grades = dict(zip(keys, grade(backend, method, [(test[i].text, test[i].output, p) for i, p in keys])))
    scores = []
    for c in scored:
        given = [grades[(i, p)] for i, p in enumerate(c.predictions)]
        iv = mean_ci([GRADES.get(g, 0.0) for g in given], n_resamples, seed)
        scores.append(JudgeScore(candidate=c.name, score=Interval(**iv), records=len(given),
                                 grades=dict(Counter(given))))
    return JudgeResult(model=model, method=method, system=JUDGE_SYSTEM, prompt=JUDGE_PROMPT, grades=GRADES,
                       scores=scores, answers_graded=len(keys), seconds=round(time.perf_counter() - start, 1))
