"""The SQLite catalog: one row per file ever seen, plus the library's settings.

The catalog is the truth of a library. A row's vector (in `vectors.py`) is valid only while the
row's status is 'indexed'; the ANN index is a cache over those rows.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import sqlite_utils

from indexer.errors import PixseekError

SCHEMA_VERSION = 2

INDEXED = "indexed"
PENDING = "pending"  # has an id, its vector is not written yet (a crash leaves these behind)
SKIPPED = "skipped"  # could not be indexed; `reason` says why

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


# Each step moves a library from version i to i + 1; never edit a released step, add one.
MIGRATIONS = {1: _migrate_1, 2: _migrate_2}


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

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> ImageRow:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in row.items() if k in names})


class Catalog:
    """Read and write access to `catalog.db` (WAL mode, so readers never block the indexer)."""

    def __init__(self, path: Path, *, create: bool = False) -> None:
        if not create and not path.exists():
            raise PixseekError(f"no library at {path.parent}", "run `pixseek index FOLDER` to create one")
        self.path = path
        conn = sqlite3.connect(str(path), timeout=30, check_same_thread=False)
        self.db = sqlite_utils.Database(conn)
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError:
            pass  # read-only media: WAL needs a writable folder; plain reads still work
        self.db.execute("PRAGMA synchronous=NORMAL")
        self._migrate(create)

    def _migrate(self, create: bool) -> None:
        if "settings" not in self.db.table_names():
            if not create:
                raise PixseekError(f"{self.path} is not a pixseek catalog", "point --library at a pixseek library folder")
            with self.transaction():
                self.db["settings"].create({"key": str, "value": str}, pk="key")
                self.db["settings"].insert({"key": "schema_version", "value": "0"})
        version = int(self.get_setting("schema_version") or 0)
        if version > SCHEMA_VERSION:
            raise PixseekError(
                f"this library was written by a newer pixseek (schema {version}, this one knows {SCHEMA_VERSION})",
                "upgrade pixseek (pip install -U pixseek) to open it",
            )
        for step in range(version + 1, SCHEMA_VERSION + 1):
            with self.transaction():
                MIGRATIONS[step](self.db)
                self.set_setting("schema_version", str(step))

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
        return next(self.rows("path = ?", [path]), None)

    def stat_index(self) -> dict[str, tuple[int, int, int, str]]:
        """path -> (id, size, mtime_ns, status): all the walker needs to spot changes without I/O."""
        cur = self.db.execute("SELECT path, id, size, mtime_ns, status FROM images")
        return {p: (i, s, m, st) for p, i, s, m, st in cur}

    def insert_pending(self, records: list[dict[str, Any]]) -> list[int]:
        """Give new files ids before embedding, so their vectors have a row to land in."""
        ids = []
        for rec in records:
            cur = self.db.execute(
                "INSERT INTO images (path, folder, size, mtime_ns, hash, status) VALUES (?, ?, ?, ?, ?, ?)",
                [rec["path"], rec["folder"], rec["size"], rec["mtime_ns"], rec.get("hash"), PENDING],
            )
            ids.append(cur.lastrowid)
        return ids

    def update(self, image_id: int, values: dict[str, Any]) -> None:
        self.db["images"].update(image_id, values)

    def delete(self, ids: Iterable[int]) -> None:
        ids = list(ids)
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            self.db.execute(f"DELETE FROM images WHERE id IN ({','.join('?' * len(chunk))})", chunk)

    def indexed_ids(self) -> list[int]:
        return [r[0] for r in self.db.execute("SELECT id FROM images WHERE status = ? ORDER BY id", [INDEXED])]

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
