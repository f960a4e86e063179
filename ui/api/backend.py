"""The API's only door into the search layer: a few search threads sharing one model.

Everything the HTTP side needs from search/ and indexer/ goes through `Backend`, so a change of
the search API touches this file alone. A Library holds one SQLite connection and follows index
runs by mutating itself (`_follow_index_runs`), so it must not be shared between threads; each
of SEARCH_THREADS threads opens its own (a connection, a memory map of the vectors and the ANN
index each), and all of them use the one loaded model, whose calls take turns under a lock.
A more-like-this search, which needs no model, never waits behind a text being embedded.
Thumbnails and files are served outside these threads, from catalog rows only.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from indexer.errors import PixseekError
from indexer.library import MODEL_FINGERPRINT, LibraryPaths
from indexer.model import Encoder
from search.engine import Library, Result
from search.filters import Filters
from search.query import parse_query

# Enough to keep two cores busy while one thread waits on SQLite or the model lock; each holds
# its own copy of the ANN index.
SEARCH_THREADS = 4


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


class _Merged:
    """fn(list) -> rows, called by many threads at once: calls that wait for the model meanwhile
    are merged into its next forward pass. On a CPU a batch of 32 prompts costs far less than
    four batches of 8, so concurrent text searches get through faster."""

    def __init__(self, fn: Callable[[list], np.ndarray], model_lock: threading.Lock) -> None:
        self._fn, self._model_lock = fn, model_lock
        self._waiting: list[_Call] = []
        self._waiting_lock = threading.Lock()

    def __call__(self, items: list) -> np.ndarray:
        mine = _Call(items)
        with self._waiting_lock:
            self._waiting.append(mine)
        with self._model_lock:
            if not mine.done:  # no earlier holder of the lock took this call along
                with self._waiting_lock:
                    calls, self._waiting = self._waiting, []
                try:
                    rows = self._fn([item for call in calls for item in call.items])
                except BaseException as exc:
                    for call in calls:
                        call.error, call.done = exc, True
                else:
                    start = 0
                    for call in calls:
                        call.rows, call.done = rows[start : start + len(call.items)], True
                        start += len(call.items)
        if mine.error is not None:
            raise mine.error
        return mine.rows


@dataclass
class _Call:
    items: list
    rows: np.ndarray | None = None
    error: BaseException | None = None
    done: bool = False


class SharedModel:
    """One loaded model for every search thread: one forward pass at a time, concurrent ones merged."""

    def __init__(self, encoder: Encoder) -> None:
        self._encoder = encoder
        lock = threading.Lock()
        self.encode_texts = _Merged(encoder.encode_texts, lock)
        self.encode_images = _Merged(encoder.encode_images, lock)

    def __getattr__(self, name: str) -> Any:  # image_size, dim, spec, fingerprint: read-only
        return getattr(self._encoder, name)


class Backend:
    def __init__(self, library: LibraryPaths, device: str | None = None) -> None:
        self._root, self._device = library.root, device
        self._local = threading.local()
        self._opened: list[Library] = []
        self._opened_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(SEARCH_THREADS, thread_name_prefix="pixseek-search")
        self._model: SharedModel | None = None
        # Opened here first, so a missing library fails `pixseek serve` at once, in one line.
        self.thumbs_dir: Path = self._open().paths.thumbs
        self.model_error: str | None = None
        self.model_loaded = False
        self._loading = True  # the app starts `load_model` as it starts

    def _open(self) -> Library:
        lib = Library.open(self._root, device=self._device)
        with self._opened_lock:
            self._opened.append(lib)
        return lib

    def _library(self) -> Library:
        """This search thread's Library, handed the shared model while the library still uses that model."""
        lib = getattr(self._local, "lib", None)
        if lib is None:
            lib = self._local.lib = self._open()
        model = self._model
        # Library has no public way to take a loaded model; this adapter is the one place that reaches in.
        if lib._encoder is None and model is not None and lib.settings.get(MODEL_FINGERPRINT) == model.fingerprint():
            lib._encoder = model
        return lib

    async def call(self, method: Callable[..., Any], *args: Any) -> Any:
        """Run one of the methods below on a search thread."""
        return await asyncio.wrap_future(self._pool.submit(method, *args))

    def load_model(self) -> None:
        """Load the library's model now, so that no request waits for it (`ready` says when it is in)."""
        self._pool.submit(self._load).result()

    def _load(self) -> None:
        self._loading = True
        try:
            lib = self._library()
            encoder = lib.encoder
            if not isinstance(encoder, SharedModel):
                self._model = lib._encoder = SharedModel(encoder)
        except PixseekError as exc:
            self.model_error = str(exc)
        else:
            self.model_error, self.model_loaded = None, True
        finally:
            self._loading = False

    # run on a search thread (`call`) --------------------------------------------------------
    def ready(self) -> bool:
        if not self.model_loaded and not self._loading and self.model_error is not None:
            self._load()  # a library that had no images when the server started may have some now
        return self.model_loaded

    def _need_model(self) -> None:
        if not self.ready():
            raise ModelNotReady("the model is still loading" if self.model_error is None else
                                f"the model could not be loaded: {self.model_error}",
                                "retry shortly; GET /readyz answers 200 once it is loaded")

    def search(self, query: Query) -> list[Result]:
        self._need_model()
        filters = Filters(folder=query.folder, camera=query.camera, has_gps=query.gps, tag=query.tag,
                          date_from=query.date_from.isoformat() if query.date_from else None,
                          date_to=query.date_to.isoformat() if query.date_to else None)
        lib = self._library()
        if query.like is not None:
            self._indexed_row(lib, query.like)
        # allow_paths=False: a query string never makes the server open a file.
        return lib.search(query.text, image=query.image, like=query.like, k=query.k, min_score=query.min_score,
                          min_z=query.min_z, filters=filters, allow_paths=False, ensemble=query.ensemble,
                          dedupe=query.dedupe, sort=query.sort)

    def embed_text(self, text: str, ensemble: bool) -> np.ndarray:
        self._need_model()
        return self._library().embed_text(text, ensemble)

    def embed_image(self, data: bytes) -> np.ndarray:
        self._need_model()
        return self._library().embed_image(data)

    def get(self, image_id: int) -> Result:
        return Result.from_row(self._indexed_row(self._library(), image_id), 0.0)

    @staticmethod
    def _indexed_row(lib: Library, image_id: int):
        from indexer.catalog import INDEXED

        row = lib.catalog.get(image_id)
        if row is None or row.status != INDEXED:
            raise NotFound(f"image {image_id} is not in the library", "use an id from search results")
        return row

    def info(self) -> dict[str, Any]:
        return self._library().info()

    # any thread ---------------------------------------------------------------------------
    def count_terms(self, text: str) -> int:
        """How many terms a query has in pixseek's query syntax (raises PixseekError when malformed)."""
        return len(parse_query(text, allow_paths=False))

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        with self._opened_lock:
            for lib in self._opened:
                lib.close()
