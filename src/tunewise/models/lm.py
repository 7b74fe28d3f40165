"""The local transformers model as a backend: build prompts, score labels, generate, measure perplexity.

Classification is scored by label likelihood. Each label is scored as its full token sequence plus the
end-of-turn token, so multi-token labels and labels that are prefixes of others are handled. The
prompt's shared prefix (system turn and static few-shot examples) is encoded once and its KV cache kept
here, keyed by its token ids, and reused for every input that follows it; every label is scored in the
input's own forward pass. When only the best label is wanted and the labels are many, it is found by
an exact bound search instead (best_label): a label can score no higher than its first token.
"""

from __future__ import annotations

import copy
import inspect
import math
import time
from collections import OrderedDict
from contextlib import contextmanager

import torch

from tunewise.errors import ConfigError
from tunewise.models.backend import Capabilities, Messages, Scored  # noqa: F401  (Scored re-exported)
from tunewise.models.chat_format import ChatFormat

# Inputs per forward. On CPU one at a time is as fast as any batch (measured on 2 cores: a forward of
# ~150 tokens already runs the matmuls near their batched rate, and padding and masks cost more than
# batching saves); on CUDA batches fill the device.
SCORE_BATCH = 1
SCORE_BATCH_CUDA = 32
LABEL_TOKENS = 1024  # cap on inputs x label tokens per forward (every label follows every input)
GENERATE_BATCH, GENERATE_BATCH_CUDA = 8, 32  # answers decoded together (see generate)
KEPT_PREFIXES = 4  # shared-prefix caches kept (one per distinct prefix: zero-shot, few-shot, probe...)
# Best-label search (best_label) instead of scoring every label, when the labels' trie has more
# positions than this (a few labels cost less in one forward than in several small ones), on CPU.
SEARCH_ABOVE = 16


