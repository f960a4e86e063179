"""Ranking with keyword terms and concepts, besides or instead of the query's embedding.

Keyword terms filter (each must occur: the hits become the `within` set that retrieval applies
like the metadata filters) and rank (BM25). A concept ranks by its probability when the query
has nothing to embed, and otherwise keeps the photos at `min_prob` or above. When a ranking by
meaning (the embedding's, or the concept's) meets the keyword ranking, the two are fused by
reciprocal rank fusion, k = 60 with equal weights (search/keywords.py `rrf`): the default, so a
photo first in one list and middling in the other beats one middling in both.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from indexer.library.catalog import Catalog
from indexer.library.filters import Filters
from indexer.library.index_file import CachedIndex
from indexer.library.vectors import VectorStore
from search import retrieve
from search.concepts import Concept
from search.keywords import RRF_K, rrf

_CHUNK = 65_536  # vectors a concept scores at a time

SEMANTIC, CONCEPT, TEXT = "semantic", "concept", "text"


@dataclass
class Scored:
    """Candidates best first, with what each ranking said about them (for explanations)."""

    ids: np.ndarray
    scores: np.ndarray  # what they are ordered by: cosine, probability, BM25 or the fused score
    semantic: dict[int, float] = field(default_factory=dict)  # cosine, when the query had an embedding
    probability: dict[int, float] = field(default_factory=dict)  # the concept's, when one was given
    fusion: dict[int, dict[str, float]] = field(default_factory=dict)  # ranking -> 1 / (k + rank), when fused


def probabilities(concept: Concept, vectors: VectorStore, ids: np.ndarray) -> np.ndarray:
    """The concept's probability for each of `ids`, the vectors read in bounded chunks."""
    out = [concept.score(vectors.get(ids[s : s + _CHUNK])) for s in range(0, len(ids), _CHUNK)]
    return np.concatenate(out) if out else np.empty(0, np.float32)


def score(
    catalog: Catalog,
    vectors: VectorStore,
    index: CachedIndex,
    vec: np.ndarray | None,
    want: int,
    filters: Filters,
    floor: float,
    words: list[str],
    concept: Concept | None,
    min_prob: float,
) -> Scored:
    """The candidates of a query: `vec` (None: nothing to embed), keyword terms, a concept."""
    within = None
    keyword: list[tuple[int, float]] = []
    if words:
        keyword = catalog.keyword_hits(words)
        within = np.array(sorted(i for i, _ in keyword), dtype=np.int64)
    probability: dict[int, float] = {}
    if concept is not None:
        ids = retrieve.allowed_ids(catalog, filters, within)
        probs = probabilities(concept, vectors, ids)
        probability = dict(zip(ids.tolist(), probs.tolist()))
        if vec is not None:
            within = ids[probs >= min_prob]
    semantic: dict[int, float] = {}
    if vec is not None:
        # Fusion needs the semantic rank of every keyword hit, not only of the best `want`.
        n = want if within is None else max(want, len(within))
        ids, scores = retrieve.candidates(catalog, vectors, index, vec, n, filters, within)
        keep = scores >= floor
        ids, scores = ids[keep], scores[keep]
        semantic = dict(zip(ids.tolist(), scores.tolist()))
        primary = SEMANTIC
    elif concept is not None:
        ranked = sorted(probability, key=lambda i: -probability[i])
        ids = np.array(ranked, dtype=np.int64)
        scores = np.array([probability[i] for i in ranked], dtype=np.float64)
        primary = CONCEPT
    else:
        ids = retrieve.allowed_ids(catalog, filters, within)
        primary = None
    if not words:
        return Scored(ids, scores, semantic, probability)
    present = set(ids.tolist())
    keyword = [(i, s) for i, s in keyword if i in present]
    if primary is None:
        return Scored(
            np.array([i for i, _ in keyword], dtype=np.int64),
            np.array([s for _, s in keyword], dtype=np.float64),
            semantic,
            probability,
        )
    keyword_ids = [i for i, _ in keyword]
    fused = rrf(ids.tolist(), keyword_ids)
    first_rank = {i: r for r, i in enumerate(ids.tolist(), 1)}
    text_rank = {i: r for r, i in enumerate(keyword_ids, 1)}
    parts = {i: {primary: 1 / (RRF_K + first_rank[i]), TEXT: 1 / (RRF_K + text_rank[i])} for i, _ in fused}
    return Scored(
        np.array([i for i, _ in fused], dtype=np.int64),
        np.array([s for _, s in fused], dtype=np.float64),
        semantic,
        probability,
        parts,
    )
