"""From what the user asked for to results: the one code path behind `tunewise run`, `tunewise profile`
and the Python API (`tunewise.run`, `tunewise.profile`).

Every check that needs no data runs first (a typo must not cost a profile or a whole run), then the
data is read, validated and split, the task's overrides (target) applied, the split checked, the
profile computed once per store, and the stages of `runner.run` follow.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunewise.assets import DEFAULT_MODEL
from tunewise.config import Budget, TaskSpec
from tunewise.data.prepare import Prepared, prepare
from tunewise.errors import ConfigError
from tunewise.results import DataProfile, RunResults
from tunewise.store import Store, make_key
from tunewise.ui import Progress

@dataclass
class RunRequest:
    """Everything a run depends on, as the user gave it (flags or keyword arguments)."""

    data: str | Path | list[dict] | None = None  # a data file, or records: dicts shaped like JSONL lines
    demo: str | None = None  # an embedded demo task instead of data: sentiment | condition
    task: str | Path | dict | TaskSpec | None = None  # a task file, or its keys
    test: str | Path | list[dict] | None = None  # a held-out test file or records (else a seeded split)
    skip_invalid: bool = False
    model: str = DEFAULT_MODEL
    budget: str | Budget = "standard"  # a budget's name, or caps of one's own
    target: float | None = None  # overrides the task's target
    judge: str | None = None  # overrides the task's judge model (generation)
    candidates: list[str] | None = None  # names or registered strategies; None: all that fit the task
    also_models: list[str] = field(default_factory=list)
    prompt_models: list[str] = field(default_factory=list)
    full_ft: bool = False
    learning_curve: bool = True
    forgetting: bool = True
    freshness: bool | None = None  # the time split; None: when the task is dated and its knowledge changes
    device: str = "auto"
    fail_on: str | None = None  # checked before any work; applied by the caller (the CLI's exit code)
    allow_unseen_labels: bool = False
    seed: int = 0


def prepare_data(req: RunRequest, progress: Progress) -> Prepared:
    """Read, validate and split; the task's overrides applied; skipped records shown."""
    task_file, overrides = _task_source(req.task)
    if req.target is not None:
        overrides = (overrides or {}) | {"target": req.target}
    if req.judge is not None:
        overrides = (overrides or {}) | {"judge": req.judge}
    prep = prepare(str(req.data) if isinstance(req.data, Path) else req.data, demo=req.demo, task_file=task_file,
                   overrides=overrides, test_file=str(req.test) if isinstance(req.test, Path) else req.test,
                   skip_invalid=req.skip_invalid, seed=req.seed, model=req.model)
    if prep.skipped:
        progress.warn(f"skipped {len(prep.skipped)} invalid record(s):", [str(i) for i in prep.skipped[:20]])
    return prep


def _task_source(task) -> tuple[str | None, dict | None]:
    """(task file, keys that override it) from a path, a mapping of task keys or a TaskSpec."""
    if task is None:
        return None, None
    if isinstance(task, TaskSpec):
        return None, task.model_dump(exclude_unset=True)
    if isinstance(task, dict):
        return None, dict(task)
    if isinstance(task, (str, os.PathLike)):
        return os.fspath(task), None
    raise ConfigError(f"task: expected a task file's path, a dict of task keys or a TaskSpec, got "
                      f"{type(task).__name__}", fix="e.g. task='task.yaml' or task={'type': 'classification'}")


def profile_data(prep: Prepared, model: str, store: Store, progress: Progress, max_length: int = 256) -> DataProfile:
    """The data profile, computed once per store even by concurrent runs (the others wait and reuse it)."""
    from tunewise.data.profile import profile

    # everything the profile reports: the records and where they came from, what was skipped or filtered
    key = make_key("profile", prep.data_key, prep.source, [r.id for r in prep.split.train],
                   [r.id for r in prep.split.test], [str(i) for i in prep.skipped], prep.filtered,
                   prep.task.model_dump(), model, max_length)
    computed = {}

    def compute():
        computed["yes"] = True
        result = profile(prep.task, prep.split, model_name=model, max_length=max_length, progress=progress.note)
        result["skipped"] = {"count": len(prep.skipped), "records": [str(i) for i in prep.skipped[:200]]}
        result["filtered"] = prep.filtered
        return result

    result = store.cached("profile", key, compute, on_wait=lambda: progress.note(
        "profile: another run on this store is computing it; waiting to reuse it"))
    if not computed:
        progress.note("profile: computed earlier, reused from the store")
    return DataProfile.model_validate(result)


