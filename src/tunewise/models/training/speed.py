"""Device settings that change how fast training runs, not what it computes (up to rounding):
attention kernel, precision and accelerate set-up, bf16 copies of frozen weights, a cheap CPU
dropout, thread counts."""

from __future__ import annotations

import os

import torch

from tunewise.models.load import pick_attention


def use_cuda(model) -> bool:
    """CUDA when the model is there, or when launched distributed on a CUDA machine without --cpu."""
    if next(model.parameters()).device.type == "cuda":
        return True
    cpu_forced = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    return torch.cuda.is_available() and not cpu_forced and int(os.environ.get("WORLD_SIZE", "1")) > 1


def local_world() -> int:
    return int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))


def mixed_precision(dtype: str, on_cuda: bool) -> str:
    """accelerate's mixed-precision name for a TrainConfig dtype: bf16 where the device computes it
    natively (CUDA with bf16, CPUs with AMX/AVX512-BF16) or when asked for, else "no"."""
    if dtype == "float32":
        return "no"
    if on_cuda:
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    from tunewise.models.load import cpu_has_bf16

    return "bf16" if dtype == "bfloat16" or cpu_has_bf16() else "no"


def accelerator(cpu: bool, mixed_precision: str):
    """An Accelerator for this run; its shared state is reset when an earlier single-process run in
    this process used other settings (accelerate forbids changing them). CPU autocast is applied by
    the loss module itself, so accelerate gets mixed precision on CUDA only."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    kwargs = {"cpu": cpu, "mixed_precision": "no" if cpu else mixed_precision}
    try:
        return Accelerator(**kwargs)
    except ValueError:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise
        AcceleratorState._reset_state(reset_partial_state=True)
        return Accelerator(**kwargs)


def set_attention(model, on_cuda: bool, max_length: int) -> None:
    """The attention kernel that trains fastest within memory on this device (see pick_attention)."""
    choice = pick_attention("cuda" if on_cuda else "cpu", max_length)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if choice and getattr(base.config, "_attn_implementation", None) != choice:
        base.set_attn_implementation(choice)


def set_threads(world: int) -> None:
    """Processes sharing the cores split them: oversubscribed OpenMP threads crawl."""
    if "OMP_NUM_THREADS" in os.environ:
        return
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    torch.set_num_threads(max(1, cores // max(1, world)))


def swap_frozen_linears(model, dtype: torch.dtype) -> list:
    """Give frozen Linear layers a copy of their weight in the autocast dtype for the run; returns what
    to put back. Autocast casts such weights at every use anyway (it caches casts only for weights
    that require grad) and keeps the casts for backward, so results and peak memory are the same
    and the per-step casts go. Weights shared with the input embedding stay: lookups are not autocast."""
    embedding = model.get_input_embeddings().weight if hasattr(model, "get_input_embeddings") else None
    swapped = []
    for module in model.modules():
        w = getattr(module, "weight", None)
        if isinstance(module, torch.nn.Linear) and not w.requires_grad and w is not embedding and w.dtype != dtype:
            module.weight = torch.nn.Parameter(w.detach().to(dtype), requires_grad=False)
            swapped.append((module, w))
    return swapped


def restore_linears(swapped: list) -> None:
    for module, weight in swapped:
        module.weight = weight


class FastDropout(torch.nn.Module):
    """Dropout whose mask is cheap on CPU: 16-bit random lanes cut from 64-bit draws.

    torch's CPU dropout draws one random number per element on a single thread; for the seven LoRA
    inputs of every layer that costs more than the adapter matmuls. Same keep probability (to 1/65536),
    same scaling; other devices use the native dropout."""

    def __init__(self, p: float):
        super().__init__()
        self.p = float(p)
        self.threshold = -32768 + round(self.p * 65536)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu":
            return torch.nn.functional.dropout(x, self.p, True)
        n = x.numel()
        draws = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_(-2**63, None)
        keep = draws.view(torch.int16)[:n].view(x.shape) >= self.threshold
        return torch.where(keep, x * (1.0 / (1.0 - self.p)), 0.0)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def swap_dropout(model, fast: bool) -> list:
    """Replace the LoRA input dropouts by FastDropout (fast=True); returns what to put back."""
    swapped = []
    for module in model.modules():
        drops = getattr(module, "lora_dropout", None)
        if not isinstance(drops, torch.nn.ModuleDict):
            continue
        for key, drop in list(drops.items()):
            if fast and isinstance(drop, torch.nn.Dropout) and drop.p > 0:
                drops[key] = FastDropout(drop.p)
                swapped.append((drops, key, drop))
    return swapped


def restore_dropout(swapped: list) -> None:
    for drops, key, drop in swapped:
        drops[key] = drop
