"""The read side of the ANN file (index.faiss): load it, search it, describe it.

It is a cache over the stored vectors, keyed by catalog id; indexer/ann.py builds and replaces it
and records its size and checksum in the settings, so a damaged file (truncated, zeroed, garbled,
or garbled yet still loadable, which would silently drop matches) is told apart and searches
score exactly until an index run rebuilds it.
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
from pathlib import Path

import numpy as np

FLAT = "flat"
IVFPQ = "ivfpq"
NONE = {"type": "none", "vectors": 0}  # how a library without an index file describes it
# An index file at least this big is memory-mapped for searching rather than read: its inverted
# lists stay in the page cache, shared by every process and given back under memory pressure.
MMAP_MIN = 256 * 1024 * 1024


def nprobe_for(nlist: int) -> int:
    """Inverted lists a query probes: sqrt(nlist), so a query reads ~1/sqrt(nlist) of the codes.
    Recall then depends on the shortlist the exact re-rank reads (search/retrieve.py), not on it."""
    return max(1, min(nlist, max(16, round(math.sqrt(nlist)))))


def faiss():
    """The faiss module (heavy: only commands that build or search an index import it)."""
    if "faiss" not in sys.modules:
        # Each query scores its shortlist with NumPy's BLAS threads right after a FAISS search;
        # FAISS's OpenMP threads, left spinning after it, would take the cores from them. Asleep
        # instead, they cost a wake-up per parallel region: nothing next to a k-means or a batch.
        # The variable is read once, as FAISS's own libgomp loads, and set for it alone.
        preset = os.environ.get("OMP_WAIT_POLICY")
        os.environ["OMP_WAIT_POLICY"] = preset or "PASSIVE"
        try:
            import faiss
        finally:
            if preset is None:
                del os.environ["OMP_WAIT_POLICY"]
    import faiss

    return faiss


class DamagedIndex(Exception):
    """The ANN file is not the one last written; str() says how."""


def checksum(data: bytes | memoryview) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _read_checked(path: Path, record: tuple[int, str] | None) -> bytes:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except IsADirectoryError:
        raise DamagedIndex(f"{path.name} is a folder, not an index file") from None
    if record is not None:
        size, digest = record
        if len(data) != size:
            raise DamagedIndex(f"{path.name} is {len(data)} bytes, {size} were written")
        if checksum(data) != digest:
            raise DamagedIndex(f"{path.name} does not match its recorded checksum")
    return data


def load(path: Path, record: tuple[int, str] | None = None, *, mapped: bool = False):
    """The index in `path`, checked against `record` (size, checksum) when given; raises DamagedIndex.

    mapped: memory-map a file of MMAP_MIN bytes or more, read-only (for searching, not updating).
    Its checksum is then not computed (that would read all of it); its size is still checked.
    """
    try:
        size = path.stat().st_size
        if mapped and size >= MMAP_MIN and path.is_file():
            if record is not None and size != record[0]:
                raise DamagedIndex(f"{path.name} is {size} bytes, {record[0]} were written")
            index = faiss().read_index(str(path), faiss().IO_FLAG_MMAP | faiss().IO_FLAG_READ_ONLY)
        else:
            index = faiss().deserialize_index(np.frombuffer(_read_checked(path, record), dtype=np.uint8))
    except RuntimeError:  # FAISS reports a file it cannot parse with a RuntimeError
        raise DamagedIndex(f"{path.name} cannot be read") from None
    ivf = faiss().try_extract_index_ivf(index)
    if ivf is not None:  # files written before nprobe_for carry the nprobe of their day
        ivf.nprobe = nprobe_for(ivf.nlist)
    return index


def search(index, query: np.ndarray, k: int, params=None) -> tuple[np.ndarray, np.ndarray]:
    """(ids, approximate scores) of up to k candidates for one query vector; params: FAISS
    SearchParameters (an IDSelector, an nprobe)."""
    q = np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32)
    scores, ids = index.search(q, min(k, max(1, index.ntotal)), params=params)
    keep = ids[0] >= 0
    return ids[0][keep], scores[0][keep]


def describe(index) -> dict[str, object]:
    ivf = faiss().try_extract_index_ivf(index)
    if ivf is None:
        return {"type": FLAT, "vectors": int(index.ntotal)}
    pq = faiss().downcast_index(ivf)
    return {
        "type": IVFPQ,
        "vectors": int(index.ntotal),
        "nlist": int(ivf.nlist),
        "nprobe": int(ivf.nprobe),
        "m": int(pq.pq.M) if hasattr(pq, "pq") else None,
        "nbits": int(pq.pq.nbits) if hasattr(pq, "pq") else None,
    }


class CachedIndex:
    """The index file, re-read when an index run has replaced it since (a page keeps a library open).

    `record` is the (size, checksum) the settings hold for it; `damage` says why the file was not
    used (None: it was, or there is none).
    """

    def __init__(self, path: Path, record: tuple[int, str] | None = None) -> None:
        self.path = path
        self.record = record
        self.damage: str | None = None
        self._index = None
        self._key: tuple | None = None
        self._checked: tuple | None = None

    def get(self):
        """The loaded, intact index, or None when the library has no usable index file."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._index, self._key, self.damage = None, None, None
            return None
        key = (st.st_ino, st.st_size, st.st_mtime_ns, self.record)
        if key != self._key:
            self._key = key
            try:
                self._index, self.damage = load(self.path, self.record, mapped=True), None
            except (DamagedIndex, OSError) as exc:
                self._index, self.damage = None, str(exc)
        return self._index

    def check(self) -> None:
        """Set `damage` from the file alone, without FAISS: for libraries small enough that
        searches score every vector and never load the index, its damage is still reported."""
        try:
            st = self.path.stat()
        except OSError:
            return
        key = (st.st_ino, st.st_size, st.st_mtime_ns, self.record)
        if self.record is None or key == self._checked:
            return
        self._checked = key  # read again only once an index run has replaced the file
        try:
            _read_checked(self.path, self.record)
            self.damage = None
        except (DamagedIndex, OSError) as exc:
            self.damage = str(exc)


def matches(path: Path, record: tuple[int, str] | None) -> bool:
    """Whether `path` is an intact copy of the index last written (an index run rebuilds it otherwise)."""
    try:
        _read_checked(path, record) if record is not None else load(path)
    except (DamagedIndex, OSError):
        return False
    return True
