"""Filters on catalog metadata, turned into one SQL WHERE clause."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from indexer.catalog import path_to_db
from indexer.errors import PixseekError


def _day(value: str | None, name: str) -> str | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        raise PixseekError(f"bad {name} date '{value}'", "write dates as YYYY-MM-DD") from None


@dataclass(frozen=True)
class Filters:
    folder: str | None = None  # the folder or anything below it
    date_from: str | None = None  # YYYY-MM-DD, inclusive, on the date taken
    date_to: str | None = None  # YYYY-MM-DD, inclusive
    camera: str | None = None  # substring of make or model, any case
    has_gps: bool | None = None
    tag: str | None = None  # an auto-tag (see search/tags.py), any case

    def __post_init__(self) -> None:
        _day(self.date_from, "--from")
        _day(self.date_to, "--to")

    def active(self) -> bool:
        return any(v is not None for v in (self.folder, self.date_from, self.date_to, self.camera, self.has_gps,
                                           self.tag))

    def sql(self) -> tuple[str, list[Any]]:
        clauses, params = [], []
        if self.folder is not None:
            folder = path_to_db(str(Path(self.folder).expanduser().resolve()))  # as the catalog stores it
            clauses.append("(folder = ? OR folder LIKE ? ESCAPE '\\')")
            escaped = folder.rstrip(os.sep).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            params += [folder, escaped + os.sep + "%"]
        if self.date_from is not None:
            clauses.append("taken_at >= ?")
            params.append(_day(self.date_from, "--from"))
        if self.date_to is not None:
            clauses.append("taken_at < ?")
            params.append(_day(self.date_to, "--to") + "T99")  # any time on that day sorts below "T99"
        if self.camera is not None:
            clauses.append("(camera_make LIKE ? OR camera_model LIKE ? OR (camera_make || ' ' || camera_model) LIKE ?)")
            params += [f"%{self.camera}%"] * 3
        if self.has_gps is not None:
            clauses.append("lat IS NOT NULL" if self.has_gps else "lat IS NULL")
        if self.tag is not None:
            clauses.append("id IN (SELECT image_id FROM tags WHERE label = ? COLLATE NOCASE)")
            params.append(self.tag.strip())
        return " AND ".join(clauses), params
