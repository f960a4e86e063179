"""The API's only door into the search layer: a few search threads sharing one model.

Everything the HTTP side asks of the `search` facade goes through `Backend`, so a change of the
search API touches this file alone. A Library holds one SQLite connection and follows index runs
by changing itself, so it must not be shared between threads; each search thread opens its own
(a connection, a memory map of the vectors and the ANN index each), and all of them use the one
loaded model (`Library.open(encoder=...)`), whose calls take turns under a lock. Work that may
run the model (`uses_model`) has MODEL_THREADS threads of its own, so a more-like-this search,
metadata or info never queues behind texts waiting for the model: they get LOOKUP_THREADS.
Thumbnails and files are served outside these threads, from search results only.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from indexer.errors import NotInLibrary
from search import Library, LibraryInfo, LibraryPaths, PixseekError, Result, SearchRequest
from search.concepts import Concept, all_concepts, example_paths, forget_concept, load_concept, teach_concept
from search.query import parse_query

# Enough for the model's next batch to gather several waiting requests; each thread holds its own
# copy of the ANN index.
MODEL_THREADS = 4
# Enough to keep two cores busy while one thread waits on SQLite.
LOOKUP_THREADS = 2


def uses_model(request: SearchRequest) -> bool:
    """Whether a search may embed a text or an image (a like, a concept or words alone read stored vectors)."""
    return bool(request.text) or request.image is not None


class ModelNotReady(PixseekError):
    """The model is still loading, or failed to (the API answers 503)."""


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

    def __init__(self, encoder: Any) -> None:  # what `Library.encoder` gives; ui/ never imports the indexer's model
        self._encoder = encoder
        lock = threading.Lock()
        self.encode_texts = _Merged(encoder.encode_texts, lock)
        self.encode_pixels = _Merged(lambda rows: encoder.encode_pixels(np.stack(rows)), lock)

    def __getattr__(self, name: str) -> Any:  # image_size, dim, spec, fingerprint: read-only
        return getattr(self._encoder, name)


class Backend:
    def __init__(
        self, library: LibraryPaths, device: str | None = None, runtime: str | None = None, precision: str | None = None
    ) -> None:
        self._root, self._device = library.root, device
        self._runtime, self._precision = runtime, precision  # as Library.open takes them
        self._local = threading.local()
        self._opened: list[Library] = []
        self._opened_lock = threading.Lock()
        self._load_lock = threading.Lock()
        self._model_pool = ThreadPoolExecutor(MODEL_THREADS, thread_name_prefix="pixseek-model")
        self._lookup_pool = ThreadPoolExecutor(LOOKUP_THREADS, thread_name_prefix="pixseek-lookup")
        self._model: SharedModel | None = None
        # Opened here first, so a missing library fails `pixseek serve` at once, in one line.
        self.thumbs_dir: Path = self._open(None).thumbs_dir
        self.model_error: str | None = None
        self.model_loaded = False
        self._loading = True  # the app starts `load_model` as it starts

    def _open(self, model: SharedModel | None) -> Library:
        lib = Library.open(self._root, device=self._device, encoder=model)
        with self._opened_lock:
            self._opened.append(lib)
        return lib

    def _library(self) -> Library:
        """This search thread's Library; one opened before the shared model was in is opened again with it."""
        lib, given = getattr(self._local, "opened", (None, None))
        model = self._model
        if lib is None or given is not model:
            if lib is not None:
                with self._opened_lock:
                    self._opened.remove(lib)
                lib.close()
            lib = self._open(model)
            self._local.opened = (lib, model)
        return lib

    async def call(self, method: Callable[..., Any], *args: Any, model: bool = False) -> Any:
        """Run one of the methods below on a search thread; model=True for work that may run the model."""
        pool = self._model_pool if model else self._lookup_pool
        return await asyncio.wrap_future(pool.submit(method, *args))

    def load_model(self) -> None:
        """Load the library's model now, so that no request waits for it (`ready` says when it is in)."""
        self._model_pool.submit(self._load).result()

    def _load(self) -> None:
        with self._load_lock:
            if self.model_loaded:
                return
            self._loading = True
            try:
                opened = Library.open(self._root, device=self._device, runtime=self._runtime, precision=self._precision)
                with opened as lib:
                    self._model = SharedModel(lib.encoder)
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
            raise ModelNotReady(
                "the model is still loading"
                if self.model_error is None
                else f"the model could not be loaded: {self.model_error}",
                "retry shortly; GET /readyz answers 200 once it is loaded",
            )

    def search(self, request: SearchRequest) -> tuple[list[Result], str | None]:
        """The results, and how far an index run that is going has got (`Library.in_progress`)."""
        self._need_model()
        lib = self._library()
        # allow_paths=False: a query string never makes the server open a file.
        return lib.search(request, allow_paths=False), lib.in_progress()

    def embed_text(self, text: str, ensemble: bool) -> np.ndarray:
        self._need_model()
        return self._library().embed_text(text, ensemble)

    def embed_image(self, data: bytes) -> np.ndarray:
        self._need_model()
        return self._library().embed_image(data)

    def get(self, image_id: int) -> Result:
        return self._library().get(image_id)

    def info(self) -> LibraryInfo:
        return self._library().info()

    def teach(self, name: str, yes: list[int | str], no: list[int | str]) -> Concept:
        """Teach from photos by id or by path; a path is compared with the catalog's as it is, never
        resolved on disk. Teaching reads stored vectors only: it needs no model."""
        lib = self._library()

        def photo_id(ref: int | str) -> int:
            row = lib.catalog.by_path(ref) if isinstance(ref, str) else None
            if isinstance(ref, str) and row is None:
                raise NotInLibrary(f"{ref} is not in the library", "give photos by id, or by path as results give it")
            return ref if isinstance(ref, int) else row.id

        return teach_concept(lib, name, [photo_id(r) for r in yes], [photo_id(r) for r in no])

    def concepts(self) -> list[Concept]:
        return all_concepts(self._library())

    def concept(self, name: str) -> tuple[Concept, dict[int, str]]:
        """A concept and the paths of its examples."""
        lib = self._library()
        concept = load_concept(lib, name)
        return concept, example_paths(lib, concept)

    def forget(self, name: str) -> None:
        forget_concept(self._library(), name)

    # any thread ---------------------------------------------------------------------------
    def count_terms(self, text: str) -> int:
        """How many terms a query has in pixseek's query syntax (raises PixseekError when malformed)."""
        return len(parse_query(text, allow_paths=False))

    def close(self) -> None:
        self._model_pool.shutdown(wait=True)
        self._lookup_pool.shutdown(wait=True)
        with self._opened_lock:
            for lib in self._opened:
                lib.close()
