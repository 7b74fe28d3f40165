"""Which weights train: LoRA adapters (PEFT) in the top layers, or every weight for full fine-tuning."""

from __future__ import annotations

import math
import re

import torch

from tunewise.errors import ConfigError


def with_lora(model, cfg):
    """The model with LoRA adapters injected per `cfg` (a TrainConfig); a PeftModel is reused as is,
    with only its adapters trainable."""
    from peft import LoraConfig, PeftModel, get_peft_model
    from peft.tuners.lora import LoraLayer

    if isinstance(model, PeftModel):
        for name, p in model.named_parameters():
            p.requires_grad_("lora_" in name)
        return model
    if any(isinstance(m, LoraLayer) for m in model.modules()):
        raise ConfigError("the model already has LoRA layers injected (from an earlier train call)",
                          fix="pass a freshly loaded model, or the PeftModel returned before")
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    targets = [t for t in cfg.target_modules if t in present]
    if not targets:
        raise ConfigError(f"LoRA target_modules {cfg.target_modules} match no module of the model",
                          fix=f"pick from {sorted(present)[:20]}")
    lora = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets,
                      task_type="CAUSAL_LM", bias="none", layers_to_transform=adapted_layers(model, cfg))
    return get_peft_model(model, lora)


def all_trainable(model):
    """Full fine-tuning: every weight trains, in fp32 (AdamW on half-precision weights loses most
    small updates)."""
    if any(p.dtype in (torch.float16, torch.bfloat16) for p in model.parameters()):
        model.float()
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def adapted_layers(model, cfg) -> list[int] | None:
    """Indices of the top `layers_share` of the transformer layers; None: all of them."""
    n_layers = getattr(model.config, "num_hidden_layers", None)
    if cfg.layers_share >= 1 or not n_layers:
        return None
    return list(range(n_layers - max(1, math.ceil(n_layers * cfg.layers_share)), n_layers))


def lora_trainable_params(model, cfg) -> int:
    """How many parameters LoRA will train, without injecting it: r * (in + out) for each targeted
    Linear in the adapted layers (the layer index is the number in the module's name, as for PEFT)."""
    layers = adapted_layers(model, cfg)
    total = 0
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or name.rsplit(".", 1)[-1] not in cfg.target_modules:
            continue
        index = re.search(r"\.(\d+)\.", name)
        if layers is None or (index is not None and int(index.group(1)) in layers):
            total += cfg.r * (module.in_features + module.out_features)
    return total


def trainable(model) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}
