"""Measure the data before any model is trained: size, label balance, token lengths, duplicates,
train/test leakage, multi-turn share, dates and the domain gap.

Everything returned is plain JSON (ints, floats, strings, lists, dicts) so it can be cached in the
store and written into results.json.

Duplicates and leakage are found two ways:
- exact: the input text normalised (lowercase, punctuation removed, whitespace collapsed) hashes
  equal to another record's;
- near: all-MiniLM-L6-v2 cosine similarity >= `near_threshold` between inputs that are not exact
  duplicates. The similarity matrix is computed `CHUNK` rows at a time to bound memory.

The domain gap is the base model's perplexity on a seeded sample of training inputs divided by its
perplexity on general English paragraphs shipped with tunewise: > 1 means the inputs are less
predictable to the model than general text.
"""

from __future__ import annotations

import hashlib
import random
import re
import statistics
import unicodedata
from collections import Counter, defaultdict
from datetime import date, datetime
from typing import Callable

import numpy as np

from tunewise.config import TaskSpec
from tunewise.data.records import Record
from tunewise.data.split import Split

CHUNK = 1024  # similarity-matrix rows computed at a time
EXAMPLES = 5  # examples kept per finding for the report
PPL_MAX_TOKENS = 256
_WS = re.compile(r"\s+")

Progress = Callable[[str], None] | None


