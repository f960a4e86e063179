"""The vector store: float16 rows in one flat file, row i holding the embedding of catalog id i.

Rows are only ever written at ids the catalog has not yet marked 'indexed' (new or pending ids),
so a reader holding an older snapshot never sees a vector change under it, and a crash between the
vector write and the catalog commit leaves rows nobody points at rather than wrong ones.

Damage (a truncated or deleted file, bytes overwritten) is found by each row's norm, not by stored
checksums: every vector is L2-normalised before it is written, so a norm of 1 is a checksum that
costs no storage, is checked on exactly the rows a search reads (a per-batch checksum would need
the whole batch read), and catches what damage looks like: zeros (holes, a short or missing file)
have norm 0, and a row of overwritten bytes essentially never lands within NORM_TOLERANCE of 1.
Float16 rounding moves a unit norm far less than that tolerance. What it cannot see is a row with
only a few small components changed (an overwrite that ends inside it): its norm may stay within
the tolerance, and then so does the change to its scores, roughly; a checksum per row in the
catalog would catch that too, at the price of reading it with every candidate.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np

from indexer.library.files import fsync_dir, pwrite_all

ROW_DTYPE = np.float16
NORM_TOLERANCE = 0.005  # float16 rounding of a unit vector stays below 0.001
_SCAN_CHUNK = 65_536  # rows checked at a time by `damaged`


def valid_rows(rows: np.ndarray) -> np.ndarray:
    """Which rows are intact: unit norm (NaN and inf, as garbled float16 can hold, count as damage)."""
    # Squares summed in float32: float16 holds at most 65504, so no sum of them overflows it.
    with np.errstate(over="ignore", invalid="ignore"):
        squares = np.einsum("ij,ij->i", rows, rows, dtype=np.float32)
        return np.abs(np.sqrt(squares) - 1.0) <= NORM_TOLERANCE


class VectorStore:
    def __init__(self, path: Path, dim: int) -> None:
        self.path = path
        self.dim = dim
        self.row_bytes = dim * np.dtype(ROW_DTYPE).itemsize
        self._map: np.memmap | None = None
        self._file_id: tuple[int, int] | None = None
        self.damaged: set[int] = set()  # ids `checked` found damaged since this store was opened

    @property
    def rows(self) -> int:
        """Rows the file can hold now (ids 0..rows-1; id 0 is never used, SQLite ids start at 1)."""
        return self.path.stat().st_size // self.row_bytes if self.path.is_file() else 0

    def write(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Write rows and make them durable before the caller commits the catalog."""
        # Unit length is what the damage check relies on: made sure of here, whatever the encoder.
        vectors = np.asarray(vectors, dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        data = np.ascontiguousarray(vectors / np.where(norms > 0, norms, 1), dtype=ROW_DTYPE)
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
        mapped = self._mapped(int(ids.max()) + 1) if len(ids) else None
        if mapped is not None and ids.max() < mapped.shape[0]:  # the usual case: one gather, converted once
            return mapped[ids].astype(np.float32)
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        if mapped is None:
            return out
        ok = ids < mapped.shape[0]
        out[ok] = mapped[ids[ok]]
        return out

    def checked(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ids, float32 rows) of the intact rows among `ids`; the others join `damaged`."""
        ids = np.asarray(ids, dtype=np.int64)
        rows = self.get(ids)
        ok = valid_rows(rows)
        if not ok.all():
            self.damaged.update(ids[~ok].tolist())
        return ids[ok], rows[ok]

    def damaged_ids(self, ids: list[int]) -> list[int]:
        """The ids among `ids` whose rows are damaged, read in bounded chunks."""
        found: list[int] = []
        for start in range(0, len(ids), _SCAN_CHUNK):
            chunk = np.asarray(ids[start : start + _SCAN_CHUNK], dtype=np.int64)
            found += chunk[~valid_rows(self.get(chunk))].tolist()
        return found

    def _mapped(self, need_rows: int) -> np.memmap | None:
        # Re-map only when the file has grown past what this reader has seen, or was replaced
        # (`index --rebuild` starts a new file; the old mapping would keep serving old vectors).
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._map = None
            return None
        if not stat.S_ISREG(st.st_mode):  # a folder or a FIFO where the file should be: no rows
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
