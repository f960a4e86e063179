"""pixseek's Python API: open a library, search it.

    from search import Library, SearchRequest, Filters
    with Library.open("~/pixseek-library") as lib:
        for r in lib.search("a dog on a beach", k=10, filters=Filters(date_from="2023-01-01")):
            print(r.score, r.path)

Names load on first use, so `import search` costs nothing until one is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from indexer.decode import SUPPORTED_EXTENSIONS
    from indexer.errors import PixseekError
    from indexer.library import ENV_LIBRARY, LibraryPaths
    from indexer.library.filters import Filters
    from indexer.model import ModelSpec
    from search.info import LibraryInfo
    from search.library import Library
    from search.request import SearchRequest
    from search.result import Result

_WHERE = {
    "Library": "search.library",
    "SearchRequest": "search.request",
    "Result": "search.result",
    "LibraryInfo": "search.info",
    "Filters": "indexer.library.filters",
    "PixseekError": "indexer.errors",
    "SUPPORTED_EXTENSIONS": "indexer.decode",
    "ENV_LIBRARY": "indexer.library",
    "LibraryPaths": "indexer.library",
    "ModelSpec": "indexer.model",
}
__all__ = ["ENV_LIBRARY", "SUPPORTED_EXTENSIONS", "Filters", "Library", "LibraryInfo", "LibraryPaths", "ModelSpec",
           "PixseekError", "Result", "SearchRequest"]


def __getattr__(name: str) -> object:
    if name not in _WHERE:
        raise AttributeError(f"module 'search' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
