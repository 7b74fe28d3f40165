"""A model behind any OpenAI-compatible server (vLLM, llama.cpp, Ollama, `transformers serve`, hosted
APIs) as a backend, by the three scoring methods of models.backend:

- likelihood: `/v1/completions` with `echo` + `logprobs` returns the log-probability of every prompt
  token; each label is appended to the prompt (one prompt per label, all in one request) and its tokens'
  log-probabilities summed. With a local tokenizer (`tokenizer:` or a served name that is a local model)
  the prompt is rendered with its chat template and sent as token ids, so the server scores exactly the
  tokens the local model would; without one the prompt is plain 'Role: text' turns sent as text, and the
  label's tokens are found by their character offsets.
- chat_logprobs: a chat completion with `logprobs` + `top_logprobs`; each label is scored along the
  answer's tokens (see chat_label_scores): exact for the label the model wrote, an upper bound for the
  others, -inf for a label none of whose spellings is among the top alternatives.
- generate: a short greedy chat answer, matched to a label by the strategy.

Which methods a server supports is probed once (two one-token requests) and kept in the store, unless
the model's `scoring:` names the method.
"""

from __future__ import annotations

import math

from tunewise.config import ModelConfig
from tunewise.models.backend import Capabilities, Messages, Scored, answer_tokens
from tunewise.models.chat_format import ChatFormat
from tunewise.models.endpoint import Endpoint, EndpointError, Reply
from tunewise.store import Store, make_key

TOP_LOGPROBS = 20  # the most hosted chat APIs return
PROBE_KIND = "http-probe"


