"""Wall seconds per pipeline stage, so the report and the log show where an index run spends its time.

Stages nest (the writer pulls from the embedder, which pulls from the reader); each second goes
to the innermost stage running then, so a stage's figure is its own work, not its upstream's.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)

PROGRESS_EVERY = 5.0  # seconds between the running-rate lines of a verbose run


class StageTimer:
    def __init__(self) -> None:
        self.seconds: Counter[str] = Counter()
        self._running: list[str] = []
        self._since = time.perf_counter()

    def _switch(self) -> None:
        now = time.perf_counter()
        if self._running:
            self.seconds[self._running[-1]] += now - self._since
        self._since = now

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self._switch()
        self._running.append(name)
        try:
            yield
        finally:
            self._switch()
            self._running.pop()

    def iterate(self, name: str, items: Iterable[T]) -> Iterator[T]:
        """`items`, with the time spent producing each charged to stage `name`."""
        items = iter(items)
        while True:
            with self.stage(name):
                item = next(items, _END)
            if item is _END:
                return
            yield item

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] += seconds


_END = object()


class RateLog:
    """Running per-stage rates every few seconds, logged at INFO (`pixseek index --verbose`),
    so a user sees which stage holds a long run back while it runs."""

    def __init__(self, timer: StageTimer, total: int) -> None:
        self.timer = timer
        self.total = total
        self.every = PROGRESS_EVERY
        self._start = time.perf_counter()
        self._next = self._start + self.every

    def tick(self, decoded: int, embedded: int, written: int) -> None:
        now = time.perf_counter()
        if now < self._next:
            return
        self._next = now + self.every
        s = self.timer.seconds
        log.info(
            "%d/%d decoded, %d embedded, %d written: %.1f images/s | decode %.1f images/s per worker, "
            "embed %.1f images/s, write %.0f images/s, %.1fs waiting for decoders",
            decoded,
            self.total,
            embedded,
            written,
            written / (now - self._start),
            _rate(decoded, s["decode (in workers)"]),
            _rate(embedded, s["embed"]),
            _rate(written, s["write"]),
            s["wait"],
        )


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else 0.0
