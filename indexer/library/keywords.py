"""The keyword index: an SQLite FTS5 index over the words attached to each photo (rowid = catalog id).

One document per indexed image: the text read in the photo (the `ocr` table), its file name,
its folder names, its tags and its EXIF/XMP description and keywords (the `description`
column), in two FTS5 tables that every write goes to together:
- `keywords`, FTS5's trigram tokenizer: any substring of three or more characters matches,
  case-insensitively. Chinese and Japanese put no spaces between words, so a word tokenizer
  sees a whole line as one token; trigrams find a word anywhere in it. And OCR often drops the
  space between words ("TOTAL42.50", "Coffeeshop"); trigrams still find "total" and "shop".
- `keywords_short`, unicode61 over the same text with each CJK character made a token of its
  own and letters parted from digits, for terms under three characters, which have no trigram
  (many Chinese words have two: 北京, 出口): a two-character Chinese word is then a phrase of
  two tokens, and "42" a whole number, both found through the index. LIKE on the trigram table
  would find them too, but by scanning every row (benchmarks/README.md has both costs).

The one module with FTS5 statements; the catalog (catalog.py) calls it inside its own
transactions, so the documents change with the rows they describe. The query syntax
(`text:"..."`, `--text`) and the fusion with the semantic ranking are search/keywords.py's.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "COLUMNS",
    "IS_CJK",
    "SHORT_TABLE",
    "TABLE",
    "TRIGRAM",
    "KeywordDoc",
    "ddl",
    "delete_documents",
    "document",
    "ensure_table",
    "has_tables",
    "keyword_search",
    "rebuild",
    "upsert",
]

TABLE = "keywords"
SHORT_TABLE = "keywords_short"
COLUMNS = ("ocr", "name", "folders", "tags", "exif")
# Without the library's root, this many enclosing folders name a photo ("2023 Japan/day 2");
# folders further up (home, Pictures) are shared by every photo and would only add noise.
FOLDER_DEPTH = 3
TRIGRAM = 3  # characters in a trigram: shorter terms go to the short table

# Word boundaries inside a file or folder name: separators, camelCase, letters next to digits.
_NAME_SPLIT = re.compile(r"[\W_]+|(?<=[a-z])(?=[A-Z])|(?<=[A-Za-z])(?=\d)|(?<=\d)(?=[A-Za-z])")
# Han (with radicals, symbols and compatibility forms), kana and Hangul: scripts whose
# characters become tokens of their own in the short table.
_CJK = "\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff"
IS_CJK = re.compile(f"[{_CJK}]")
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
    return [
        f"CREATE VIRTUAL TABLE IF NOT EXISTS {TABLE} USING fts5({columns}, tokenize='trigram')",
        f"CREATE VIRTUAL TABLE IF NOT EXISTS {SHORT_TABLE} USING fts5({columns}, tokenize='unicode61')",
    ]


def has_tables(conn: sqlite3.Connection) -> bool:
    found = conn.execute("SELECT COUNT(*) FROM sqlite_master WHERE name IN (?, ?)", (TABLE, SHORT_TABLE)).fetchone()
    return found[0] == 2


def ensure_table(conn: sqlite3.Connection) -> bool:
    """Create the keyword tables when missing; True when they were (the caller then fills them: rebuild)."""
    if has_tables(conn):
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
        conn.executemany(
            f"INSERT INTO {table} (rowid, {', '.join(COLUMNS)}) VALUES ({marks})",
            [(r[0], *map(transform, r[1:])) for r in rows],
        )


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


def _fts_phrase(term: str) -> str:
    return '"' + term.replace('"', '""') + '"'


def keyword_search(conn: sqlite3.Connection, terms: Sequence[str], limit: int | None = None) -> list[tuple[int, float]]:
    """(image id, score) of the images holding every term, best first.

    Terms of three or more characters match anywhere (trigrams); shorter ones match whole
    words, whole numbers, or CJK characters in sequence. Score: minus FTS5's BM25 (higher is
    better), from the trigram table when a term has three characters or more.
    """
    terms = [" ".join(t.split()) for t in terms if t.strip()]
    long_terms = [t for t in terms if len(t) >= TRIGRAM]
    short_terms = [_spaced(t).strip() for t in terms if len(t) < TRIGRAM]
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
