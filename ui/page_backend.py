"""Everything the page asks of the library, in one place.

The page (ui/app.py, ui/page_server.py, `pixseek thumbs`) calls only this module, which calls only
the search API (`search`), so a change in that API touches this file alone. It adds what a page
server shared by many sessions needs: one open library per process, one call at a time, and
bounds on what one request may cost.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from search import (
    SUPPORTED_EXTENSIONS,
    DecodeError,
    Filters,
    Library,
    LibraryInfo,
    LibraryPaths,
    PixseekError,
    Result,
    SearchRequest,
    build_request,
    decode_image,
)
from search.concepts import MAX_NAME_CHARS, MIN_EXAMPLES, Concept, all_concepts, teach_concept
from search.query import parse_query

# Re-exported for the page, so nothing else under ui/ needs the search API's names.
__all__ = [
    "MAX_NAME_CHARS",
    "MIN_EXAMPLES",
    "SUPPORTED_EXTENSIONS",
    "Concept",
    "DecodeError",
    "Filters",
    "LibraryInfo",
    "PixseekError",
    "Result",
    "SearchRequest",
    "build_request",
    "decode_image",
]

# Every text term costs a model call under the lock all sessions share: one request stays small.
MAX_QUERY_CHARS = 300
MAX_TERMS = 8
_open_lock = threading.Lock()
_open: dict[Path, PageLibrary] = {}


def check_query(text: str) -> None:
    if len(text) > MAX_QUERY_CHARS:
        raise PixseekError(
            f"the query is {len(text):,} characters long, over the page's {MAX_QUERY_CHARS}",
            "describe the photo in fewer words",
        )
    terms = parse_query(text, allow_paths=False)
    if len(terms) > MAX_TERMS:
        raise PixseekError(
            f"the query has {len(terms)} terms, over the page's {MAX_TERMS}", "combine fewer ideas with + and -"
        )


def library_root() -> Path:
    """The library the page serves: $PIXSEEK_LIBRARY or the user's default."""
    return LibraryPaths.at(None).root


@dataclass(frozen=True)
class DupeGroup:
    kind: str  # "exact" or "near"
    photos: list[Result]  # largest first


class PageLibrary:
    """One open library shared by every session and the thumbnail route of one page server.

    Sessions run in threads and the catalog connection and the model are not made for concurrent
    use, so every call takes `lock`.
    """

    def __init__(self, root: Path) -> None:
        self._lib = Library.open(root)
        self.root = root
        self.lock = threading.Lock()

    def close(self) -> None:
        with self.lock:
            self._lib.close()

    @property
    def thumbs_dir(self) -> Path:
        return self._lib.thumbs_dir

    def load_model(self) -> None:
        with self.lock:
            self._lib.encoder  # noqa: B018  (loads it once; raises PixseekError when it cannot)

    def search(self, request: SearchRequest) -> list[Result]:
        """Results of a request made by `build_request`; typed text is only ever read as text."""
        if request.text:
            check_query(request.text)
        with self.lock:
            return self._lib.search(request, allow_paths=False)

    def in_progress(self) -> str | None:
        with self.lock:
            return self._lib.in_progress()

    def explain(self, request: SearchRequest, image_id: int) -> dict[str, Any] | None:
        """Why `image_id` is among the results of `request` (search/explain.py), or None if it is not."""
        found = [r for r in self.search(replace(request, explain=True)) if r.id == image_id]
        return found[0].explanation if found else None

    def concepts(self) -> list[str]:
        """The names of the concepts taught on this library's model: those a search can use."""
        with self.lock:
            fingerprint = self._lib.settings.model_fingerprint
            return [c.name for c in all_concepts(self._lib) if c.model == fingerprint]

    def teach(self, name: str, yes: list[int], no: list[int]) -> Concept:
        """Teach (or teach again, with more examples) a concept from photo ids."""
        with self.lock:
            return teach_concept(self._lib, name, yes, no)

    def version(self) -> str:
        """Changes whenever an index or tag run commits: what the page's cached queries are keyed on."""
        with self.lock:
            return self._lib.version()

    def runtime_in_use(self) -> str | None:
        with self.lock:
            return self._lib.runtime_in_use()

    def summary(self) -> LibraryInfo:
        with self.lock:
            return self._lib.info()

    def date_span(self) -> tuple[str | None, str | None]:
        with self.lock:
            return self._lib.date_span()

    def get(self, image_id: int) -> Result | None:
        """An indexed photo by id (score 0), or None."""
        try:
            with self.lock:
                return self._lib.get(image_id)
        except PixseekError:
            return None

    def browse(self, filters: Filters, k: int | None = None) -> list[Result]:
        """Photos passing the filters, latest taken first (undated last), score 0; all of them without k."""
        with self.lock:
            return self._lib.latest(k, filters)

    def folder_counts(self) -> list[tuple[str, int]]:
        """(folder, indexed photos directly in it), largest first."""
        with self.lock:
            return self._lib.folder_counts()

    def tag_counts(self) -> list[tuple[str, int]]:
        """(auto-tag, photos carrying it), most common first."""
        with self.lock:
            return self._lib.tag_counts()

    def tags_of(self, ids: list[int]) -> dict[int, list[str]]:
        """Each photo's auto-tags, most likely first."""
        with self.lock:
            return self._lib.tags_of(ids)

    def duplicates(self) -> list[DupeGroup]:
        with self.lock:
            groups = self._lib.dupes()
        return [DupeGroup(g.kind, [Result.from_row(r, 0.0) for r in g.images]) for g in groups]

    def kept(self) -> dict[int, list[int]]:
        """Keep marks of duplicate groups: the id of the copy to keep -> the ids of the others."""
        with self.lock:
            return self._lib.kept()

    def mark_keep(self, keep: int, group: list[int]) -> None:
        """Record `keep` as the copy to keep of `group` (refused while an index run is going)."""
        with self.lock:
            self._lib.mark_keep(keep, group)


def shared_library(root: Path) -> PageLibrary:
    """The process's one PageLibrary for `root`, opened on first use (a failed open is retried next time)."""
    with _open_lock:
        if root not in _open:
            _open[root] = PageLibrary(root)
        return _open[root]
