"""The keyword side of search: an SQLite FTS5 index over the words attached to each photo.

One document per image (rowid = catalog id): the text read in the photo, its file name, its
folder names, its tags and its EXIF/XMP description and keywords, in two FTS5 tables that
every write goes to together:
- `keywords`, FTS5's trigram tokenizer: any substring of three or more characters matches,
  case-insensitively. Chinese and Japanese put no spaces between words, so a word tokenizer
  sees a whole line as one token; trigrams find a word anywhere in it. And OCR often drops the
  space between words ("TOTAL42.50", "Coffeeshop"); trigrams still find "total" and "shop".
- `keywords_short`, unicode61 over the same text with each CJK character made a token of its
  own and letters parted from digits, for terms under three characters, which have no trigram
  (many Chinese words have two: 北京, 出口): a two-character Chinese word is then a phrase of
  two tokens, and "42" a whole number, both found through the index. LIKE on the trigram table
  would find them too, but by scanning every row (benchmarks/README.md has both costs).

Query side: `text:"total 42.50"` / `text:word` inside a search query (parse_text_terms), or
`--text WORDS` (text_terms): every phrase must occur (a filter), and the photos that have them
are ranked by BM25; rrf fuses that ranking with the semantic one.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from indexer.errors import PixseekError

__all__ = [
    "COLUMNS",
    "RRF_K",
    "SHORT_TABLE",
    "TABLE",
    "KeywordDoc",
    "ddl",
    "delete_documents",
    "document",
    "ensure_table",
    "keyword_search",
    "matched_words",
    "parse_text_terms",
    "rebuild",
    "rrf",
    "text_terms",
    "upsert",
]

TABLE = "keywords"
SHORT_TABLE = "keywords_short"
COLUMNS = ("ocr", "name", "folders", "tags", "exif")
# Cormack, Clarke & Buettcher (SIGIR 2009): k = 60 makes the fusion insensitive to the exact
# value and lets a first place in one list outweigh a middling place in the other.
RRF_K = 60
# Without the library's root, this many enclosing folders name a photo ("2023 Japan/day 2");
# folders further up (home, Pictures) are shared by every photo and would only add noise.
FOLDER_DEPTH = 3
_TRIGRAM = 3

# Word boundaries inside a file or folder name: separators, camelCase, letters next to digits.
_NAME_SPLIT = re.compile(r"[\W_]+|(?<=[a-z])(?=[A-Z])|(?<=[A-Za-z])(?=\d)|(?<=\d)(?=[A-Za-z])")
_TEXT_TERM = re.compile(r'(^|\s)(?:([+-])\s+)?text:(?:"([^"]*)"|([^\s"]+))')
_PHRASE = re.compile(r'"([^"]*)"|(\S+)')
# Han (with radicals, symbols and compatibility forms), kana and Hangul: scripts whose
# characters become tokens of their own in the short table.
_CJK = "\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff"
_IS_CJK = re.compile(f"[{_CJK}]")
_SPACE_OUT = re.compile(rf"([{_CJK}])|(?<=[^\W\d_])(?=\d)|(?<=\d)(?=[^\W\d_])")


@dataclass(frozen=True)
class KeywordDoc:
    """The words of one image, by column."""

    ocr: str = ""
    name: str = ""
    folders: str = ""
    tags: str = ""
    exif: str = ""

    def values(self) -> tuple[str, ...]:
        return tuple(getattr(self, c) for c in COLUMNS)

    @property
    def text(self) -> str:
        return "\n".join(v for v in self.values() if v)


def split_name(name: str) -> str:
    """'IMG_2041-beachTrip.jpg' stem -> 'IMG 2041 beach Trip': the words a person would search."""
    return " ".join(w for w in _NAME_SPLIT.split(name) if w)


def document(
    path: str | Path,
    *,
    root: str | Path | None = None,
    ocr_text: str = "",
    tags: Iterable[str] = (),
    description: str | None = None,
    keywords: Iterable[str] = (),
) -> KeywordDoc:
    """The keyword document of the image at `path`.

    Folder names are those below `root` (the indexed folder) when given, else the last
    FOLDER_DEPTH enclosing ones. `description` and `keywords` are EXIF/XMP's.
    """
    path = Path(path)
    if root is not None and path.is_relative_to(root):
        folders = path.parent.relative_to(root).parts
    else:
        folders = path.parent.parts[-FOLDER_DEPTH:]
    exif = "\n".join([description or "", *keywords]).strip()
    return KeywordDoc(
        ocr=ocr_text.strip(),
        name=split_name(path.stem),
        folders=" ".join(split_name(f) for f in folders),
        tags=" ".join(tags),
        exif=exif,
    )


def ddl() -> list[str]:
    """The statements that create both keyword tables."""
    columns = ", ".join(COLUMNS)
    return [f"CREATE VIRTUAL TABLE IF NOT EXISTS {TABLE} USING fts5({columns}, tokenize='trigram')",
            f"CREATE VIRTUAL TABLE IF NOT EXISTS {SHORT_TABLE} USING fts5({columns}, tokenize='unicode61')"]


def ensure_table(conn: sqlite3.Connection) -> bool:
    """Create the keyword tables when missing; True when they were (the caller then fills them: rebuild)."""
    found = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE name IN (?, ?)", (TABLE, SHORT_TABLE))}
    if found == {TABLE, SHORT_TABLE}:
        return False
    _drop(conn)  # one without the other cannot be trusted
    for statement in ddl():
        conn.execute(statement)
    return True


def _spaced(text: str) -> str:
    """What the short table stores and is asked: CJK characters and digit runs as tokens of their own."""
    return _SPACE_OUT.sub(lambda m: f" {m.group(1)} " if m.group(1) else " ", text)


def upsert(conn: sqlite3.Connection, docs: Iterable[tuple[int, KeywordDoc]]) -> None:
    """Write the documents of these images, replacing what they had (the caller commits)."""
    rows = [(int(i), *d.values()) for i, d in docs]
    delete_documents(conn, [r[0] for r in rows])
    marks = ", ".join("?" * (len(COLUMNS) + 1))
    for table, transform in ((TABLE, str), (SHORT_TABLE, _spaced)):
        conn.executemany(f"INSERT INTO {table} (rowid, {', '.join(COLUMNS)}) VALUES ({marks})",
                         [(r[0], *map(transform, r[1:])) for r in rows])


def delete_documents(conn: sqlite3.Connection, ids: Iterable[int]) -> None:
    ids = [(int(i),) for i in ids]
    for table in (TABLE, SHORT_TABLE):
        conn.executemany(f"DELETE FROM {table} WHERE rowid = ?", ids)


def rebuild(conn: sqlite3.Connection, docs: Iterable[tuple[int, KeywordDoc]]) -> None:
    """Replace both tables by these documents (the catalog's rows are the truth)."""
    _drop(conn)
    ensure_table(conn)
    upsert(conn, docs)


def _drop(conn: sqlite3.Connection) -> None:
    for table in (TABLE, SHORT_TABLE):
        conn.execute(f"DROP TABLE IF EXISTS {table}")


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
            raise PixseekError(f"a text term cannot be subtracted: {m.group(0).strip()}",
                               'text:WORD keeps the photos whose text has WORD; drop the "-"')
        terms.extend(text_terms(f'"{m.group(3)}"' if m.group(3) is not None else m.group(4)))
        return m.group(1)

    rest = _TEXT_TERM.sub(take, query)
    rest = re.sub(r"^\s*\+\s+|\s+\+\s*$", "", " ".join(rest.split()))
    return rest.strip(), terms


def _fts_phrase(term: str) -> str:
    return '"' + term.replace('"', '""') + '"'


def keyword_search(
    conn: sqlite3.Connection, terms: Sequence[str], limit: int | None = None
) -> list[tuple[int, float]]:
    """(image id, score) of the images holding every term, best first.

    Terms of three or more characters match anywhere (trigrams); shorter ones match whole
    words, whole numbers, or CJK characters in sequence. Score: minus FTS5's BM25 (higher is
    better), from the trigram table when a term has three characters or more.
    """
    terms = [" ".join(t.split()) for t in terms if t.strip()]
    long_terms = [t for t in terms if len(t) >= _TRIGRAM]
    short_terms = [_spaced(t).strip() for t in terms if len(t) < _TRIGRAM]
    if not terms or any(not re.search(r"\w", t) for t in short_terms):
        return []  # a short term without a letter or digit has no token to find
    short_match = " AND ".join(_fts_phrase(t) for t in short_terms)
    if long_terms:
        sql = f"SELECT rowid, -bm25({TABLE}) FROM {TABLE} WHERE {TABLE} MATCH ?"
        args = [" AND ".join(_fts_phrase(t) for t in long_terms)]
        if short_terms:
            sql += f" AND rowid IN (SELECT rowid FROM {SHORT_TABLE} WHERE {SHORT_TABLE} MATCH ?)"
            args.append(short_match)
    else:
        sql = f"SELECT rowid, -bm25({SHORT_TABLE}) FROM {SHORT_TABLE} WHERE {SHORT_TABLE} MATCH ?"
        args = [short_match]
    sql += " ORDER BY 2 DESC, rowid"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    return [(int(i), float(score)) for i, score in conn.execute(sql, args)]


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
    if len(term) >= _TRIGRAM:
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
        if _IS_CJK.match(ch) or not ch.isalnum():
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
