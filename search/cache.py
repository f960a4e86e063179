"""What a reader asks about the library as a whole, computed once per committed state of it.

The sidebar's choices (folders and their counts, tags, the span of dates, cameras), the sample
the z-score floor scores and, per filter, how many images pass it and which (search/retrieve.py)
come from scans of the catalog; made per query, they would make every query's cost grow with
the library (a page keeps its filters while queries change). They are kept until the catalog changes (an index or
tag run commits, a setting is saved) and computed again when next asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")

MAX_ENTRIES = 64  # values kept at once; the oldest goes first (a filter's ids are one each)


class LibraryCache:
    """Values keyed on `state()`: a cheap read that changes whenever the catalog does."""

    def __init__(self, state: Callable[[], Hashable]) -> None:
        self._state = state
        self._seen: Hashable = None
        self._values: dict[Hashable, Any] = {}

    def get(self, name: Hashable, compute: Callable[[], T]) -> T:
        state = self._state()
        if state != self._seen:
            self._seen, self._values = state, {}
        if name not in self._values:
            if len(self._values) >= MAX_ENTRIES:
                del self._values[next(iter(self._values))]
            self._values[name] = compute()
        return self._values[name]
