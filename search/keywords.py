"""Keyword terms on the query side: `text:"total 42.50"` / `text:word` inside a search query
(parse_text_terms) or `--text WORDS` (text_terms), the words of a photo's text they matched,
and reciprocal rank fusion of the keyword ranking with the semantic one.

Every text term must occur in a photo's keyword document (a filter, indexer/library/keywords.py
says what a match is); the photos that pass are ranked by BM25, and rrf fuses that ranking with
the semantic one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from indexer.errors import PixseekError
from indexer.library.keywords import IS_CJK, TRIGRAM

__all__ = ["RRF_K", "matched_words", "parse_text_terms", "rrf", "text_terms"]

# Cormack, Clarke & Buettcher (SIGIR 2009): k = 60 makes the fusion insensitive to the exact
# value and lets a first place in one list outweigh a middling place in the other.
RRF_K = 60

_TEXT_TERM = re.compile(r'(^|\s)(?:([+-])\s+)?text:(?:"([^"]*)"|([^\s"]+))')
_PHRASE = re.compile(r'"([^"]*)"|(\S+)')


def text_terms(words: str) -> list[str]:
    """`--text WORDS`: each word, or each "quoted phrase", is one term that must occur."""
    terms = [" ".join((m.group(1) if m.group(1) is not None else m.group(2)).split()) for m in _PHRASE.finditer(words)]
    return [t for t in terms if t]


def parse_text_terms(query: str) -> tuple[str, list[str]]:
    """Split `text:"..."` and `text:word` terms out of a search query.

    Returns (the query without them, for the semantic side; the text terms). A `+` that joined
    a text term to the rest goes with it, so `"beach" + text:"total"` leaves `"beach"`; a text
    term cannot be subtracted (PixseekError).
    """
    terms: list[str] = []

    def take(m: re.Match[str]) -> str:
        if m.group(2) == "-":
            raise PixseekError(
                f"a text term cannot be subtracted: {m.group(0).strip()}",
                'text:WORD keeps the photos whose text has WORD; drop the "-"',
            )
        found = text_terms(f'"{m.group(3)}"' if m.group(3) is not None else m.group(4))
        if not found:
            raise PixseekError(f"empty text term in query: {m.group(0).strip()}", 'write text:"WORDS" or text:WORD')
        terms.extend(found)
        return m.group(1)

    rest = _TEXT_TERM.sub(take, query)
    rest = re.sub(r"^\s*\+\s+|\s+\+\s*$", "", " ".join(rest.split()))
    return rest.strip(), terms


def matched_words(terms: Sequence[str], text: str) -> list[str]:
    """The spans of `text` that the terms matched, as written there (case and all), in term order.

    The index's rules: a term of three or more characters anywhere within a line (OCR's lines
    are separate), a shorter one only as a whole word or number.
    """
    found: list[str] = []
    for term in terms:
        span = _find(" ".join(term.split()), text)
        if span and span not in found:
            found.append(span)
    return found


def _find(term: str, text: str) -> str | None:
    if not term:
        return None
    if len(term) >= TRIGRAM:
        m = re.search(r"[^\S\n]+".join(map(re.escape, term.split())), text, flags=re.IGNORECASE)
        return m.group(0) if m else None
    for m in re.finditer(re.escape(term), text, flags=re.IGNORECASE):
        start, end = m.span()
        starts = start == 0 or _parted(text[start], text[start - 1])
        if starts and (end == len(text) or _parted(text[end - 1], text[end])):
            return m.group(0)
    return None


def _parted(inside: str, outside: str) -> bool:
    """Whether the short table's tokens part between these two neighbouring characters."""

    def kind(ch: str) -> str | None:
        if IS_CJK.match(ch) or not ch.isalnum():
            return None
        return "digit" if ch.isdigit() else "letter"

    return kind(inside) is None or kind(inside) != kind(outside)


def rrf(
    semantic_ids: Sequence[int], keyword_ids: Sequence[int], k: int = RRF_K, keyword_weight: float = 1.0
) -> list[tuple[int, float]]:
    """Reciprocal rank fusion: score(d) = 1 / (k + semantic rank) + keyword_weight / (k + keyword rank).

    Ranks start at 1; a list that lacks an image adds nothing for it. The default weight 1
    trusts both rankings alike. Ties keep the semantic order, then the keyword order.
    """
    scores: dict[int, float] = {}
    for weight, ids in ((1.0, semantic_ids), (keyword_weight, keyword_ids)):
        for rank, image_id in enumerate(ids, start=1):
            scores[int(image_id)] = scores.get(int(image_id), 0.0) + weight / (k + rank)
    # Python's sort is stable and dicts keep insertion order (semantic first): ties stay in order.
    return sorted(scores.items(), key=lambda kv: -kv[1])
