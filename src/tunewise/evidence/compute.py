"""Training compute: FLOPs from the standard 6N-per-token rule, turned into time on a measured device."""

from __future__ import annotations

import time
from typing import Any, Literal

from tunewise.results import ComputeEstimate


def training_flops(params: int, tokens: int, method: Literal["lora", "full"], layers_share: float = 1.0) -> float:
    """FLOPs to train on `tokens` tokens (training tokens x epochs) with an N-parameter model.

    A forward pass costs ~2N per token; the backward pass costs ~2N for activation gradients plus ~2N
    for weight gradients (Kaplan et al. 2020), so full fine-tuning is ~6N. LoRA freezes the base weights
    and skips their weight gradients but still back-propagates through them: ~4N (the adapter's own
    gradients are negligible, trainable << N). With adapters only in the top `layers_share` of the
    layers, back-propagation stops below them: ~(2 + 2 * layers_share) N.
    """
    if method not in ("lora", "full"):
        raise ValueError(f"method must be 'lora' or 'full', got {method!r}")
    if not 0 < layers_share <= 1:
        raise ValueError(f"layers_share must be in (0, 1], got {layers_share}")
    per_token = 2.0 + 2.0 * layers_share if method == "lora" else 6.0
    return per_token * float(params) * float(tokens)


def measure_device_flops(device: str = "cpu", dtype: Any = None, size: int = 1024,
                         seconds: float = 1.0) -> float:
    """Achieved dense matmul FLOP/s on `device`: one warm-up, then size^3 matmuls until `seconds` pass.

    dtype defaults to bfloat16 on accelerators and float32 on CPU (where bf16 matmul is often slower);
    it may be a torch dtype or its name. torch is imported here so the package imports without it.
    """
    import torch

    if dtype is None:
        dtype = torch.float32 if device == "cpu" else torch.bfloat16
    elif isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)
    with torch.no_grad():
        a = torch.randn(size, size, device=device, dtype=dtype)
        b = torch.randn(size, size, device=device, dtype=dtype)
        torch.matmul(a, b)
        sync()
        count, start = 0, time.perf_counter()
        while True:
            torch.matmul(a, b)
            count += 1
            if count % 4 == 0 or device == "cpu":
                sync()
                elapsed = time.perf_counter() - start
                if elapsed >= seconds:
                    break
    return 2.0 * size ** 3 * count / elapsed


def estimate_compute(candidate: str, params: int, trainable_params: int, tokens: int,
                     method: Literal["lora", "full"], device_flops_per_s: float, efficiency: float,
                     budget_seconds: float | None, layers_share: float = 1.0,
                     overhead_seconds: float = 0.0) -> ComputeEstimate:
    """Estimated training time = FLOPs / (device FLOP/s x efficiency), checked against the budget.

    `efficiency` is the fraction of the matmul rate real training achieves (data loading, small
    kernels, attention, optimizer steps). The caller measures it from a short calibration run as
    achieved FLOP/s / device_flops_per_s; pure matmul peak alone would underestimate time severalfold.
    `overhead_seconds` is a training's fixed cost (set-up), measured beside the efficiency.
    """
    if device_flops_per_s <= 0 or efficiency <= 0:
        raise ValueError("device_flops_per_s and efficiency must be positive")
    flops = training_flops(params, tokens, method, layers_share)
    seconds = overhead_seconds + flops / (device_flops_per_s * efficiency)
    return ComputeEstimate(candidate=candidate, params=params, trainable_params=trainable_params, tokens=tokens,
                           flops=flops, device_flops_per_s=device_flops_per_s, estimated_seconds=seconds,
                           budget_seconds=budget_seconds,
                           within_budget=budget_seconds is None or seconds <= budget_seconds)
