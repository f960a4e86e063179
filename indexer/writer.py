"""The write stage: vectors first (fsync'd), then their catalog rows, in large transactions.

A row turns 'indexed' only in the transaction that follows its durable vector write, so a crash
at any point leaves either a finished row or a 'pending' one that the next run embeds again.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone

import numpy as np

from indexer.embed import Embedded
from indexer.library.catalog import Catalog
from indexer.library.rows import INDEXED, SKIPPED
from indexer.library.vectors import VectorStore
from indexer.reader import ReadResult


def now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


class Writer:
    # Rows per commit: each commit costs an fsync, and a crash (not Ctrl-C, which flushes) loses
    # at most this many embeddings. Fault-injection tests lower it to get many crash points.
    commit_every = 512

    def __init__(self, catalog: Catalog, vectors: VectorStore) -> None:
        self.catalog = catalog
        self.vectors = vectors
        self._done: list[tuple[ReadResult, np.ndarray]] = []
        self._skipped: list[ReadResult] = []
        self.written = 0
        self.skipped: list[tuple[int, str]] = []  # (id, reason) of this run

    @property
    def received(self) -> int:
        """Vectors handed to the writer this run, committed or not."""
        return self.written + len(self._done)

    def __call__(self, batches: Iterable[Embedded]) -> None:
        """Write every batch, then commit the rest."""
        for batch in batches:
            self.add(batch)
        self.flush()

    def add(self, batch: Embedded) -> None:
        for i, result in enumerate(batch.results):
            if batch.vectors is None:
                self._skipped.append(result)
                self.skipped.append((result.id, result.reason or "unknown error"))
            else:
                self._done.append((result, batch.vectors[i]))
            if len(self._done) + len(self._skipped) >= self.commit_every:
                self.flush()

    def flush(self) -> None:
        if not self._done and not self._skipped:
            return
        if self._done:
            ids = np.array([r.id for r, _ in self._done], dtype=np.int64)
            self.vectors.write(ids, np.stack([v for _, v in self._done]))
        stamp = now_iso()
        with self.catalog.transaction():
            for result, _ in self._done:
                self.catalog.update(result.id, **result.fields, status=INDEXED, reason=None, indexed_at=stamp, in_ann=0)
            for result in self._skipped:
                self.catalog.update(
                    result.id, **result.fields, status=SKIPPED, reason=result.reason, indexed_at=stamp, in_ann=0
                )
            self.catalog.refresh_keywords([r.id for r, _ in self._done] + [r.id for r in self._skipped])
        self.written += len(self._done)
        self._done.clear()
        self._skipped.clear()