class HttpBackend:
    def __init__(self, name: str, cfg: ModelConfig, store: Store | None, chat_format: ChatFormat):
        self.name, self.cfg, self.store, self.format = name, cfg, store, chat_format
        self.endpoint = Endpoint(name, cfg, store)
        self.model = cfg.model or name
        self._caps: Capabilities | None = None
        self.probe_note = ""

    # -- capabilities ----------------------------------------------------------------------
    def capabilities(self) -> Capabilities:
        if self._caps is None:
            if self.cfg.scoring != "auto":
                self._caps = Capabilities(prompt_logprobs=self.cfg.scoring == "likelihood",
                                          chat_logprobs=self.cfg.scoring == "chat_logprobs", trainable=False)
                self.probe_note = f"scoring '{self.cfg.scoring}' set for this model (not probed)"
            else:
                self._caps = self._probe()
        return self._caps

    def _probe(self) -> Capabilities:
        key = make_key(PROBE_KIND, self.endpoint.url, self.model)
        found = self.store.get(PROBE_KIND, key) if self.store is not None else None
        if found is None:
            found = {"prompt_logprobs": self._probe_echo(), "chat_logprobs": self._probe_chat()}
            if self.store is not None:
                self.store.put(PROBE_KIND, key, found)
        yes = lambda x: "yes" if x else "no"  # noqa: E731
        self.probe_note = (f"server probed: /v1/completions echo+logprobs {yes(found['prompt_logprobs'])}, "
                           f"chat logprobs {yes(found['chat_logprobs'])}")
        return Capabilities(prompt_logprobs=found["prompt_logprobs"], chat_logprobs=found["chat_logprobs"],
                            trainable=False)

    def _probe_echo(self) -> bool:
        try:
            reply = self.endpoint.send("completions", self._echo_body(["Hello there"]))
        except EndpointError as exc:
            if "HTTP 4" in str(exc):  # the route or its parameters are refused: not supported
                return False
            raise
        lp = reply.data["choices"][0].get("logprobs") or {}
        return len(lp.get("token_logprobs") or []) >= 2

    def _probe_chat(self) -> bool:
        body = {"model": self.model, "messages": [{"role": "user", "content": "Say yes."}], "max_tokens": 1,
                "temperature": 0, "logprobs": True, "top_logprobs": 5}
        try:
            reply = self.endpoint.send("chat", body)
        except EndpointError as exc:
            if "HTTP 4" in str(exc):
                return False
            raise
        content = (reply.data["choices"][0].get("logprobs") or {}).get("content") or []
        return bool(content) and bool(content[0].get("top_logprobs"))

    # -- label scoring ---------------------------------------------------------------------
    def score_labels(self, shared: Messages, rests: list[Messages], labels: list[str],
                     method: str = "likelihood", *, prior: list[float] | None = None,
                     full: bool = True) -> list[Scored]:
        """Every label is scored (a server prices the labels of one prompt together), whatever `full` says."""
        if method == "likelihood":
            return self._likelihood(shared, rests, labels, prior)
        if method == "chat_logprobs":
            bodies = [self._chat_body(shared + rest, answer_tokens(labels)) | {"logprobs": True,
                                                                                "top_logprobs": TOP_LOGPROBS}
                      for rest in rests]
            replies = self.endpoint.send_all([("chat", b) for b in bodies])
            return [_pick(labels, chat_label_scores(_chat_logprobs(r), labels), r, prior) for r in replies]
        raise ValueError(f"unknown label scoring method {method!r}")

    def _likelihood(self, shared: Messages, rests: list[Messages], labels: list[str],
                    prior: list[float] | None) -> list[Scored]:
        if self.format.tokenizer is not None:  # token ids: exactly the tokens the local model scores
            label_ids = self.format.label_ids(labels)
            prompts = [sum(self.format.split_prompt(shared, rest), []) for rest in rests]
            jobs = [self._echo_body([p + lab for lab in label_ids]) for p in prompts]
            spans = [[(len(p), len(p) + len(lab)) for lab in label_ids] for p in prompts]
            replies = self.endpoint.send_all([("completions", b) for b in jobs])
            return [_pick(labels, _sum_positions(r, s), r, prior) for r, s in zip(replies, spans)]
        texts = [self.format.render(shared + rest, add_generation_prompt=True) for rest in rests]
        answers = [self.format.answer(label) for label in labels]
        jobs = [self._echo_body([t + a for a in answers]) for t in texts]
        replies = self.endpoint.send_all([("completions", b) for b in jobs])
        return [_pick(labels, _sum_chars(r, len(t), [len(a) for a in answers]), r, prior)
                for r, t in zip(replies, texts)]

    def _echo_body(self, prompts: list) -> dict:
        # max_tokens 1, not 0: some servers refuse 0; the generated token is ignored (and billed).
        return {"model": self.model, "prompt": prompts, "echo": True, "logprobs": 1, "max_tokens": 1,
                "temperature": 0}

    def _chat_body(self, messages: Messages, max_tokens: int) -> dict:
        return {"model": self.model, "messages": [{"role": r, "content": c} for r, c in messages],
                "max_tokens": max_tokens, "temperature": 0}

    # -- generation ------------------------------------------------------------------------
    def generate(self, conversations: list[Messages], max_new_tokens: int) -> list[Scored]:
        replies = self.endpoint.send_all([("chat", self._chat_body(m, max_new_tokens)) for m in conversations])
        out = []
        for r in replies:
            message = r.data["choices"][0].get("message") or {}
            out.append(_scored((message.get("content") or "").strip(), r))
        return out


def chat_label_scores(tokens: list[dict], labels: list[str]) -> list[float]:
    """Each label's log-probability along a chat answer's tokens ({token, logprob, top_logprobs}).

    A label follows the answer while the answer spells it (case and leading spaces ignored), adding each
    token's log-probability; where the answer leaves it, the best top alternative that continues it is
    added and the rest of the label is taken as certain (so the score is an upper bound); with no such
    alternative it scores -inf. A label must end at a word boundary: once spelled, the next token (if the
    answer goes on) must start with a non-alphanumeric character, so 'negative' does not count as 'neg'."""
    out = []
    for label in labels:
        target, said, score = label.lower(), "", 0.0
        for position in tokens:
            options = [(position["token"], position["logprob"])] + [
                (alt["token"], alt["logprob"]) for alt in position.get("top_logprobs") or []]
            if len(said) >= len(target):  # spelled: the answer must stop or leave the word here
                if said == target and not _boundary(position["token"]):
                    ends = [lp for t, lp in options if _boundary(t)]
                    score = score + max(ends) if ends else -math.inf
                break
            follows = [(t, lp) for t, lp in options if _continues((said + t.lower()).lstrip(), target)]
            if not follows:
                score = -math.inf
                break
            if follows[0][0] != position["token"]:  # the answer leaves the label: best way back in, then stop
                score += max(lp for _, lp in follows)
                break
            score += position["logprob"]
            said = (said + position["token"].lower()).lstrip()
        else:  # the answer ended before spelling the whole label: it was not said
            if len(said) < len(target):
                score = -math.inf
        out.append(score)
    return out


