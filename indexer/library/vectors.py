"""The vector store: float16 rows in one flat file, row i holding the embedding of catalog id i.

Rows are only ever written at ids the catalog has not yet marked 'indexed' (new or pending ids),
so a reader holding an older snapshot never sees a vector change under it, and a crash between the
vector write and the catalog commit leaves rows nobody points at rather than wrong ones.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from indexer.library.files import fsync_dir, pwrite_all

ROW_DTYPE = np.float16


class VectorStore:
    def __init__(self, path: Path, dim: int) -> None:
        self.path = path
        self.dim = dim
        self.row_bytes = dim * np.dtype(ROW_DTYPE).itemsize
        self._map: np.memmap | None = None
        self._file_id: tuple[int, int] | None = None

    @property
    def rows(self) -> int:
        """Rows the file can hold now (ids 0..rows-1; id 0 is never used, SQLite ids start at 1)."""
        return self.path.stat().st_size // self.row_bytes if self.path.exists() else 0

    def write(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Write rows and make them durable before the caller commits the catalog."""
        data = np.ascontiguousarray(vectors, dtype=ROW_DTYPE)
        created = not self.path.exists()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            order = np.argsort(ids)
            ids, data = np.asarray(ids)[order], data[order]
            # One write per run of consecutive ids (new files get consecutive ids).
            runs = np.flatnonzero(np.diff(ids) != 1) + 1
            for run_ids, run_data in zip(np.split(ids, runs), np.split(data, runs)):
                pwrite_all(fd, run_data.tobytes(), int(run_ids[0]) * self.row_bytes)
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            fsync_dir(self.path.parent)
        self._map = None

    def get(self, ids: np.ndarray) -> np.ndarray:
        """float32 rows for `ids` (ids beyond the file's end read as zeros)."""
        ids = np.asarray(ids, dtype=np.int64)
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        if len(ids) == 0:
            return out
        mapped = self._mapped(int(ids.max()) + 1)
        if mapped is None:
            return out
        ok = ids < mapped.shape[0]
        out[ok] = mapped[ids[ok]]
        return out

    def _mapped(self, need_rows: int) -> np.memmap | None:
        # Re-map only when the file has grown past what this reader has seen, or was replaced
        # (`index --rebuild` starts a new file; the old mapping would keep serving old vectors).
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._map = None
            return None
        if self._map is None or self._map.shape[0] < need_rows or self._file_id != (st.st_dev, st.st_ino):
            with open(self.path, "rb") as fh:
                st = os.fstat(fh.fileno())  # the size of the file actually mapped
                rows = st.st_size // self.row_bytes
                if rows == 0:
                    return None
                self._map = np.memmap(fh, dtype=ROW_DTYPE, mode="r", shape=(rows, self.dim))
                self._file_id = (st.st_dev, st.st_ino)
        return self._map

