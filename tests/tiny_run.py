"""A tiny real run folder on the demo data, for the tests of saved candidates, `serve` and `export`:
every family fitted on 24 training reviews and scored on 8 test reviews (LoRA: 3 optimizer steps).
The bake-off is called directly (no rate calibration, no evidence stages); results.json holds the
candidates and a FINE_TUNE verdict naming lora, as `tunewise run` would write them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tunewise.config import BUDGETS
from tunewise.data.demo import load_demo
from tunewise.data.prepare import carve_validation
from tunewise.data.records import Record
from tunewise.data.split import subsample, test_order
from tunewise.results import RunResults, Verdict
from tunewise.store import Store
from tunewise.strategies import CandidateSpec
from tunewise.ui import Progress

FAMILIES = ["majority", "classical", "zero_shot", "few_shot", "knn_few_shot", "lora"]


@dataclass
class TinyRun:
    run_dir: Path
    results: RunResults
    test: list[Record]  # in scoring order: predictions[i] is the run's answer to test[i]


def make_tiny_run(folder: Path, name: str = "run") -> TinyRun:
    """The run in folder/<name>, its store in folder/.tunewise: a second name reuses every candidate."""
    from tunewise.bakeoff import run_bakeoff

    task, train_set, test_set = load_demo("sentiment")
    labels = task.labels
    budget = BUDGETS["quick"].model_copy(update={"name": "tiny", "test_first": 8, "test_max": 8, "shots": 2,
                                                 "max_length": 128, "validation_limit": 8, "bootstrap": 50})
    pool = subsample(train_set.records, 32, seed=0, stratified=True)
    train, validation = carve_validation(pool, seed=0, classification=True, limit=8)
    test = test_order(test_set.records, 8, seed=0, stratified=True)[:8]
    specs = [CandidateSpec(name=n, strategy=n, model=None if n in ("majority", "classical") else "smollm2-135m")
             for n in FAMILIES]
    run_dir = folder / name
    candidates, scoring = run_bakeoff(specs, task=task, labels=labels, train=train, validation=validation,
                                      test=test, budget=budget, seed=0, run_dir=run_dir,
                                      store=Store(folder / ".tunewise"), data_key="tiny", progress=Progress(quiet=True))
    results = RunResults(tunewise_version="test", run_id="tiny", created="now",
                         task=task.model_dump() | {"labels": labels}, budget=budget.model_dump(),
                         split={"train": len(train), "test": len(test), "source": "seeded split", "seed": 0},
                         candidates=candidates, test_scoring=scoring,
                         verdict=Verdict(decision="FINE_TUNE", candidate="lora", model="smollm2-135m",
                                         summary="tiny test run", reasons=[]))
    (run_dir / "results.json").write_text(results.model_dump_json(indent=1))
    return TinyRun(run_dir, results, test)
