"""Greedy answers kept in the store, keyed by the request: the same prompt is answered once.

Generation is greedy (never sampled), so an answer is a function of the model, the conversation and
the answer length cap (batched answers equal single ones: tests/test_bakeoff.py). An answer that
stopped by itself (end of turn) after n tokens, n below its cap, is also the answer under any cap of
at least n: greedy decoding writes the same tokens whatever the cap. A run asks some questions twice:
the time split's `rag` puts the same passages before the test questions that the random split also
holds (its cap follows the longest training answer, so it may differ), and `rag@frozen` retrieves the
same passages as `rag` where no document after the cut-off ranks in the top k. Those are answered
from the store instead of generated again.

A reused answer keeps the seconds it took when it was generated (its latency is that of the model,
not of the lookup) and is marked `cached`, as a served model's stored responses are.
"""

from __future__ import annotations

import dataclasses

from tunewise import __version__
from tunewise.models.backend import Messages, Scored
from tunewise.store import Store, make_key

KIND = "answer"


class CachedAnswers:
    """A backend whose `generate` answers from the store what it answered before; the rest as the backend."""

    def __init__(self, backend, store: Store, model_key: list):
        """`model_key`: what else identifies the model's answers (its settings in the task file)."""
        self.backend, self.store = backend, store
        weights = getattr(backend, "model", None)  # a local model: its device and dtype change its answers
        self.model_key = [__version__, backend.name, str(getattr(backend, "device", None)),
                          str(getattr(weights, "dtype", None)), *model_key]

    def __getattr__(self, name):  # score_labels, capabilities, name...: the backend's own
        return getattr(self.backend, name)

    def key(self, conversation: Messages) -> str:
        return make_key(KIND, self.model_key, [list(turn) for turn in conversation])

    @staticmethod
    def ended(stored: dict) -> bool:
        """Stopped by itself: fewer tokens than its cap (the end of turn included)."""
        return stored["output_tokens"] < stored["max_new_tokens"]

    def serves(self, stored: dict, max_new_tokens: int) -> bool:
        """The stored answer is the one greedy decoding gives under this cap: generated under the same
        cap, or stopped by itself within this one."""
        return stored["max_new_tokens"] == max_new_tokens or self.ended(stored) and stored["output_tokens"] <= max_new_tokens

    def generate(self, conversations: list[Messages], max_new_tokens: int = 64) -> list[Scored]:
        keys = [self.key(c) for c in conversations]
        stored = [self.store.get(KIND, k) for k in keys]
        out: list[Scored | None] = [None] * len(conversations)
        for i, found in enumerate(stored):
            if found is not None and self.serves(found, max_new_tokens):
                answer = {f: v for f, v in found.items() if f != "max_new_tokens"}
                out[i] = dataclasses.replace(Scored(**answer), cached=True, retries=0)
        todo = [i for i, s in enumerate(out) if s is None]
        if todo:
            for i, scored in zip(todo, self.backend.generate([conversations[i] for i in todo], max_new_tokens)):
                out[i] = scored
                if stored[i] is None or not self.ended(stored[i]):  # an answer that ended serves more caps: kept
                    self.store.put(KIND, keys[i], dataclasses.asdict(scored) | {"max_new_tokens": max_new_tokens})
        return out
