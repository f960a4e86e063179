"""The FAISS index builder: every vector in, read a bounded chunk at a time, ids = catalog ids.

These check structure (what goes into the index and how it is read), so plain random unit
vectors stand in for embeddings; meaning is checked in test_semantic.py with the demo model.
"""

from __future__ import annotations

import numpy as np
import pytest

from indexer import ann
from indexer.library import index_file

N, DIM = 1_000, 16


def unit_vectors(n: int, dim: int) -> np.ndarray:
    v = np.random.default_rng(7).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.mark.parametrize("kind", [ann.FLAT, ann.IVFPQ])
def test_build_reads_vectors_in_bounded_chunks_and_indexes_every_id(monkeypatch, kind):
    monkeypatch.setattr(ann, "ADD_CHUNK", 64)
    monkeypatch.setattr(ann, "MAX_TRAIN", 300)
    vectors = unit_vectors(N + 1, DIM)  # row i is catalog id i; id 0 is never used
    ids = np.arange(1, N + 1, dtype=np.int64)
    fetched: list[np.ndarray] = []

    def fetch(some: np.ndarray) -> np.ndarray:
        fetched.append(np.array(some))
        return vectors[some]

    index = ann.build(ids, DIM, fetch, kind, use_gpu=False)

    assert index.ntotal == N
    assert index_file.describe(index)["type"] == kind
    sizes = [len(f) for f in fetched]
    if kind == ann.IVFPQ:
        sample, fetched = fetched[0], fetched[1:]
        assert len(sample) == 300 and np.all(np.diff(sample) > 0)  # sampled, read front to back
        sizes = sizes[1:]
    assert max(sizes) == 64
    assert np.array_equal(np.concatenate(fetched), ids)  # every id added exactly once, in order
    found = [index_file.search(index, vectors[i], 10)[0] for i in ids[:100]]
    if kind == ann.FLAT:
        assert all(f[0] == i for f, i in zip(found, ids[:100]))
    else:  # candidates only: the search layer re-ranks them exactly
        assert sum(i in f for f, i in zip(found, ids[:100])) >= 90


def test_ivfpq_params_leave_enough_training_points_per_list():
    for n in (100, 5_000, 200_000):
        nlist, m, nbits = ann.ivfpq_params(n, 512)
        assert n // nlist >= 39 and 512 % m == 0 and 1 <= nbits <= 8


def _ivfpq(n: int, vectors: np.ndarray):
    return ann.build(np.arange(1, n + 1), DIM, lambda some: vectors[some], ann.IVFPQ, use_gpu=False)


def test_update_drops_and_adds_ids_in_a_trained_index_without_training_it_again():
    import faiss

    vectors = unit_vectors(N + 201, DIM)
    index = _ivfpq(N, vectors)
    quantizer = faiss.extract_index_ivf(index).quantizer
    centroids = quantizer.reconstruct_n(0, quantizer.ntotal)
    now = np.concatenate([np.arange(101, N + 1), np.arange(N + 1, N + 201)])  # 100 gone, 200 new
    fetched: list[np.ndarray] = []

    def fetch(some: np.ndarray) -> np.ndarray:
        fetched.append(np.array(some))
        return vectors[some]

    assert ann.update(index, now, DIM, fetch)
    assert np.array_equal(ann.ids_in(index), now)
    assert np.array_equal(np.concatenate(fetched), np.arange(N + 1, N + 201))  # only new vectors are read
    np.testing.assert_array_equal(quantizer.reconstruct_n(0, quantizer.ntotal), centroids)
    assert all(i in index_file.search(index, vectors[i], 10)[0] for i in (N + 1, N + 100, N + 200))
    assert not any(i in index_file.search(index, vectors[i], 10)[0] for i in (1, 50, 100))


def test_update_declines_an_exact_index_and_a_library_that_doubled():
    vectors = unit_vectors(2 * N + 1, DIM)
    index = _ivfpq(N, vectors)
    assert not ann.update(index, np.arange(1, 2 * N + 1), DIM, lambda some: vectors[some])
    assert np.array_equal(ann.ids_in(index), np.arange(1, N + 1))  # left as it was
    flat = ann.build(np.arange(1, N + 1), DIM, lambda some: vectors[some], ann.FLAT, use_gpu=False)
    assert not ann.update(flat, np.arange(1, N + 1), DIM, lambda some: vectors[some])