class LanguageModel:
    """A loaded causal LM; implements models.backend.Backend (method 'likelihood' and 'generate')."""

    def __init__(self, model, tokenizer, name: str):
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.device = next(model.parameters()).device
        self.format = ChatFormat(tokenizer)
        self._end = self.format.end
        self._prefixes: OrderedDict[tuple[int, ...], object] = OrderedDict()
        self._labels: dict[tuple[str, ...], list[list[int]]] = {}
        self._tries: dict[tuple, LabelTrie] = {}
        from tunewise.models.load import body_and_head

        # Only the last positions' logits are needed (first label token, the labels' own positions):
        # the body runs alone and the head sees just those rows. Through the model's own forward, a
        # frozen tied head was copied at every call (+50 ms a forward on 2 cores with torch 2.13).
        self._parts = body_and_head(model)
        forward = self._parts[0].forward if self._parts else model.forward
        # transformers renamed `past_key_values` to `cache` (5.x deprecates the old name).
        self._cache_kw = "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"

    # -- prompts ---------------------------------------------------------------------------
    def render(self, messages: Messages, *, add_generation_prompt: bool) -> str:
        return self.format.render(messages, add_generation_prompt=add_generation_prompt)

    def encode(self, text: str) -> list[int]:
        return self.format.encode(text)

    def split_prompt(self, shared: Messages, rest: Messages) -> tuple[list[int], list[int]]:
        return self.format.split_prompt(shared, rest)

    # -- backend interface -----------------------------------------------------------------
    def capabilities(self) -> Capabilities:
        return Capabilities(prompt_logprobs=True, chat_logprobs=False, trainable=True)

    def score_labels(self, shared: Messages, rests: list[Messages], labels: list[str],
                     method: str = "likelihood", *, prior: list[float] | None = None,
                     full: bool = True) -> list[Scored]:
        if method != "likelihood":
            raise ConfigError(f"model '{self.name}': a local model scores labels by 'likelihood', not '{method}'",
                              fix="use scoring: likelihood or generate")
        return self.classify_many(shared, rests, labels, prior=prior, full=full)

    def generate(self, conversations: list[Messages], max_new_tokens: int = 64) -> list[Scored]:
        """Greedy answers, GENERATE_BATCH at a time (prompts of similar length together, left-padded):
        on CPU a decoding step of one answer is mostly fixed overhead, so a batch costs about as much
        as one. Each answer's `seconds` is its share of its batch's time."""
        prompts = [self.encode(self.render(m, add_generation_prompt=True)) for m in conversations]
        size = GENERATE_BATCH_CUDA if self.device.type == "cuda" else GENERATE_BATCH
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        out: list[Scored | None] = [None] * len(prompts)
        with self._attention("sdpa"):
            for start in range(0, len(order), size):
                batch = order[start:start + size]
                for i, scored in zip(batch, self._generate_batch([prompts[i] for i in batch], max_new_tokens)):
                    out[i] = scored
        return out

    @contextmanager
    def _attention(self, name: str):
        """The model's attention kernel switched to `name` for a while. Inference runs on torch's SDPA, which
        beats the eager matmuls that training uses on CPU (load.pick_attention) once keys are many, and
        ties them on short inputs (benchmarks/scoring.py, 2 cores, ms a record, eager -> sdpa, the same
        predictions): demo reviews 178 -> 174, after 3 cached example reviews 215 -> 199, with 3 examples
        in the input (kNN few-shot) 789 -> 638, banking77's 77 intents 812 -> 633. Decoding a batch of 8
        retrieval prompts (~380 tokens, 28 new) took 21 s instead of 29-31 s on one thread, with the
        same answers."""
        current = getattr(self.model.config, "_attn_implementation", None)
        if current in (None, name) or not hasattr(self.model, "set_attn_implementation"):
            yield
            return
        self.model.set_attn_implementation(name)
        try:
            yield
        finally:
            self.model.set_attn_implementation(current)

    @torch.inference_mode()
    def _generate_batch(self, prompts: list[list[int]], max_new_tokens: int) -> list[Scored]:
        start = time.perf_counter()
        width, pad = max(map(len, prompts)), self.tokenizer.pad_token_id
        pad = pad if pad is not None else self.tokenizer.eos_token_id
        ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            ids[row, width - len(prompt):] = torch.tensor(prompt)
            mask[row, width - len(prompt):] = 1
        stop = self._stop_ids()
        out = self.model.generate(ids.to(self.device), attention_mask=mask.to(self.device),
                                  max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stop,
                                  pad_token_id=pad)
        share = (time.perf_counter() - start) / len(prompts)
        answers = []
        for row, prompt in enumerate(prompts):
            new = out[row, width:].tolist()
            ends = [k for k, t in enumerate(new) if t in stop]
            new = new[:ends[0] + 1] if ends else new  # what follows the first stop is padding
            text = self.tokenizer.decode(new, skip_special_tokens=True).strip()
            answers.append(Scored(text, share, len(prompt), len(new)))
        return answers

    def _stop_ids(self) -> list[int]:
        """End of sequence and end of turn: where an answer stops."""
        return [t for t in {self.tokenizer.eos_token_id, *self.encode(self._end.strip())[:1]} if t is not None]

    # -- label scoring ---------------------------------------------------------------------
    def label_ids(self, labels: list[str]) -> list[list[int]]:
        key = tuple(labels)
        if key not in self._labels:
            self._labels[key] = self.format.label_ids(labels)
        return self._labels[key]

    @torch.inference_mode()
    def prefix_cache(self, prefix_ids: list[int]):
        """The KV cache of a shared prefix, computed once per distinct prefix and kept (never changed by
        scoring, which works on a copy)."""
        from transformers import DynamicCache

        key = tuple(prefix_ids)
        if key in self._prefixes:
            self._prefixes.move_to_end(key)
            return self._prefixes[key]
        cache = DynamicCache(config=self.model.config)
        if prefix_ids:
            with self._attention("sdpa"):  # the kernel the inputs that reuse it are scored with
                self._last_logits(torch.tensor([prefix_ids], device=self.device), cache, None)
        self._prefixes[key] = cache
        if len(self._prefixes) > KEPT_PREFIXES:
            self._prefixes.popitem(last=False)
        return cache

    def _last_logits(self, ids: torch.Tensor, cache, at: torch.Tensor | None, **kw) -> torch.Tensor | None:
        """Logits [batch, len(at), vocab] at the query positions `at`; None only fills the cache."""
        if self._parts is None:
            logits = self.model(ids, use_cache=True, **{self._cache_kw: cache}, **kw).logits
            return logits[:, at] if at is not None else None
        body, head = self._parts
        out = body(input_ids=ids, use_cache=True, **{self._cache_kw: cache}, **kw)
        if at is None:
            return None
        hidden = out[0] if isinstance(out, tuple) else out.last_hidden_state
        rows = hidden[:, at].reshape(-1, hidden.size(-1))
        return head(rows).view(hidden.size(0), len(at), -1)

    def _batch_rows(self, label_tokens: int, batch_size: int | None) -> int:
        """Inputs per forward: SCORE_BATCH (more on CUDA), fewer when the labels add many tokens to each."""
        size = batch_size or (SCORE_BATCH_CUDA if self.device.type == "cuda" else SCORE_BATCH)
        return max(1, min(size, LABEL_TOKENS // max(label_tokens, 1)))

    @torch.inference_mode()
    def label_logprobs(self, cache, prefix_len: int, inputs: list[list[int]], label_ids: list[list[int]]) -> torch.Tensor:
        """[inputs, labels] sums of log P(label tokens | prefix + input), in one forward for the batch.

        Each row holds one input, left-padded so that all inputs end at the same column, followed by
        the labels' token trie (LabelTrie): labels sharing leading tokens share those positions, so 77
        intents like `card_arrival`, `card_delivery_estimate` cost their distinct tokens only. A 4-D
        mask lets an input see the prefix and itself, and a trie node see the prefix, its input, its
        ancestors and itself; position ids continue each input from the prefix and number each node
        by its depth after the input. Pads see only themselves (no query is left without a key).
        Logits are taken only where a token is predicted: the input's last position and the trie's
        inner nodes. The shared `cache` is copied, never changed."""
        trie = self._trie(label_ids)
        b, m = len(inputs), len(trie.tokens)
        width = max(len(x) for x in inputs)
        q_len = width + m
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.full((b, q_len), pad, dtype=torch.long)
        ids[:, width:] = trie.tokens
        pos = torch.full((b, q_len), prefix_len, dtype=torch.long)
        keep = torch.zeros((b, q_len, prefix_len + q_len), dtype=torch.bool)
        keep[:, :, :prefix_len] = True
        diag = torch.arange(q_len)
        keep[:, diag, prefix_len + diag] = True
        keep[:, width:, prefix_len + width:] = trie.sees
        for i, x in enumerate(inputs):
            start = width - len(x)
            ids[i, start:width] = torch.tensor(x)
            pos[i, start:width] = torch.arange(prefix_len, prefix_len + len(x))
            pos[i, width:] = prefix_len + len(x) + trie.depth
            keep[i, start:width, prefix_len + start:prefix_len + width] = torch.ones(len(x), len(x)).tril().bool()
            keep[i, width:, prefix_len + start:prefix_len + width] = True
        mask = self._additive_mask(keep)[:, None]
        cache = self._working_copy(cache, prefix_len)
        if prefix_len:
            cache.batch_repeat_interleave(b)
        dev = self.device
        at = torch.cat([torch.tensor([width - 1]), width + trie.inner])  # where a next token is predicted
        logits = self._last_logits(ids.to(dev), cache, at.to(dev), attention_mask=mask.to(dev),
                                   position_ids=pos.to(dev))
        return trie.sums(torch.log_softmax(logits.float(), dim=-1))  # logits: [b, 1 + inner nodes, vocab]

    def _additive_mask(self, keep: torch.Tensor) -> torch.Tensor:
        """A boolean attention mask (True: may attend) as the additive mask the model takes."""
        dtype = next(self.model.parameters()).dtype
        return torch.zeros(keep.shape, dtype=dtype).masked_fill_(~keep, torch.finfo(dtype).min)

    def _working_copy(self, cache, prefix_len: int):
        """A copy of a shared prefix's cache to extend (the shared one never changes), or a new cache."""
        from transformers import DynamicCache

        return copy.deepcopy(cache) if prefix_len else DynamicCache(config=self.model.config)

    def _trie(self, label_ids: list[list[int]]) -> LabelTrie:
        key = tuple(map(tuple, label_ids))
        if key not in self._tries:
            self._tries[key] = LabelTrie(label_ids)
        return self._tries[key]

    def classify(self, shared: Messages, rest: Messages, labels: list[str], cache=None,
                 label_ids: list[list[int]] | None = None) -> Scored:
        """Pick the most likely label (the shared prefix's cache is kept and reused: see prefix_cache)."""
        return self.classify_many(shared, [rest], labels, cache=cache, label_ids=label_ids)[0]

    def classify_many(self, shared: Messages, rests: list[Messages], labels: list[str], cache=None,
                      label_ids: list[list[int]] | None = None, batch_size: int | None = None,
                      prior: list[float] | None = None, full: bool = True) -> list[Scored]:
        """`classify` for many inputs after the same shared prefix, in batches of similar length.
        The prediction maximises log P(label) - prior (contextual calibration; none by default). With
        `full` False only the prediction is wanted: with many labels on CPU it is found by best_label,
        exactly, and `label_logprobs` is None. Each result's `seconds` is its share of the prompt
        building and of its batch's time (one at a time, that is its latency; in batches, the
        amortised cost)."""
        with self._attention("sdpa"):
            return self._classify_many(shared, rests, labels, cache, label_ids, batch_size, prior, full)

    def _classify_many(self, shared, rests, labels, cache, label_ids, batch_size, prior, full) -> list[Scored]:
        began = time.perf_counter()
        split = [self.split_prompt(shared, rest) for rest in rests]
        building = (time.perf_counter() - began) / len(rests)
        prefix_ids = split[0][0]
        if cache is None or not prefix_ids:
            cache = self.prefix_cache(prefix_ids)
        label_ids = label_ids or self.label_ids(labels)
        offset = torch.tensor(prior if prior is not None else [0.0] * len(labels), dtype=torch.float32)
        positions = len(self._trie(label_ids).tokens)
        if not full and self.device.type == "cpu" and positions > SEARCH_ABOVE:
            out = []
            for prefix, ids in split:
                began = time.perf_counter()
                best = self.best_label(cache, len(prefix), ids, label_ids, offset)
                out.append(Scored(labels[best], building + time.perf_counter() - began, len(prefix) + len(ids),
                                  len(label_ids[best])))
            return out
        size = self._batch_rows(positions, batch_size)
        order = sorted(range(len(rests)), key=lambda i: len(split[i][1]))
        out: list[Scored | None] = [None] * len(rests)
        for start in range(0, len(order), size):
            batch = order[start:start + size]
            began = time.perf_counter()
            lps = self.label_logprobs(cache, len(prefix_ids), [split[i][1] for i in batch], label_ids)
            share = (time.perf_counter() - began) / len(batch)
            for row, i in enumerate(batch):
                scores = lps[row].tolist()
                best = int(torch.argmax(lps[row] - offset))
                out[i] = Scored(labels[best], building + share, len(prefix_ids) + len(split[i][1]),
                                len(label_ids[best]), scores)
        return out

    @torch.inference_mode()
    def best_label(self, cache, prefix_len: int, ids: list[int], label_ids: list[list[int]],
                   offset: torch.Tensor) -> int:
        """The label maximising log P(label | prefix + input) - offset, without always scoring every label.

        Token log-probabilities are at most 0, so a label scores at most its first token's log-probability
        (minus its offset): the input's own forward gives that bound for every label. Then, in one forward
        each: first the labels starting with the most likely first token are fully scored, then every
        other label whose bound still reaches the best of them; the rest cannot win. Exact: the same label
        as scoring all (ties aside, up to float rounding). A fine-tuned model puts nearly all its mass on
        one first token, so it scores a few labels instead of all; an untuned one may need them all. Each
        round's labels follow the input in the same cache, hidden from later rounds by the mask."""
        cache = self._working_copy(cache, prefix_len)
        dev, n = self.device, len(ids)
        logits = self._last_logits(torch.tensor([ids], device=dev), cache, torch.tensor([n - 1], device=dev))
        first = torch.log_softmax(logits[0, 0].float(), dim=-1).cpu()
        bound = first[torch.tensor([lab[0] for lab in label_ids])] - offset
        top = label_ids[int(torch.argmax(bound))][0]
        group = [j for j, lab in enumerate(label_ids) if lab[0] == top]
        totals = self._trie_scores(cache, prefix_len + n, first, [label_ids[j] for j in group]) - offset[group]
        best = group[int(torch.argmax(totals))]
        best_score = float(totals.max())
        rest = [j for j, lab in enumerate(label_ids) if lab[0] != top and bound[j] >= best_score]
        if rest:
            totals = self._trie_scores(cache, prefix_len + n, first, [label_ids[j] for j in rest]) - offset[rest]
            k = int(torch.argmax(totals))
            if totals[k] > best_score or (totals[k] == best_score and rest[k] < best):
                best = rest[k]
        return best

    def _trie_scores(self, cache, visible: int, first: torch.Tensor, label_ids: list[list[int]]) -> torch.Tensor:
        """log P of each label after the `visible` cached positions (prefix and input), given the input's
        next-token log-probabilities `first`; the labels' trie is appended to the cache, seeing those
        positions and its own ancestors only."""
        trie = LabelTrie(label_ids)
        table = first[None]
        if len(trie.inner):
            m, past = len(trie.tokens), cache.get_seq_length()
            keep = torch.zeros((m, past + m), dtype=torch.bool)
            keep[:, :visible] = True
            keep[:, past:] = trie.sees
            dev = self.device
            logits = self._last_logits(trie.tokens[None].to(dev), cache, trie.inner.to(dev),
                                       attention_mask=self._additive_mask(keep)[None, None].to(dev),
                                       position_ids=(visible + trie.depth)[None].to(dev))
            table = torch.cat([table, torch.log_softmax(logits[0].float(), dim=-1).cpu()])
        return trie.sums(table)

    # -- generation and perplexity ---------------------------------------------------------
    def generate_one(self, messages: Messages, max_new_tokens: int = 64) -> Scored:
        """Greedy decoding of one answer (a batch of one: no padding); stops at end of turn, end of
        sequence or max_new_tokens."""
        return self.generate([messages], max_new_tokens)[0]

    @torch.inference_mode()
    def perplexity(self, texts: list[str], max_tokens: int = 256) -> float:
        """exp(mean token negative log-likelihood) over the texts, each cut to max_tokens."""
        with self._attention("sdpa"):
            return self._perplexity(texts, max_tokens)

    def _perplexity(self, texts: list[str], max_tokens: int) -> float:
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


class LabelTrie:
    """The labels' token sequences as a trie, laid out for one forward pass (see label_logprobs).

    Only inner nodes (those with children) are fed to the model: a leaf, such as each label's closing
    end-of-turn token, predicts nothing that is scored and no other node attends to it, so leaving it
    out changes no score (banking77's 77 intents: 382 positions instead of 459).
    tokens[n], depth[n]: fed node n's token and its depth (0 for a label's first token); sees[n, a]:
    fed node a is n or an ancestor of n; inner: the fed nodes' positions, all of them (each predicts
    its children); per label token in order, `columns` is where it is predicted (0: the input's last
    position, 1 + k: the k-th fed node), `label_tokens` the token and `owner` its label."""

    def __init__(self, label_ids: list[list[int]]):
        index: dict[tuple[int, int], int] = {}
        tokens, parent, paths = [], [], []
        for label in label_ids:
            node, path = -1, []
            for tok in label:
                if (node, tok) not in index:
                    index[(node, tok)] = len(tokens)
                    tokens.append(tok)
                    parent.append(node)
                node = index[(node, tok)]
                path.append(node)
            paths.append(path)
        m, self.labels = len(tokens), len(label_ids)
        self.tokens = torch.tensor(tokens, dtype=torch.long)
        self.sees = torch.zeros((m, m), dtype=torch.bool)
        self.depth = torch.zeros(m, dtype=torch.long)
        for n, up in enumerate(parent):  # parents come before their children
            if up >= 0:
                self.sees[n] = self.sees[up]
                self.depth[n] = self.depth[up] + 1
            self.sees[n, n] = True
        has_child = sorted({up for up in parent if up >= 0})  # an inner node's ancestors are inner too
        fed = torch.tensor(has_child, dtype=torch.long)
        self.tokens, self.depth, self.sees = self.tokens[fed], self.depth[fed], self.sees[fed][:, fed]
        self.inner = torch.arange(len(has_child))
        column = {n: 1 + k for k, n in enumerate(has_child)}
        cols, toks, owner = [], [], []
        for j, (label, path) in enumerate(zip(label_ids, paths)):
            cols += [0] + [column[n] for n in path[:-1]]
            toks += label
            owner += [j] * len(label)
        self.columns, self.label_tokens = torch.tensor(cols), torch.tensor(toks)
        self.owner = torch.tensor(owner)

    def sums(self, logp: torch.Tensor) -> torch.Tensor:
        """Each label's log-probability [..., labels] from next-token log-probabilities [..., 1 + inner, vocab]
        (row 0: at the input's last position, 1 + k: at the k-th inner node)."""
        dev = logp.device  # picked where computed: only [..., label tokens] leaves the device
        picked = logp[..., self.columns.to(dev), self.label_tokens.to(dev)].cpu()
        return torch.zeros((*logp.shape[:-2], self.labels)).index_add_(-1, self.owner, picked)

