"""The SQLite catalog: one row per file ever seen, plus the library's settings. Every statement is here.

The catalog is the truth of a library. A row's vector (vectors.py) is valid only while the row's
status is 'indexed'; the ANN index is a cache over those rows.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import fields
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
from indexer.library import keywords, lock  # noqa: E402
from indexer.library.filters import Filters  # noqa: E402
from indexer.library.paths import LibraryPaths  # noqa: E402
from indexer.library.rows import INDEXED, PENDING, SKIPPED, ImageRow, from_db, path_from_db, path_to_db, to_db  # noqa: E402
from indexer.library.schema import MIGRATIONS, SCHEMA_VERSION  # noqa: E402
from indexer.library.settings import SETTING_KEYS, Settings  # noqa: E402

_CHUNK = 500  # ids per IN (...) list, well below SQLite's limit on bound parameters


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


def damaged_catalog(path: Path, exc: sqlite3.DatabaseError) -> PixseekError:
    return PixseekError(
        f"the catalog {path} is damaged ({exc})", "run `pixseek check` for what happened and how to recover"
    )


def integrity_problems(path: Path) -> list[str]:
    """SQLite's integrity check of the catalog file: [] when it is sound."""
    try:
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        return [str(exc)]
    try:
        found = [row[0] for row in conn.execute("PRAGMA integrity_check")]
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        return [str(exc)]
    finally:
        conn.close()
    if found != ["ok"]:
        return found
    return [] if {"settings", "images"} <= tables else ["it holds no pixseek tables"]


def _chunks(ids: Sequence[int]) -> Iterator[list[int]]:
    ids = list(ids)
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]


def _marks(ids: Sequence[int]) -> str:
    return ",".join("?" * len(ids))


def _under_pattern(folder: str) -> str:
    """A LIKE pattern (escape character \\) for every path below `folder`."""
    escaped = folder.rstrip(os.sep).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + os.sep + "%"


