"""A fitted candidate saved to a folder and loaded back, predicting exactly what it predicted in the run.

The folder holds `candidate.json` (the spec, the task, the labels, the budget and seed it was fitted
under) and what the strategy's own `save` wrote (its pipeline, prompt and examples, index, or
adapter). `tunewise run` saves every candidate into RUN/candidates/<name>/saved, so a run folder is
self-contained for `tunewise serve` and `tunewise export`.
"""

from __future__ import annotations

import json
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from tunewise.config import Budget, TaskSpec
from tunewise.data.records import Record, record_from_json, record_to_json
from tunewise.errors import ConfigError
from tunewise.models.backend import Scored
from tunewise.strategies.base import CandidateSpec, Context, ModelPool, Strategy, build

CANDIDATE_FILE = "candidate.json"
CHECK_FILE = "check.jsonl"  # test records the run scored, with its predictions
CHECK_RECORDS = 64
FORMAT = 1  # bumped when a saved folder's layout changes


def save_candidate(spec: CandidateSpec, strategy: Strategy, ctx: Context, folder: Path) -> Path:
    """Write the fitted strategy to `folder` (replaced whole: written beside it, then renamed)."""
    folder = Path(folder)
    tmp = folder.with_name(f"{folder.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True)
    try:
        strategy.save(tmp)
        (tmp / CANDIDATE_FILE).write_text(json.dumps({
            "format": FORMAT, "spec": spec.model_dump(), "family": strategy.family,
            "task": ctx.task.model_dump(mode="json"), "labels": ctx.labels,
            "budget": ctx.budget.model_dump(mode="json"), "seed": ctx.seed}, indent=1))
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def write_check(folder: Path, records: list[Record], predictions: list[str]) -> None:
    """The first CHECK_RECORDS test records with the run's prediction for each."""
    lines = [json.dumps({"record": record_to_json(r), "prediction": p}, ensure_ascii=False)
             for r, p in list(zip(records, predictions))[:CHECK_RECORDS]]
    (folder / CHECK_FILE).write_text("".join(line + "\n" for line in lines))


def read_check(folder: Path) -> tuple[list[Record], list[str]]:
    """(test records, the run's predictions) saved beside a candidate; empty when none were."""
    path = Path(folder) / CHECK_FILE
    rows = [json.loads(line) for line in path.read_text().splitlines() if line] if path.is_file() else []
    return [record_from_json(r["record"]) for r in rows], [r["prediction"] for r in rows]


@dataclass
class LoadedCandidate:
    """A saved candidate ready to predict: records, or one conversation as a request brings it."""

    spec: CandidateSpec
    family: str
    strategy: Strategy
    ctx: Context

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def task(self) -> TaskSpec:
        return self.ctx.task

    @property
    def lm(self):
        """The local language model behind it (fine-tuned, or the prompted base model), or None."""
        from tunewise.models.lm import LanguageModel

        lm = getattr(self.strategy, "lm", None) or getattr(self.strategy, "backend", None)
        return lm if isinstance(lm, LanguageModel) else None

    def predict(self, records: list[Record]) -> list[Scored]:
        return self.strategy.predict_many(self.ctx, records)

    def predict_messages(self, messages: list[tuple[str, str]]) -> Scored:
        """One request: its conversation (ending with a user turn) as a record with no known answer."""
        record = Record(id=f"request-{uuid.uuid4().hex[:12]}", messages=tuple(messages), output="")
        return self.strategy.predict(self.ctx, record)


def load_candidate(folder: Path, device: str = "auto") -> LoadedCandidate:
    folder = Path(folder)
    path = folder / CANDIDATE_FILE
    if not path.is_file():
        raise ConfigError(f"{folder}: no saved candidate ({CANDIDATE_FILE} missing)",
                          fix="re-run the same `tunewise run` command with --out pointing at the run folder")
    saved = json.loads(path.read_text())
    if saved.get("format") != FORMAT:
        raise ConfigError(f"{path}: saved by another tunewise version (format {saved.get('format')})",
                          fix="re-run `tunewise run` with this version")
    spec = CandidateSpec.model_validate(saved["spec"])
    task = TaskSpec.model_validate(saved["task"])
    strategy = build(spec)
    ctx = Context(task=task, labels=list(saved["labels"]), train=[], validation=[],
                  budget=Budget.model_validate(saved["budget"]), seed=int(saved["seed"]), work_dir=folder,
                  models=ModelPool(device=device, models=task.models, prices=task.constraints.prices),
                  device=device)
    strategy.load(ctx, folder)
    return LoadedCandidate(spec=spec, family=saved["family"], strategy=strategy, ctx=ctx)
