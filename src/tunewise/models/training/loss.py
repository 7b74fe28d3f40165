"""The training loss: cross-entropy on the completion tokens only, the LM head run only there."""

from __future__ import annotations

import contextlib

import torch

from tunewise.models.load import body_and_head


class CompletionLoss(torch.nn.Module):
    """Wraps a causal LM; forward returns the cross-entropy of the completion tokens.

    The transformer body gives hidden states, the rows at completion positions are gathered and only
    those go through `lm_head` (the vocabulary projection over every position is a large share of
    the time for short completions). A module of its own so that DDP sees the call (its gradient
    sync hooks run in forward)."""

    def __init__(self, lm, autocast_dtype: torch.dtype | None = None):
        super().__init__()
        self.lm = lm
        self.autocast_dtype = autocast_dtype  # explicit CPU autocast (CUDA autocast comes from accelerate)
        parts = body_and_head(lm)
        self._parts = parts  # a tuple: not registered twice as submodules

    @property
    def fast(self) -> bool:
        return self._parts is not None

    def forward(self, input_ids, attention_mask, loss_index, targets, reduction: str = "mean"):
        ctx = (torch.autocast(input_ids.device.type, dtype=self.autocast_dtype) if self.autocast_dtype
               else contextlib.nullcontext())
        if attention_mask is not None and bool(attention_mask.all()):
            attention_mask = None  # no padding: plain causal attention is faster
        with ctx:
            if self._parts is not None:
                body, head = self._parts
                out = body(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
                hidden = out[0] if isinstance(out, tuple) else out.last_hidden_state
                hidden = hidden.reshape(-1, hidden.size(-1)).index_select(0, loss_index)
                logits = head(hidden)
            else:
                out = self.lm(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
                logits = out.logits.reshape(-1, out.logits.size(-1)).index_select(0, loss_index)
        return torch.nn.functional.cross_entropy(logits.float(), targets, reduction=reduction)


def completion_loss(model, batch: dict[str, torch.Tensor], *, fast: bool = True) -> torch.Tensor:
    """Mean cross-entropy over the completion tokens of a collated batch (no autocast)."""
    module = CompletionLoss(model)
    if not fast:
        module._parts = None
    dev = next(model.parameters()).device
    return module(**{k: v.to(dev) for k, v in batch.items()})
