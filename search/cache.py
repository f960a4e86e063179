"""What a reader asks about the library as a whole, computed once per committed state of it.

The sidebar's choices (folders and their counts, tags, the span of dates, cameras) and the
sample the z-score floor scores come from scans of the catalog; made per query, they would make
every query's cost grow with the library. They are kept until the catalog changes (an index or
tag run commits, a setting is saved) and computed again when next asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")


class LibraryCache:
    """Values keyed on `state()`: a cheap read that changes whenever the catalog does."""

    def __init__(self, state: Callable[[], Hashable]) -> None:
        self._state = state
        self._seen: Hashable = None
        self._values: dict[str, Any] = {}

    def get(self, name: str, compute: Callable[[], T]) -> T:
        state = self._state()
        if state != self._seen:
            self._seen, self._values = state, {}
        if name not in self._values:
            self._values[name] = compute()
        return self._values[name]
