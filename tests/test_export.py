"""`tunewise export`: the tiny demo run's LoRA as a PEFT adapter and as a merged transformers folder,
each loaded back the way a user would and re-scored against the run's predictions; an export that does
not reproduce them fails (exit 1); gguf without llama.cpp's converter is a one-line error. The GGUF export
runs llama.cpp's real converter when $LLAMA_CPP_DIR holds one (a llama.cpp checkout, or the vendor/llama.cpp
folder of the llama-cpp-python sdist) and is skipped otherwise: nothing is downloaded at test time."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from typer.testing import CliRunner

from tunewise.cli import app


def export(*args):
    return CliRunner().invoke(app, ["export", *map(str, args)])


def test_adapter_export_loads_with_peft_and_reproduces_the_run(tiny_run, tmp_path):
    done = export(tiny_run.run_dir, "--format", "adapter", "--out", tmp_path / "adapter")  # the verdict's: lora
    assert done.exit_code == 0, done.output
    assert "100% of the run's predictions reproduced" in done.output and "passed" in done.output
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "adapter" / "tokenizer_config.json").is_file()
    assert (Path(config["base_model_name_or_path"]) / "config.json").is_file()


def test_merged_export_loads_with_transformers_and_reproduces_the_run(tiny_run, tmp_path):
    done = export(tiny_run.run_dir, "--candidate", "lora", "--format", "merged", "--out", tmp_path / "merged")
    assert done.exit_code == 0, done.output
    assert "100% of the run's predictions reproduced" in done.output
    assert (tmp_path / "merged" / "config.json").is_file() and list((tmp_path / "merged").glob("*.safetensors"))
    assert not (tmp_path / "merged" / "adapter_config.json").exists()


def llama_cpp_converter_or_skip() -> Path:
    folder = os.environ.get("LLAMA_CPP_DIR")
    converter = Path(folder) / "convert_hf_to_gguf.py" if folder else None
    if converter is None or not converter.is_file():
        pytest.skip("llama.cpp's convert_hf_to_gguf.py not found: set LLAMA_CPP_DIR to a llama.cpp checkout (or "
                    "the vendor/llama.cpp folder of the llama-cpp-python sdist) to run the real GGUF conversion")
    return converter


def test_gguf_export_converts_with_llama_cpp_and_reproduces_the_run(tiny_run, tmp_path):
    """The merged LoRA converted to an f16 GGUF by llama.cpp's converter (--converter), then loaded back with
    transformers' GGUF loader, re-scores the run's test records."""
    converter = llama_cpp_converter_or_skip()
    done = export(tiny_run.run_dir, "--format", "gguf", "--out", tmp_path / "gguf", "--converter", converter)
    assert done.exit_code == 0, done.output
    assert "passed" in done.output
    agreement = int(re.search(r"(\d+)% of the run's predictions reproduced", done.output)[1])
    assert agreement >= 90
    assert sorted(p.name for p in (tmp_path / "gguf").iterdir()) == ["lora.gguf"]
    from gguf import GGUFReader

    fields = GGUFReader(tmp_path / "gguf" / "lora.gguf").fields
    arch = fields["general.architecture"]
    assert bytes(arch.parts[arch.data[0]]).decode() == "llama"


def test_an_export_that_does_not_reproduce_the_run_fails(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run.run_dir, run, ignore=shutil.ignore_patterns("model.safetensors"))
    check = run / "candidates" / "lora" / "saved" / "check.jsonl"
    labels = tiny_run.results.task.labels
    rows = [json.loads(line) for line in check.read_text().splitlines()]
    for row in rows:  # pretend the run predicted another label every time
        row["prediction"] = labels[(labels.index(row["prediction"]) + 1) % len(labels)]
    check.write_text("".join(json.dumps(row) + "\n" for row in rows))
    done = export(run, "--format", "adapter", "--out", tmp_path / "adapter")
    assert done.exit_code == 1 and "export check failed" in done.output and "0% of the run's" in done.output


def test_export_errors_are_one_line(tiny_run, tmp_path, monkeypatch):
    monkeypatch.delenv("LLAMA_CPP_DIR", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no converter on PATH either, whatever this machine has
    gguf = export(tiny_run.run_dir, "--format", "gguf", "--out", tmp_path / "g")
    assert gguf.exit_code == 2 and "convert_hf_to_gguf.py" in gguf.output and "LLAMA_CPP_DIR" in gguf.output
    missing = export(tiny_run.run_dir, "--format", "gguf", "--out", tmp_path / "g", "--converter", tmp_path / "no.py")
    assert missing.exit_code == 2 and "--converter" in missing.output and "no such file" in missing.output
    merged = export(tiny_run.run_dir, "--format", "merged", "--out", tmp_path / "m", "--converter", tmp_path / "no.py")
    assert merged.exit_code == 2 and "only used with --format gguf" in merged.output
    classical = export(tiny_run.run_dir, "--candidate", "classical", "--format", "merged", "--out", tmp_path / "c")
    assert classical.exit_code == 2 and "no trained weights to export" in classical.output
    bad = export(tiny_run.run_dir, "--format", "onnx", "--out", tmp_path / "o")
    assert bad.exit_code == 2 and "--format 'onnx': unknown" in bad.output
