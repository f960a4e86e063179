"""Filters on catalog metadata, checked once when made (`Catalog.filtered_ids` turns them into SQL)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

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
    """Given as typed; read back normalised: an absolute folder, ISO days, a stripped tag."""

    folder: str | None = None  # the folder or anything below it
    date_from: str | None = None  # YYYY-MM-DD, inclusive, on the date taken
    date_to: str | None = None  # YYYY-MM-DD, inclusive
    camera: str | None = None  # substring of make or model, any case
    has_gps: bool | None = None
    tag: str | None = None  # an auto-tag (see search/tags.py), any case
    # The (make, model) pairs `camera` names, when the caller has matched it against the library's
    # cameras already (search/cache.py keeps them); the catalog then looks those up by index.
    cameras: tuple[tuple[str | None, str | None], ...] | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalised once, here
        if self.folder is not None:
            set_(self, "folder", str(Path(self.folder).expanduser().resolve()))
        set_(self, "date_from", _day(self.date_from, "--from"))
        set_(self, "date_to", _day(self.date_to, "--to"))
        if self.tag is not None:
            set_(self, "tag", self.tag.strip())

    def camera_matches(self, make: str | None, model: str | None) -> bool:
        """Whether `camera` is part of the make, the model, or "make model", in any case."""
        needle = (self.camera or "").casefold()
        named = [make, model, f"{make} {model}" if make is not None and model is not None else None]
        return any(needle in text.casefold() for text in named if text is not None)

    def active(self) -> bool:
        return any(
            v is not None for v in (self.folder, self.date_from, self.date_to, self.camera, self.has_gps, self.tag)
        )
