"""Everything the page asks of the search layer, in one place.

The page (ui/app.py, ui/page_server.py, `pixseek thumbs`) calls only this module, never search/ or
indexer/ directly, so a change in the search layer's API touches this file alone.

Part one wraps what the search layer offers (open, search, info, folders, date span). Part two,
marked CATALOG QUERIES, holds queries the page needs that the search layer has no method for yet
(latest photos, folders and tags with counts, duplicate groups, the keep marks of duplicates);
they read the catalog directly and belong behind named catalog methods.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

from indexer.catalog import INDEXED, path_from_db
from indexer.decode import SUPPORTED_EXTENSIONS, DecodeError, decode_image
from indexer.errors import PixseekError
from indexer.library import LibraryPaths
from search.dupes import find_duplicates
from search.engine import Library, Result
from search.filters import Filters
from search.query import parse_query

# Re-exported for the page, so nothing else under ui/ imports the search layer or the indexer.
__all__ = ["SUPPORTED_EXTENSIONS", "DecodeError", "Filters", "PixseekError", "Result", "decode_image"]

# Every text term costs a model call under the lock all sessions share: one request stays small.
MAX_QUERY_CHARS = 300
MAX_TERMS = 8
_open_lock = threading.Lock()
_open: dict[Path, PageLibrary] = {}

# Where the keep marks of duplicate groups live: a catalog setting, so no schema change is needed.
KEEP_SETTING = "ui_dupes_keep"


def check_query(text: str) -> None:
    if len(text) > MAX_QUERY_CHARS:
        raise PixseekError(f"the query is {len(text):,} characters long, over the page's {MAX_QUERY_CHARS}",
                           "describe the photo in fewer words")
    terms = parse_query(text, allow_paths=False)
    if len(terms) > MAX_TERMS:
        raise PixseekError(f"the query has {len(terms)} terms, over the page's {MAX_TERMS}",
                           "combine fewer ideas with + and -")


def library_root() -> Path:
    """The library the page serves: $PIXSEEK_LIBRARY or the user's default."""
    return LibraryPaths.at(None).root


