"""`Library.info()`: what is in a library, as one record (`as_dict()` is `pixseek info --json`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class LibraryInfo:
    library: str  # the library folder
    images: int  # indexed
    skipped: int
    pending: int  # found, not embedded yet (a run in progress or stopped)
    skipped_reasons: dict[str, int]
    model: str | None  # None until the first index run picks one
    model_fingerprint: str | None
    embedding_dim: int | None
    index: dict[str, Any]  # the ANN file: type, vectors, and IVF-PQ's parameters
    last_indexed_at: str | None
    schema_version: int
    text_read: int = 0  # photos whose text `pixseek ocr` has read (as they are now)
    with_text: int = 0  # of those, photos with any text
    ocr_on_index: bool = False  # `index --ocr` is on
    concepts: tuple[str, ...] = ()  # names of the taught concepts
    runtime_check: dict[str, Any] | None = None  # what `--runtime auto` measured on the library's photos and picked
    damage: list[str] = field(default_factory=list)  # what is damaged (`pixseek check` finds all of it)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