def profile(req: RunRequest, store_dir: Path, progress: Progress,
            max_length: int = 256) -> tuple[TaskSpec, DataProfile]:
    """`tunewise profile`: (the task, its data's profile); the split's problems are warnings."""
    from tunewise.data.sufficiency import split_warnings

    db = Store(store_dir)  # a bad store fails before the data is read
    prep = prepare_data(req, progress)
    for text in split_warnings(prep.task, prep.split):
        progress.warn(text)
    return prep.task, profile_data(prep, req.model, db, progress, max_length)


def run(req: RunRequest, out: Path, store_dir: Path, progress: Progress, write_report: bool = True) -> RunResults:
    """`tunewise run`: checks, data, profile, then the stages of `runner.run`. With `write_report` False
    nothing is written outside `out` (work files) and the store (cache): no report, no run entry."""
    from tunewise.clock import StageClock
    from tunewise.config import get_budget
    from tunewise.data.sufficiency import check_split
    from tunewise.flags import check_gate, check_run_flags
    from tunewise.evaluate.judge import check_judge
    from tunewise.models.endpoint import check_prompt_models
    from tunewise.runner import RunOptions, run as run_stages

    # every flag and both folders before any work: a typo must not cost a profile or a whole run
    budget = req.budget if isinstance(req.budget, Budget) else get_budget(req.budget)
    gate, device = check_run_flags(fail_on=req.fail_on, device=req.device, target=req.target,
                                   models=[req.model, *req.also_models], out=out, store=store_dir)
    names = _candidate_names(req.candidates)
    prep = prepare_data(req, progress)
    check_prompt_models(req.prompt_models, prep.task.models)
    check_judge(prep.task)
    check_gate(gate, prep.task.target)
    warnings = check_split(prep.task, prep.split, prep.source, allow_unseen_labels=req.allow_unseen_labels)
    for text in warnings:
        progress.warn(text)
    check_candidates(prep.task, req, names)
    db = Store(store_dir)
    clock = StageClock.for_run(db, out, prep.data_key, prep.task.model_dump(), budget.model_dump(), req.model,
                               req.also_models, names, req.full_ft, req.seed, not req.learning_curve,
                               not req.forgetting, req.freshness, req.prompt_models, first="profile")
    progress.on_activity = clock.beat
    data_profile = profile_data(prep, req.model, db, progress, budget.max_length)
    clock.lap("profile", then="compute_estimate")
    opts = RunOptions(budget=budget, out_dir=out, store=db, model=req.model, extra_models=list(req.also_models),
                      candidates=names, prompt_models=list(req.prompt_models), full_ft=req.full_ft, seed=req.seed,
                      device=device.value, learning_curve=req.learning_curve, forgetting=req.forgetting,
                      freshness=req.freshness,
                      profile=data_profile, clock=clock, warnings=warnings, write_report=write_report)
    return run_stages(prep, opts, progress)


def _candidate_names(names: Any) -> list[str] | None:
    if names is None:
        return None
    if isinstance(names, str) or not all(isinstance(n, str) and n.strip() for n in names) or not names:
        raise ConfigError(f"candidates {names!r}: expected a non-empty list of names",
                          fix="e.g. candidates=['majority', 'classical', 'lora'] (--candidates majority,classical,lora)")
    return [n.strip() for n in names]


def check_candidates(task: TaskSpec, req: RunRequest, names: list[str] | None) -> None:
    """The candidates named against the line-up this task and these settings give (unknown or unfit
    names fail now)."""
    from tunewise.bakeoff import default_candidates
    from tunewise.runner import _select

    _select(default_candidates(task, req.model, req.also_models, req.full_ft, list(req.prompt_models)), names,
            req.model, task)
