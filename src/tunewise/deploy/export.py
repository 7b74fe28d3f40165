"""`tunewise export`: a run's fine-tuned candidate written as a PEFT adapter, a merged transformers
folder or a GGUF file, then checked.

The check loads what was written the way a user would (peft's AutoPeftModelForCausalLM,
transformers' AutoModelForCausalLM, a GGUF through transformers), re-scores the test records saved
beside the candidate (candidates/<name>/saved/check.jsonl: the run's first test records and its
predictions) with the run's prompt, and fails when the export scores worse than the run beyond noise
(exact McNemar, p < 0.05) or agrees with the run's predictions on less than MIN_AGREEMENT of them:
merged models have been seen to answer well in Python and much worse once converted to GGUF
(LLaMA-Factory #6020). A `rag_lora` exports its adapter (or the merged model) alone: the check puts the
passages its saved index retrieves in the prompts, as the run did; a `rag` candidate has no weights.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tunewise.errors import ConfigError, TunewiseError

FORMATS = ("adapter", "merged", "gguf")
MIN_AGREEMENT = 0.9
ALPHA = 0.05
CONVERTER = "convert_hf_to_gguf.py"
LORAS = ("lora", "rag_lora")  # saved with an adapter/ folder


class ExportCheckFailed(TunewiseError):
    """The exported model does not score like the run's candidate."""

    exit_code = 1


@dataclass
class Check:
    records: int
    metric: str
    run_value: float
    export_value: float
    agreement: float
    p_value: float | None

    @property
    def passed(self) -> bool:
        worse = self.export_value < self.run_value and self.p_value is not None and self.p_value < ALPHA
        return not worse and self.agreement >= MIN_AGREEMENT

    def __str__(self) -> str:
        p = "" if self.p_value is None else f", p = {self.p_value:.2g}"
        return (f"{self.metric} on {self.records} test records: {self.export_value:.3f} exported vs "
                f"{self.run_value:.3f} in the run{p}; {self.agreement:.0%} of the run's predictions reproduced")


def export(run_dir: Path, name: str | None, fmt: str, out: Path, device: str = "auto", say=print,
           converter: Path | None = None) -> str:
    """Write the export into `out`, check it, and return the one-paragraph report. `converter`: llama.cpp's
    convert_hf_to_gguf.py for gguf (default: found in $LLAMA_CPP_DIR or on PATH)."""
    from tunewise.deploy.run_folder import choose_candidate

    if fmt not in FORMATS:
        raise ConfigError(f"--format '{fmt}': unknown", fix=f"use one of {', '.join(FORMATS)}")
    if converter is not None and fmt != "gguf":
        raise ConfigError(f"--converter: only used with --format gguf, not {fmt}", fix="leave --converter out")
    converter = find_converter(converter) if fmt == "gguf" else None  # missing: fail before any work
    _, name, folder = choose_candidate(run_dir, name)
    saved = json.loads((folder / "candidate.json").read_text())
    strategy = saved["spec"]["strategy"]
    if saved["family"] != "finetune" and strategy not in LORAS:
        why = " (the base model prompted with retrieved passages)" if saved["family"] == "retrieval" else ""
        raise ConfigError(f"--candidate '{name}' ({saved['family']}) has no trained weights to export{why}",
                          fix="choose a fine-tuned candidate (lora, full_ft, rag_lora), or serve this one with "
                              "`tunewise serve`")
    if fmt == "adapter" and strategy not in LORAS:
        raise ConfigError(f"--format adapter: '{name}' is fully fine-tuned, not a LoRA", fix="use --format merged")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"--out {out}: not empty", fix="pass a new or empty folder")
    out.mkdir(parents=True, exist_ok=True)
    base = saved["spec"]["model"]
    if fmt == "adapter":
        shutil.copytree(folder / "adapter", out, dirs_exist_ok=True)
        _point_at_base(out, base)
        say(f"adapter written to {out}; checking it ...")
        model, tokenizer = _load_adapter(out)
    elif fmt == "merged":
        _write_merged(folder, strategy, base, out)
        say(f"merged model written to {out}; checking it ...")
        model, tokenizer = _load_folder(out, device)
    else:
        with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
            _write_merged(folder, strategy, base, Path(tmp))
            gguf = out / f"{name}.gguf"
            _convert(converter, Path(tmp), gguf)
        say(f"GGUF written to {gguf}; checking it ...")
        model, tokenizer = _load_folder(out, device, gguf_file=gguf.name)
    check = _check(folder, saved, model, tokenizer, device)
    report = f"export {fmt} of '{name}' to {out}: {check}"
    if strategy == "rag_lora":  # the weights alone do not retrieve: say where the index is
        report += f" (checked with the passages of the index saved in {folder}, which the export does not hold)"
    if not check.passed:
        raise ExportCheckFailed(f"export check failed: {report}",
                                fix="do not deploy this export; try --format merged or adapter")
    return report + ": passed"


def _point_at_base(adapter: Path, base: str) -> None:
    """The adapter's base model as a folder transformers loads (the shipped GGUF is converted once)."""
    from tunewise.models.load import model_folder

    path = adapter / "adapter_config.json"
    config = json.loads(path.read_text())
    config["base_model_name_or_path"] = model_folder(base)
    path.write_text(json.dumps(config, indent=2))