class Catalog:
    """Read and write access to `catalog.db` (WAL mode, so readers never block the indexer)."""

    def __init__(self, path: Path, *, create: bool = False) -> None:
        if not create and not path.exists():
            raise PixseekError(f"no library at {path.parent}", "run `pixseek index FOLDER` to create one")
        self.path = path
        try:
            self.db = sqlite_utils.Database(_connect(path, create))
        except sqlite3.DatabaseError as exc:
            raise damaged_catalog(path, exc) from exc
        try:
            self._migrate(create)
            self.ensure_keywords()
        except sqlite3.DatabaseError as exc:
            self.close()
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                raise
            raise damaged_catalog(path, exc) from exc
        except BaseException:
            self.close()  # a refused library (newer schema) must not keep its WAL files open
            raise

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _migrate(self, create: bool) -> None:
        if "settings" not in self.db.table_names():
            if create and self.db.table_names():  # another program's database: not ours to change
                raise PixseekError(
                    f"{self.path} is not a pixseek catalog",
                    "point --library at a pixseek library folder, or an empty one",
                )
            if not create:
                if not self.db.table_names():
                    if lock.held(LibraryPaths(self.path.parent)):  # the first `pixseek index` has just created it
                        raise PixseekError(
                            f"the library at {self.path.parent} has no images yet",
                            "wait for `pixseek index` to save its first images",
                        )
                    raise PixseekError(
                        f"the catalog {self.path} is empty: it was never written, or was wiped",
                        "run `pixseek index FOLDER` to build it again (photos are embedded again)",
                    )
                raise PixseekError(
                    f"{self.path} is not a pixseek catalog", "point --library at a pixseek library folder"
                )
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
                    self.save_settings(schema_version=step)

    def _schema_version(self) -> int:
        version = self.settings().schema_version
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
    def settings(self) -> Settings:
        return Settings.from_table(dict(self.db.execute("SELECT key, value FROM settings").fetchall()))

    def save_settings(self, **values: object) -> None:
        unknown = set(values) - SETTING_KEYS
        if unknown:
            raise TypeError(f"not settings: {sorted(unknown)}")
        for key, value in values.items():
            self.db["settings"].upsert({"key": key, "value": str(value)}, pk="key")

    # reading images ---------------------------------------------------------------------------
    def _rows(
        self, where: str, params: Iterable[Any] = (), order_by: str | None = None, limit: int | None = None
    ) -> Iterator[ImageRow]:
        # Plain SQL, not sqlite_utils' rows_where, which looks the table up in sqlite_master
        # first: a search reads its results' rows, and that lookup was a good part of its time.
        sql = f"SELECT * FROM images WHERE {where}"
        sql += f" ORDER BY {order_by}" if order_by else ""
        sql += f" LIMIT {int(limit)}" if limit is not None else ""
        cursor = self.db.execute(sql, list(params))
        columns = [d[0] for d in cursor.description]
        for row in cursor:
            yield from_db(dict(zip(columns, row)))

    def get(self, image_id: int) -> ImageRow | None:
        return next(self._rows("id = ?", [image_id]), None)

    def by_path(self, path: str) -> ImageRow | None:
        return next(self._rows("path = ?", [path_to_db(path)]), None)

    def rows_by_id(self, ids: Sequence[int]) -> list[ImageRow]:
        return [row for chunk in _chunks(ids) for row in self._rows(f"id IN ({_marks(chunk)})", chunk)]

    def indexed_rows(self, ids: Sequence[int]) -> dict[int, ImageRow]:
        """The indexed rows among `ids`, by id (a row gone or re-queued since is left out)."""
        return {
            row.id: row
            for chunk in _chunks(ids)
            for row in self._rows(f"status = ? AND id IN ({_marks(chunk)})", [INDEXED, *chunk])
        }

    def skipped(self) -> list[ImageRow]:
        return list(self._rows("status = ? ORDER BY path", [SKIPPED]))

    def stat_index(self) -> dict[str, tuple[int, int, int, str]]:
        """path -> (id, size, mtime_ns, status): all the walker needs to spot changes without I/O."""
        cur = self.db.execute("SELECT path, id, size, mtime_ns, status FROM images")
        return {path_from_db(p): (i, s, m, st) for p, i, s, m, st in cur}

    def hashes(self, ids: Sequence[int]) -> dict[int, str | None]:
        """Content hash by id."""
        return {
            i: h
            for chunk in _chunks(ids)
            for i, h in self.db.execute(f"SELECT id, hash FROM images WHERE id IN ({_marks(chunk)})", chunk)
        }

    def _ids(self, where: str = "", params: Sequence[Any] = ()) -> list[int]:
        sql = f"SELECT id FROM images WHERE status = ? {'AND ' + where if where else ''} ORDER BY id"
        return [r[0] for r in self.db.execute(sql, [INDEXED, *params])]

    def indexed_ids(self) -> list[int]:
        return self._ids()

    def ids_not_in_ann(self) -> list[int]:
        """Indexed images the ANN file does not hold yet (indexed after it was written)."""
        return self._ids("in_ann = 0")

    def sample_ids(self, stride: int) -> list[int]:
        """Every `stride`-th indexed id: an evenly spread sample of the library."""
        return self._ids("id % ? = 0", [stride])

    def filtered_ids(self, filters: Filters) -> list[int]:
        """Indexed images that pass `filters`."""
        return self._ids(*self._filter_where(filters))

    def filtered_count(self, filters: Filters, limit: int) -> int:
        """How many indexed images pass `filters`, counted up to `limit`: the cost stays bounded by it."""
        where, params = self._filter_where(filters)
        sql = f"SELECT COUNT(*) FROM (SELECT 1 FROM images WHERE status = ? {'AND ' + where if where else ''} LIMIT ?)"
        return self.db.execute(sql, [INDEXED, *params, limit]).fetchone()[0]

    def any_filtered(self, filters: Filters) -> bool:
        return self.filtered_count(filters, 1) > 0

    def passing(self, filters: Filters, ids: Sequence[int]) -> set[int]:
        """The ids among `ids` of indexed images that pass `filters`, looked up by id."""
        where, params = self._filter_where(filters)
        # NOT INDEXED: the ids are few, so each is found by its rowid, never through a filter's
        # index (which could cover most of the library).
        sql = "SELECT id FROM images NOT INDEXED WHERE status = ? AND id IN ({}) " + ("AND " + where if where else "")
        return {
            r[0]
            for chunk in _chunks(ids)
            for r in self.db.execute(sql.format(_marks(chunk)), [INDEXED, *chunk, *params])
        }

    def _filter_where(self, filters: Filters) -> tuple[str, list[Any]]:
        """The condition (besides status) and its parameters that images passing `filters` meet.

        Each filter is a lookup in an index (schema step 5), never a scan of the table.
        """
        clauses, params = [], []
        if filters.folder is not None:
            # The folder or anything below: the paths from "folder/" up to "folder0" ("0" follows "/").
            below = path_to_db(filters.folder).rstrip(os.sep) + os.sep
            clauses.append("path >= ? AND path < ?")
            params += [below, below[:-1] + chr(ord(os.sep) + 1)]
        if filters.date_from is not None:
            clauses.append("taken_at >= ?")
            params.append(filters.date_from)
        if filters.date_to is not None:
            clauses.append("taken_at < ?")
            params.append(filters.date_to + "T99")  # any time on that day sorts below "T99"
        if filters.camera is not None:
            pairs = filters.cameras if filters.cameras is not None else self.matching_cameras(filters)
            clauses.append("(" + (" OR ".join(["(camera_make IS ? AND camera_model IS ?)"] * len(pairs)) or "0") + ")")
            params += [value for pair in pairs for value in pair]
        if filters.has_gps is not None:
            clauses.append("lat IS NOT NULL" if filters.has_gps else "lat IS NULL")
        if filters.tag is not None:
            clauses.append("id IN (SELECT image_id FROM tags WHERE label = ? COLLATE NOCASE)")
            params.append(filters.tag)
        return " AND ".join(clauses), params

    def cameras(self) -> list[tuple[str | None, str | None]]:
        """The (make, model) pairs of indexed images, sorted (no make first).

        Found by stepping through the camera index from one pair to the next: as many lookups as
        there are cameras, whatever the number of images.
        """
        pick = "SELECT camera_make, camera_model FROM images WHERE {} ORDER BY camera_make, camera_model LIMIT 1"
        found = [
            (None, model)
            for (model,) in self.db.execute(
                "SELECT DISTINCT camera_model FROM images WHERE camera_make IS NULL AND camera_model IS NOT NULL "
                "AND status = ?",
                [INDEXED],
            )
        ]
        row = self.db.execute(pick.format("camera_make IS NOT NULL")).fetchone()
        while row is not None:
            make, model = row
            held = "SELECT EXISTS (SELECT 1 FROM images WHERE camera_make = ? AND camera_model IS ? AND status = ?)"
            if self.db.execute(held, [make, model, INDEXED]).fetchone()[0]:
                found.append((make, model))
            # The make's next model (a NULL model sorts first and compares to none), else the next make.
            same_make = (
                "camera_make = ? AND camera_model IS NOT NULL"
                if model is None
                else "camera_make = ? AND camera_model > ?"
            )
            after = self.db.execute(pick.format(same_make), [make] if model is None else [make, model]).fetchone()
            row = after or self.db.execute(pick.format("camera_make > ?"), [make]).fetchone()
        return sorted(found, key=lambda pair: [(part is not None, part or "") for part in pair])

    def matching_cameras(self, filters: Filters) -> tuple[tuple[str | None, str | None], ...]:
        """The cameras of indexed images that `filters.camera` names."""
        return tuple(pair for pair in self.cameras() if filters.camera_matches(*pair))

    def counts(self) -> dict[str, int]:
        cur = self.db.execute("SELECT status, COUNT(*) FROM images GROUP BY status")
        return {status: n for status, n in cur}

    def indexed_count(self) -> int:
        return self.counts().get(INDEXED, 0)

    def has_indexed(self) -> bool:
        return self.indexed_more_than(0)

    def has_pending(self) -> bool:
        """Whether any row waits to be embedded (an index run going, or one that stopped early)."""
        return bool(self.db.execute("SELECT EXISTS (SELECT 1 FROM images WHERE status = ?)", [PENDING]).fetchone()[0])

    def indexed_more_than(self, n: int) -> bool:
        """Whether more than n images are indexed (reads n + 1 entries of the status index at most)."""
        sql = "SELECT EXISTS (SELECT 1 FROM images WHERE status = ? LIMIT 1 OFFSET ?)"
        return bool(self.db.execute(sql, [INDEXED, n]).fetchone()[0])

    def ann_stale(self) -> bool:
        """Whether the ANN file may not hold exactly the indexed rows (a run stopped before its rebuild)."""
        return bool(
            self.db.execute(
                "SELECT EXISTS (SELECT 1 FROM images WHERE (status = ?) != (in_ann = 1))", [INDEXED]
            ).fetchone()[0]
        )

    def folders(self) -> list[str]:
        """Folders holding indexed images, sorted."""
        cur = self.db.execute("SELECT DISTINCT folder FROM images WHERE status = ? ORDER BY folder", [INDEXED])
        return [path_from_db(r[0]) for r in cur]

    def taken_span(self) -> tuple[str | None, str | None]:
        """Earliest and latest date taken among indexed images."""
        return tuple(
            self.db.execute("SELECT MIN(taken_at), MAX(taken_at) FROM images WHERE status = ?", [INDEXED]).fetchone()
        )

    def duplicate_keys(self) -> list[tuple[int, str | None, str | None]]:
        """(id, content hash, pHash) of every indexed image, by id."""
        sql = "SELECT id, hash, phash FROM images WHERE status = ? ORDER BY id"
        return [tuple(r) for r in self.db.execute(sql, [INDEXED])]

    def missing_phash(self) -> int:
        """Indexed images without a pHash (indexed by a pixseek before pHashes were stored)."""
        return self.db.execute("SELECT COUNT(*) FROM images WHERE status = ? AND phash IS NULL", [INDEXED]).fetchone()[
            0
        ]

    # writing images ---------------------------------------------------------------------------
    def insert_pending(self, rows: list[ImageRow], first_id: int = 1) -> list[int]:
        """Give new files ids before embedding, so their vectors have a row to land in.

        Ids start at `first_id` or above any id in use: passing the vector file's row count means
        no id whose vector a reader may still score (a deleted or changed file's) is ever reused,
        which SQLite's own rowids would do after the highest row is deleted.
        """
        top = self.db.execute("SELECT COALESCE(MAX(id), 0) FROM images").fetchone()[0]
        next_id = max(first_id, top + 1)
        ids = []
        for row in rows:
            values = to_db(
                {
                    "path": row.path,
                    "folder": row.folder,
                    "size": row.size,
                    "mtime_ns": row.mtime_ns,
                    "hash": row.hash,
                    "status": PENDING,
                    "id": next_id,
                }
            )
            self.db.execute(
                f"INSERT INTO images ({', '.join(values)}) VALUES ({_marks(values)})", list(values.values())
            )
            ids.append(next_id)
            next_id += 1
        return ids

    def insert_rows(self, rows: Sequence[ImageRow], *, keywords: bool = True) -> None:
        """Add rows as they are, ids included, in one transaction: for tools that write a library
        from vectors made elsewhere (benchmarks/scale.py), after the vectors. keywords: write the
        rows' keyword documents too (False leaves keyword search without them)."""
        if not rows:
            return
        names = [f.name for f in fields(ImageRow)]
        sql = f"INSERT INTO images ({', '.join(names)}) VALUES ({_marks(names)})"
        with self.transaction():
            self.db.conn.executemany(
                sql, (list(to_db({name: getattr(row, name) for name in names}).values()) for row in rows)
            )
            if keywords:
                self.refresh_keywords([row.id for row in rows if row.status == INDEXED])

    def update(self, image_id: int, **values: Any) -> None:
        self.db["images"].update(image_id, to_db(values))

    def delete(self, ids: Iterable[int]) -> None:
        for chunk in _chunks(list(ids)):
            self.db.execute(f"DELETE FROM images WHERE id IN ({_marks(chunk)})", chunk)

    def mark_all_pending(self) -> None:
        """Every row is to be embedded again (`index --rebuild`)."""
        self.db.execute("UPDATE images SET status = ?, in_ann = 0", [PENDING])
        keywords.rebuild(self.db.conn, [])  # documents come back as their images are indexed again

    def mark_pending(self, ids: Sequence[int]) -> None:
        """These rows' vectors are damaged: embed them again (same ids) on the next index run."""
        with self.transaction():
            for chunk in _chunks(ids):
                self.db.execute(
                    f"UPDATE images SET status = ?, in_ann = 0 WHERE id IN ({_marks(chunk)})", [PENDING, *chunk]
                )

    def paths_outside(self, roots: Sequence[str], limit: int = 1) -> list[str]:
        """Up to `limit` catalogued paths under none of `roots`."""
        clauses, params = [], []
        for root in roots:
            clauses.append("path NOT LIKE ? ESCAPE '\\'")
            params.append(_under_pattern(path_to_db(root)))
        where = " AND ".join(clauses) or "1"
        cur = self.db.execute(f"SELECT path FROM images WHERE {where} LIMIT ?", [*params, limit])
        return [path_from_db(r[0]) for r in cur]

    def mark_in_ann(self, ids: list[int]) -> None:
        with self.transaction():
            self.db.execute("UPDATE images SET in_ann = 0 WHERE in_ann = 1")
            for chunk in _chunks(ids):
                self.db.execute(f"UPDATE images SET in_ann = 1 WHERE id IN ({_marks(chunk)})", chunk)

    # tags -------------------------------------------------------------------------------------
    def replace_tags(self, rows: list[tuple[int, str, float]], labels: list[str]) -> None:
        """Every image's tags (image id, label, probability) and the labels they were chosen from."""
        import json

        with self.transaction():
            changed = {r[0] for r in self.db.execute("SELECT DISTINCT image_id FROM tags")} | {r[0] for r in rows}
            self.db.execute("DELETE FROM tags")
            self.db.conn.executemany("INSERT INTO tags (image_id, label, score) VALUES (?, ?, ?)", rows)
            self.save_settings(tag_labels=json.dumps(labels, ensure_ascii=False))
            self.refresh_keywords(sorted(changed))

    def orphan_tags(self) -> int:
        """Tag rows whose image is gone (a tag run racing an index run that removed files)."""
        return self.db.execute("SELECT COUNT(*) FROM tags WHERE image_id NOT IN (SELECT id FROM images)").fetchone()[0]

    def delete_orphan_tags(self) -> None:
        self.db.execute("DELETE FROM tags WHERE image_id NOT IN (SELECT id FROM images)")
        self.db.conn.commit()

    def has_tag(self, label: str) -> bool:
        sql = "SELECT 1 FROM tags WHERE label = ? COLLATE NOCASE LIMIT 1"
        return self.db.execute(sql, [label]).fetchone() is not None

    # the page: its start page and the review of duplicates -----------------------------------
    def latest(self, k: int | None = None, filters: Filters | None = None) -> list[ImageRow]:
        """Indexed images passing `filters`, latest taken first (undated last, then newest id), at most k."""
        where, params = self._filter_where(filters or Filters())
        return list(
            self._rows(
                f"status = ? {'AND ' + where if where else ''}",
                [INDEXED, *params],
                order_by="taken_at IS NULL, taken_at DESC, id DESC",
                limit=k,
            )
        )

    def folder_counts(self) -> list[tuple[str, int]]:
        """(folder, indexed images directly in it), largest first."""
        sql = "SELECT folder, COUNT(*) FROM images WHERE status = ? GROUP BY folder ORDER BY COUNT(*) DESC, folder"
        return [(path_from_db(f), n) for f, n in self.db.execute(sql, [INDEXED])]

    def tag_counts(self) -> list[tuple[str, int]]:
        """(tag, indexed images carrying it), most common first."""
        sql = (
            "SELECT t.label, COUNT(*) FROM tags t JOIN images i ON i.id = t.image_id WHERE i.status = ? "
            "GROUP BY t.label ORDER BY COUNT(*) DESC, t.label"
        )
        return [(label, n) for label, n in self.db.execute(sql, [INDEXED])]

    def tags_of(self, ids: Sequence[int]) -> dict[int, list[str]]:
        """Each image's tags, most likely first (images without tags are left out)."""
        out: dict[int, list[str]] = {}
        for chunk in _chunks(ids):
            sql = f"SELECT image_id, label FROM tags WHERE image_id IN ({_marks(chunk)}) ORDER BY image_id, score DESC"
            for image_id, label in self.db.execute(sql, chunk):
                out.setdefault(image_id, []).append(label)
        return out

    def mark_keep(self, keep: int, group: Sequence[int]) -> None:
        """Record `keep` as the copy to keep of the duplicates `group`, replacing any mark touching them."""
        import json

        members = set(group) | {keep}
        with self.transaction():
            marks = {k: v for k, v in self.settings().keep_marks.items() if k not in members and not members & set(v)}
            marks[keep] = sorted(members - {keep})
            self.save_settings(dupes_keep=json.dumps({str(k): v for k, v in marks.items()}))

    def data_version(self) -> int:
        """Changes whenever another connection commits to the catalog (an index or tag run)."""
        return self.db.execute("PRAGMA data_version").fetchone()[0]

    def state(self) -> tuple[int, int]:
        """Changes whenever the catalog does: another connection commits, or this one writes."""
        return self.data_version(), self.db.conn.total_changes

    # keywords (indexer/library/keywords.py): one document per indexed image ------------------
    def ensure_keywords(self) -> None:
        """Make and fill the keyword tables when they are missing (a new library, an older one, a repair)."""
        if keywords.has_tables(self.db.conn):
            return
        with self.transaction():
            if keywords.ensure_table(self.db.conn):  # asked again under the write lock
                keywords.upsert(self.db.conn, self.keyword_documents(self.indexed_ids()).items())

    def refresh_keywords(self, ids: Sequence[int]) -> None:
        """Rewrite the documents of these images from their rows: the indexed ones get theirs, the rest none."""
        with self.transaction():
            keywords.delete_documents(self.db.conn, ids)
            keywords.upsert(self.db.conn, self.keyword_documents(ids).items())

    def rebuild_keywords(self) -> None:
        with self.transaction():
            keywords.rebuild(self.db.conn, self.keyword_documents(self.indexed_ids()).items())

    def keyword_documents(self, ids: Sequence[int]) -> dict[int, keywords.KeywordDoc]:
        """The keyword documents of the indexed images among `ids`, made from their rows."""
        docs = {}
        for chunk in _chunks(ids):
            sql = (
                f"SELECT i.id, i.path, COALESCE(o.text, ''), "
                f"(SELECT group_concat(label, ' ') FROM tags t WHERE t.image_id = i.id), i.description "
                f"FROM images i LEFT JOIN ocr o ON o.image_id = i.id "
                f"WHERE i.status = ? AND i.id IN ({_marks(chunk)})"
            )
            for image_id, path, text, tags, description in self.db.execute(sql, [INDEXED, *chunk]):
                docs[image_id] = keywords.document(
                    path_from_db(path), ocr_text=text, tags=(tags or "").split(), description=description
                )
        return docs

    def keyword_hits(self, terms: Sequence[str]) -> list[tuple[int, float]]:
        """(id, BM25 score) of the indexed images whose documents hold every term, best first."""
        return keywords.keyword_search(self.db.conn, terms)

    # ocr ----------------------------------------------------------------------------------------
    def ocr_todo(self) -> list[tuple[int, str, str | None]]:
        """(id, path, hash) of the indexed images not read yet, or read when their content was another."""
        sql = (
            "SELECT i.id, i.path, i.hash FROM images i LEFT JOIN ocr o ON o.image_id = i.id "
            "WHERE i.status = ? AND (o.image_id IS NULL OR o.hash IS NOT i.hash) ORDER BY i.id"
        )
        return [(i, path_from_db(p), h) for i, p, h in self.db.execute(sql, [INDEXED])]

    def save_ocr(self, rows: list[dict[str, Any]]) -> None:
        """Store OCR results (the `ocr` table's columns) and the keyword documents they change, together."""
        with self.transaction():
            for row in rows:
                self.db.execute(
                    f"INSERT OR REPLACE INTO ocr ({', '.join(row)}) VALUES ({_marks(row)})", list(row.values())
                )
            self.refresh_keywords([row["image_id"] for row in rows])

    def ocr_counts(self) -> tuple[int, int]:
        """(indexed images read by OCR, those with any text)."""
        sql = (
            "SELECT COUNT(*), COALESCE(SUM(o.text != ''), 0) FROM ocr o JOIN images i ON i.id = o.image_id "
            "WHERE i.status = ? AND o.hash IS i.hash"
        )
        return tuple(self.db.execute(sql, [INDEXED]).fetchone())

    # concepts -----------------------------------------------------------------------------------
    def save_concept(self, name: str, model_fingerprint: str | None, data: str, updated_at: str) -> None:
        with self.transaction():
            self.db.execute(
                "INSERT OR REPLACE INTO concepts (name, model_fingerprint, json, updated_at) VALUES (?, ?, ?, ?)",
                [name, model_fingerprint, data, updated_at],
            )

    def concept(self, name: str) -> tuple[str | None, str, str] | None:
        """(model fingerprint, JSON, updated at) of a concept, or None."""
        row = self.db.execute(
            "SELECT model_fingerprint, json, updated_at FROM concepts WHERE name = ?", [name]
        ).fetchone()
        return tuple(row) if row else None

    def concept_names(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT name FROM concepts ORDER BY name")]

    def forget_concept(self, name: str) -> bool:
        with self.transaction():
            return self.db.execute("DELETE FROM concepts WHERE name = ?", [name]).rowcount > 0
