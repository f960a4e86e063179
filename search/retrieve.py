"""Retrieval: a query vector's best candidates, scored exactly against the stored vectors.

Without filters the ANN index shortlists and every candidate is re-ranked exactly; with filters
the allowed images are scored exactly (or, for very many, ANN candidates are filtered). Keyword
hits and a concept's filter narrow the allowed images the same way (`within`).
"""

from __future__ import annotations

import numpy as np

from indexer.library import index_file
from indexer.library.catalog import Catalog
from indexer.library.filters import Filters
from indexer.library.index_file import CachedIndex
from indexer.library.vectors import VectorStore
from search import rank

# With filters, scoring every allowed image exactly is cheaper than over-fetching ANN candidates
# until this many images (about 100 MB of float16 vectors at 512 dimensions).
EXACT_FILTER_MAX = 100_000
# Up to this many images every query is scored exactly, without the ANN index (about 10 MB of
# float16 vectors at 512 dimensions).
EXACT_MAX = 10_000
# IVF-PQ only shortlists; the exact re-rank looks at this many candidates per wanted result.
RERANK_FACTOR = 10
_CHUNK = 65_536  # vectors scored at a time


def _ids(ids: list[int]) -> np.ndarray:
    return np.array(ids, dtype=np.int64)


def allowed_ids(catalog: Catalog, filters: Filters, within: np.ndarray | None = None) -> np.ndarray:
    """The indexed images passing `filters` and, when given, among `within` (keyword hits, a concept's), by id."""
    ids = _ids(catalog.filtered_ids(filters))
    return ids if within is None else np.intersect1d(ids, within)


def candidates(
    catalog: Catalog,
    vectors: VectorStore,
    index: CachedIndex,
    vec: np.ndarray,
    k: int,
    filters: Filters,
    within: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(ids, exact scores) of up to k best images passing `filters` (and among `within`), best first."""
    if not filters.active() and within is None:
        return _ann_then_exact(catalog, vectors, index, vec, k)
    allowed = allowed_ids(catalog, filters, within)
    if len(allowed) <= EXACT_FILTER_MAX:
        return exact(vectors, vec, allowed, k)
    ids, scores = _ann_then_exact(catalog, vectors, index, vec, k * RERANK_FACTOR * 10)
    keep = np.isin(ids, allowed)
    return ids[keep][:k], scores[keep][:k]


def exact(vectors: VectorStore, vec: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine scores of `ids`, best k first (vectors are read in bounded chunks)."""
    best_ids, best_scores = np.empty(0, np.int64), np.empty(0, np.float32)
    for start in range(0, len(ids), _CHUNK):
        # Damaged rows are left out (and counted in vectors.damaged), never scored as 0 or above 1.
        chunk, rows = vectors.checked(ids[start : start + _CHUNK])
        scores = rows @ vec
        best_ids = np.concatenate([best_ids, chunk])
        best_scores = np.concatenate([best_scores, scores])
        if len(best_ids) > k:
            top = np.argpartition(-best_scores, k - 1)[:k]
            best_ids, best_scores = best_ids[top], best_scores[top]
    order = np.argsort(-best_scores, kind="stable")
    return best_ids[order], best_scores[order]


def _ann_then_exact(
    catalog: Catalog, vectors: VectorStore, index: CachedIndex, vec: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    if catalog.indexed_count() <= EXACT_MAX:
        # Scoring every vector is exact and, this few, about as fast as the index: a query
        # process need not load faiss at all.
        index.check()
        return exact(vectors, vec, _ids(catalog.indexed_ids()), k)
    loaded = index.get()
    # Images indexed after the ANN file was written (a run in progress) are scored exactly;
    # without the file (deleted, or a run stopped before writing it) all of them are.
    if loaded is None:
        return exact(vectors, vec, _ids(catalog.indexed_ids()), k)
    ann_ids, _ = index_file.search(loaded, vec, max(k * RERANK_FACTOR, 100))
    return exact(vectors, vec, np.union1d(ann_ids, _ids(catalog.ids_not_in_ann())), k)


def z_floor(catalog: Catalog, vectors: VectorStore, vec: np.ndarray, min_z: float) -> float:
    """`rank.z_floor` over this query's scores on an evenly spread sample of the library."""
    stride = max(1, catalog.indexed_count() // rank.Z_SAMPLE)
    return rank.z_floor(vectors.checked(_ids(catalog.sample_ids(stride)))[1] @ vec, min_z)
