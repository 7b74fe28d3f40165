"""The Python API: `run`, `profile`, `advise` and `load_run`, the same code as the CLI's commands.

    import tunewise
    results = tunewise.run(demo="sentiment", budget="quick", candidates=["majority", "classical"])
    print(results.verdict.decision, results.verdict.summary)

Progress is a plain callback `(message, fraction)`: `fraction` is the share of the current step done,
or None for a note. Warnings (skipped records, unseen test labels) come through it as
"warning: ..." notes and are kept in the results. Errors raise `tunewise.TunewiseError` (the CLI's
one-line errors), with the flag named as the CLI names it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable

from tunewise.assets import DEFAULT_MODEL
from tunewise.config import Budget, TaskSpec
from tunewise.errors import TunewiseError
from tunewise.results import DataProfile, RunResults, Verdict
from tunewise.ui import Progress, ProgressCallback, quiet_libraries

Data = str | os.PathLike | list[dict]
Task = str | os.PathLike | dict | TaskSpec


def run(data: Data | None = None, *, task: Task | None = None, budget: str | Budget = "standard",
        candidates: Iterable[str] | None = None, out: str | os.PathLike | None = None,
        store: str | os.PathLike | None = None, progress: ProgressCallback | None = None,
        demo: str | None = None, test: Data | None = None, model: str = DEFAULT_MODEL, target: float | None = None,
        seed: int = 0, also_models: Iterable[str] = (), prompt_models: Iterable[str] = (), full_ft: bool = False,
        learning_curve: bool = True, forgetting: bool = True, freshness: bool | None = None, device: str = "auto",
        skip_invalid: bool = False,
        allow_unseen_labels: bool = False) -> RunResults:
    """Run the bake-off, the evidence and the verdict, as `tunewise run` does.

    `data` is a data file or records (dicts shaped like JSONL lines: {"text", "label"}, {"messages"}, ...);
    `demo` ("sentiment" | "condition") runs the embedded demo instead. `task` is a task file, a dict of
    its keys or a TaskSpec. `budget` is a budget's name (quick | standard | full) or a `Budget`.
    `out`: the run folder for results.json, the reports and artifacts; None writes no report and keeps
    no artifact (work files go to a temporary folder, deleted on return).
    `store`: the cache folder (`--store`), so a re-run reuses finished work; None uses a temporary store,
    deleted on return (nothing is reused).
    """
    from tunewise import pipeline

    quiet_libraries()
    req = pipeline.RunRequest(
        data=_path_or_rows(data), demo=demo, task=task, test=_path_or_rows(test), skip_invalid=skip_invalid,
        model=model, budget=budget, target=target, candidates=None if candidates is None else _names(candidates),
        also_models=list(also_models), prompt_models=list(prompt_models), full_ft=full_ft,
        learning_curve=learning_curve, forgetting=forgetting, freshness=freshness, device=device,
        allow_unseen_labels=allow_unseen_labels, seed=seed)
    with tempfile.TemporaryDirectory(prefix="tunewise-") as scratch:
        out_dir = Path(out) if out is not None else Path(scratch) / "run"
        store_dir = Path(store) if store is not None else Path(scratch) / "store"
        results = pipeline.run(req, out_dir, store_dir, _progress(progress), write_report=out is not None)
        if store is None:  # deleted with the scratch folder: the results must not point at it
            results.environment["store"] = None
    if out is None:
        for c in results.candidates:
            if c.artifact:
                c.notes.append(f"artifact not kept (run without out=): {c.artifact}")
                c.artifact = None
    return results


def profile(data: Data | None = None, *, task: Task | None = None, demo: str | None = None,
            test: Data | None = None, model: str = DEFAULT_MODEL, store: str | os.PathLike | None = None,
            seed: int = 0, max_length: int = 256, skip_invalid: bool = False,
            progress: ProgressCallback | None = None) -> DataProfile:
    """Read, validate, split and measure the data, as `tunewise profile` does; the split's problems
    come as warnings through `progress`. `store` as in `run`."""
    from tunewise import pipeline

    quiet_libraries()
    req = pipeline.RunRequest(data=_path_or_rows(data), demo=demo, task=task, test=_path_or_rows(test),
                              skip_invalid=skip_invalid, model=model, seed=seed)
    with tempfile.TemporaryDirectory(prefix="tunewise-") as scratch:
        return pipeline.profile(req, Path(store) if store is not None else Path(scratch) / "store",
                                _progress(progress), max_length)[1]


def advise(answers: str | os.PathLike | dict) -> Verdict:
    """Before any data exists: the criteria as a questionnaire (`tunewise advise`). `answers` is an
    answers file (YAML/JSON) or a dict of its keys (see examples/advise/)."""
    from tunewise.decide.advisor import Answers, _validate, advise as recommend, load_answers

    if isinstance(answers, Answers):
        return recommend(answers)
    if isinstance(answers, dict):
        return recommend(_validate(answers, "answers"))
    return recommend(load_answers(answers))


def load_run(path: str | os.PathLike, store: str | os.PathLike | None = None) -> RunResults:
    """A finished run's results: its results.json; when that is missing or unreadable, the copy kept in
    `store` for this folder (the store keys runs by the unique `run_id`, never by folder name)."""
    from tunewise.store import Store, check_store_dir

    run_dir = Path(path)
    if not run_dir.is_dir():
        raise TunewiseError(f"{run_dir}: not a run folder", fix="pass a folder written by `tunewise run`")
    rerun = "re-run the same `tunewise run` command with --out pointing here: finished work is reused from the store"
    results_file = run_dir / "results.json"
    problem = None
    if results_file.is_file():
        try:
            return RunResults.model_validate_json(results_file.read_bytes())
        except ValueError as exc:  # truncated or not JSON, or a field missing (pydantic's ValidationError)
            problem = TunewiseError(f"{results_file}: not a complete results.json ({_reason(exc)})", fix=rerun)
    found = None
    if store is not None and (Path(check_store_dir(store)) / "store.sqlite").is_file():
        found = Store(store).run_in(run_dir)
    if found is not None:
        run_id, entry = found
        try:
            return RunResults.model_validate(entry["results"])
        except (ValueError, TypeError, KeyError) as exc:
            raise TunewiseError(f"store {store}: the entry for run {run_id} is incomplete ({_reason(exc)})",
                                fix=rerun) from exc
    if problem is not None:
        raise problem
    raise TunewiseError(f"{run_dir}: no results.json, and no run written into this folder in the store "
                        f"({store})" if store is not None else f"{run_dir}: no results.json",
                        fix="point --store at the store used by the run" if store is not None else rerun)


def _reason(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        where = ".".join(str(x) for x in first.get("loc", ()))
        return f"{where + ': ' if where else ''}{first.get('msg', '')}"
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _path_or_rows(data):
    return data if data is None or isinstance(data, (str, list)) else (
        str(data) if isinstance(data, os.PathLike) else list(data))


def _names(candidates: Iterable[str]) -> list[str]:
    if isinstance(candidates, str):  # "majority,classical", as the CLI takes it
        from tunewise.flags import parse_candidates

        return parse_candidates(candidates) or []
    return list(candidates)


def _progress(callback: ProgressCallback | None) -> Progress:
    """The CLI's progress, reporting to the callback (and silent without one)."""
    return Progress(listener=callback if callback is not None else (lambda message, fraction: None))
