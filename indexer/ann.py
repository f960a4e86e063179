"""The ANN stage: make the FAISS file hold exactly the indexed rows (a rebuildable cache, keyed by id).

Small libraries get an exact inner-product index. Large ones get IVF-PQ, whose candidates the
search layer always re-ranks exactly against the stored vectors, so quantisation only decides
which candidates are looked at, never the final scores. Reading the file: library/index_file.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from indexer.errors import PixseekError
from indexer.library.catalog import Catalog
from indexer.library.files import move_aside, replace_file
from indexer.library.index_file import FLAT, IVFPQ, NONE, DamagedIndex, checksum, describe, load, nprobe_for
from indexer.library.index_file import faiss as _faiss
from indexer.library.paths import LibraryPaths
from indexer.library.vectors import VectorStore

AUTO = "auto"
KINDS = (AUTO, FLAT, IVFPQ)

# Below this many vectors an exact scan takes a few milliseconds; IVF-PQ only adds recall risk.
AUTO_IVFPQ_MIN = 50_000
# The k-means sample: all vectors up to TRAIN_MIN, then TRAIN_PER_LIST per list (FAISS wants 30 to
# 256), up to MAX_TRAIN (3 GB of float32 at 512 dimensions, reached near 100M vectors).
TRAIN_MIN = 200_000
TRAIN_PER_LIST = 40
MAX_TRAIN = 1_500_000
ADD_CHUNK = 65_536  # vectors read and added at a time (128 MB of float32 at 512 dimensions)


def choose_kind(requested: str, n: int) -> str:
    if requested not in KINDS:
        raise PixseekError(f"unknown index type '{requested}'", f"choose one of {', '.join(KINDS)}")
    if requested == AUTO:
        return IVFPQ if n >= AUTO_IVFPQ_MIN else FLAT
    return requested


def ivfpq_params(n: int, dim: int) -> tuple[int, int, int]:
    """(nlist, m, nbits) for n vectors.

    nlist ~ 4 sqrt(n) (FAISS's guideline from 1M to 100M; at least 39 points per list, its k-means
    minimum); m sub-quantisers of ~8 dimensions each, so a code takes dim / 8 bytes (64 at 512
    dimensions: with its 8-byte id, under 100 bytes an image); nbits as large as the sample
    allows, up to FAISS's usual 8.
    """
    nlist = max(1, min(int(4 * math.sqrt(n)), n // 39))
    m = max(d for d in range(1, dim + 1) if dim % d == 0 and d <= max(1, dim // 8))
    nbits = int(max(1, min(8, math.floor(math.log2(max(2, n))) - 2)))
    return nlist, m, nbits


def train_size(n: int, nlist: int) -> int:
    """How many of n vectors train an IVF-PQ index of nlist lists."""
    return min(n, max(TRAIN_MIN, TRAIN_PER_LIST * nlist), MAX_TRAIN)


def build(ids: np.ndarray, dim: int, fetch: Callable[[np.ndarray], np.ndarray], kind: str, use_gpu: bool | None = None):
    """A FAISS index over the vectors of `ids` (FAISS ids = catalog ids).

    fetch(some_ids) returns their float32, L2-normalised vectors. It is called a chunk at a time
    (and once for the k-means sample), so building never holds a second copy of every vector:
    an IVF-PQ build of any size needs the sample plus one chunk, not the library.
    """
    faiss = _faiss()
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    n = len(ids)
    kind = choose_kind(kind, n)
    if use_gpu is None:
        use_gpu = faiss.get_num_gpus() > 0
    if kind == FLAT or n < 2:
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        _add(index, ids, fetch)
        return index
    nlist, m, nbits = ivfpq_params(n, dim)
    index = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, nlist, m, nbits, faiss.METRIC_INNER_PRODUCT)
    index.nprobe = nprobe_for(nlist)
    # Sorted, so the sample is read from the vector file front to back.
    size = train_size(n, nlist)
    sample = ids if n <= size else np.sort(np.random.default_rng(0).choice(ids, size, replace=False))
    if use_gpu:
        return _built_on_gpus(index, _rows(fetch, sample), ids, fetch)
    index.train(_rows(fetch, sample))
    _add(index, ids, fetch)
    return index


def _built_on_gpus(index, sample: np.ndarray, ids: np.ndarray, fetch: Callable[[np.ndarray], np.ndarray]):
    """Train and fill `index` on every GPU, then bring it back: the file written is the same CPU
    index, portable to machines without one. (Not measured on this project's machines.)"""
    faiss = _faiss()
    options = faiss.GpuMultipleClonerOptions()
    options.useFloat16 = True  # lookup tables in float16: GPU IVF-PQ needs them above 48 bytes a code
    gpu = faiss.index_cpu_to_all_gpus(index, co=options)
    gpu.train(sample)
    _add(gpu, ids, fetch)
    return faiss.index_gpu_to_cpu(gpu)


def update(index, ids: np.ndarray, dim: int, fetch: Callable[[np.ndarray], np.ndarray]) -> bool:
    """Make a trained IVF-PQ index hold exactly `ids` without training it again.

    A run that adds a few photos to a large library then pays for those photos, not for a
    k-means over the library (2 cores: 16 s at 60,000 vectors, minutes at 200,000). Returns
    False, changing nothing, for an index of another kind or size of vector, or when the library
    has grown or shrunk about twofold since the lists were sized (nlist ~ sqrt(n)): the caller
    then builds a new one.
    """
    faiss = _faiss()
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None or index.d != dim:
        return False
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if not ivf.nlist / math.sqrt(2) <= ivfpq_params(len(ids), dim)[0] <= ivf.nlist * math.sqrt(2):
        return False
    held = ids_in(index)
    gone = np.setdiff1d(held, ids)
    if len(gone):
        index.remove_ids(gone)
    _add(index, np.setdiff1d(ids, held), fetch)
    return True


def ids_in(index) -> np.ndarray:
    """The ids an IVF index holds, read from its inverted lists (sorted)."""
    faiss = _faiss()
    ivf = faiss.extract_index_ivf(index)
    lists = ivf.invlists
    parts = [
        faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy() for i in range(ivf.nlist) if lists.list_size(i)
    ]
    return np.sort(np.concatenate(parts)) if parts else np.empty(0, dtype=np.int64)


def _add(index, ids: np.ndarray, fetch: Callable[[np.ndarray], np.ndarray]) -> None:
    for start in range(0, len(ids), ADD_CHUNK):
        chunk = ids[start : start + ADD_CHUNK]
        index.add_with_ids(_rows(fetch, chunk), chunk)


def _rows(fetch: Callable[[np.ndarray], np.ndarray], ids: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(fetch(ids), dtype=np.float32)


def save(index, path: Path) -> tuple[int, str]:
    """Write to a temporary file and rename, so a crash never leaves half an index; returns (size, checksum)."""
    # Serialised in memory and written by Python, so a full disk is an OSError with its errno
    # (FAISS's own writer reports it as a RuntimeError).
    data = _faiss().serialize_index(index)
    move_aside(path)  # a folder where the file belongs would make the rename fail on every run
    replace_file(path, data)
    return len(data), checksum(data)


def refresh(catalog: Catalog, library: LibraryPaths, kind: str) -> dict[str, object]:
    """Make the ANN file hold exactly the indexed rows: updated in place when it can be, else built."""
    ids = np.array(catalog.indexed_ids(), dtype=np.int64)
    if len(ids) == 0:
        move_aside(library.ann)
        library.ann.unlink(missing_ok=True)
        catalog.mark_in_ann([])
        return dict(NONE)
    dim = catalog.settings().dim
    fetch = VectorStore(library.vectors, dim).get
    index = _updated_in_place(library, ids, dim, fetch, kind, catalog.settings().ann_record)
    rebuilt = index is None
    if rebuilt:
        index = build(ids, dim, fetch, kind)
    size, digest = save(index, library.ann)
    # Recorded before the in_ann marks: a crash between the two leaves the marks stale, which
    # makes the next run rebuild and searches meanwhile score exactly, without a damage warning.
    catalog.save_settings(ann_size=size, ann_checksum=digest)
    catalog.mark_in_ann(ids.tolist())
    return {**describe(index), "rebuilt": rebuilt}


def _updated_in_place(
    library: LibraryPaths,
    ids: np.ndarray,
    dim: int,
    fetch: Callable[[np.ndarray], np.ndarray],
    kind: str,
    catalog_record: tuple[int, str] | None,
):
    """The library's IVF-PQ index brought up to date without training, or None to build anew.

    Exact indexes are always rebuilt: they need no training, so that costs only the copy.
    """
    if choose_kind(kind, len(ids)) != IVFPQ or not library.ann.is_file():
        return None
    try:
        index = load(library.ann, catalog_record)
    except (DamagedIndex, OSError):  # damaged: a new one replaces it
        return None
    return index if update(index, ids, dim, fetch) else None
