"""Every candidate saves what it decided into the run folder and loads back predicting exactly what it
predicted in the run (one candidate per family, on the tiny demo run of tests/tiny_run.py)."""

from __future__ import annotations

import json

import pytest

from tiny_run import FAMILIES
from tunewise.errors import ConfigError
from tunewise.strategies.saved import CANDIDATE_FILE, load_candidate, read_check


@pytest.mark.parametrize("name", FAMILIES)
def test_a_loaded_candidate_predicts_what_it_predicted_in_the_run(tiny_run, name):
    result = tiny_run.results.candidate(name)
    assert result.status == "ok", result.error
    assert not any("not saved" in n for n in result.notes), result.notes
    folder = tiny_run.run_dir / "candidates" / name / "saved"
    loaded = load_candidate(folder, device="cpu")
    predicted = [s.prediction for s in loaded.predict(tiny_run.test)]
    assert predicted == result.predictions
    records, predictions = read_check(folder)  # what export re-scores: the run's own answers
    assert [r.id for r in records] == [r.id for r in tiny_run.test] and predictions == result.predictions


def test_what_each_family_saved(tiny_run):
    saved = {name: tiny_run.run_dir / "candidates" / name / "saved" for name in FAMILIES}
    assert (saved["classical"] / "pipeline.skops").is_file()
    prompt = json.loads((saved["few_shot"] / "prompt.json").read_text())
    assert prompt["method"] == "likelihood" and isinstance(prompt["calibrate"], bool) and prompt["k"] == 2
    assert len((saved["few_shot"] / "examples.jsonl").read_text().splitlines()) == 2
    assert (saved["knn_few_shot"] / "embeddings.npy").is_file()
    assert (saved["lora"] / "adapter" / "adapter_model.safetensors").is_file()
    spec = json.loads((saved["lora"] / CANDIDATE_FILE).read_text())["spec"]
    assert spec["strategy"] == "lora" and spec["model"] == "smollm2-135m"


def test_a_new_run_folder_reusing_cached_candidates_gets_their_saved_folders(tiny_run):
    """Nothing is fitted again (every result comes from the store), yet the new folder is self-contained."""
    from tiny_run import make_tiny_run

    again = make_tiny_run(tiny_run.run_dir.parent, name="rerun")
    for name in FAMILIES:
        assert again.results.candidate(name).predictions == tiny_run.results.candidate(name).predictions
        assert (again.run_dir / "candidates" / name / "saved" / CANDIDATE_FILE).is_file()
    assert not (again.run_dir / "candidates" / "lora" / "adapter").exists()  # lora was not trained again
    loaded = load_candidate(again.run_dir / "candidates" / "classical" / "saved")
    assert [s.prediction for s in loaded.predict(tiny_run.test)] == tiny_run.results.candidate("classical").predictions


def test_a_folder_without_a_saved_candidate_is_a_one_line_error(tmp_path):
    with pytest.raises(ConfigError, match="no saved candidate"):
        load_candidate(tmp_path)


def test_a_tampered_pipeline_is_refused(tiny_run, tmp_path):
    """skops builds only the types it is told to trust: a pipeline calling os.system fails to load."""
    import os
    import shutil

    import skops.io as sio
    from sklearn.preprocessing import FunctionTransformer

    folder = tmp_path / "classical"
    shutil.copytree(tiny_run.run_dir / "candidates" / "classical" / "saved", folder)
    sio.dump(FunctionTransformer(os.system), folder / "pipeline.skops")
    with pytest.raises(ConfigError, match="types a TF-IDF pipeline does not"):
        load_candidate(folder)
