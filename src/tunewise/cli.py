"""The command line: parse -> build -> run -> print. One function per command, nothing else here."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from tunewise import __version__
from tunewise.errors import TunewiseError
from tunewise.flags import Device, FailOn, choices
from tunewise.ui import Progress, console

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="rich",
                  help="Should we fine-tune a language model for this task, or not? Measured on your data.")
STATE = {"debug": False}

DataArg = typer.Argument(None, help="data file: .jsonl (chat, prompt/completion, input/output, text/label), .csv or .tsv")
TaskOpt = typer.Option(None, "--task", help="task file (YAML): type, fields, labels, metric, target, constraints")
DemoOpt = typer.Option(False, "--demo", help="use the embedded demo: `--demo` (drug-review sentiment), "
                       "`--demo condition` or `--demo drug-condition` (free text, the reviews as corpus, time "
                       "split; the word takes DATA's place)")
TestOpt = typer.Option(None, "--test", help="held-out test file (else a seeded split of DATA)")
SkipOpt = typer.Option(False, "--skip-invalid", help="skip bad records (counted and listed) instead of stopping")
ModelOpt = typer.Option("smollm2-135m", "--model", help="language model: shipped alias, folder, .gguf or hub id")
StoreOpt = typer.Option(Path(".tunewise"), "--store", help="folder of the SQLite store (cache, resume, history)")
SeedOpt = typer.Option(0, "--seed", help="seed for splits, sampling and bootstrap")


def _version(value: bool):
    if value:
        print(f"tunewise {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="print the version"),
         debug: bool = typer.Option(False, "--debug", help="show tracebacks on errors")):
    STATE["debug"] = debug
    os.environ.setdefault("HF_HUB_OFFLINE", "1") if not os.environ.get("TUNEWISE_ONLINE") else None
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _quiet_libraries()


def _quiet_libraries() -> None:
    import logging
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*past_key_values.*")
    for name in ("transformers", "peft", "accelerate", "sentence_transformers", "huggingface_hub"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def _fail(exc: TunewiseError):
    from tunewise.data.read import InvalidRecords

    if isinstance(exc, InvalidRecords):
        for issue in exc.issues[:50]:
            console.print(f"  {issue}", markup=False, highlight=False, soft_wrap=True)
        if len(exc.issues) > 50:
            console.print(f"  ... and {len(exc.issues) - 50} more")
    console.print(f"error: {exc}", style="bold red", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(exc.exit_code)


def guarded(fn):
    """User errors become one line and a non-zero exit; tracebacks only with --debug."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except TunewiseError as exc:
            if STATE["debug"]:
                raise
            _fail(exc)
    return wrapper


def _prepare(data, demo, task, test, skip_invalid, seed, model):
    from tunewise.data.prepare import prepare

    if demo:  # `--demo condition`: the demo task's name arrives as DATA
        demo, data = (str(data) if data else "sentiment"), None
    else:
        demo = None

    prep = prepare(str(data) if data else None, demo=demo, task_file=str(task) if task else None,
                   test_file=str(test) if test else None, skip_invalid=skip_invalid, seed=seed, model=model)
    if prep.skipped:
        console.print(f"[yellow]skipped {len(prep.skipped)} invalid record(s):[/yellow]")
        for issue in prep.skipped[:20]:
            console.print(f"  {issue}", markup=False, highlight=False, soft_wrap=True)
    return prep


def _profile(prep, model, store, progress, max_length=256):
    """The data profile, computed once per store even by concurrent runs (the others wait and reuse it)."""
    from tunewise.data.profile import profile
    from tunewise.store import make_key

    # everything the profile reports: the records and where they came from, what was skipped or filtered
    key = make_key("profile", prep.data_key, prep.source, [r.id for r in prep.split.train],
                   [r.id for r in prep.split.test], [str(i) for i in prep.skipped], prep.filtered,
                   prep.task.model_dump(), model, max_length)

    def compute():
        computed["yes"] = True
        result = profile(prep.task, prep.split, model_name=model, max_length=max_length, progress=progress.note)
        result["skipped"] = {"count": len(prep.skipped), "records": [str(i) for i in prep.skipped[:200]]}
        result["filtered"] = prep.filtered
        return result

    computed = {}
    result = store.cached("profile", key, compute, on_wait=lambda: progress.note(
        "profile: another run on this store is computing it; waiting to reuse it"))
    if not computed:
        progress.note("profile: computed earlier, reused from the store")
    return result, store


