"""The image table, declared once: `ImageRow`'s fields are its columns.

The schema (schema.py), the catalog's inserts and reads (catalog.py) and the search API's
`Result` (search/result.py) are all made from these fields. A field's metadata says in which
schema version its column appeared (`since`) and whether search results carry it (`api`), so a
new column is a field here plus one migration step in schema.py.
"""

from __future__ import annotations

import re
import typing
from dataclasses import Field, dataclass, field, fields
from typing import Any

INDEXED = "indexed"
PENDING = "pending"  # has an id, its vector is not written yet (a crash leaves these behind)
SKIPPED = "skipped"  # could not be indexed; `reason` says why


def column(default: Any = None, *, since: int = 1, api: bool = False) -> Any:
    return field(default=default, metadata={"since": since, "api": api})


@dataclass
class ImageRow:
    """One file ever seen. Its vector (vectors.f16, row = id) is valid only while status is 'indexed'."""

    id: int = column(0, api=True)
    path: str = column("", api=True)
    folder: str = column("", api=True)
    width: int | None = column(api=True)
    height: int | None = column(api=True)
    taken_at: str | None = column(api=True)  # ISO 8601, from EXIF
    camera_make: str | None = column(api=True)
    camera_model: str | None = column(api=True)
    lat: float | None = column(api=True)
    lon: float | None = column(api=True)
    size: int = column(0, api=True)
    # Content hash: finds moved files, and keys caches (thumbnails) that must change with the file.
    hash: str | None = column(api=True)
    mtime_ns: int = column(0)
    indexed_at: str | None = column()
    status: str = column(PENDING)
    reason: str | None = column()  # why a skipped file was skipped
    in_ann: int = column(0)  # 1 while the ANN file holds this row's vector
    phash: str | None = column(since=3)  # perceptual hash (hex) for near-duplicate search


COLUMNS: tuple[Field, ...] = fields(ImageRow)
API_FIELDS: tuple[str, ...] = tuple(f.name for f in COLUMNS if f.metadata["api"])
_HINTS = typing.get_type_hints(ImageRow)


def column_type(name: str) -> type:
    """The column's Python type with None taken out (`int | None` -> int)."""
    hint = _HINTS[name]
    return next(t for t in typing.get_args(hint) if t is not type(None)) if typing.get_args(hint) else hint


def columns_since(version: int) -> dict[str, type]:
    """The columns schema `version` added, name -> type, as sqlite-utils creates them."""
    return {f.name: column_type(f.name) for f in COLUMNS if f.metadata["since"] == version}


# Paths are stored as text. Python hands over the bytes of a non-UTF-8 file name as lone
# surrogates U+DC80..U+DCFF (PEP 383), which SQLite text cannot hold, so they move to the last 128
# code points of plane 16 (private use); a real character of that block is escaped with _PATH_ESC.
# Lossless, and every UTF-8 path (all of them, in practice) is stored as it is, so folder
# prefixes still match with LIKE.
_PATH_ESC = "\U0010ff00"
_TO_DB = re.compile("[\udc80-\udcff\U0010ff00-\U0010ffff]")
_FROM_DB = re.compile("\U0010ff00(.)|[\U0010ff80-\U0010ffff]", re.DOTALL)
PATH_COLUMNS = ("path", "folder")


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


def to_db(values: dict[str, Any]) -> dict[str, Any]:
    """Column values as the catalog stores them; a name that is no column is a bug, so it raises."""
    unknown = set(values) - {f.name for f in COLUMNS}
    if unknown:
        raise TypeError(f"not image columns: {sorted(unknown)}")
    return {k: path_to_db(v) if k in PATH_COLUMNS and v is not None else v for k, v in values.items()}


def from_db(row: dict[str, Any]) -> ImageRow:
    """An ImageRow from a catalog row (columns of a newer pixseek are ignored)."""
    names = {f.name for f in COLUMNS}
    values = {k: v for k, v in row.items() if k in names}
    for key in PATH_COLUMNS:
        if values.get(key) is not None:
            values[key] = path_from_db(values[key])
    return ImageRow(**values)
