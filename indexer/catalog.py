"""The SQLite catalog: one row per file ever seen, plus the library's settings.

The catalog is the truth of a library. A row's vector (in `vectors.py`) is valid only while the
row's status is 'indexed'; the ANN index is a cache over those rows.
"""

from __future__ import annotations

import re
import sqlite3
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

# sqlite-utils imports pandas when it is installed, only to store pd.Timestamp values (pixseek
# writes none): ~0.4 s on every `pixseek` command and in every decoder worker, more than an
# unchanged re-index of 10,000 files takes. Hidden for this one import; a later `import pandas`
# (Streamlit's) still works.
_hide_pandas = "pandas" not in sys.modules
if _hide_pandas:
    sys.modules["pandas"] = None  # type: ignore[assignment]  # makes `import pandas` fail
try:
    import sqlite_utils
finally:
    if _hide_pandas:
        del sys.modules["pandas"]

from indexer.errors import PixseekError  # noqa: E402

SCHEMA_VERSION = 3

INDEXED = "indexed"
PENDING = "pending"  # has an id, its vector is not written yet (a crash leaves these behind)
SKIPPED = "skipped"  # could not be indexed; `reason` says why

# Paths are stored as text. Python hands over the bytes of a non-UTF-8 file name as lone
# surrogates U+DC80..U+DCFF (PEP 383), which SQLite text cannot hold, so they move to the last 128
# code points of plane 16 (private use); a real character of that block is escaped with _PATH_ESC.
# Lossless, and every UTF-8 path (all of them, in practice) is stored as it is, so folder
# prefixes still match with LIKE.
_PATH_ESC = "\U0010ff00"
_TO_DB = re.compile("[\udc80-\udcff\U0010ff00-\U0010ffff]")
_FROM_DB = re.compile("\U0010ff00(.)|[\U0010ff80-\U0010ffff]", re.DOTALL)
_PATH_COLUMNS = ("path", "folder")


def _escape_path_char(ch: str) -> str:
    code = ord(ch)
    return chr(code - 0xDC00 + 0x10FF00) if code < 0x10000 else _PATH_ESC + ch


def path_to_db(path: str) -> str:
    """The catalog's text for a path as Python sees it (str from os.scandir/os.fsdecode)."""
    if path.isascii():
        return path
    return _TO_DB.sub(lambda m: _escape_path_char(m.group()), path)


def path_from_db(text: str) -> str:
    """Inverse of `path_to_db`: a str that opens the file (os.fsencode gives its exact bytes)."""
    if text.isascii():
        return text
    return _FROM_DB.sub(lambda m: m.group(1) or chr(ord(m.group()) - 0x10FF00 + 0xDC00), text)


IMAGE_COLUMNS: dict[str, type] = {
    "id": int,
    "path": str,
    "folder": str,
    "size": int,
    "mtime_ns": int,
    "hash": str,
    "width": int,
    "height": int,
    "taken_at": str,
    "camera_make": str,
    "camera_model": str,
    "lat": float,
    "lon": float,
    "indexed_at": str,
    "status": str,
    "reason": str,
    "in_ann": int,
}


def _migrate_1(db: sqlite_utils.Database) -> None:
    db["images"].create(IMAGE_COLUMNS, pk="id", not_null={"path", "status"}, defaults={"in_ann": 0})
    db["images"].create_index(["path"], unique=True)
    db["images"].create_index(["hash"])
    db["images"].create_index(["status"])


def _migrate_2(db: sqlite_utils.Database) -> None:
    db["images"].create_index(["folder"])
    db["images"].create_index(["taken_at"])


def _migrate_3(db: sqlite_utils.Database) -> None:
    # phash: perceptual hash (hex) for near-duplicate search; tags: zero-shot labels per image.
    db["images"].add_column("phash", str)
    db["tags"].create({"image_id": int, "label": str, "score": float}, pk=("image_id", "label"))
    db.execute("CREATE INDEX idx_tags_label ON tags (label COLLATE NOCASE)")  # --tag matches any case
    # A removed or changed file loses its row, and its tags go with it.
    db.execute("CREATE TRIGGER tags_follow_images AFTER DELETE ON images "
               "BEGIN DELETE FROM tags WHERE image_id = OLD.id; END")


# Each step moves a library from version i to i + 1; never edit a released step, add one.
MIGRATIONS = {1: _migrate_1, 2: _migrate_2, 3: _migrate_3}


@dataclass
class ImageRow:
    id: int
    path: str
    folder: str
    size: int
    mtime_ns: int
    hash: str | None
    status: str
    width: int | None = None
    height: int | None = None
    taken_at: str | None = None
    camera_make: str | None = None
    camera_model: str | None = None
    lat: float | None = None
    lon: float | None = None
    indexed_at: str | None = None
    reason: str | None = None
    in_ann: int = 0
    phash: str | None = None

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> ImageRow:
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in row.items() if k in names}
        for key in _PATH_COLUMNS:
            if values.get(key) is not None:
                values[key] = path_from_db(values[key])
        return cls(**values)


def _connect(path: Path, create: bool) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), timeout=30, check_same_thread=False)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        # In WAL mode NORMAL loses nothing to a crash; a power cut may undo the last commits, whose
        # rows then go back to pending and are embedded again.
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn
    except sqlite3.OperationalError:
        conn.close()
        if create:
            raise
    # A read-only folder (backup drive, DVD, no write permission): SQLite cannot create the WAL's
    # shared-memory file beside the database, so read the file as the fixed snapshot it is.
    return sqlite3.connect(f"{path.as_uri()}?mode=ro&immutable=1", uri=True, check_same_thread=False)


