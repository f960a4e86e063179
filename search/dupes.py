"""Duplicate photos: the same file twice (content hash), the same picture resized or re-encoded
(perceptual hash), and optionally cropped or edited (embedding cosine). Nothing is decoded here:
the hashes are computed at index time and the vectors are already stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from indexer.errors import PixseekError
from indexer.library import index_file
from indexer.library.catalog import Catalog
from indexer.library.rows import ImageRow
from indexer.library.vectors import VectorStore

# pHashes are imagehash's, 256 bits (hash_size 16, computed at index time by indexer/reader.py).
# Measured on caltech101-bench: copies resized to 15-70% and re-encoded at JPEG quality 60-85 lie
# within 14 bits of their original; distinct photos come within 16 only when they are nearly the
# same shot. (The 64-bit default pHash could not separate those: it put different objects posed
# alike on a white background within 2 bits.) Tiny, flat pictures such as the generated shapes
# are less stable: a third of their copies need more, and --max-distance allows up to 32.
DEFAULT_MAX_DISTANCE = 16
MAX_DISTANCE_LIMIT = 32  # beyond this, unrelated photos on plain backgrounds start to match
_QUERY_CHUNK = 4096  # queries per FAISS range search: bounds the result lists held at once


def phash_bytes(phash: str) -> np.ndarray:
    return np.frombuffer(bytes.fromhex(phash), dtype=np.uint8)


def hamming(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


def is_near(a: ImageRow, b: ImageRow, max_distance: int = DEFAULT_MAX_DISTANCE) -> bool:
    """Same bytes, or perceptual hashes within `max_distance` bits."""
    if a.hash is not None and a.hash == b.hash:
        return True
    return a.phash is not None and b.phash is not None and hamming(a.phash, b.phash) <= max_distance


@dataclass
class DupeGroup:
    kind: str  # "exact": every file has the same bytes; "near": the same picture, different files
    images: list[ImageRow]  # largest first: the copy most worth keeping leads

    def as_dict(self) -> dict[str, Any]:
        keep = ("id", "path", "width", "height", "size", "hash", "phash")
        return {"kind": self.kind, "images": [{k: getattr(r, k) for k in keep} for r in self.images]}


def check_max_distance(max_distance: int) -> None:
    if not 0 <= max_distance <= MAX_DISTANCE_LIMIT:
        raise PixseekError(
            f"--max-distance must be between 0 and {MAX_DISTANCE_LIMIT}, not {max_distance}",
            f"{DEFAULT_MAX_DISTANCE} finds resized and re-encoded copies",
        )


def phash_pairs(hashes: np.ndarray, max_distance: int) -> np.ndarray:
    """(i, j) index pairs, i < j, of hashes ((n, bytes) uint8) within `max_distance` bits.

    FAISS's multi-index hashing: the bits are cut into at least max_distance + 1 blocks, and two
    hashes that differ in at most max_distance bits agree exactly on at least one block, so only
    hashes sharing a block are compared, never all pairs. Seconds for 100,000 photos.
    """
    faiss = index_file.faiss()

    bits = hashes.shape[1] * 8
    tables = max(max_distance + 1, -(-bits // 64))  # FAISS keys a table by at most 64 bits
    index = faiss.IndexBinaryMultiHash(bits, tables, bits // tables)
    index.add(hashes)
    return _range_pairs(index, hashes, max_distance + 1)  # FAISS keeps distances below the radius


def cosine_pairs(vectors: np.ndarray, min_cosine: float) -> np.ndarray:
    """(i, j) index pairs, i < j, of rows whose cosine similarity is above `min_cosine`."""
    faiss = index_file.faiss()

    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    return _range_pairs(index, vectors, min_cosine)


def _range_pairs(index, queries: np.ndarray, radius: float) -> np.ndarray:
    found = [np.empty((0, 2), dtype=np.int64)]
    for start in range(0, len(queries), _QUERY_CHUNK):
        lims, _, nbrs = index.range_search(queries[start : start + _QUERY_CHUNK], radius)
        rows = np.repeat(np.arange(start, start + len(lims) - 1), np.diff(lims).astype(np.int64))
        keep = rows < nbrs
        found.append(np.stack([rows[keep], nbrs[keep]], axis=1))
    return np.concatenate(found)


def find_duplicates(
    catalog: Catalog,
    vectors: VectorStore | None = None,
    max_distance: int = DEFAULT_MAX_DISTANCE,
    min_cosine: float | None = None,
) -> list[DupeGroup]:
    """Groups of indexed images that are copies of each other, exact groups first.

    Images pair up by equal content hash, by pHash within `max_distance` bits, and, when
    `min_cosine` is given, by embedding cosine (this also catches crops and edits pHash misses,
    and works for images indexed before pHashes were stored). Groups are the connected pieces.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    check_max_distance(max_distance)
    if min_cosine is not None and not 0 < min_cosine < 1:
        raise PixseekError(f"--similarity must be between 0 and 1, not {min_cosine}", "try 0.95")
    rows = catalog.duplicate_keys()
    ids = [r[0] for r in rows]
    pairs = [_same_value_pairs([r[1] for r in rows])]
    with_phash = np.array([i for i, r in enumerate(rows) if r[2]], dtype=np.int64)
    if len(with_phash):
        hashes = np.stack([phash_bytes(rows[i][2]) for i in with_phash])
        pairs.append(with_phash[phash_pairs(hashes, max_distance)])
    if min_cosine is not None and vectors is not None and ids:
        pairs.append(cosine_pairs(vectors.get(np.array(ids)), min_cosine))
    edges = np.concatenate(pairs)
    if len(edges) == 0:
        return []
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(len(ids), len(ids)))
    _, label = connected_components(graph, directed=False)
    members: dict[int, list[int]] = {}
    for i in np.unique(edges):
        members.setdefault(int(label[i]), []).append(ids[i])
    groups = [_group(catalog, group_ids) for group_ids in members.values()]
    return sorted(groups, key=lambda g: (g.kind != "exact", g.images[0].path))


def _same_value_pairs(values: list[str | None]) -> np.ndarray:
    first: dict[str, int] = {}
    pairs = []
    for i, value in enumerate(values):
        if value is None:
            continue
        if value in first:
            pairs.append((first[value], i))
        else:
            first[value] = i
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


def _group(catalog: Catalog, ids: list[int]) -> DupeGroup:
    rows = catalog.rows_by_id(ids)
    rows.sort(key=lambda r: (-(r.width or 0) * (r.height or 0), -r.size, r.path))
    same = len({(r.hash, r.phash) for r in rows}) == 1 and rows[0].hash is not None
    kind = "exact" if same else "near"
    return DupeGroup(kind, rows)