@app.command("profile")
@guarded
def profile_cmd(data: Optional[Path] = DataArg, task: Optional[Path] = TaskOpt, demo: bool = DemoOpt,
                test: Optional[Path] = TestOpt, skip_invalid: bool = SkipOpt, model: str = ModelOpt,
                store: Path = StoreOpt, seed: int = SeedOpt,
                max_length: int = typer.Option(256, "--max-length", help="token limit to report the share over"),
                as_json: bool = typer.Option(False, "--json", help="print the profile as JSON on stdout")):
    """Read, validate and split the data, then measure it: size, balance, duplicates, leakage, lengths,
    domain gap."""
    from tunewise.data.sufficiency import split_warnings
    from tunewise.report.console import print_warnings
    from tunewise.store import Store

    progress = Progress(quiet=as_json)
    db = Store(store)  # a bad --store fails before the data is read
    prep = _prepare(data, demo, task, test, skip_invalid, seed, model)
    print_warnings(split_warnings(prep.task, prep.split), console)
    result, _ = _profile(prep, model, db, progress, max_length)
    if as_json:
        print(json.dumps(result, indent=2, default=str))
    else:
        from tunewise.data.profile_view import print_profile

        print_profile(result, prep.task, console)


@app.command("run")
@guarded
def run_cmd(data: Optional[Path] = DataArg, task: Optional[Path] = TaskOpt, demo: bool = DemoOpt,
            test: Optional[Path] = TestOpt, skip_invalid: bool = SkipOpt, model: str = ModelOpt,
            budget: str = typer.Option("standard", "--budget", help="quick | standard | full: caps on test size, "
                                       "epochs, shots, curve points"),
            out: Optional[Path] = typer.Option(None, "--out", help="run folder (default ./tunewise-runs/<timestamp>)"),
            target: Optional[float] = typer.Option(None, "--target", help="score the task needs (overrides the task file)"),
            candidates: Optional[str] = typer.Option(None, "--candidates", help="comma-separated candidate names or "
                                                     "registered strategies, e.g. zero_shot,lora,full_ft "
                                                     "(default: all that fit the task)"),
            also_model: list[str] = typer.Option([], "--also-model", help="a second model to compare (repeatable)"),
            prompt_model: list[str] = typer.Option([], "--prompt-model", help="also prompt this model (zero-shot, "
                                                   "few-shot, retrieved few-shot; repeatable): openai:gpt-4o-mini, "
                                                   "http://127.0.0.1:8000/v1#NAME, a `models:` key of the task file "
                                                   "or a local model"),
            full_ft: bool = typer.Option(False, "--full-ft", help="also run full fine-tuning (models under 500M)"),
            no_curve: bool = typer.Option(False, "--no-curve", help="skip the learning curve"),
            no_forgetting: bool = typer.Option(False, "--no-forgetting", help="skip the forgetting probe"),
            no_freshness: bool = typer.Option(False, "--no-freshness", help="skip the time split (run when the "
                                              "task has a date_field)"),
            device: str = typer.Option("auto", "--device", help=choices(Device)),
            fail_on: Optional[str] = typer.Option(None, "--fail-on", help=f"exit 1 when: {choices(FailOn)}"),
            allow_unseen_labels: bool = typer.Option(False, "--allow-unseen-labels", help="score test labels that "
                                                     "never occur in train (labels inferred from train) with a "
                                                     "warning, instead of stopping"),
            store: Path = StoreOpt, seed: int = SeedOpt):
    """The bake-off on one frozen split, then learning curve, forgetting, compute, cost, a verdict and a report."""
    from tunewise.clock import StageClock
    from tunewise.config import get_budget
    from tunewise.data.sufficiency import check_split
    from tunewise.flags import check_gate, check_run_flags, parse_candidates
    from tunewise.report.console import print_warnings
    from tunewise.runner import RunOptions, run
    from tunewise.store import Store

    progress = Progress()
    # every flag and both folders before any work: a typo must not cost a profile or a whole run
    bud = get_budget(budget)
    out = out or Path("tunewise-runs") / dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    gate, dev = check_run_flags(fail_on=fail_on, device=device, target=target, models=[model, *also_model],
                                out=out, store=store)
    names = parse_candidates(candidates)
    prep = _prepare(data, demo, task, test, skip_invalid, seed, model)
    if target is not None:
        prep.task = prep.task.model_copy(update={"target": target})
    from tunewise.models.endpoint import check_prompt_models

    check_prompt_models(prompt_model, prep.task.models)
    check_gate(gate, prep.task.target)
    warnings = check_split(prep.task, prep.split, prep.source, allow_unseen_labels=allow_unseen_labels)
    print_warnings(warnings, console)
    _check_candidates(prep.task, model, also_model, full_ft, names, prompt_model)
    db = Store(store)
    clock = StageClock.for_run(db, out, prep.data_key, prep.task.model_dump(), bud.model_dump(), model, also_model,
                               names, full_ft, seed, no_curve, no_forgetting, no_freshness, prompt_model,
                               first="profile")
    progress.on_activity = clock.beat
    profile, _ = _profile(prep, model, db, progress, bud.max_length)
    clock.lap("profile", then="compute_estimate")
    opts = RunOptions(budget=bud, out_dir=out, store=db, model=model, extra_models=also_model, candidates=names,
                      prompt_models=prompt_model, full_ft=full_ft, seed=seed, device=dev.value,
                      learning_curve=not no_curve, forgetting=not no_forgetting, freshness=not no_freshness,
                      profile=profile, clock=clock,
                      warnings=warnings)
    results = run(prep, opts, progress)
    from tunewise.report.console import print_summary

    print_summary(results, out, console)
    _gate(gate, results)


