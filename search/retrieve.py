"""Retrieval: a query vector's best candidates, scored exactly against the stored vectors.

Without filters the ANN index shortlists and every candidate is re-ranked exactly. With filters
the way is chosen by how many images pass them, counted up to COUNT_MAX so that no query reads
the whole catalog: up to EXACT_FILTER_MAX they are scored exactly; up to COUNT_MAX the IVF index
is searched among them only (a FAISS IDSelector), probing more lists until the shortlist is
full; more than that are over-fetched from the index, more each round as the share passing
seen so far asks, and checked against the filters by id, falling back to the restricted search
when the rounds run out. Every filtered query thus returns k results when k exist. The count
and the passing ids are kept per filter until the catalog changes (search/cache.py), so the
queries after the first with the same filters do not read them again. Keyword hits and a
concept's filter narrow the allowed images the same way (`within`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from indexer.library import index_file
from indexer.library.catalog import Catalog
from indexer.library.filters import Filters
from indexer.library.index_file import CachedIndex
from indexer.library.vectors import VectorStore
from search import rank
from search.cache import LibraryCache

# Up to this many images every query is scored exactly, without the ANN index (about 10 MB of
# float16 vectors at 512 dimensions).
EXACT_MAX = 10_000
# With filters, scoring the allowed images exactly is cheaper than searching the index up to
# this many (reading scattered rows of the vector file dominates).
EXACT_FILTER_MAX = 5_000
# Images passing filters are counted up to this many; up to it, their ids are read from SQLite
# for a restricted search. Beyond, reading them would cost more than over-fetching finds them.
COUNT_MAX = 100_000
# Over-fetching stops at this many candidates (the restricted search takes over).
FETCH_MAX = 65_536
# IVF-PQ only shortlists; the exact re-rank looks at this many candidates per wanted result.
RERANK_FACTOR = 50
SHORTLIST_MIN = 500
# Past this many images searched among, the shortlist grows as the square root of their number:
# a denser library holds more images within the PQ codes' error of the true best.
SHORTLIST_FLAT_UP_TO = 1_000_000
PROBE_GROWTH = 4  # how much wider a restricted search probes when its shortlist came back short
_CHUNK = 65_536  # vectors scored at a time


def _ids(ids: list[int]) -> np.ndarray:
    return np.array(ids, dtype=np.int64)


def shortlist(k: int, among: int) -> int:
    """How many ANN candidates the exact re-rank reads for k results among `among` images."""
    return math.ceil(max(k * RERANK_FACTOR, SHORTLIST_MIN) * math.sqrt(max(1.0, among / SHORTLIST_FLAT_UP_TO)))


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
    cache: LibraryCache | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(ids, exact scores) of up to k best images passing `filters` (and among `within`), best first.
    cache: where the filters' count and ids are kept between queries."""

    def kept(name: str, compute):
        return compute() if cache is None else cache.get((name, filters), compute)

    if not filters.active() and within is None:
        return _ann_then_exact(catalog, vectors, index, vec, k, kept)
    if within is not None:
        return _restricted(catalog, vectors, index, vec, k, allowed_ids(catalog, filters, within))

    if kept("count", lambda: catalog.filtered_count(filters, COUNT_MAX + 1)) > COUNT_MAX:
        loaded = _ivf(index)
        found = None if loaded is None else _over_fetched(catalog, vectors, loaded, vec, k, filters)
        if found is not None:
            return found
    return _restricted(catalog, vectors, index, vec, k, kept("ids", lambda: allowed_ids(catalog, filters)))


def _ivf(index: CachedIndex):
    """The loaded index when it is an IVF one (which can search a subset of its ids), else None."""
    loaded = index.get()
    return loaded if loaded is not None and index_file.faiss().try_extract_index_ivf(loaded) is not None else None


