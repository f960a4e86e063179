"""What a search asks for, checked in one place (`SearchRequest.__post_init__`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from indexer.errors import PixseekError
from indexer.library.filters import Filters
from search.keywords import text_terms
from search.rank import check_sort

__all__ = ["SearchRequest", "build_request"]


@dataclass(frozen=True)
class SearchRequest:
    """A text query (with the syntax of search/query.py), an example image, an indexed image, or a mix.

    image: a file path, or the bytes of an upload. like: an indexed image's id or path; the image
    itself is left out of the results. min_score: a cosine floor; min_z: an adaptive one (see
    `rank.z_floor`). ensemble=False embeds text as typed, without prompt templates. dedupe keeps
    the best of each set of near-duplicates. sort: "score" or "date". allow_paths=False reads every
    query term as text (what a web page must do: see `parse_query`).

    text_terms: words or phrases each photo's keyword document (the text read in it, its file and
    folder names, its tags) must hold, like `text:"..."` in the query; the photos that hold them
    are ranked by BM25, fused with the semantic ranking by reciprocal rank fusion
    (search/hybrid.py). concept: a taught concept (search/concepts.py): with nothing else to
    rank by, results are ranked by its probability; otherwise it keeps photos at `min_prob` or
    above. explain: each result carries its `explanation` (search/explain.py).
    """

    text: str | None = None
    image: bytes | str | Path | None = None
    like: int | str | Path | None = None
    k: int = 20
    min_score: float | None = None
    min_z: float | None = None
    filters: Filters = field(default_factory=Filters)
    ensemble: bool = True
    dedupe: bool = False
    sort: str = "score"
    allow_paths: bool = True
    text_terms: tuple[str, ...] = ()
    concept: str | None = None
    min_prob: float = 0.5
    explain: bool = False

    def __post_init__(self) -> None:
        if self.k < 1:
            raise PixseekError(f"-k must be at least 1, not {self.k}")
        check_sort(self.sort)
        object.__setattr__(self, "text_terms", tuple(" ".join(t.split()) for t in self.text_terms))
        if any(not t for t in self.text_terms):
            raise PixseekError("empty text term", 'give --text WORDS, or write text:"WORDS" in the query')
        if self.concept is not None and not self.concept.strip():
            raise PixseekError("empty concept name", "pixseek concept list shows the concepts of this library")
        if not 0 <= self.min_prob <= 1:
            raise PixseekError(f"--min-prob must be between 0 and 1, not {self.min_prob}")
        if not self.text and self.image is None and self.like is None and not self.text_terms and not self.concept:
            raise PixseekError(
                "nothing to search for", "give a text query, --image FILE, --like FILE, --text WORDS or --concept NAME"
            )
        for name, value in (("--min-score", self.min_score), ("--min-z", self.min_z)):
            if value is not None and not math.isfinite(value):
                raise PixseekError(f"{name} must be a number, not {value}")
        if isinstance(self.like, int) and not 0 < self.like < 2**63:  # beyond SQLite's integers: no such id
            raise PixseekError(f"image {self.like} is not in the library", "pick an id from search results or info")


def build_request(
    query: str | None = None, *, words: str | None = None, avoid: Sequence[str] = (), **fields: Any
) -> SearchRequest:
    """A SearchRequest from what a person typed: the one way the CLI, the API and the page make one.

    query: pixseek's query syntax (search/query.py, `text:"..."` terms included). words: the
    words or "quoted phrases" every photo's text must hold (`--text`, the API's `words`, the
    page's "Words in photo" box; search/keywords.py `text_terms`). avoid: texts to push the
    results away from (`--not TEXT`), the same as - "TEXT" in the query. fields: the other
    SearchRequest fields.
    """
    terms = text_terms(words) if words is not None else []
    if words is not None and not terms:
        raise PixseekError("empty --text: no words to look for", "give the words the photos must hold, e.g. receipt")
    if any('"' in text for text in avoid):
        raise PixseekError("--not takes plain text, without double quotes", 'or write - "TEXT" in the query')
    if any(not text.strip() for text in avoid):
        raise PixseekError("--not needs some text", 'e.g. --not "indoor"')
    text = " ".join([query] * (query is not None) + [f'- "{t}"' for t in avoid]) or None
    return SearchRequest(text=text, text_terms=tuple(terms), **fields)
