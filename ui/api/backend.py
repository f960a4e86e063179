"""The API's only door into the search layer: one Library per process, shared by every request.

Everything the HTTP side needs from search/ and indexer/ goes through `Backend`, so a change of
the search API touches this file alone. The Library holds one SQLite connection and one model,
and follows index runs by mutating itself (`_follow_index_runs`), so every call into it is made
under one lock; thumbnails and file streaming happen outside it, from catalog rows only.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from indexer.errors import PixseekError
from indexer.library import LibraryPaths
from search.engine import Library, Result
from search.filters import Filters
from search.query import parse_query


class NotFound(PixseekError):
    """An id that is not a catalogued, indexed photo: 404, never a hint about what else exists."""


class ModelNotReady(PixseekError):
    """The model is still loading, or failed to: 503."""


# PixseekError wordings of the current search layer that deserve a status other than 400.
_UPLOAD_UNREADABLE = "cannot read the uploaded image"
_EMPTY_LIBRARY = ("has no indexed images", "has no images yet")


def status_of(exc: PixseekError) -> int:
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, ModelNotReady) or any(words in exc.problem for words in _EMPTY_LIBRARY):
        return 503
    if exc.problem.startswith(_UPLOAD_UNREADABLE):
        return 415
    return 400


@dataclass(frozen=True)
class Query:
    """One search, as the HTTP layer validated it."""

    text: str | None = None
    image: bytes | None = None
    like: int | None = None
    k: int = 20
    min_score: float | None = None
    min_z: float | None = None
    folder: str | None = None
    date_from: date | None = None
    date_to: date | None = None
    camera: str | None = None
    gps: bool | None = None
    tag: str | None = None
    sort: str = "score"
    dedupe: bool = False
    ensemble: bool = True

    @property
    def kind(self) -> str:
        given = [name for name, value in (("text", self.text), ("image", self.image), ("like", self.like))
                 if value is not None]
        return given[0] if len(given) == 1 else "mixed"


class Backend:
    def __init__(self, library: LibraryPaths, device: str | None = None) -> None:
        self._lib = Library.open(library.root, device=device)
        self._lock = threading.Lock()
        self.model_error: str | None = None
        self.model_loaded = False
        self._loading = True  # the app starts `load_model` as it starts

    @property
    def thumbs_dir(self) -> Path:
        return self._lib.paths.thumbs

    def load_model(self) -> None:
        """Load the library's model, so that no request waits for it (`ready` says when it is in)."""
        self._loading = True
        try:
            with self._lock:
                self._lib.encoder  # noqa: B018  # the property loads and keeps it
        except PixseekError as exc:
            self.model_error = str(exc)
        else:
            self.model_error, self.model_loaded = None, True
        finally:
            self._loading = False

    @property
    def ready(self) -> bool:
        if not self.model_loaded and not self._loading and self.model_error is not None:
            self.load_model()  # a library that had no images when the server started may have some now
        return self.model_loaded

    def _need_model(self) -> None:
        if not self.ready:
            raise ModelNotReady("the model is still loading" if self.model_error is None else
                                f"the model could not be loaded: {self.model_error}",
                                "retry shortly; GET /readyz answers 200 once it is loaded")

    def count_terms(self, text: str) -> int:
        """How many terms a query has in pixseek's query syntax (raises PixseekError when malformed)."""
        return len(parse_query(text, allow_paths=False))

    def search(self, query: Query) -> list[Result]:
        self._need_model()
        filters = Filters(folder=query.folder, camera=query.camera, has_gps=query.gps, tag=query.tag,
                          date_from=query.date_from.isoformat() if query.date_from else None,
                          date_to=query.date_to.isoformat() if query.date_to else None)
        with self._lock:
            if query.like is not None:
                self._indexed_row(query.like)
            # allow_paths=False: a query string never makes the server open a file.
            return self._lib.search(query.text, image=query.image, like=query.like, k=query.k,
                                    min_score=query.min_score, min_z=query.min_z, filters=filters,
                                    allow_paths=False, ensemble=query.ensemble, dedupe=query.dedupe, sort=query.sort)

    def embed_text(self, text: str, ensemble: bool) -> np.ndarray:
        self._need_model()
        with self._lock:
            return self._lib.embed_text(text, ensemble)

    def embed_image(self, data: bytes) -> np.ndarray:
        self._need_model()
        with self._lock:
            return self._lib.embed_image(data)

    def get(self, image_id: int) -> Result:
        with self._lock:
            return Result.from_row(self._indexed_row(image_id), 0.0)

    def _indexed_row(self, image_id: int):
        from indexer.catalog import INDEXED

        row = self._lib.catalog.get(image_id)
        if row is None or row.status != INDEXED:
            raise NotFound(f"image {image_id} is not in the library", "use an id from search results")
        return row

    def info(self) -> dict[str, Any]:
        with self._lock:
            return self._lib.info()

    def close(self) -> None:
        with self._lock:
            self._lib.close()