def _restricted(
    catalog: Catalog, vectors: VectorStore, index: CachedIndex, vec: np.ndarray, k: int, allowed: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The best k among `allowed`: exactly when they are few (or there is no IVF index), else the
    IVF index searched only among them, probing wider until its shortlist is full."""
    loaded = None if len(allowed) <= EXACT_FILTER_MAX else _ivf(index)
    if loaded is None:
        return exact(vectors, vec, allowed, k)
    faiss = index_file.faiss()
    ivf = faiss.extract_index_ivf(loaded)
    # A bitmap over ids: built by NumPy in one pass, looked up in constant time by FAISS.
    mask = np.zeros(int(allowed.max()) + 1, dtype=bool)
    mask[allowed] = True
    bitmap = np.packbits(mask, bitorder="little")
    selector = faiss.IDSelectorBitmap(bitmap)
    size = shortlist(k, len(allowed))
    want, nprobe = min(size, len(allowed)), index_file.nprobe_for(ivf.nlist)
    while True:
        params = faiss.SearchParametersIVF(sel=selector, nprobe=nprobe)
        ann_ids, _ = index_file.search(loaded, vec, size, params)
        if len(ann_ids) >= want or nprobe >= ivf.nlist:
            break
        nprobe = min(ivf.nlist, nprobe * PROBE_GROWTH)
    late = np.intersect1d(allowed, _ids(catalog.ids_not_in_ann()), assume_unique=True)
    return exact(vectors, vec, np.union1d(ann_ids, late), k)


def _over_fetched(
    catalog: Catalog, vectors: VectorStore, loaded, vec: np.ndarray, k: int, filters: Filters
) -> tuple[np.ndarray, np.ndarray] | None:
    """For filters too many images pass to list: unrestricted candidates checked against the
    filters by id, fetched in rounds sized by the share passing so far. None when the candidates
    (at most FETCH_MAX) held too few of them for a full shortlist, sized for as many images as
    the share passing so far says pass."""
    # The first round is sized for filters most images pass (three times what all passing would
    # want): no second round for them. Rarer ones grow the rounds as they go.
    want, fetch, checked = shortlist(k, COUNT_MAX), 3 * shortlist(k, loaded.ntotal), 0
    kept: list[int] = []
    while True:
        ann_ids, _ = index_file.search(loaded, vec, fetch)
        fresh = ann_ids[checked:].tolist()
        ok = catalog.passing(filters, fresh)
        kept += [i for i in fresh if i in ok]
        checked = len(ann_ids)
        want = shortlist(k, round(loaded.ntotal * len(kept) / max(1, checked)))
        if len(kept) >= want or checked < fetch or fetch >= FETCH_MAX:
            break
        # Enough for the shortlist at the rate seen (half again, for luck), at most 64 times more.
        growth = math.ceil(1.5 * want * checked / max(1, len(kept)) / fetch)
        fetch = min(FETCH_MAX, fetch * min(64, max(2, growth)))
    if len(kept) < want:  # the probed lists hold too few: a shorter shortlist would cost recall
        return None
    late = _ids(sorted(catalog.passing(filters, catalog.ids_not_in_ann())))
    return exact(vectors, vec, np.union1d(np.array(kept[:want], dtype=np.int64), late), k)


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
    catalog: Catalog, vectors: VectorStore, index: CachedIndex, vec: np.ndarray, k: int, kept: Callable
) -> tuple[np.ndarray, np.ndarray]:
    def indexed() -> np.ndarray:
        return kept("indexed ids", lambda: _ids(catalog.indexed_ids()))

    if not kept("over exact max", lambda: catalog.indexed_more_than(EXACT_MAX)):
        # Scoring every vector is exact and, this few, about as fast as the index: a query
        # process need not load faiss at all.
        index.check()
        return exact(vectors, vec, indexed(), k)
    loaded = index.get()
    # Images indexed after the ANN file was written (a run in progress) are scored exactly;
    # without the file (deleted, or a run stopped before writing it) all of them are.
    if loaded is None:
        return exact(vectors, vec, indexed(), k)
    ann_ids, _ = index_file.search(loaded, vec, shortlist(k, loaded.ntotal))
    late = kept("ids not in ann", lambda: _ids(catalog.ids_not_in_ann()))
    return exact(vectors, vec, np.union1d(ann_ids, late), k)


def z_floor(vectors: VectorStore, vec: np.ndarray, sample: np.ndarray, min_z: float) -> float:
    """`rank.z_floor` over this query's scores on `sample`, an evenly spread sample of the library."""
    return rank.z_floor(vectors.checked(sample)[1] @ vec, min_z)
