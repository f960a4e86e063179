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
    from indexer.decode import SUPPORTED_EXTENSIONS, DecodeError, decode_image
    from indexer.errors import PixseekError
    from indexer.library import ENV_LIBRARY, LibraryPaths
    from indexer.library.filters import Filters
    from indexer.model import ModelSpec
    from indexer.runtime import check_runtime_request
    from search.info import LibraryInfo
    from search.library import Library
    from search.request import SearchRequest, build_request
    from search.result import Result

# How `pixseek ui` hands its --runtime and --precision to the page it starts as a child process
# (the CLI reads them too); Library.open's defaults.
ENV_RUNTIME = "PIXSEEK_RUNTIME"
ENV_PRECISION = "PIXSEEK_PRECISION"

_WHERE = {
    "Library": "search.library",
    "SearchRequest": "search.request",
    "build_request": "search.request",
    "Result": "search.result",
    "LibraryInfo": "search.info",
    "Filters": "indexer.library.filters",
    "PixseekError": "indexer.errors",
    "SUPPORTED_EXTENSIONS": "indexer.decode",
    "ENV_LIBRARY": "indexer.library",
    "LibraryPaths": "indexer.library",
    "ModelSpec": "indexer.model",
    "check_runtime_request": "indexer.runtime",  # --runtime / --precision, refused before any work
    # the guarded decoder, for pictures of indexed images (the page's thumbnails)
    "decode_image": "indexer.decode",
    "DecodeError": "indexer.decode",
}
__all__ = [
    "ENV_LIBRARY",
    "ENV_PRECISION",
    "ENV_RUNTIME",
    "SUPPORTED_EXTENSIONS",
    "DecodeError",
    "Filters",
    "Library",
    "LibraryInfo",
    "LibraryPaths",
    "ModelSpec",
    "PixseekError",
    "Result",
    "SearchRequest",
    "build_request",
    "check_runtime_request",
    "decode_image",
]


def __getattr__(name: str) -> object:
    if name not in _WHERE:
        raise AttributeError(f"module 'search' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
