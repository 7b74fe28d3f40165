"""The training loss: cross-entropy on the completion tokens only, the LM head run only there, and
a prompt prefix that every example of a batch shares (the system turn) encoded once."""

from __future__ import annotations

import contextlib
import inspect

import torch

from tunewise.models.load import body_and_head

MIN_SHARED_PREFIX = 16  # tokens; below this the second forward call costs more than it saves


def shared_prefix(input_ids: torch.Tensor, loss_index: torch.Tensor) -> int:
    """How many leading tokens every row of the batch has in common, short of the first position
    whose hidden state the loss reads."""
    if input_ids.size(0) < 2:
        return 0
    same = (input_ids == input_ids[:1]).all(0).long()
    common = int(same.cumprod(0).sum())
    return min(common, int((loss_index % input_ids.size(1)).min()))


class CompletionLoss(torch.nn.Module):
    """Wraps a causal LM; forward returns the cross-entropy of the completion tokens.

    The transformer body gives hidden states, the rows at completion positions are gathered and only
    those go through `lm_head` (the vocabulary projection over every position is a large share of
    the time for short completions). A prompt prefix shared by every row of the batch (the system
    turn: about a quarter of the demo's tokens) runs once. A module of its own so that DDP sees the
    call (its gradient sync hooks run in forward)."""

    def __init__(self, lm, autocast_dtype: torch.dtype | None = None):
        super().__init__()
        self.lm = lm
        self.autocast_dtype = autocast_dtype  # explicit CPU autocast (CUDA autocast comes from accelerate)
        parts = body_and_head(lm)
        self._parts = parts  # a tuple: not registered twice as submodules
        accepts = inspect.signature(parts[0].forward).parameters if parts else {}
        self._cache_kw = next((k for k in ("cache", "past_key_values") if k in accepts), None)  # renamed in 5.x

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
                prefix = shared_prefix(input_ids, loss_index) if self._cache_kw else 0
                if prefix >= MIN_SHARED_PREFIX:
                    hidden = self._body_after_prefix(body, input_ids, attention_mask, prefix, self._cache_kw)
                    loss_index = loss_index - prefix * (loss_index // input_ids.size(1) + 1)
                else:
                    out = body(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
                    hidden = out[0] if isinstance(out, tuple) else out.last_hidden_state
                hidden = hidden.reshape(-1, hidden.size(-1)).index_select(0, loss_index)
                logits = head(hidden)
            else:
                out = self.lm(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
                logits = out.logits.reshape(-1, out.logits.size(-1)).index_select(0, loss_index)
        return torch.nn.functional.cross_entropy(logits.float(), targets, reduction=reduction)

    @staticmethod
    def _body_after_prefix(body, input_ids, attention_mask, prefix: int, kw: str) -> torch.Tensor:
        """Hidden states of the positions after the shared prefix: the prefix runs once, its keys and
        values (with their autograd graph) are repeated for every row, and the rows run on from
        there. The same numbers as one forward over the whole batch, up to rounding; the gradients
        of every row reach the prefix through the repeat."""
        from transformers import DynamicCache

        cache = DynamicCache(config=body.config)
        body(input_ids=input_ids[:1, :prefix], use_cache=True, **{kw: cache})
        cache.batch_repeat_interleave(input_ids.size(0))
        out = body(input_ids=input_ids[:, prefix:], attention_mask=attention_mask, use_cache=True, **{kw: cache})
        return out[0] if isinstance(out, tuple) else out.last_hidden_state


def completion_loss(model, batch: dict[str, torch.Tensor], *, fast: bool = True) -> torch.Tensor:
    """Mean cross-entropy over the completion tokens of a collated batch (no autocast)."""
    module = CompletionLoss(model)
    if not fast:
        module._parts = None
    dev = next(model.parameters()).device
    return module(**{k: v.to(dev) for k, v in batch.items()})
