"""The command line: parse -> build -> run -> print. One function per command, nothing else here."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Optional

import typer

from tunewise import __version__
from tunewise.errors import TunewiseError
from tunewise.flags import Device, FailOn, choices
from tunewise.ui import Progress, console, quiet_libraries

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
    quiet_libraries()


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


def _request(data, demo, **settings):
    """What a command was asked, for the pipeline: `--demo condition` gives the demo's name as DATA."""
    from tunewise.pipeline import RunRequest

    if demo:
        return RunRequest(demo=str(data) if data else "sentiment", **settings)
    return RunRequest(data=str(data) if data else None, **settings)


@app.command("profile")
@guarded
def profile_cmd(data: Optional[Path] = DataArg, task: Optional[Path] = TaskOpt, demo: bool = DemoOpt,
                test: Optional[Path] = TestOpt, skip_invalid: bool = SkipOpt, model: str = ModelOpt,
                store: Path = StoreOpt, seed: int = SeedOpt,
                max_length: int = typer.Option(256, "--max-length", help="token limit to report the share over"),
                as_json: bool = typer.Option(False, "--json", help="print the profile as JSON on stdout")):
    """Read, validate and split the data, then measure it: size, balance, duplicates, leakage, lengths,
    domain gap."""
    from tunewise.pipeline import profile

    req = _request(data, demo, task=task, test=test, skip_invalid=skip_invalid, model=model, seed=seed)
    task_spec, result = profile(req, store, Progress(quiet=as_json), max_length)
    if as_json:
        print(json.dumps(result.model_dump(mode="json", exclude_unset=True), indent=2, default=str))
    else:
        from tunewise.data.profile_view import print_profile

        print_profile(result.model_dump(mode="json", exclude_unset=True), task_spec, console)


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
            judge: Optional[str] = typer.Option(None, "--judge", help="generation: a model that grades every "
                                                "candidate's answers against the references (named as for "
                                                "--prompt-model); scores beside the task's metric"),
            full_ft: bool = typer.Option(False, "--full-ft", help="also run full fine-tuning (models under 500M)"),
            no_curve: bool = typer.Option(False, "--no-curve", help="skip the learning curve"),
            no_forgetting: bool = typer.Option(False, "--no-forgetting", help="skip the forgetting probe"),
            freshness: Optional[bool] = typer.Option(
                None, "--freshness/--no-freshness", help="the time split: every candidate refitted on the records "
                "up to a cut-off date and scored after it (a second bake-off). Default: when the task has a "
                "date_field and declares knowledge_update other than never"),
            device: str = typer.Option("auto", "--device", help=choices(Device)),
            fail_on: Optional[str] = typer.Option(None, "--fail-on", help=f"exit 1 when: {choices(FailOn)}"),
            allow_unseen_labels: bool = typer.Option(False, "--allow-unseen-labels", help="score test labels that "
                                                     "never occur in train (labels inferred from train) with a "
                                                     "warning, instead of stopping"),
            store: Path = StoreOpt, seed: int = SeedOpt):
    """The bake-off on one frozen split, then learning curve, forgetting, compute, cost, a verdict and a report."""
    from tunewise.flags import parse_candidates, pick
    from tunewise.pipeline import run
    from tunewise.report.console import print_summary

    out = out or Path("tunewise-runs") / dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    req = _request(data, demo, task=task, test=test, skip_invalid=skip_invalid, model=model, budget=budget,
                   target=target, judge=judge, candidates=parse_candidates(candidates), also_models=also_model,
                   prompt_models=prompt_model, full_ft=full_ft, learning_curve=not no_curve,
                   forgetting=not no_forgetting, freshness=freshness, device=device, fail_on=fail_on,
                   allow_unseen_labels=allow_unseen_labels, seed=seed)
    results = run(req, out, store, Progress())
    print_summary(results, out, console)
    _gate(pick("--fail-on", fail_on, FailOn) if fail_on is not None else None, results)


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
    """Rebuild report.html, report.md and results.json from the run's results.json (or, when that is
    missing or unreadable, the store's copy of this folder's run), without recomputing anything."""
    from tunewise.api import load_run
    from tunewise.flags import writable_folder
    from tunewise.report import write_report

    results = load_run(run_dir, store)
    writable_folder(run_dir, "RUN_DIR")
    paths = write_report(results, run_dir)
    console.print(f"report rebuilt: {paths['html']}")


RunDirArg = typer.Argument(..., help="a run folder written by `tunewise run`")
CandidateOpt = typer.Option(None, "--candidate", help="candidate name from the run (default: the verdict's)")


@app.command("serve")
@guarded
def serve_cmd(run_dir: Path = RunDirArg, candidate: Optional[str] = CandidateOpt,
              host: str = typer.Option("127.0.0.1", "--host", help="address to bind (default: this machine only)"),
              port: int = typer.Option(8000, "--port", min=1, max=65535, help="port to listen on"),
              api_key_env: Optional[str] = typer.Option(None, "--api-key-env", help="NAME of the environment "
                                                        "variable holding the key clients must send as a bearer token"),
              device: Device = typer.Option(Device.auto, "--device", help="auto | cpu | cuda")):
    r"""Serve a run's candidate over an OpenAI-compatible API (/v1/chat/completions, /v1/completions,
    /v1/models, /health); needs the `serve` extra (pip install 'tunewise\[serve]')."""
    from tunewise.deploy.serve import serve

    say = lambda text: console.print(text, markup=False, highlight=False, soft_wrap=True)  # noqa: E731
    serve(run_dir, candidate, host, port, api_key_env, device.value, say=say)


@app.command("export")
@guarded
def export_cmd(run_dir: Path = RunDirArg, candidate: Optional[str] = CandidateOpt,
               fmt: str = typer.Option(..., "--format", help="adapter | merged | gguf"),
               out: Path = typer.Option(..., "--out", help="folder to write the exported model into"),
               device: Device = typer.Option(Device.auto, "--device", help="auto | cpu | cuda (the check's scoring)"),
               converter: Optional[Path] = typer.Option(None, "--converter", help="llama.cpp's convert_hf_to_gguf.py "
                                                        "for --format gguf (default: in $LLAMA_CPP_DIR or on PATH)")):
    """Export a run's fine-tuned candidate (adapter, merged transformers folder or GGUF), then check it:
    the exported model re-scores the run's test sample; the export fails (exit 1) if it scores worse beyond
    noise or reproduces fewer than 90% of the run's predictions."""
    from tunewise.deploy.export import export
    from tunewise.flags import writable_folder

    writable_folder(out, "--out")
    say = lambda text: console.print(text, markup=False, highlight=False, soft_wrap=True)  # noqa: E731
    say(export(run_dir, candidate, fmt, out, device.value, say=say, converter=converter))


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