@dataclass(frozen=True)
class Summary:
    """What the sidebar shows of the library."""

    images: int
    model: str | None
    index_type: str
    last_indexed_at: str | None
    skipped: int
    skipped_reasons: dict[str, int]


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
        return self._lib.paths.thumbs

    # what the search layer offers ---------------------------------------------------------------
    def load_model(self) -> None:
        with self.lock:
            self._lib.encoder  # noqa: B018  (loads it once; raises PixseekError when it cannot)

    def search_text(self, text: str, k: int, filters: Filters) -> list[Result]:
        check_query(text)
        with self.lock:
            return self._lib.search(text, k=k, filters=filters, allow_paths=False)

    def search_image(self, data: bytes, k: int, filters: Filters) -> list[Result]:
        with self.lock:
            return self._lib.search(image=data, k=k, filters=filters)

    def search_like(self, image_id: int, k: int, filters: Filters) -> list[Result]:
        with self.lock:
            return self._lib.search(like=image_id, k=k, filters=filters)

    def version(self) -> str:
        """Changes whenever an index or tag run commits: what the page's cached queries are keyed on.

        SQLite's data_version changes when another connection commits (a tag run leaves
        last_indexed_at alone); last_indexed_at also covers a library replaced by another.
        """
        with self.lock:
            changed = self._lib.catalog.db.execute("PRAGMA data_version").fetchone()[0]
            return f"{self._lib.catalog.get_setting('last_indexed_at')}|{changed}"

    def summary(self) -> Summary:
        with self.lock:
            info = self._lib.info()
        return Summary(info["images"], info["model"], info["index"]["type"], info["last_indexed_at"],
                       info["skipped"], info["skipped_reasons"])

    def date_span(self) -> tuple[str | None, str | None]:
        with self.lock:
            return self._lib.date_span()

    # CATALOG QUERIES: not in the search layer yet ----------------------------------------------
    def get(self, image_id: int) -> Result | None:
        """An indexed photo by id (score 0), or None."""
        with self.lock:
            row = self._lib.catalog.get(image_id)
        return Result.from_row(row, 0.0) if row is not None and row.status == INDEXED else None

    def browse(self, filters: Filters, k: int) -> list[Result]:
        """Photos matching the filters, latest taken first (undated last), score 0."""
        where, params = filters.sql()
        sql = (f"status = ? {'AND ' + where if where else ''} "
               "ORDER BY taken_at IS NULL, taken_at DESC, id DESC LIMIT ?")
        with self.lock:
            rows = list(self._lib.catalog.rows(sql, [INDEXED, *params, k]))
        return [Result.from_row(r, 0.0) for r in rows]

    def all_photos(self) -> list[Result]:
        with self.lock:
            return [Result.from_row(r, 0.0) for r in self._lib.catalog.rows("status = ?", [INDEXED])]

    def folder_counts(self) -> list[tuple[str, int]]:
        """(folder, indexed photos directly in it), largest first."""
        sql = "SELECT folder, COUNT(*) FROM images WHERE status = ? GROUP BY folder ORDER BY COUNT(*) DESC, folder"
        with self.lock:
            return [(path_from_db(f), n) for f, n in self._lib.catalog.db.execute(sql, [INDEXED])]

    def tag_counts(self) -> list[tuple[str, int]]:
        """(auto-tag, photos carrying it), most common first."""
        sql = ("SELECT t.label, COUNT(*) FROM tags t JOIN images i ON i.id = t.image_id WHERE i.status = ? "
               "GROUP BY t.label ORDER BY COUNT(*) DESC, t.label")
        with self.lock:
            return list(self._lib.catalog.db.execute(sql, [INDEXED]))

    def tags_of(self, ids: list[int]) -> dict[int, list[str]]:
        """Each photo's auto-tags, most likely first."""
        if not ids:
            return {}
        sql = f"SELECT image_id, label FROM tags WHERE image_id IN ({','.join('?' * len(ids))}) ORDER BY score DESC"
        out: dict[int, list[str]] = {}
        with self.lock:
            for image_id, label in self._lib.catalog.db.execute(sql, ids):
                out.setdefault(image_id, []).append(label)
        return out

    def duplicates(self) -> list[DupeGroup]:
        with self.lock:
            groups = find_duplicates(self._lib.catalog)
        return [DupeGroup(g.kind, [Result.from_row(r, 0.0) for r in g.images]) for g in groups]

    def kept(self) -> dict[int, list[int]]:
        """Keep marks of duplicate groups: the id of the copy to keep -> the ids of the others."""
        with self.lock:
            raw = self._lib.catalog.get_setting(KEEP_SETTING)
        return {int(k): v for k, v in json.loads(raw).items()} if raw else {}

    def mark_keep(self, keep: int, group: list[int]) -> None:
        """Record `keep` as the copy to keep of `group` (replacing any earlier mark touching it).

        A catalog write: it takes the library's write lock, so it waits for no index run but is
        refused (PixseekError) while one is going. No file is ever moved or deleted.
        """
        members = set(group)
        with self.lock, self._lib.paths.write_lock(), self._lib.paths.storage_errors():
            catalog = self._lib.catalog
            with catalog.transaction():
                raw = catalog.get_setting(KEEP_SETTING)
                marks = {int(k): v for k, v in json.loads(raw).items()} if raw else {}
                marks = {k: v for k, v in marks.items() if k not in members and not members & set(v)}
                marks[keep] = sorted(members - {keep})
                catalog.set_setting(KEEP_SETTING, json.dumps({str(k): v for k, v in marks.items()}))



def shared_library(root: Path) -> PageLibrary:
    """The process's one PageLibrary for `root`, opened on first use (a failed open is retried next time)."""
    with _open_lock:
        if root not in _open:
            _open[root] = PageLibrary(root)
        return _open[root]