# -- normalisation and hashing -------------------------------------------------------------------
def normalise(text: str) -> str:
    """Lowercase, drop punctuation (Unicode category P*), collapse whitespace."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text)
    return _WS.sub(" ", text).strip()


def text_hash(text: str) -> str:
    return hashlib.sha1(normalise(text).encode("utf-8")).hexdigest()


# -- small statistics ----------------------------------------------------------------------------
def _pct(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else 0.0


def _round(x: float, n: int = 4) -> float:
    return float(round(float(x), n))


def _snippet(text: str, limit: int = 120) -> str:
    text = _WS.sub(" ", text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- labels --------------------------------------------------------------------------------------
def label_stats(task: TaskSpec, train: list[Record], test: list[Record]) -> dict:
    train_counts = Counter(r.output for r in train)
    test_counts = Counter(r.output for r in test)
    counts = sorted(train_counts.values())
    out = {
        "labels": {"train": dict(sorted(train_counts.items())), "test": dict(sorted(test_counts.items()))},
        "label_count": len(train_counts),
        "examples_per_class_min": int(counts[0]) if counts else 0,
        "examples_per_class_median": float(statistics.median(counts)) if counts else 0.0,
        "majority_share": _round(max(counts) / len(train)) if counts else 0.0,
        "majority_label": train_counts.most_common(1)[0][0] if counts else None,
        "unseen_test_labels": sorted(set(test_counts) - set(train_counts)),
    }
    if task.labels is not None:
        out["declared_labels_missing_in_train"] = sorted(set(task.labels) - set(train_counts))
    return out


# -- tokens --------------------------------------------------------------------------------------
def token_stats(tokenizer, records: list[Record], max_length: int) -> dict:
    """Prompt + output token lengths (the model's tokenizer, no special tokens) over the records."""
    if not records:
        return {"count": 0, "p50": 0, "p90": 0, "p95": 0, "p99": 0, "max": 0, "mean": 0.0,
                "over_limit_count": 0, "over_limit_share": 0.0, "limit": max_length}

    def lengths(texts: list[str]) -> np.ndarray:
        ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
        return np.array([len(x) for x in ids], dtype=np.int64)

    prompt = lengths([r.text for r in records])
    output = lengths([r.output for r in records])
    total = prompt + output
    over = int((total > max_length).sum())
    return {
        "count": len(records),
        "p50": _round(_pct(total, 50), 1), "p90": _round(_pct(total, 90), 1),
        "p95": _round(_pct(total, 95), 1), "p99": _round(_pct(total, 99), 1),
        "max": int(total.max()), "mean": _round(total.mean(), 1),
        "prompt_p95": _round(_pct(prompt, 95), 1), "output_p95": _round(_pct(output, 95), 1),
        "output_max": int(output.max()),
        "over_limit_count": over, "over_limit_share": _round(over / len(records)),
        "limit": max_length,
    }


# -- duplicates and leakage ----------------------------------------------------------------------
def _unique(records: list[Record]) -> tuple[list[str], dict[str, list[int]]]:
    """(hashes in first-seen order, hash -> record indices)."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        groups[text_hash(r.text)].append(i)
    return list(groups), groups


def duplicate_stats(train: list[Record], emb: np.ndarray, uniq: list[str], groups: dict[str, list[int]],
                    near_threshold: float) -> dict:
    """Within train. `emb` holds one normalised embedding per unique normalised input, in `uniq` order.

    exact: records whose normalised input equals an earlier record's.
    conflicting_labels: distinct inputs that occur with more than one output.
    near: unique inputs with cosine >= threshold to an earlier, different input (near_pairs: all such pairs).
    """
    exact = sum(len(g) - 1 for g in groups.values())
    exact_examples, conflict_examples = [], []
    conflicts = conflict_records = 0
    for h in uniq:
        g = groups[h]
        if len(g) > 1 and len(exact_examples) < EXAMPLES:
            exact_examples.append({"id": train[g[1]].id, "first_id": train[g[0]].id, "copies": len(g),
                                   "text": _snippet(train[g[0]].text)})
        outputs = Counter(train[i].output for i in g)
        if len(outputs) > 1:
            conflicts += 1
            conflict_records += len(g)
            if len(conflict_examples) < EXAMPLES:
                conflict_examples.append({"ids": [train[i].id for i in g[:10]], "text": _snippet(train[g[0]].text),
                                          "outputs": {k: v for k, v in outputs.most_common()}})
    near_records, near_pairs, near_examples = 0, 0, []
    n = len(uniq)
    for start in range(0, n, CHUNK):
        block = emb[start:start + CHUNK] @ emb.T  # (rows, n)
        rows = np.arange(start, min(start + CHUNK, n))
        # only earlier inputs: column < row (each pair once; self and later excluded)
        mask = np.arange(n)[None, :] < rows[:, None]
        hit = (block >= near_threshold) & mask
        near_pairs += int(hit.sum())
        has = hit.any(axis=1)
        near_records += int(has.sum())
        for local in np.flatnonzero(has):
            if len(near_examples) >= EXAMPLES:
                break
            j = int(np.argmax(np.where(mask[local], block[local], -np.inf)))
            i = int(rows[local])
            a, b = train[groups[uniq[i]][0]], train[groups[uniq[j]][0]]
            near_examples.append({"id": a.id, "other_id": b.id, "similarity": _round(block[local, j]),
                                  "text": _snippet(a.text), "other_text": _snippet(b.text)})
    return {
        "exact": int(exact), "exact_share": _round(exact / len(train)) if train else 0.0,
        "near": int(near_records), "near_pairs": int(near_pairs),
        "conflicting_labels": int(conflicts), "conflicting_records": int(conflict_records),
        "unique_inputs": n, "threshold": near_threshold,
        "examples": {"exact": exact_examples, "near": near_examples, "conflicting": conflict_examples},
    }


def leakage_stats(train: list[Record], test: list[Record], train_emb: np.ndarray, train_uniq: list[str],
                  train_groups: dict[str, list[int]], test_emb: np.ndarray, test_rest: list[int],
                  near_threshold: float) -> dict:
    """Test records whose normalised input is in train (exact), or within `near_threshold` cosine of a
    train input without being exact (near). `test_emb` rows belong to the test indices `test_rest`."""
    exact_examples, near_examples = [], []
    exact = 0
    for i, r in enumerate(test):
        g = train_groups.get(text_hash(r.text))
        if g:
            exact += 1
            if len(exact_examples) < EXAMPLES:
                t = train[g[0]]
                exact_examples.append({"test_id": r.id, "train_id": t.id, "similarity": 1.0,
                                       "same_output": t.output == r.output, "text": _snippet(r.text)})
    near = 0
    near_sims: list[float] = []
    if len(test_rest) and len(train_uniq):
        from tunewise.models.embed import nearest

        idx, sims = nearest(test_emb, train_emb, 1, chunk=CHUNK)
        for row, ti in enumerate(test_rest):
            s = float(sims[row, 0])
            if s >= near_threshold:
                near += 1
                near_sims.append(s)
                if len(near_examples) < EXAMPLES:
                    t = train[train_groups[train_uniq[int(idx[row, 0])]][0]]
                    near_examples.append({"test_id": test[ti].id, "train_id": t.id, "similarity": _round(s),
                                          "same_output": t.output == test[ti].output,
                                          "text": _snippet(test[ti].text), "train_text": _snippet(t.text)})
    n = len(test)
    return {
        "exact": int(exact), "near": int(near),
        "exact_share": _round(exact / n) if n else 0.0, "near_share": _round(near / n) if n else 0.0,
        "threshold": near_threshold,
        "examples": {"exact": exact_examples, "near": near_examples},
    }


# -- dates ---------------------------------------------------------------------------------------
def _parse_date(value: str) -> date | None:
    value = value.strip()
    for candidate in (value, value[:10]):
        try:
            return datetime.fromisoformat(candidate.replace("Z", "+00:00")).date()
        except ValueError:
            continue
    return None


def date_stats(train: list[Record], test: list[Record]) -> dict | None:
    """Date range of the records carrying a date (None when none does)."""
    def span(records: list[Record]) -> tuple[list[date], int]:
        raw = [r.date for r in records if r.date]
        parsed = [d for d in (_parse_date(v) for v in raw) if d is not None]
        return parsed, len(raw) - len(parsed)

    all_dates, unparsed = span(train + test)
    if not all_dates and not unparsed:
        return None
    out: dict = {"min": min(all_dates).isoformat() if all_dates else None,
                 "max": max(all_dates).isoformat() if all_dates else None,
                 "count": len(all_dates), "unparsed": unparsed,
                 "share": _round(len(all_dates) / max(len(train) + len(test), 1))}
    for name, records in (("train", train), ("test", test)):
        ds, _ = span(records)
        out[name] = {"min": min(ds).isoformat(), "max": max(ds).isoformat()} if ds else None
    return out


# -- domain gap ----------------------------------------------------------------------------------
def interpret_gap(ratio: float) -> str:
    if ratio >= 2.0:
        return (f"The base model finds the task's inputs far less predictable than general English "
                f"({ratio:.1f}x the perplexity): vocabulary or style it has seen little of, where fine-tuning "
                f"or domain adaptation has the most to gain.")
    if ratio >= 1.25:
        return (f"The task's inputs are somewhat less predictable than general English ({ratio:.1f}x the "
                f"perplexity): some domain-specific language, a moderate reason to adapt the model.")
    if ratio >= 0.8:
        return (f"The task's inputs are about as predictable as general English ({ratio:.2f}x the perplexity): "
                f"the base model already knows this kind of text.")
    return (f"The task's inputs are more predictable than general English ({ratio:.2f}x the perplexity), "
            f"e.g. short or formulaic text the base model handles well.")


def measure_domain_gap(train: list[Record], *, model_name: str, general_sample: int, domain_sample: int, seed: int,
               device: str = "auto") -> dict:
    from tunewise.assets import general_text
    from tunewise.models.lm import LanguageModel
    from tunewise.models.load import load_model

    texts = [r.text for r in train]
    task_texts = random.Random(seed).sample(texts, min(domain_sample, len(texts)))
    general = general_text()[:general_sample]
    model, tokenizer = load_model(model_name, device=device, dtype="float32")
    lm = LanguageModel(model, tokenizer, model_name)
    task_ppl = lm.perplexity(task_texts, max_tokens=PPL_MAX_TOKENS)
    general_ppl = lm.perplexity(general, max_tokens=PPL_MAX_TOKENS)
    del lm, model
    ratio = task_ppl / general_ppl if general_ppl > 0 else float("nan")
    return {"task_perplexity": _round(task_ppl, 3), "general_perplexity": _round(general_ppl, 3),
            "ratio": _round(ratio), "task_sample": len(task_texts), "general_sample": len(general),
            "max_tokens": PPL_MAX_TOKENS, "model": model_name, "interpretation": interpret_gap(ratio)}


# -- the profile ---------------------------------------------------------------------------------
def profile(task: TaskSpec, split: Split, *, model_name: str = "smollm2-135m", max_length: int = 256,
            near_threshold: float = 0.95, general_sample: int = 40, domain_sample: int = 40, seed: int = 0,
            progress: Progress = None, domain_gap: bool = True, embedder: str = "all-minilm-l6-v2",
            device: str = "auto") -> dict:
    """The data profile as a JSON-able dict (see the module docstring)."""
    from tunewise.models.embed import get_embedder
    from tunewise.models.load import load_tokenizer

    def note(text: str) -> None:
        if progress is not None:
            progress(text)

    train, test = list(split.train), list(split.test)
    all_records = train + test
    out: dict = {
        "records": {"train": len(train), "test": len(test)},
        "train_records": len(train), "test_records": len(test),
        "split_source": split.source,
        "task_type": task.type,
    }
    if task.type == "classification":
        out.update(label_stats(task, train, test))

    note(f"Counting tokens with the {model_name} tokenizer")
    tokenizer = load_tokenizer(model_name)
    out["tokens"] = token_stats(tokenizer, all_records, max_length)
    out["tokens"]["train_over_limit_count"] = (
        token_stats(tokenizer, train, max_length)["over_limit_count"] if test else out["tokens"]["over_limit_count"])

    train_uniq, train_groups = _unique(train)
    test_rest = [i for i, r in enumerate(test) if text_hash(r.text) not in train_groups]
    test_uniq_first: dict[str, int] = {}
    for i in test_rest:
        test_uniq_first.setdefault(text_hash(test[i].text), i)
    n_embed = len(train_uniq) + len(test_uniq_first)
    note(f"Embedding {n_embed:,} distinct inputs with {embedder} for duplicate and leakage search")
    emb = get_embedder(embedder)
    train_emb = emb.encode([train[train_groups[h][0]].text for h in train_uniq])
    test_u_emb = emb.encode([test[i].text for i in test_uniq_first.values()])
    row_of = {h: k for k, h in enumerate(test_uniq_first)}
    test_emb = (test_u_emb[[row_of[text_hash(test[i].text)] for i in test_rest]]
                if test_rest else np.zeros((0, train_emb.shape[1]), dtype=np.float32))

    note("Looking for duplicates in train")
    out["duplicates"] = duplicate_stats(train, train_emb, train_uniq, train_groups, near_threshold)
    note("Looking for test records leaked from train")
    out["leakage"] = leakage_stats(train, test, train_emb, train_uniq, train_groups, test_emb, test_rest,
                                   near_threshold)
    out["embedder"] = embedder

    multi = sum(1 for r in all_records if r.multi_turn)
    out["multi_turn_share"] = _round(multi / len(all_records)) if all_records else 0.0
    out["multi_turn_count"] = multi
    out["dates"] = date_stats(train, test)

    if domain_gap and train:
        note(f"Measuring the domain gap: {model_name} perplexity on task inputs vs. general text")
        out["domain_gap"] = measure_domain_gap(train, model_name=model_name, general_sample=general_sample,
                                                domain_sample=domain_sample, seed=seed, device=device)
    else:
        out["domain_gap"] = None
    out["settings"] = {"model": model_name, "max_length": max_length, "near_threshold": near_threshold,
                       "general_sample": general_sample, "domain_sample": domain_sample, "seed": seed,
                       "embedder": embedder}
    return out