class Catalog:
    """Read and write access to `catalog.db` (WAL mode, so readers never block the indexer)."""

    def __init__(self, path: Path, *, create: bool = False) -> None:
        if not create and not path.exists():
            raise PixseekError(f"no library at {path.parent}", "run `pixseek index FOLDER` to create one")
        self.path = path
        self.db = sqlite_utils.Database(_connect(path, create))
        try:
            self._migrate(create)
        except BaseException:
            self.close()  # a refused library (newer schema) must not keep its WAL files open
            raise

    def _migrate(self, create: bool) -> None:
        if "settings" not in self.db.table_names():
            if not create:
                if not self.db.table_names():  # the first `pixseek index` has only just created the file
                    raise PixseekError(f"the library at {self.path.parent} has no images yet",
                                       "wait for `pixseek index` to save its first images")
                raise PixseekError(f"{self.path} is not a pixseek catalog", "point --library at a pixseek library folder")
            with self.transaction():
                self.db["settings"].create({"key": str, "value": str}, pk="key")
                self.db["settings"].insert({"key": "schema_version", "value": "0"})
        version = self._schema_version()
        for step in range(version + 1, SCHEMA_VERSION + 1):
            with self.transaction():
                # Re-read under the write lock: a search opening the library while `pixseek index`
                # migrates it must not run the same step twice.
                if self._schema_version() < step:
                    MIGRATIONS[step](self.db)
                    self.set_setting("schema_version", str(step))

    def _schema_version(self) -> int:
        version = int(self.get_setting("schema_version") or 0)
        if version > SCHEMA_VERSION:
            raise PixseekError(
                f"this library was written by a newer pixseek (schema {version}, this one knows {SCHEMA_VERSION})",
                "upgrade pixseek (pip install -U pixseek) to open it",
            )
        return version

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic batch: the writer commits vectors' catalog rows together, or not at all."""
        conn = self.db.conn
        if conn.in_transaction:
            yield
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            conn.rollback()
            raise
        conn.commit()

    def close(self) -> None:
        self.db.conn.close()

    # settings ---------------------------------------------------------------------------------
    def get_setting(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM settings WHERE key = ?", [key]).fetchone()
        return row[0] if row else None

    def set_setting(self, key: str, value: str) -> None:
        self.db["settings"].upsert({"key": key, "value": value}, pk="key")

    def settings(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT key, value FROM settings").fetchall())

    # images -----------------------------------------------------------------------------------
    def rows(self, where: str = "1", params: Iterable[Any] = ()) -> Iterator[ImageRow]:
        for row in self.db["images"].rows_where(where, list(params)):
            yield ImageRow.from_dict(row)

    def get(self, image_id: int) -> ImageRow | None:
        row = next(self.rows("id = ?", [image_id]), None)
        return row

    def by_path(self, path: str) -> ImageRow | None:
        return next(self.rows("path = ?", [path_to_db(path)]), None)

    def stat_index(self) -> dict[str, tuple[int, int, int, str]]:
        """path -> (id, size, mtime_ns, status): all the walker needs to spot changes without I/O."""
        cur = self.db.execute("SELECT path, id, size, mtime_ns, status FROM images")
        return {path_from_db(p): (i, s, m, st) for p, i, s, m, st in cur}

    def insert_pending(self, records: list[dict[str, Any]], first_id: int = 1) -> list[int]:
        """Give new files ids before embedding, so their vectors have a row to land in.

        Ids start at `first_id` or above any id in use: passing the vector file's row count means
        no id whose vector a reader may still score (a deleted or changed file's) is ever reused,
        which SQLite's own rowids would do after the highest row is deleted.
        """
        top = self.db.execute("SELECT COALESCE(MAX(id), 0) FROM images").fetchone()[0]
        next_id = max(first_id, top + 1)
        ids = []
        for rec in records:
            self.db.execute(
                "INSERT INTO images (id, path, folder, size, mtime_ns, hash, status) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [next_id, path_to_db(rec["path"]), path_to_db(rec["folder"]), rec["size"], rec["mtime_ns"],
                 rec.get("hash"), PENDING],
            )
            ids.append(next_id)
            next_id += 1
        return ids

    def update(self, image_id: int, values: dict[str, Any]) -> None:
        values = {k: path_to_db(v) if k in _PATH_COLUMNS and v is not None else v for k, v in values.items()}
        self.db["images"].update(image_id, values)

    def delete(self, ids: Iterable[int]) -> None:
        ids = list(ids)
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            self.db.execute(f"DELETE FROM images WHERE id IN ({','.join('?' * len(chunk))})", chunk)

    def indexed_ids(self) -> list[int]:
        return [r[0] for r in self.db.execute("SELECT id FROM images WHERE status = ? ORDER BY id", [INDEXED])]

    def ann_stale(self) -> bool:
        """Whether the ANN file may not hold exactly the indexed rows (a run stopped before its rebuild)."""
        return bool(self.db.execute("SELECT EXISTS (SELECT 1 FROM images WHERE (status = ?) != (in_ann = 1))",
                                    [INDEXED]).fetchone()[0])

    def mark_in_ann(self, ids: list[int]) -> None:
        with self.transaction():
            self.db.execute("UPDATE images SET in_ann = 0 WHERE in_ann = 1")
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                self.db.execute(f"UPDATE images SET in_ann = 1 WHERE id IN ({','.join('?' * len(chunk))})", chunk)

    def counts(self) -> dict[str, int]:
        cur = self.db.execute("SELECT status, COUNT(*) FROM images GROUP BY status")
        return {status: n for status, n in cur}

    def skipped(self) -> list[ImageRow]:
        return list(self.rows("status = ? ORDER BY path", [SKIPPED]))
