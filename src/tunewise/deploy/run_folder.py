"""A run folder read back for serving and export: results.json, and the saved candidate it names.

The candidate defaults to the verdict's; each is saved in RUN/candidates/<name>/saved by `tunewise run`.
"""

from __future__ import annotations

from pathlib import Path

from tunewise.errors import ConfigError
from tunewise.results import RunResults
from tunewise.strategies.saved import CANDIDATE_FILE

RERUN = "re-run the same `tunewise run` command with --out pointing at this folder (finished work is reused)"


def read_results(run_dir: Path) -> RunResults:
    path = Path(run_dir) / "results.json"
    if not Path(run_dir).is_dir():
        raise ConfigError(f"RUN_DIR {run_dir}: not a folder", fix="pass a run folder written by `tunewise run`")
    if not path.is_file():
        raise ConfigError(f"RUN_DIR {run_dir}: no results.json", fix="pass a run folder written by `tunewise run`")
    try:
        return RunResults.model_validate_json(path.read_bytes())
    except ValueError as exc:
        raise ConfigError(f"{path}: not a complete results.json ({str(exc).splitlines()[0]})", fix=RERUN) from exc


def saved_dir(run_dir: Path, name: str) -> Path:
    return Path(run_dir) / "candidates" / name / "saved"


def choose_candidate(run_dir: Path, name: str | None = None) -> tuple[RunResults, str, Path]:
    """(results, candidate name, its saved folder): `name`, else the verdict's candidate."""
    results = read_results(run_dir)
    ok = [c.name for c in results.candidates if c.status == "ok"]
    if name is None:
        name = results.verdict.candidate if results.verdict else None
        if name is None:
            decision = results.verdict.decision if results.verdict else "none"
            raise ConfigError(f"RUN_DIR {run_dir}: the verdict ({decision}) names no candidate",
                              fix=f"choose one with --candidate ({', '.join(ok) or 'none succeeded'})")
    found = results.candidate(name)
    if found is None or found.status != "ok":
        why = "is not in this run" if found is None else f"{found.status} in this run"
        raise ConfigError(f"--candidate '{name}': {why}", fix=f"use one of {', '.join(ok) or '(none succeeded)'}")
    folder = saved_dir(run_dir, name)
    if not (folder / CANDIDATE_FILE).is_file():
        note = next((n for n in found.notes if n.startswith("not saved")), None)
        raise ConfigError(f"--candidate '{name}': not saved in {folder}" + (f" ({note})" if note else ""),
                          fix=RERUN)
    return results, name, folder
