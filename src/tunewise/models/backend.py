"""The one interface every language-model backend offers: score labels, generate, say what it can do.

Two implementations: the local transformers model (`models.lm.LanguageModel`) and any
OpenAI-compatible server (`models.http.HttpBackend`). Strategies talk only to this interface.

Classification is scored by one of three methods, best first:
- `likelihood`: the log-likelihood of each full label as the answer (local forward, or a server's
  `/v1/completions` with `echo` + `logprobs`, which returns the prompt's token log-probabilities);
- `chat_logprobs`: the log-probabilities of the answer tokens a chat API returns (top-k only);
- `generate`: a short greedy answer, matched to a label afterwards (strategies.prompts.parse_label).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

Messages = list[tuple[str, str]]
ScoringMethod = Literal["likelihood", "chat_logprobs", "generate"]
SCORING_METHODS: tuple[str, ...] = ("likelihood", "chat_logprobs", "generate")


def answer_tokens(labels: list[str]) -> int:
    """New tokens enough to spell the longest label, or the longest training answer of a generation task
    (about 4 characters a token, with room to spare; at most 64): the same budget for every backend and
    candidate, so local and served answers can be compared."""
    return min(64, 8 + max(len(label) for label in labels) // 2)


@dataclass
class Scored:
    """Per-item output of a backend: the prediction and what it cost (usage is per request)."""

    prediction: str
    seconds: float
    prompt_tokens: int
    output_tokens: int
    label_logprobs: list[float] | None = None
    retries: int = 0  # requests repeated after 429/5xx/timeouts/connection errors or bad responses
    cached: bool = False  # answered from the store's response cache (not paid again)
    unparsed: bool = False  # generate-and-parse: the answer matched no label (counted as wrong)
    answer: str | None = None  # generate-and-parse: the answer as written, before matching it to a label
    retrieval_hit: bool | None = None  # retrieval: the record's named source document was among the passages


@dataclass(frozen=True)
class Capabilities:
    prompt_logprobs: bool  # full label likelihood possible (local model, or /v1/completions echo + logprobs)
    chat_logprobs: bool  # answer-token log-probabilities from a chat API
    trainable: bool  # weights we can fine-tune here

    def best_method(self) -> ScoringMethod:
        if self.prompt_logprobs:
            return "likelihood"
        return "chat_logprobs" if self.chat_logprobs else "generate"

    def supports(self, method: str) -> bool:
        return {"likelihood": self.prompt_logprobs, "chat_logprobs": self.chat_logprobs,
                "generate": True}.get(method, False)


class Backend(Protocol):
    name: str

    def capabilities(self) -> Capabilities:
        """What this backend can do (an HTTP backend asks its server once and remembers)."""

    def score_labels(self, shared: Messages, rests: list[Messages], labels: list[str],
                     method: ScoringMethod = "likelihood", *, prior: list[float] | None = None,
                     full: bool = True) -> list[Scored]:
        """For each rest: every label's log-probability as the answer to shared + rest, and the best label:
        the one with the highest log-probability minus `prior` (contextual calibration) when given.

        `shared` is the prompt prefix common to all rests (system turn, static examples): backends
        may reuse work on it. With `full` False only the best label is wanted: a backend may skip
        labels that cannot win, and then leaves `label_logprobs` None."""

    def generate(self, conversations: list[Messages], max_new_tokens: int) -> list[Scored]:
        """Greedy answer text to each conversation (never sampled, so answers can be cached)."""
