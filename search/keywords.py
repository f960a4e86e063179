"""The keyword side of search: an SQLite FTS5 index over the words attached to each photo.

One document per image (rowid = catalog id): the text read in the photo, its file name, its
folder names, its tags and its EXIF/XMP description and keywords. The table uses FTS5's trigram
tokenizer, which matches any substring of three or more characters, case-insensitively:
- Chinese and Japanese have no spaces between words, so a word tokenizer sees a whole line as
  one token; trigrams find a word anywhere in it.
- OCR often drops the space between words ("TOTAL42.50", "Coffeeshop"); trigrams still find
  "total" and "shop".
Terms shorter than three characters (many Chinese words are two: 北京, 出口) have no trigram, so
they are matched with LIKE on the same table: a scan, not an index lookup, but one table keeps
every write path simple (benchmarks/README.md has the cost of both).

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


def ddl() -> str:
    return f"CREATE VIRTUAL TABLE IF NOT EXISTS {TABLE} USING fts5({', '.join(COLUMNS)}, tokenize='trigram')"


def ensure_table(conn: sqlite3.Connection) -> bool:
    """Create the keyword table when missing; True when it was (the caller then fills it: rebuild)."""
    exists = conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (TABLE,)).fetchone() is not None
    if not exists:
        conn.execute(ddl())
    return not exists


def upsert(conn: sqlite3.Connection, docs: Iterable[tuple[int, KeywordDoc]]) -> None:
    """Write the documents of these images, replacing what they had (the caller commits)."""
    rows = [(int(i), *d.values()) for i, d in docs]
    conn.executemany(f"DELETE FROM {TABLE} WHERE rowid = ?", [(r[0],) for r in rows])
    marks = ", ".join("?" * (len(COLUMNS) + 1))
    conn.executemany(f"INSERT INTO {TABLE} (rowid, {', '.join(COLUMNS)}) VALUES ({marks})", rows)


def delete_documents(conn: sqlite3.Connection, ids: Iterable[int]) -> None:
    conn.executemany(f"DELETE FROM {TABLE} WHERE rowid = ?", [(int(i),) for i in ids])


def rebuild(conn: sqlite3.Connection, docs: Iterable[tuple[int, KeywordDoc]]) -> None:
    """Replace the whole table by these documents (the catalog's rows are the truth)."""
    conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
    conn.execute(ddl())
    upsert(conn, docs)


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


def _like(term: str) -> str:
    return "%" + term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def keyword_search(
    conn: sqlite3.Connection, terms: Sequence[str], limit: int | None = None
) -> list[tuple[int, float]]:
    """(image id, score) of the images holding every term, best first.

    Score: minus FTS5's BM25 (higher is better) over the terms of three or more characters;
    images matched only by shorter terms all score 0 and come in id order.
    """
    terms = [" ".join(t.split()) for t in terms if t.strip()]
    if not terms:
        return []
    long_terms = [t for t in terms if len(t) >= _TRIGRAM]
    where, args = [], []
    if long_terms:
        where.append(f"{TABLE} MATCH ?")
        args.append(" AND ".join(_fts_phrase(t) for t in long_terms))
    for term in terms:
        if len(term) < _TRIGRAM:
            where.append("(" + " OR ".join(f"{c} LIKE ? ESCAPE '\\'" for c in COLUMNS) + ")")
            args.extend([_like(term)] * len(COLUMNS))
    score = f"-bm25({TABLE})" if long_terms else "0.0"
    order = "ORDER BY 2 DESC, rowid" if long_terms else "ORDER BY rowid"
    sql = f"SELECT rowid, {score} FROM {TABLE} WHERE {' AND '.join(where)} {order}"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    return [(int(i), float(s)) for i, s in conn.execute(sql, args)]


def matched_words(terms: Sequence[str], text: str) -> list[str]:
    """The spans of `text` that the terms matched, as written there (case and all), in term order.

    Same rule as the index: a case-insensitive substring within a line (OCR's lines are separate).
    """
    found: list[str] = []
    for term in terms:
        words = term.split()
        if not words:
            continue
        pattern = r"[^\S\n]+".join(re.escape(w) for w in words)
        m = re.search(pattern, text, flags=re.IGNORECASE)
        if m and m.group(0) not in found:
            found.append(m.group(0))
    return found


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
