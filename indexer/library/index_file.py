"""The read side of the ANN file (index.faiss): load it, search it, describe it.

It is a cache over the stored vectors, keyed by catalog id; indexer/ann.py builds and replaces it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

FLAT = "flat"
IVFPQ = "ivfpq"
NONE = {"type": "none", "vectors": 0}  # how a library without an index file describes it


def faiss():
    import faiss  # heavy: only commands that build or search an index pay for it

    return faiss


def load(path: Path):
    return faiss().read_index(str(path))


def search(index, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, approximate scores) of up to k candidates for one query vector."""
    q = np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32)
    scores, ids = index.search(q, min(k, max(1, index.ntotal)))
    keep = ids[0] >= 0
    return ids[0][keep], scores[0][keep]


def describe(index) -> dict[str, object]:
    ivf = faiss().try_extract_index_ivf(index)
    if ivf is None:
        return {"type": FLAT, "vectors": int(index.ntotal)}
    pq = faiss().downcast_index(ivf)
    return {
        "type": IVFPQ,
        "vectors": int(index.ntotal),
        "nlist": int(ivf.nlist),
        "nprobe": int(ivf.nprobe),
        "m": int(pq.pq.M) if hasattr(pq, "pq") else None,
        "nbits": int(pq.pq.nbits) if hasattr(pq, "pq") else None,
    }


class CachedIndex:
    """The index file, re-read when an index run has replaced it since (a page keeps a library open)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._index = None
        self._mtime = 0.0

    def get(self):
        """The loaded index, or None when the library has no index file."""
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            self._index = None
            return None
        if self._index is None or mtime != self._mtime:
            self._index, self._mtime = load(self.path), mtime
        return self._index
