"""The catalog's schema, as migration steps: each moves a library from version i to i + 1.

Never edit a released step, add one. The image columns come from `rows.ImageRow`: a step adds
the fields whose `since` is its version.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from indexer.library import keywords
from indexer.library.rows import columns_since

if TYPE_CHECKING:
    import sqlite_utils


def _add_columns(db: sqlite_utils.Database, version: int) -> None:
    for name, kind in columns_since(version).items():
        db["images"].add_column(name, kind)


def _migrate_1(db: sqlite_utils.Database) -> None:
    db["images"].create(columns_since(1), pk="id", not_null={"path", "status"}, defaults={"in_ann": 0})
    db["images"].create_index(["path"], unique=True)
    db["images"].create_index(["hash"])
    db["images"].create_index(["status"])


def _migrate_2(db: sqlite_utils.Database) -> None:
    db["images"].create_index(["folder"])
    db["images"].create_index(["taken_at"])


def _migrate_3(db: sqlite_utils.Database) -> None:
    _add_columns(db, 3)
    # tags: zero-shot labels per image (search/tags.py).
    db["tags"].create({"image_id": int, "label": str, "score": float}, pk=("image_id", "label"))
    db.execute("CREATE INDEX idx_tags_label ON tags (label COLLATE NOCASE)")  # --tag matches any case
    # A removed or changed file loses its row, and its tags go with it.
    db.execute(
        "CREATE TRIGGER tags_follow_images AFTER DELETE ON images BEGIN DELETE FROM tags WHERE image_id = OLD.id; END"
    )


def _migrate_4(db: sqlite_utils.Database) -> None:
    _add_columns(db, 4)
    # ocr: what `pixseek ocr` read in each indexed image, and from which content (hash): a
    # changed file is read again. reason: why a file could not be read.
    db["ocr"].create(
        {"image_id": int, "hash": str, "text": str, "boxes_json": str, "reason": str, "seconds": float, "done_at": str},
        pk="image_id",
        foreign_keys=[("image_id", "images", "id")],
    )
    # concepts: probes taught from examples (search/concepts.py), for the model whose vectors taught them.
    db["concepts"].create({"name": str, "model_fingerprint": str, "json": str, "updated_at": str}, pk="name")
    # The keyword tables themselves are made (and filled) by the catalog when it finds them
    # missing (Catalog.ensure_keywords), as here; what a deleted image had goes with its row.
    drops = "".join(f"DELETE FROM {t} WHERE rowid = OLD.id; " for t in (keywords.TABLE, keywords.SHORT_TABLE))
    db.execute(
        f"CREATE TRIGGER ocr_follows_images AFTER DELETE ON images "
        f"BEGIN DELETE FROM ocr WHERE image_id = OLD.id; {drops}END"
    )


def _migrate_5(db: sqlite_utils.Database) -> None:
    # What the query path's filters look up, so no query reads the whole table: a folder as a
    # range of paths, a date range, the images indexed after the ANN file, a camera (make, model).
    for columns in (
        ["status", "path"],
        ["status", "taken_at"],
        ["status", "in_ann"],
        ["camera_make", "camera_model", "status"],
    ):
        db["images"].create_index(columns)


MIGRATIONS = {1: _migrate_1, 2: _migrate_2, 3: _migrate_3, 4: _migrate_4, 5: _migrate_5}
SCHEMA_VERSION = max(MIGRATIONS)  # what a library this pixseek writes is at
