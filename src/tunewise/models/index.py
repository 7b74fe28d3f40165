"""Nearest-chunk search over normalised embeddings: exact numpy for small corpora, FAISS above a size.

Both are exact inner-product (cosine) search, so they return the same chunks; FAISS (`faiss-cpu`, the
`retrieval` extra) is faster on large corpora. Without faiss-cpu a large corpus falls back to numpy,
and the index says so in its `note`.
"""

from __future__ import annotations

import numpy as np

from tunewise.models.embed import nearest


class VectorIndex:
    def __init__(self, vectors: np.ndarray, *, faiss_above: int = 20_000):
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.kind, self.note, self._faiss = "numpy", "", None
        if len(self.vectors) > faiss_above:
            try:
                import faiss
            except ImportError:
                self.note = (f"{len(self.vectors)} chunks searched with numpy: install faiss-cpu "
                             "(pip install 'tunewise[retrieval]') for a faster index")
            else:
                self._faiss = faiss.IndexFlatIP(self.vectors.shape[1])
                self._faiss.add(self.vectors)
                self.kind = "faiss"

    def __len__(self) -> int:
        return len(self.vectors)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(indices, similarities), (n_queries, min(k, len)) each, best first."""
        q = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.vectors.shape[1])
        if self._faiss is None:
            return nearest(q, self.vectors, k)
        sims, idx = self._faiss.search(q, min(k, len(self)))
        return idx.astype(np.int64), sims
