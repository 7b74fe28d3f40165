"""Retrieval family: the top-k corpus passages put in the prompt of the model as-is (`rag`) or of a
LoRA trained with the same passages in its prompts (`rag_lora`: retrieval in front of fine-tuning).

The corpus (`corpus:` in the task file) is chunked and embedded with the shipped MiniLM, and searched
by exact inner product (models/index.py). The passages go before the record's last user turn. The
corpus content hash, chunk sizes and k are in the settings, so they are in the cache key (the corpus is
read when the settings or the index are first needed, so a saved candidate loads without it). Option
`corpus_cutoff` (ISO date) freezes the corpus at that date (documents dated after it left out):
the freshness test compares it with the updated corpus. The corpus may well contain test answers:
that is what retrieval is for (the leakage check concerns training records, not the corpus).

Saved (strategies/saved.py), a candidate keeps its index: the chunks, their embeddings and the corpus
settings (with its hash), beside the prompt (`rag`) or the adapter (`rag_lora`); loaded, it retrieves
from that index, not from the corpus on disk, so it predicts what it predicted in the run.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from tunewise.config import RetrievalSettings
from tunewise.data.corpus import Chunk, chunk, corpus_hash, frozen_at, read_corpus
from tunewise.data.records import Record
from tunewise.errors import ConfigError
from tunewise.models.backend import Scored
from tunewise.strategies.base import CandidateSpec, Context, Family, FitFacts, register
from tunewise.strategies.finetune import FineTune
from tunewise.strategies.prompting import PromptStrategy
from tunewise.strategies.prompts import input_turns

EMBEDDER = "all-minilm-l6-v2"
RAG_LORA_MIN_LENGTH = 512  # training tokens per example: the passages must fit beside the answer
PASSAGE_CACHE = 10_000  # retrieved passages kept per record id (a server sees a new id per request)
CHUNKS_FILE, VECTORS_FILE, INDEX_FILE = "chunks.jsonl", "chunk_embeddings.npy", "index.json"


class Retriever:
    """A corpus cut into chunks, embedded and indexed; the top-k chunks for each query text."""

    def __init__(self, chunks: list[Chunk], settings: RetrievalSettings, vectors: np.ndarray | None = None):
        """`vectors`: the chunks' saved embeddings (a loaded candidate), else they are computed."""
        from tunewise.models.embed import get_embedder
        from tunewise.models.index import VectorIndex

        self.chunks, self.k = chunks, settings.top_k
        self.embedder = get_embedder()
        if vectors is None:
            vectors = self.embedder.encode([c.text for c in chunks])
        self.index = VectorIndex(vectors, faiss_above=settings.faiss_above)

    def top(self, texts: list[str]) -> list[list[Chunk]]:
        idx, _ = self.index.search(self.embedder.encode(texts), self.k)
        return [[self.chunks[i] for i in row] for row in idx]


def names_document(source: str, doc_id: str) -> bool:
    """A record's source names a document, or a folder of them (`drug` for `drug/123`)."""
    return doc_id == source or doc_id.startswith(source.rstrip("/") + "/")


def with_passages(record: Record, passages: list[Chunk]):
    """The record's turns with the passages before its last user turn's text."""
    turns = input_turns(record)
    last = max(i for i, (role, _) in enumerate(turns) if role == "user")
    context = "\n\n".join(f"[{i + 1}] ({c.doc_id}) {c.text}" for i, c in enumerate(passages))
    text = f"Passages that may help:\n{context}\n\nUsing the passages where they help:\n{turns[last][1]}"
    return turns[:last] + [("user", text)] + turns[last + 1:]


RETRIEVAL_STRATEGIES = ("rag", "rag_lora")
CORPUS_OPTIONS = ("corpus", "corpus_cutoff", *RetrievalSettings.model_fields)


def corpus_options(task) -> dict:
    """The options a retrieval candidate takes from the task file: its corpus and retrieval settings."""
    return {"corpus": task.corpus, **task.retrieval.model_dump()}