def _boundary(token: str) -> bool:
    return bool(token) and not token[0].isalnum()


def _continues(text: str, target: str) -> bool:
    if not text:
        return False
    return target.startswith(text) or (text.startswith(target) and not text[len(target)].isalnum())


def _chat_logprobs(reply: Reply) -> list[dict]:
    content = (reply.data["choices"][0].get("logprobs") or {}).get("content")
    if not content:
        raise EndpointError(f"no chat log-probabilities in a reply (scoring chat_logprobs): {reply.data.get('model')}")
    return content


def _sum_positions(reply: Reply, spans: list[tuple[int, int]]) -> list[float]:
    """Echoed prompt log-probabilities summed over each label's token positions (one choice per label)."""
    choices = sorted(reply.data["choices"], key=lambda c: c.get("index", 0))
    if len(choices) != len(spans):
        raise EndpointError(f"{len(choices)} choices for {len(spans)} label prompts: the server does not take a "
                            "list of prompts; set scoring: generate or chat_logprobs for this model")
    out = []
    for choice, (start, end) in zip(choices, spans):
        lps = (choice.get("logprobs") or {}).get("token_logprobs") or []
        if len(lps) < end or any(x is None for x in lps[start:end]):
            raise EndpointError("the server returned no log-probabilities for the prompt tokens (echo + logprobs "
                                "unsupported); set scoring: chat_logprobs or generate for this model")
        out.append(float(sum(lps[start:end])))
    return out


def _sum_chars(reply: Reply, prompt_chars: int, answer_chars: list[int]) -> list[float]:
    """Like _sum_positions for text prompts: the label's tokens are those that end after the prompt."""
    choices = sorted(reply.data["choices"], key=lambda c: c.get("index", 0))
    out = []
    for choice, n in zip(choices, answer_chars):
        lp = choice.get("logprobs") or {}
        tokens, lps, offsets = lp.get("tokens") or [], lp.get("token_logprobs") or [], lp.get("text_offset") or []
        picked = [x for tok, x, at in zip(tokens, lps, offsets)
                  if at + len(tok) > prompt_chars and at < prompt_chars + n]
        if not picked or any(x is None for x in picked):
            raise EndpointError("the server returned no log-probabilities for the label tokens (echo + logprobs "
                                "unsupported); set scoring: chat_logprobs or generate for this model")
        out.append(float(sum(picked)))
    return out


def _pick(labels: list[str], scores: list[float], reply: Reply, prior: list[float] | None = None) -> Scored:
    shifted = scores if prior is None else [s - p for s, p in zip(scores, prior)]
    best = max(range(len(labels)), key=lambda j: shifted[j])
    if scores[best] == -math.inf:  # no label is among the answer's alternatives
        scored = _scored("", reply)
        scored.unparsed, scored.label_logprobs = True, scores
        return scored
    scored = _scored(labels[best], reply)
    scored.label_logprobs = scores
    return scored


def _scored(prediction: str, reply: Reply) -> Scored:
    usage = reply.data.get("usage") or {}
    return Scored(prediction, reply.seconds, int(usage.get("prompt_tokens") or 0),
                  int(usage.get("completion_tokens") or 0), retries=reply.retries, cached=reply.cached)

