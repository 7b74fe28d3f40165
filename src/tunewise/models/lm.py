"""One small interface over a causal LM: build prompts, score labels, generate, measure perplexity.

Classification is scored by label likelihood, never parsed from generated text (small models do
not keep to a few-shot format). Each label is scored as its full token sequence plus the end-of-turn
token, so multi-token labels and labels that are prefixes of others are handled. The prompt's
shared prefix (system turn and static few-shot examples) is encoded once and its KV cache reused
for every test input; each input is encoded once and its cache reused for every label.
"""

from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass

import torch

Messages = list[tuple[str, str]]


@dataclass
class Scored:
    """Per-item output of a scorer: the prediction and what it cost."""

    prediction: str
    seconds: float
    prompt_tokens: int
    output_tokens: int
    label_logprobs: list[float] | None = None


class LanguageModel:
    def __init__(self, model, tokenizer, name: str):
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.device = next(model.parameters()).device
        self._end = self._end_of_turn()
        # transformers renamed `past_key_values` to `cache` (5.x deprecates the old name).
        params = inspect.signature(model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"

    # -- prompts ---------------------------------------------------------------------------
    def render(self, messages: Messages, *, add_generation_prompt: bool) -> str:
        """Messages -> prompt text with the model's chat template (plain text when it has none)."""
        chat = [{"role": r, "content": c} for r, c in messages]
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(chat, tokenize=False,
                                                      add_generation_prompt=add_generation_prompt)
        text = "\n\n".join(f"{r.title()}: {c}" for r, c in messages)
        return text + ("\n\nAssistant:" if add_generation_prompt else "")

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _end_of_turn(self) -> str:
        """The text that closes an assistant turn (so 'neg' and 'negative' are told apart)."""
        probe = self.render([("user", "x"), ("assistant", "LABEL")], add_generation_prompt=False)
        tail = probe.split("LABEL", 1)[1] if "LABEL" in probe else ""
        return tail.rstrip("\n") or (self.tokenizer.eos_token or "")

    def split_prompt(self, shared: Messages, rest: Messages) -> tuple[list[int], list[int]]:
        """Token ids of the shared prefix and of the rest, tokenised separately at a turn boundary."""
        full = self.render(shared + rest, add_generation_prompt=True)
        prefix = self.render(shared, add_generation_prompt=False) if shared else ""
        if not full.startswith(prefix):  # template does not compose turn by turn: no sharing
            return [], self.encode(full)
        return self.encode(prefix), self.encode(full[len(prefix):])

    # -- label scoring ---------------------------------------------------------------------
    def label_ids(self, labels: list[str]) -> list[list[int]]:
        return [self.encode(label + self._end) for label in labels]

    @torch.inference_mode()
    def prefix_cache(self, prefix_ids: list[int]):
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        if prefix_ids:
            self.model(torch.tensor([prefix_ids], device=self.device), use_cache=True, **{self._cache_kw: cache})
        return cache

    @torch.inference_mode()
    def score_labels(self, cache, prefix_len: int, input_ids: list[int], label_ids: list[list[int]]) -> list[float]:
        """Sum of log P(label tokens | prefix + input) for each label, reusing the caches."""
        extra = cache.get_seq_length() - prefix_len
        if extra > 0:
            cache.crop(-extra)
        out = self.model(torch.tensor([input_ids], device=self.device), use_cache=True, **{self._cache_kw: cache})
        first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
        n, width = len(label_ids), max(len(ids) for ids in label_ids)
        batch = torch.full((n, width), self.tokenizer.pad_token_id or 0, dtype=torch.long)
        for i, ids in enumerate(label_ids):
            batch[i, : len(ids)] = torch.tensor(ids)
        scores = first[batch[:, 0]].clone()
        if width > 1:  # right padding: real tokens never attend to the pads after them
            cache.batch_repeat_interleave(n)
            logits = self.model(batch.to(self.device), use_cache=True, **{self._cache_kw: cache}).logits
            logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
            token_lp = logp.gather(-1, batch[:, 1:, None].to(self.device))[..., 0].cpu()
            mask = torch.tensor([[j < len(ids) - 1 for j in range(width - 1)] for ids in label_ids])
            scores += (token_lp * mask).sum(dim=1)
            cache.batch_select_indices(torch.tensor([0], device=self.device))
        return scores.tolist()

    def classify(self, shared: Messages, rest: Messages, labels: list[str], cache=None,
                 label_ids: list[list[int]] | None = None) -> Scored:
        """Pick the most likely label. Pass `cache` from prefix_cache(shared) to reuse it."""
        start = time.perf_counter()
        prefix_ids, input_ids = self.split_prompt(shared, rest)
        if cache is None or not prefix_ids:
            cache = self.prefix_cache(prefix_ids)
        label_ids = label_ids or self.label_ids(labels)
        lps = self.score_labels(cache, len(prefix_ids), input_ids, label_ids)
        best = max(range(len(labels)), key=lambda i: lps[i])
        return Scored(labels[best], time.perf_counter() - start, len(prefix_ids) + len(input_ids),
                      len(label_ids[best]), lps)

    # -- generation and perplexity ---------------------------------------------------------
    @torch.inference_mode()
    def generate(self, messages: Messages, max_new_tokens: int = 64) -> Scored:
        """Greedy decoding; stops at end of turn, end of sequence or max_new_tokens."""
        start = time.perf_counter()
        ids = self.encode(self.render(messages, add_generation_prompt=True))
        stop = [t for t in {self.tokenizer.eos_token_id, *self.encode(self._end.strip())[:1]} if t is not None]
        out = self.model.generate(torch.tensor([ids], device=self.device), max_new_tokens=max_new_tokens,
                                  do_sample=False, eos_token_id=stop, pad_token_id=self.tokenizer.pad_token_id)
        new = out[0, len(ids):].tolist()
        text = self.tokenizer.decode(new, skip_special_tokens=True).strip()
        return Scored(text, time.perf_counter() - start, len(ids), len(new))

    @torch.inference_mode()
    def perplexity(self, texts: list[str], max_tokens: int = 256) -> float:
        """exp(mean token negative log-likelihood) over the texts, each cut to max_tokens."""
        total_nll, total_tokens = 0.0, 0
        for text in texts:
            ids = self.encode(text)[:max_tokens]
            if len(ids) < 2:
                continue
            t = torch.tensor([ids], device=self.device)
            loss = self.model(t, labels=t).loss.float().item()
            total_nll += loss * (len(ids) - 1)
            total_tokens += len(ids) - 1
        return math.exp(total_nll / max(total_tokens, 1))