class WithCorpus:
    """What both retrieval strategies share: the corpus settings, the index and the passages per record.

    The corpus and its settings come in the candidate's options (`corpus_options`), so `settings()`
    (the cache key) holds the corpus content hash before anything is fitted."""

    family: Family = "retrieval"

    def read_corpus(self, spec: CandidateSpec) -> CandidateSpec:
        """Takes the corpus options; returns the spec without them. The corpus itself is read later."""
        opts = dict(spec.options)
        self.corpus = opts.get("corpus")
        if not self.corpus:
            raise ConfigError(f"candidate '{spec.name}': no corpus to retrieve from",
                              fix="set `corpus:` in the task file to a folder of .txt/.md files or a .jsonl")
        self.cutoff = opts.get("corpus_cutoff")
        self.retrieval = RetrievalSettings(**{k: opts[k] for k in RetrievalSettings.model_fields if k in opts})
        self._docs: list | None = None
        self._corpus_settings: dict | None = None
        self._passages: dict[str, list[Chunk]] = {}
        return spec.model_copy(update={"options": {k: v for k, v in opts.items() if k not in CORPUS_OPTIONS}})

    @property
    def docs(self):
        """The corpus documents (frozen at the cut-off when there is one), read on first use."""
        if self._docs is None:
            docs = read_corpus(self.corpus)
            self._docs = frozen_at(docs, str(self.cutoff)) if self.cutoff is not None else docs
        return self._docs

    @property
    def corpus_settings(self) -> dict:
        if self._corpus_settings is None:
            self._corpus_settings = {"corpus_hash": corpus_hash(self.docs), "corpus_cutoff": self.cutoff,
                                     "embedder": EMBEDDER, **self.retrieval.model_dump()}
        return self._corpus_settings

    def build_index(self, ctx: Context) -> None:
        chunks = chunk(self.docs, self.retrieval.chunk_words, self.retrieval.chunk_overlap)
        self.retriever = Retriever(chunks, self.retrieval)
        self._documents = len(self.docs)
        frozen = f", frozen at {self.cutoff}" if self.cutoff else ""
        ctx.notes.append(f"{self.spec.name}: {len(self.docs)} documents{frozen}, {len(chunks)} chunks of "
                         f"{self.retrieval.chunk_words} words, {self.retriever.index.kind} index, top "
                         f"{self.retrieval.top_k} in the prompt")
        if self.retriever.index.note:
            ctx.notes.append(f"{self.spec.name}: {self.retriever.index.note}")

    # Cooperative: WithCorpus comes first in both strategies' bases, so super() is the prompt or LoRA base.
    def settings(self) -> dict:
        return super().settings() | self.corpus_settings

    def save(self, folder: Path) -> None:
        super().save(folder)
        self.save_index(folder)

    def load(self, ctx: Context, folder: Path) -> None:
        super().load(ctx, folder)
        self.load_index(folder)

    def save_index(self, folder: Path) -> None:
        """The index as retrieval used it: chunks, their embeddings, and the corpus settings with its hash."""
        lines = [json.dumps(asdict(c), ensure_ascii=False) + "\n" for c in self.retriever.chunks]
        (folder / CHUNKS_FILE).write_text("".join(lines), encoding="utf-8")
        np.save(folder / VECTORS_FILE, self.retriever.index.vectors)
        (folder / INDEX_FILE).write_text(json.dumps(self.corpus_settings | {"documents": self._documents}, indent=1))

    def load_index(self, folder: Path) -> None:
        """The saved index instead of the corpus on disk (which may have changed or moved since the run)."""
        saved = json.loads((folder / INDEX_FILE).read_text())
        if saved.get("embedder") != EMBEDDER:
            raise ConfigError(f"{folder / INDEX_FILE}: index embedded with {saved.get('embedder')}, not {EMBEDDER}",
                              fix="re-run `tunewise run` with this version")
        self._documents = saved.pop("documents")
        self._corpus_settings = saved
        self.retrieval = RetrievalSettings(**{k: saved[k] for k in RetrievalSettings.model_fields})  # as in the run
        lines = (folder / CHUNKS_FILE).read_text(encoding="utf-8").splitlines()
        chunks = [Chunk(**json.loads(line)) for line in lines if line]
        self.retriever = Retriever(chunks, self.retrieval, vectors=np.load(folder / VECTORS_FILE))

    def retrieve(self, records: list[Record]) -> None:
        todo = [r for r in records if r.id not in self._passages]
        if todo:
            if len(self._passages) > PASSAGE_CACHE:  # bounded: the records asked for now are added after
                self._passages.clear()
            self._passages.update(zip([r.id for r in todo], self.retriever.top([r.text for r in todo])))

    def turns(self, record: Record):
        return with_passages(record, self._passages[record.id])

    def mark_hits(self, records: list[Record], scored: list[Scored]) -> list[Scored]:
        """Whether each record's named source document was retrieved (for recall@k)."""
        for r, s in zip(records, scored):
            if r.doc is not None:
                s.retrieval_hit = any(names_document(r.doc, c.doc_id) for c in self._passages[r.id])
        return scored


@register("rag")
class Rag(WithCorpus, PromptStrategy):
    """The top-k passages in the prompt of the model as-is."""

    family: Family = "retrieval"
    calibrate_default = False  # the content-free prior would change with every input's passages

    def __init__(self, spec: CandidateSpec):
        PromptStrategy.__init__(self, self.read_corpus(spec))
        self.spec = spec

    def prepare(self, ctx: Context) -> None:
        self.build_index(ctx)

    def fit(self, ctx: Context) -> FitFacts:
        """As a prompt; a local model's answers are kept in the store (models/answer_cache.py): the time
        split asks again what the random split asked, with the same passages."""
        facts = super().fit(ctx)
        _, cfg = ctx.models.config(self.model_name)
        store = getattr(ctx.models, "store", None)
        if store is not None and not cfg.is_http:  # a served model's responses are stored by models/http.py
            from tunewise.models.answer_cache import CachedAnswers

            self.backend = CachedAnswers(self.backend, store, [cfg.model_dump()])
        return facts

    def _predict_many(self, ctx: Context, records: list[Record], calibrate: bool, full: bool = False):
        self.retrieve(records)
        out = super()._predict_many(ctx, records, calibrate, full)
        self.mark_hits(records, out)
        return out


@register("rag_lora")
class RagLoRA(WithCorpus, FineTune):
    """A LoRA trained with the retrieved passages in its prompts, and scored with them."""

    family: Family = "retrieval"
    method = "lora"

    def __init__(self, spec: CandidateSpec):
        FineTune.__init__(self, self.read_corpus(spec))
        self.spec = spec

    def config(self, ctx: Context):
        cfg = super().config(ctx)
        return cfg if "max_length" in self.options else cfg.model_copy(
            update={"max_length": max(cfg.max_length, RAG_LORA_MIN_LENGTH)})

    def fit(self, ctx: Context) -> FitFacts:
        self.build_index(ctx)
        return super().fit(ctx)

    def examples(self, lm, records: list[Record], system):
        self.retrieve(records)
        return super().examples(lm, records, system)

    def predict_many(self, ctx: Context, records: list[Record]) -> list[Scored]:
        self.retrieve(records)
        return self.mark_hits(records, super().predict_many(ctx, records))