def _load_adapter(folder: Path):
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    return AutoPeftModelForCausalLM.from_pretrained(str(folder)), AutoTokenizer.from_pretrained(str(folder))


def _load_folder(folder: Path, device: str, gguf_file: str | None = None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunewise.models.load import pick_attention, pick_device

    kw = {"gguf_file": gguf_file} if gguf_file else {}
    model = AutoModelForCausalLM.from_pretrained(str(folder), attn_implementation=pick_attention(pick_device(device)),
                                                 **kw)
    return model, AutoTokenizer.from_pretrained(str(folder), **kw)


def _write_merged(folder: Path, strategy: str, base: str, out: Path) -> None:
    """LoRA merged into the base in fp32 (the full fine-tune is copied): a plain transformers folder."""
    if strategy not in LORAS:
        shutil.copytree(folder / "model", out, dirs_exist_ok=True)
        return
    from peft import PeftModel

    from tunewise.models.load import load_model

    model, tokenizer = load_model(base, device="cpu", dtype="float32")
    merged = PeftModel.from_pretrained(model, str(folder / "adapter")).merge_and_unload()
    merged.save_pretrained(out)
    tokenizer.save_pretrained(out)


def find_converter(given: Path | None = None) -> Path:
    """llama.cpp's converter: --converter, else $LLAMA_CPP_DIR/convert_hf_to_gguf.py, else on PATH. It is
    run with tunewise's Python and imports the `gguf-py` and `conversion` folders beside it, so a llama.cpp
    checkout (or the vendor/llama.cpp folder of the llama-cpp-python sdist) is what to point at."""
    if given is not None:
        if not Path(given).is_file():
            raise ConfigError(f"--converter {given}: no such file", fix=f"pass the path of llama.cpp's {CONVERTER}")
        return Path(given)
    candidates = [Path(os.environ["LLAMA_CPP_DIR"]) / CONVERTER] if os.environ.get("LLAMA_CPP_DIR") else []
    on_path = shutil.which(CONVERTER)
    candidates += [Path(on_path)] if on_path else []
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise ConfigError(f"--format gguf needs llama.cpp's {CONVERTER}, not found",
                          fix="git clone https://github.com/ggml-org/llama.cpp, pip install 'tunewise[gguf]' "
                              "(its Python needs) and set LLAMA_CPP_DIR to that folder (or pass --converter PATH)")
    return found


def _convert(converter: Path, merged: Path, gguf: Path) -> None:
    done = subprocess.run([sys.executable, str(converter), str(merged), "--outfile", str(gguf), "--outtype", "f16"],
                          capture_output=True, text=True)
    if done.returncode != 0 or not gguf.is_file():
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise TunewiseError(f"{converter.name} failed (exit {done.returncode}): {tail[0]}",
                            fix=f"it runs with tunewise's Python ({sys.executable}): pip install 'tunewise[gguf]' "
                                "there, or what the error names")


def _check(folder: Path, saved: dict, model, tokenizer, device: str) -> Check:
    """Re-score the saved test records with the exported model, prompted and scored as in the run."""
    from tunewise.config import TaskSpec
    from tunewise.evaluate.sequential import paired_test
    from tunewise.evaluate.stats import metric_value
    from tunewise.models.lm import LanguageModel
    from tunewise.models.load import pick_device
    from tunewise.strategies.finetune import ANSWER_FILE, FineTune
    from tunewise.strategies.prompts import input_turns, system_turn
    from tunewise.strategies.saved import read_check

    records, run_predictions = read_check(folder)
    if not records:
        raise TunewiseError(f"{folder}: no test records saved to check the export against",
                            fix="re-run `tunewise run` with --out pointing at the run folder")
    task, labels = TaskSpec.model_validate(saved["task"]), saved["labels"]
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = model.to(pick_device(device)).eval()
    lm = LanguageModel(FineTune._for_scoring(model, device), tokenizer, str(folder))
    system = system_turn(task, labels)
    rag = saved["spec"]["strategy"] == "rag_lora"
    rests = _turns(folder, saved, records) if rag else [input_turns(r) for r in records]
    answer = folder / ANSWER_FILE  # generation: as many new tokens as in the run
    scored = (lm.score_labels(system, rests, labels, full=False) if task.type == "classification"
              else lm.generate([system + rest for rest in rests],
                               json.loads(answer.read_text())["max_new_tokens"] if answer.is_file() else 64))
    exported = [s.prediction for s in scored]
    refs = [r.output for r in records]
    metric = task.primary_metric
    classes = labels if task.type == "classification" else None
    test = paired_test(metric, exported, run_predictions, refs, classes, ALPHA, 1000, 0) if len(refs) > 1 else {}
    return Check(records=len(records), metric=metric, run_value=metric_value(metric, run_predictions, refs, classes),
                 export_value=metric_value(metric, exported, refs, classes),
                 agreement=sum(a == b for a, b in zip(exported, run_predictions)) / len(records),
                 p_value=test.get("p_value"))


def _turns(folder: Path, saved: dict, records) -> list:
    """rag_lora's prompts: each record with the passages its saved index retrieves, as in the run."""
    from tunewise.strategies.base import CandidateSpec, build

    strategy = build(CandidateSpec.model_validate(saved["spec"]))
    strategy.load_index(folder)
    strategy.retrieve(records)
    return [strategy.turns(r) for r in records]
