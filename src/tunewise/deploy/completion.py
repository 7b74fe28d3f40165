"""`/v1/completions` over a local language model: greedy continuation, and with `echo` + `logprobs`
the log-probability of every prompt token (what vLLM and llama.cpp's server return, and what
tunewise's HTTP backend asks for to score labels by likelihood: models/http.py)."""

from __future__ import annotations

import torch


@torch.inference_mode()
def complete(lm, ids: list[int], *, max_tokens: int, echo: bool, logprobs: int | None) -> dict:
    """One choice of an OpenAI completion (without its index) and its token counts.

    The continuation is greedy (never sampled). Log-probabilities come from one full forward over
    prompt + continuation; the first prompt token has none (null), as in the OpenAI format."""
    tok = lm.tokenizer
    new: list[int] = []
    logp = None
    if max_tokens == 1 or (max_tokens == 0 and logprobs is not None):  # one forward: prompt log-probs + next
        logp = _forward(lm, ids)
        new = [int(logp[-1].argmax())] if max_tokens else []
    elif max_tokens > 1:
        out = lm.model.generate(torch.tensor([ids], device=lm.device), max_new_tokens=max_tokens, do_sample=False,
                                eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        new = out[0, len(ids):].tolist()
    shown = (ids + new) if echo else new
    choice = {"text": tok.decode(shown), "finish_reason": "length" if len(new) == max_tokens else "stop",
              "logprobs": None}
    if logprobs is not None and shown:
        if logp is None or len(new) > 1:
            logp = _forward(lm, ids + new)
        choice["logprobs"] = _logprobs(lm, logp, ids + new, 0 if echo else len(ids), logprobs)
    return choice | {"usage": (len(ids), len(new))}


def _forward(lm, ids: list[int]) -> torch.Tensor:
    """Log-probabilities [positions, vocab]: row i predicts token i + 1."""
    logits = lm.model(torch.tensor([ids], device=lm.device)).logits[0].float()
    return torch.log_softmax(logits, dim=-1)


def _logprobs(lm, logp: torch.Tensor, ids: list[int], start: int, top: int) -> dict:
    """tokens, token_logprobs, top_logprobs and text_offset for ids[start:] (logp covers ids[:-1] at least)."""
    tok = lm.tokenizer
    tokens = [tok.decode([t]) for t in ids[start:]]
    token_logprobs: list[float | None] = []
    top_logprobs: list[dict | None] = []
    for i in range(start, len(ids)):
        if i == 0:
            token_logprobs.append(None)
            top_logprobs.append(None)
            continue
        row = logp[i - 1]
        token_logprobs.append(float(row[ids[i]]))
        if top:
            values, idx = row.topk(top)
            top_logprobs.append({tok.decode([int(j)]): float(v) for v, j in zip(values, idx)})
        else:
            top_logprobs.append(None)
    offsets, at = [], 0
    for text in tokens:
        offsets.append(at)
        at += len(text)
    return {"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": top_logprobs if top else None,
            "text_offset": offsets}
