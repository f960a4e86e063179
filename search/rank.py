"""After scoring: the adaptive cutoff, collapsing near-duplicates, and the order results are shown in."""

from __future__ import annotations

import numpy as np

from indexer.errors import PixseekError
from indexer.library.rows import ImageRow
from search.dupes import is_near
from search.result import Result

SORTS = ("score", "date")
# --dedupe scores this many candidates per wanted result, so collapsing copies still leaves k.
DEDUPE_FACTOR = 4

# The z cutoff estimates a query's typical score and spread from at most this many images: the
# estimate's error is then about 1% of the spread, at a millisecond's cost.
Z_SAMPLE = 20_000
MAD_TO_SIGMA = 1.4826  # median absolute deviation x this = standard deviation, for normal data


def z_floor(library_scores: np.ndarray, min_z: float) -> float:
    """The score `min_z` robust standard deviations above this query's median score over the library.

    A fixed --min-score cannot work across queries: CLIP's cosine scores sit higher for some
    texts than for others. Measured against the query's own scores, a match is an image that
    stands out from the rest of the library, and a query that nothing matches, whose scores
    form one unremarkable heap, keeps few or no results. Median and median absolute deviation
    (not mean and standard deviation) describe the heap of non-matches without being pulled up
    by the matches themselves, so a concept in a third of the photos stands out as clearly as
    one in a hundredth.
    """
    if len(library_scores) < 2:
        return -np.inf
    median = float(np.median(library_scores))
    spread = MAD_TO_SIGMA * float(np.median(np.abs(library_scores - median))) or float(library_scores.std())
    return median + min_z * spread


def collapse_near_duplicates(ranked: list[tuple[ImageRow, float]]) -> list[tuple[ImageRow, float]]:
    """Keep the best-scoring image of each set of near-duplicates (ranked is best first)."""
    kept: list[tuple[ImageRow, float]] = []
    for row, score in ranked:
        if not any(is_near(row, other) for other, _ in kept):
            kept.append((row, score))
    return kept


def check_sort(sort: str) -> None:
    if sort not in SORTS:
        raise PixseekError(f"unknown sort '{sort}'", f"choose one of {', '.join(SORTS)}")


def sort_results(results: list[Result], sort: str) -> list[Result]:
    """score: best match first. date: newest taken first, undated photos last (the set is still
    the best matches; only their order changes)."""
    check_sort(sort)
    if sort == "date":
        dated = sorted((r for r in results if r.taken_at), key=lambda r: r.taken_at, reverse=True)
        return dated + [r for r in results if not r.taken_at]
    return results


def ranked(
    rows: dict[int, ImageRow],
    ids: np.ndarray,
    scores: np.ndarray,
    *,
    k: int,
    floor: float,
    exclude: set[int],
    dedupe: bool,
    sort: str,
) -> list[Result]:
    """The k results to show from scored candidates (best first): rows still indexed, not excluded,
    scoring at least `floor`, one per set of near-duplicates when `dedupe`, in `sort` order."""
    hits = [
        (rows[i], score)
        for i, score in zip(ids.tolist(), scores.tolist())
        if i in rows and i not in exclude and score >= floor
    ]
    if dedupe:
        hits = collapse_near_duplicates(hits)
    return sort_results([Result.from_row(row, score) for row, score in hits[:k]], sort)