def _check_candidates(task, model, also_model, full_ft, names, prompt_models=()) -> None:
    """--candidates against the line-up this task and these flags give (unknown or unfit names fail now)."""
    from tunewise.bakeoff import default_candidates
    from tunewise.runner import _select

    _select(default_candidates(task, model, also_model, full_ft, list(prompt_models)), names, model, task)


def _gate(gate: FailOn | None, results) -> None:
    if gate is None:
        return
    from tunewise.report.console import gate_failed

    failed, why = gate_failed(gate.value, results)
    if failed:
        console.print(f"[bold red]--fail-on {gate.value}:[/bold red] {why}")
        raise typer.Exit(1)


@app.command("report")
@guarded
def report_cmd(run_dir: Path = typer.Argument(..., help="a run folder written by `tunewise run`"),
               store: Path = StoreOpt):
    """Rebuild report.html, report.md and results.json from the store, without recomputing anything."""
    from tunewise.flags import writable_folder
    from tunewise.report import write_report
    from tunewise.report.console import load_run

    results = load_run(run_dir, store)
    writable_folder(run_dir, "RUN_DIR")
    paths = write_report(results, run_dir)
    console.print(f"report rebuilt: {paths['html']}")


@app.command("advise")
@guarded
def advise_cmd(answers: Optional[Path] = typer.Option(None, "--answers", help="answers file (YAML/JSON); "
                                                      "without it the questions are asked here"),
               as_json: bool = typer.Option(False, "--json", help="print the recommendation as JSON")):
    """Before any data exists: the same criteria as a quick questionnaire, and what to measure next."""
    from tunewise.decide import advise, ask, load_answers
    from tunewise.report.console import print_verdict

    if answers is not None:
        a = load_answers(answers)
    elif not sys.stdin.isatty():
        raise TunewiseError("no --answers file and no terminal to ask the questions on",
                            fix="pass --answers FILE (see examples/advise/)")
    else:
        a = ask(lambda name, question, default, kind: typer.prompt(question, default="" if default is None else default,
                                                                   show_default=default is not None))
    verdict = advise(a)
    if as_json:
        print(verdict.model_dump_json(indent=2))
    else:
        print_verdict(verdict, console)


if __name__ == "__main__":
    app()
