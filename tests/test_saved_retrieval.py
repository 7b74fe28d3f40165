"""The retrieval family end to end on a tiny corpus: `rag_lora` trains with passages, retrieves, scores
and reports recall@k; `rag` and `rag_lora` save their index and load back predicting what they
predicted in the run, with the corpus gone; `tunewise serve` answers with them; `tunewise export`
writes rag_lora's adapter (checked with its passages) and refuses rag in one line."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from test_retrieval import FACTS, rec, write_corpus
from tunewise.cli import app
from tunewise.config import BUDGETS, RetrievalSettings, TaskSpec
from tunewise.data.records import Record
from tunewise.results import CandidateResult, RunResults, Verdict
from tunewise.strategies import CandidateSpec
from tunewise.strategies.saved import load_candidate

NAMES = ["rag", "rag_lora"]


@dataclass
class RagRun:
    run_dir: Path
    results: dict[str, CandidateResult]
    test: list[Record]


@pytest.fixture(scope="module")
def rag_run(tmp_path_factory) -> RagRun:
    """rag and rag_lora (1 optimizer step) on 3 training, 1 validation and 4 test questions; the corpus is
    deleted after the run, so whatever loads later can only use what was saved."""
    from tunewise.bakeoff import run_bakeoff
    from tunewise.store import Store
    from tunewise.ui import Progress

    root = tmp_path_factory.mktemp("rag-run")
    corpus = write_corpus(root)
    task = TaskSpec(name="t", type="generation", metric="token_f1", corpus=str(corpus),
                    instruction="Answer with the condition only.",
                    retrieval=RetrievalSettings(chunk_words=20, chunk_overlap=0, top_k=1))
    options = {"corpus": str(corpus), **task.retrieval.model_dump()}
    specs = [CandidateSpec(name=n, strategy=n, model="smollm2-135m", options=options) for n in NAMES]
    train = [rec(i, d) for i, d in enumerate(["zorblax", "quenta", "vexil"])]
    validation = [rec(5, "morrow")]
    test = [rec(10 + i, d, doc=i != 3) for i, d in enumerate(["pellin", "sarvo", "morrow", "vexil"])]
    budget = BUDGETS["quick"].model_copy(update={"bootstrap": 50, "test_first": None})
    run_dir = root / "run"
    candidates, scoring = run_bakeoff(specs, task=task, labels=[], train=train, validation=validation, test=test,
                                      budget=budget, seed=0, run_dir=run_dir, store=Store(root / ".tunewise"),
                                      data_key="rag", progress=Progress(quiet=True), device="cpu")
    results = RunResults(tunewise_version="test", run_id="rag", created="now", task=task.model_dump() | {"labels": []},
                         budget=budget.model_dump(), split={"train": 3, "test": 4, "source": "given", "seed": 0},
                         candidates=candidates, test_scoring=scoring,
                         verdict=Verdict(decision="RETRIEVAL", candidate="rag", summary="tiny", reasons=[]))
    (run_dir / "results.json").write_text(results.model_dump_json(indent=1))
    corpus.unlink()
    return RagRun(run_dir, {c.name: c for c in candidates}, test)


def saved(run: RagRun, name: str) -> Path:
    return run.run_dir / "candidates" / name / "saved"


def test_rag_lora_trains_with_passages_retrieves_scores_and_reports_recall(rag_run):
    r = rag_run.results["rag_lora"]
    assert r.status == "ok", r.error
    assert r.family == "retrieval" and r.train_seconds > 0 and r.losses and r.trainable_params > 0
    assert {"exact_match", "token_f1", "rouge_l"} <= set(r.metrics) and r.test_records == 4
    # 3 of the 4 test records name their source document; each question finds its own fact
    assert r.retrieval_recall is not None and r.retrieval_recall.value == 1.0
    assert any(n.startswith("retrieval: recall@1 1.00") and "3 of the 3" in n for n in r.notes), r.notes
    assert r.prompt_tokens_mean > 40  # the passage is in the prompt, not the question alone
    assert not any(n.startswith("not saved") for n in r.notes), r.notes


@pytest.mark.parametrize("name", NAMES)
def test_a_loaded_retrieval_candidate_predicts_what_it_predicted_without_the_corpus(rag_run, name):
    result = rag_run.results[name]
    assert result.status == "ok", result.error
    folder = saved(rag_run, name)
    index = json.loads((folder / "index.json").read_text())
    assert index["corpus_hash"] == result.settings["corpus_hash"] and index["documents"] == len(FACTS)
    assert len((folder / "chunks.jsonl").read_text().splitlines()) == len(FACTS)
    assert (folder / "chunk_embeddings.npy").is_file()
    assert (folder / ("adapter" if name == "rag_lora" else "prompt.json")).exists()
    loaded = load_candidate(folder, device="cpu")
    assert [s.prediction for s in loaded.predict(rag_run.test)] == result.predictions
    # the passage retrieved from the saved index is in the prompt
    pellin = rag_run.test[0]
    assert FACTS["pellin"] in loaded.strategy.turns(pellin)[-1][1]


@pytest.mark.parametrize("name", NAMES)
def test_tunewise_serve_answers_with_a_retrieval_candidate(rag_run, name):
    from fastapi.testclient import TestClient

    from tunewise.deploy.server import create_app

    client = TestClient(create_app(load_candidate(saved(rag_run, name), device="cpu")))
    answers = [client.post("/v1/chat/completions", json={"model": name, "messages": [
        {"role": "user", "content": r.text}]}).json()["choices"][0]["message"]["content"] for r in rag_run.test]
    assert answers == rag_run.results[name].predictions


def test_export_writes_rag_loras_adapter_and_refuses_rag(rag_run, tmp_path):
    def export(*args):
        return CliRunner().invoke(app, ["export", str(rag_run.run_dir), *map(str, args)])

    done = export("--candidate", "rag_lora", "--format", "adapter", "--out", tmp_path / "adapter")
    assert done.exit_code == 0, done.output
    assert "passed" in done.output and "100% of the run's predictions reproduced" in done.output
    assert "index saved in" in done.output
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    rag = export("--candidate", "rag", "--format", "adapter", "--out", tmp_path / "rag")
    assert rag.exit_code == 2 and "no trained weights to export" in rag.output and "retrieved passages" in rag.output
    assert len(rag.output.strip().splitlines()) <= 2  # the error and its fix


def test_a_saved_index_from_another_embedder_is_refused(rag_run, tmp_path):
    from tunewise.errors import ConfigError

    folder = tmp_path / "rag"
    shutil.copytree(saved(rag_run, "rag"), folder)
    index = json.loads((folder / "index.json").read_text())
    (folder / "index.json").write_text(json.dumps(index | {"embedder": "other"}))
    with pytest.raises(ConfigError, match="embedded with other"):
        load_candidate(folder, device="cpu")


@pytest.mark.parametrize("name, file", [("rag", "prompt.json"), ("rag_lora", "answer.json")])
def test_a_generation_save_without_its_answer_length_is_a_one_line_error(rag_run, tmp_path, name, file):
    """Saves from before the answer length cap was kept: guessing one would answer differently from the run."""
    from tunewise.errors import ConfigError

    folder = tmp_path / name
    shutil.copytree(saved(rag_run, name), folder)
    if file == "answer.json":
        (folder / file).unlink()
    else:
        prompt = json.loads((folder / file).read_text())
        del prompt["max_new_tokens"]
        (folder / file).write_text(json.dumps(prompt))
    with pytest.raises(ConfigError, match="without its answer length cap"):
        load_candidate(folder, device="cpu")
