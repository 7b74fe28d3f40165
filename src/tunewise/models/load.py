"""Load a causal language model and its tokenizer: the shipped default, a hub id, a folder or a GGUF.

GGUF files are de-quantised by transformers (needs the `gguf` package) into torch weights that
LoRA can train. That conversion takes ~20 s, so the result is saved once as safetensors in the
tunewise cache and later loads take about a second.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from tunewise.assets import DEFAULT_MODEL, smollm2_gguf
from tunewise.errors import ConfigError

ALIASES = {DEFAULT_MODEL: smollm2_gguf, "smollm2": smollm2_gguf}


def cache_dir() -> Path:
    return Path(os.environ.get("TUNEWISE_CACHE", Path.home() / ".cache" / "tunewise"))


@dataclass(frozen=True)
class ModelRef:
    """Where a model comes from, resolved from what the user typed."""

    name: str  # as the user gave it (shown in results)
    path: str  # hub id or local folder to from_pretrained
    gguf_file: str | None = None


def resolve(name: str) -> ModelRef:
    """Alias, .gguf file, local folder or hub id; a local path that does not exist fails here."""
    if name in ALIASES:
        gguf = ALIASES[name]()
        return ModelRef(name, str(gguf.parent), gguf.name)
    p = Path(name).expanduser()
    if p.suffix == ".gguf":
        if not p.is_file():
            raise ConfigError(f"--model '{name}': GGUF file not found", fix="check the path")
        return ModelRef(name, str(p.parent), p.name)
    if p.is_dir():
        if not (p / "config.json").is_file() and not list(p.glob("*.gguf")):
            raise ConfigError(f"--model '{name}': folder has no config.json or .gguf",
                              fix="point at a saved transformers model folder")
        ggufs = sorted(p.glob("*.gguf")) if not (p / "config.json").is_file() else []
        return ModelRef(name, str(p), ggufs[0].name if ggufs else None)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ConfigError(f"--model '{name}': no such folder or file",
                          fix=f"use a local path, a hub id like org/name, or '{DEFAULT_MODEL}'")
    return ModelRef(name, name)  # a hub id; loading fails with a clear error when offline


def _converted_dir(ref: ModelRef) -> Path:
    gguf = Path(ref.path) / str(ref.gguf_file)
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    return cache_dir() / "models" / f"{gguf.stem}-{key}"


def _materialise(ref: ModelRef) -> str:
    """A folder transformers loads quickly: GGUF de-quantised once into the cache."""
    if ref.gguf_file is None:
        return ref.path
    target = _converted_dir(ref)
    if (target / "config.json").is_file():
        return str(target)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    tokenizer = AutoTokenizer.from_pretrained(ref.path, gguf_file=ref.gguf_file)
    model = AutoModelForCausalLM.from_pretrained(ref.path, gguf_file=ref.gguf_file)
    # The weights are plain torch tensors after de-quantisation; drop the GGUF marker so they save.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)  # atomic: a half-written conversion is never loaded
    return str(target)


def model_folder(name: str) -> str:
    """A transformers folder for a model name (the shipped GGUF converted once): what a local server
    such as `transformers serve` can load."""
    return _materialise(resolve(name))


def pick_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: CUDA is not available here", fix="use --device cpu or auto")
    return device


def pick_dtype(dtype: str, device: str):
    """bf16 on CUDA and on CPUs with native bf16 (AMX/AVX512-BF16); fp32 otherwise."""
    import torch

    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_has_bf16() else torch.float32
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype not in table:
        raise ConfigError(f"--dtype '{dtype}': unknown", fix="use auto, float32, bfloat16 or float16")
    return table[dtype]


EAGER_MAX_TOKENS = 512


def pick_attention(device: str, max_tokens: int | None = None) -> str | None:
    """'eager' on CPU: for the short sequences of fine-tuning, plain matmul attention beat torch's CPU
    flash kernel here (LoRA training 468 vs 381 tokens/s on 2 cores); inference switches to sdpa for
    its calls (LanguageModel._attention). Eager keeps every layer's full score matrix for backward, so
    training on sequences over EAGER_MAX_TOKENS keeps sdpa. None (the model's default, sdpa) elsewhere."""
    if not device.startswith("cpu"):
        return None
    return "eager" if max_tokens is None or max_tokens <= EAGER_MAX_TOKENS else "sdpa"


@lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    path = _materialise(resolve(name))
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except OSError as exc:
        raise ConfigError(f"--model '{name}': cannot load ({str(exc).splitlines()[0]})",
                          fix=f"check the name or use the shipped '{DEFAULT_MODEL}' offline") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


# Where configs keep the longest sequence the model was trained for, by model family.
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx",
                "max_seq_len")
PLACEHOLDER_LENGTH = 1_000_000  # tokenizers without a limit report 1e30 as model_max_length


def context_length(name: str, tokenizer=None) -> int | None:
    """The model's context in tokens: the smallest of its config's length fields and the tokenizer's
    model_max_length (ignored when it is a placeholder); None when neither says."""
    from transformers import AutoConfig

    limits = []
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(name)
    t_max = int(getattr(tokenizer, "model_max_length", 0) or 0)
    if 0 < t_max < PLACEHOLDER_LENGTH:
        limits.append(t_max)
    try:
        config = AutoConfig.from_pretrained(_materialise(resolve(name)))
    except (OSError, ValueError):
        config = None
    configs = [config, getattr(config, "text_config", None)] if config is not None else []
    for cfg in configs:
        for key in CONTEXT_KEYS:
            value = getattr(cfg, key, None)
            if isinstance(value, int) and 0 < value < PLACEHOLDER_LENGTH:
                limits.append(value)
                break
    return min(limits) if limits else None


def load_model(name: str, *, device: str = "auto", dtype: str = "float32"):
    """(model, tokenizer) on the chosen device, in eval mode."""
    from transformers import AutoModelForCausalLM

    device = pick_device(device)
    tokenizer = load_tokenizer(name)
    path = _materialise(resolve(name))
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=pick_dtype(dtype, device),
                                                     attn_implementation=pick_attention(device))
    except OSError as exc:
        raise ConfigError(f"--model '{name}': cannot load ({str(exc).splitlines()[0]})",
                          fix=f"check the name or use the shipped '{DEFAULT_MODEL}' offline") from exc
    model.to(device).eval()
    return model, tokenizer


def cast_weights(model, dtype):
    """Cast the parameters only, as from_pretrained(dtype=...) leaves a model: fp32 buffers such as the
    rotary inv_freq stay fp32 (`model.to(bf16)` would round them, shifting every position's angle)."""
    for p in model.parameters():
        if p.is_floating_point() and p.dtype != dtype:
            p.data = p.data.to(dtype)
    return model


def body_and_head(model):
    """(transformer body, lm_head) of a LlamaForCausalLM-style model, or None when it has no such
    split or post-processes its logits (soft-capping, scaling), where only the full forward is right.

    Running them apart lets the head see only the positions that matter, as a contiguous 2-D input."""
    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    body = getattr(base, getattr(base, "base_model_prefix", "model") or "model", None)
    head = getattr(base, "lm_head", None)
    if head is None and hasattr(base, "get_output_embeddings"):
        head = base.get_output_embeddings()
    cfg = getattr(base, "config", None)
    if any(getattr(cfg, k, None) not in (None, 1.0) for k in ("final_logit_softcapping", "logit_scale")):
        return None
    if not isinstance(body, torch.nn.Module) or not isinstance(head, torch.nn.Module) or body is base:
        return None
    return body, head


def count_params(model) -> tuple[int, int]:
    """(all parameters, trainable parameters)."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable
