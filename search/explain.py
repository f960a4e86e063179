"""Why a photo matched: each query term's share of its score, and the words, tags and concepts that apply.

A query of terms e_i with weights w_i is the vector q = sum_i w_i e_i / |sum_i w_i e_i|
(search/embed.py QueryEmbedder.terms), and a photo's score is q . x with its stored vector x. That is
linear in the terms, so the score splits exactly into one part per term:

    score = q . x = sum_i w_i (e_i . x) / |sum_i w_i e_i|

so a term's contribution is w_i (e_i . x) / |sum_i w_i e_i|: negative for a subtracted term
the photo resembles, and the parts add up to the score.

When keyword terms rank too, the score is reciprocal rank fusion's (search/hybrid.py): then
`fusion` holds each ranking's part 1 / (k + rank), and those add up to the score, while the
terms add up to `semantic_score`, the cosine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from search.concepts import Concept, all_concepts
from search.hybrid import Scored
from search.result import Result

if TYPE_CHECKING:
    from search.library import Library

__all__ = ["Explanation", "TermContribution", "contributions", "explain", "explain_results"]

# A concept applies to a photo from this probability on (as `--concept` filters by default).
APPLIES = 0.5


@dataclass(frozen=True)
class TermContribution:
    term: str  # the term as the user wrote it ("beach", an image path, "#12")
    weight: float
    similarity: float  # cosine of the term's embedding with the photo
    contribution: float  # its part of the score

    def as_dict(self) -> dict[str, Any]:
        return {k: round(v, 6) if isinstance(v, float) else v for k, v in asdict(self).items()}


@dataclass
class Explanation:
    score: float
    terms: list[TermContribution] = field(default_factory=list)
    matched_words: list[str] = field(default_factory=list)  # spans of the photo's text the keywords matched
    tags: list[str] = field(default_factory=list)
    concepts: dict[str, float] = field(default_factory=dict)  # concept name -> probability
    semantic_score: float | None = None  # the cosine the terms add up to (None: nothing was embedded)
    fusion: dict[str, float] = field(default_factory=dict)  # ranking -> its part of a fused score

    def as_dict(self) -> dict[str, Any]:
        return {
            "score": round(self.score, 6),
            "terms": [t.as_dict() for t in self.terms],
            "semantic_score": None if self.semantic_score is None else round(self.semantic_score, 6),
            "fusion": {k: round(v, 6) for k, v in self.fusion.items()},
            "matched_words": self.matched_words,
            "tags": self.tags,
            "concepts": {k: round(v, 4) for k, v in self.concepts.items()},
        }


def contributions(
    labels: Sequence[str], weights: Sequence[float], embeddings: np.ndarray, vectors: np.ndarray
) -> np.ndarray:
    """(n photos, n terms) contributions; each row adds up to the photo's score against the query.

    `embeddings` (n terms, dim) are the terms' unit embeddings and `vectors` (n photos, dim)
    the photos' stored ones; the labels only fix the number of terms.
    """
    e = np.asarray(embeddings, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if not (len(labels) == len(w) == len(e)):
        raise ValueError("one label, weight and embedding per term")
    norm = np.linalg.norm(w @ e)
    if norm < 1e-12:
        raise ValueError("the terms cancel out: the query has no direction")
    x = np.atleast_2d(np.asarray(vectors, dtype=np.float64))
    return (x @ e.T) * w / norm


def explain(
    labels: Sequence[str],
    weights: Sequence[float],
    embeddings: np.ndarray,
    vector: np.ndarray,
    *,
    matched_words: Sequence[str] = (),
    tags: Sequence[str] = (),
    concepts: dict[str, float] | None = None,
) -> Explanation:
    """The explanation of one photo (its stored `vector`) for a query of these terms."""
    parts = contributions(labels, weights, embeddings, vector)[0]
    sims = np.atleast_2d(np.asarray(vector, dtype=np.float64)) @ np.asarray(embeddings, dtype=np.float64).T
    terms = [
        TermContribution(label, float(w), float(s), float(c)) for label, w, s, c in zip(labels, weights, sims[0], parts)
    ]
    score = float(parts.sum())
    return Explanation(score, terms, list(matched_words), list(tags), dict(concepts or {}), semantic_score=score)


def explain_results(
    library: Library,
    results: list[Result],
    scored: Scored,
    parts: tuple[list[str], list[float], list[np.ndarray]],
    matched: dict[int, list[str]] | None,
    concept: Concept | None,
) -> list[Result]:
    """`results` with their explanations (and matched words when the query had text terms)."""
    labels, weights, embeddings = parts
    ids = [r.id for r in results]
    vectors = library.vectors.get(np.array(ids, dtype=np.int64)) if ids else np.empty((0, library.settings.dim))
    tags = library.catalog.tags_of(ids)
    fingerprint = library.settings.model_fingerprint
    taught = [c for c in all_concepts(library) if c.model == fingerprint]
    probs = {c.name: c.score(vectors) for c in taught} if ids else {}
    out = []
    for row, (result, vector) in enumerate(zip(results, vectors)):
        applying = {
            name: float(p[row])
            for name, p in probs.items()
            if p[row] >= APPLIES or (concept is not None and name == concept.name)
        }
        words = matched.get(result.id, []) if matched is not None else []
        if labels:
            why = explain(
                labels,
                weights,
                np.stack(embeddings),
                vector,
                matched_words=words,
                tags=tags.get(result.id, []),
                concepts=applying,
            )
        else:
            why = Explanation(result.score, [], words, tags.get(result.id, []), applying)
        why = replace(why, score=result.score, fusion=scored.fusion.get(result.id, {}))
        out.append(replace(result, explanation=why.as_dict(), matched_words=words if matched is not None else None))
    return out
