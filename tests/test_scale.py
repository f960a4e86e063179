"""Search whose cost does not grow with the library: filtered queries that fill k by every
path (exact, restricted IVF search, over-fetching), no full-table scan or count per query,
the page's choices cached until an index run commits, and the IVF path's recall.

The library is synthetic (tests/harness.py `synthetic_library`): what is checked is retrieval
against exact search over the same vectors, not meaning, so no model is involved. Its size
is small; the thresholds that pick a path are lowered so that each path runs on it.
"""

from __future__ import annotations

import re
import sqlite3

import numpy as np
import pytest

from indexer import ann
from indexer.library import LibraryPaths, index_file
from indexer.library.catalog import Catalog
from indexer.library.filters import Filters
from indexer.library.rows import INDEXED, ImageRow
from search import Library, retrieve
from tests.harness import SYNTH_DAYS, Synthetic, synthetic_library

N, DIM, K = 3000, 64, 10


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Synthetic:
    return synthetic_library(tmp_path_factory.mktemp("scale") / "lib", N, DIM, kind="ivfpq", batch=1000)


@pytest.fixture
def library(synthetic):
    with Library.open(synthetic.root) as lib:
        yield lib


def passing_filters(lib: Synthetic) -> dict[str, tuple[Filters, np.ndarray]]:
    """name -> (filters, mask over ids of the images passing them)."""
    folder = int(np.bincount(lib.folder[1:]).argmax())  # the fullest folder: a few images
    return {
        "folder": (Filters(folder=str(lib.folder_path(folder))), lib.folder == folder),
        "camera": (Filters(camera=lib.camera_model(3).lower()), lib.camera == 3),
        "dates": (
            Filters(date_from=lib.day_iso(100), date_to=lib.day_iso(SYNTH_DAYS // 2)),
            (lib.day >= 100) & (lib.day <= SYNTH_DAYS // 2),
        ),
        "camera and dates": (
            Filters(camera=lib.camera_model(3), date_from=lib.day_iso(0), date_to=lib.day_iso(SYNTH_DAYS // 4)),
            (lib.camera == 3) & (lib.day <= SYNTH_DAYS // 4),
        ),
    }


def exact_best(library: Library, query: np.ndarray, mask: np.ndarray, k: int) -> set[int]:
    ids = np.flatnonzero(mask[1:]) + 1
    return set(retrieve.exact(library.vectors, query, ids, k)[0].tolist())


PATHS = {
    # name: (EXACT_FILTER_MAX, COUNT_MAX), so that every filter below takes that path
    "exact": (10**9, 10**9),
    "restricted": (0, 10**9),
    "over-fetched": (0, 0),
}


@pytest.mark.parametrize("path", PATHS)
def test_filtered_queries_return_k_when_k_pass_by_every_path(library, synthetic, monkeypatch, path):
    exact_max, count_max = PATHS[path]
    monkeypatch.setattr(retrieve, "EXACT_FILTER_MAX", exact_max)
    monkeypatch.setattr(retrieve, "COUNT_MAX", count_max)
    monkeypatch.setattr(retrieve, "EXACT_MAX", 0)  # the unfiltered path too goes through the index
    taken = []
    for name in ("_restricted", "_over_fetched"):
        monkeypatch.setattr(retrieve, name, spy(getattr(retrieve, name), taken))
    queries = synthetic.vectors(np.random.default_rng(5), 8)
    for name, (filters, mask) in passing_filters(synthetic).items():
        passing = int(mask[1:].sum())
        assert passing >= 3, name
        for query in queries:
            results = library.search_vector(query, k=K, filters=filters)
            assert len(results) == min(K, passing), name
            assert all(mask[r.id] for r in results), name
            # The best of the passing images, by exact score: the shortlist held them.
            found, best = {r.id for r in results}, exact_best(library, query, mask, K)
            assert len(found & best) >= 0.9 * len(best), name
    assert ("_over_fetched" in taken) == (path == "over-fetched")


def spy(function, calls: list[str]):
    def wrapper(*args, **kwargs):
        calls.append(function.__name__)
        return function(*args, **kwargs)

    return wrapper


def test_ivf_recall_against_exact_search(library, synthetic, monkeypatch):
    monkeypatch.setattr(retrieve, "EXACT_MAX", 0)
    assert library.info().index["type"] == "ivfpq"
    queries = synthetic.vectors(np.random.default_rng(6), 30)
    everyone = np.ones(N + 1, dtype=bool)
    recall = np.mean(
        [len({r.id for r in library.search_vector(q, k=K)} & exact_best(library, q, everyone, K)) / K for q in queries]
    )
    assert recall >= 0.97


def test_the_shortlist_grows_as_the_square_root_of_the_library_past_its_flat_size(library, synthetic, monkeypatch):
    monkeypatch.setattr(retrieve, "EXACT_MAX", 0)
    monkeypatch.setattr(retrieve, "SHORTLIST_MIN", 20)
    monkeypatch.setattr(retrieve, "RERANK_FACTOR", 1)
    asked: list[int] = []
    search = index_file.search
    monkeypatch.setattr(index_file, "search", lambda index, q, k, params=None: asked.append(k) or search(index, q, k))
    query = synthetic.vectors(np.random.default_rng(7), 1)[0]
    for flat_up_to in (N, N // 4, N // 100):  # the library is 1, 4 and 100 times that
        monkeypatch.setattr(retrieve, "SHORTLIST_FLAT_UP_TO", flat_up_to)
        assert len(library.search_vector(query, k=K)) == K
    assert asked == [20, 40, 200]


def plans(conn: sqlite3.Connection, statements: list[str]) -> list[str]:
    """Every step of every statement's query plan, as SQLite words it."""
    steps = []
    for sql in statements:
        if sql.lstrip().upper().startswith(("SELECT", "WITH")):
            steps += [f"{row[3]}   <- {sql[:120]}" for row in conn.execute("EXPLAIN QUERY PLAN " + sql)]
    return steps


def traced(library: Library, run) -> list[str]:
    statements: list[str] = []
    library.catalog.db.conn.set_trace_callback(statements.append)
    try:
        run()
    finally:
        library.catalog.db.conn.set_trace_callback(None)
    return statements


def test_query_path_reads_no_whole_table_and_counts_no_whole_table(library, synthetic, monkeypatch):
    monkeypatch.setattr(retrieve, "EXACT_MAX", 0)
    query = synthetic.vectors(np.random.default_rng(7), 1)[0]
    searches = [Filters(), *(f for f, _ in passing_filters(synthetic).values())]

    def run() -> None:
        for filters in searches:
            library.search_vector(query, k=K, filters=filters)
            library.search(like=1, k=K, filters=filters)  # the query path of `pixseek search --like`

    run()  # the cached choices (cameras, the z-score sample) are made once, here
    statements = traced(library, run)
    assert statements
    steps = plans(library.catalog.db.conn, statements)
    assert not [s for s in steps if re.match(r"SCAN (images|i|t|tags)\b", s)], steps
    # Nor the status index alone unbounded: that is every indexed image.
    whole = [s for s in steps if re.search(r"INDEX \S+ \(status=\?\)\s+<-", s) and "LIMIT" not in s.upper()]
    assert not whole, whole
    counts = [s for s in statements if re.search(r"COUNT\(\*\)", s, re.I) and "LIMIT" not in s.upper()]
    assert not counts, counts


def test_page_choices_are_cached_until_an_index_run_commits(synthetic, tmp_path):
    with Library.open(synthetic.root) as library:
        first = (library.folder_counts(), library.cameras(), library.date_span(), library.folders())
        again = traced(library, lambda: (library.folder_counts(), library.cameras(), library.date_span()))
        assert not [s for s in again if "GROUP BY" in s or "DISTINCT" in s or "MIN(" in s], again
        assert sum(n for _, n in first[0]) == N
        assert first[1] == [f"Synthetic {synthetic.camera_model(c)}" for c in sorted(set(synthetic.camera[1:]))]
        # Another connection commits, as an index run does: the next read sees its rows.
        new = synthetic.folder_path(9999)
        with Catalog(LibraryPaths.at(synthetic.root).catalog) as writer:
            row = ImageRow(
                id=N + 1,
                path=str(new / "x.jpg"),
                folder=str(new),
                taken_at="2030-01-01T00:00:00",
                camera_make="Other",
                camera_model="Cam",
                status=INDEXED,
            )
            writer.insert_rows([row])
        try:
            assert (str(new), 1) in library.folder_counts() and str(new) in library.folders()
            assert "Other Cam" in library.cameras()
            assert library.date_span()[1] == "2030-01-01"
        finally:
            with Catalog(LibraryPaths.at(synthetic.root).catalog) as writer, writer.transaction():
                writer.delete([N + 1])


def test_large_index_files_are_memory_mapped_and_checked_by_size(synthetic, monkeypatch):
    paths = LibraryPaths.at(synthetic.root)
    record = Catalog(paths.catalog).settings().ann_record
    monkeypatch.setattr(index_file, "MMAP_MIN", 0)
    mapped = index_file.load(paths.ann, record, mapped=True)
    read = index_file.load(paths.ann, record)
    query = synthetic.vectors(np.random.default_rng(8), 1)[0]
    assert np.array_equal(index_file.search(mapped, query, K)[0], index_file.search(read, query, K)[0])
    with pytest.raises(index_file.DamagedIndex, match="bytes"):
        index_file.load(paths.ann, (record[0] + 1, record[1]), mapped=True)


@pytest.mark.parametrize("n", [1_000_000, 10_000_000, 100_000_000])
def test_ivfpq_parameters_hold_codes_under_100_bytes_and_train_every_list(n):
    nlist, m, nbits = ann.ivfpq_params(n, 512)
    assert m * nbits / 8 + 8 <= 100  # a code and its id
    assert 30 * nlist <= ann.train_size(n, nlist) <= ann.MAX_TRAIN
    assert 1 < index_file.nprobe_for(nlist) < nlist / 8


def test_cameras_are_found_by_stepping_through_the_index(tmp_path):
    rows = [
        ("Canon", "EOS R5", INDEXED),
        ("Canon", None, INDEXED),
        ("Canon", "EOS 5D", INDEXED),
        ("Canon", "EOS 5D", INDEXED),
        (None, "Phone", INDEXED),
        (None, None, INDEXED),
        ("Nikon", "Z6", "skipped"),  # not indexed: no choice
        ("Apple", "iPhone 12", INDEXED),
    ]
    with Catalog(tmp_path / "catalog.db", create=True) as catalog:
        catalog.insert_rows(
            [
                ImageRow(id=i, path=f"/p/{i}.jpg", folder="/p", camera_make=make, camera_model=model, status=status)
                for i, (make, model, status) in enumerate(rows, 1)
            ]
        )
        indexed = {(make, model) for make, model, status in rows if status == INDEXED and (make or model)}
        assert catalog.cameras() == sorted(indexed, key=lambda pair: [(p is not None, p or "") for p in pair])
        found = catalog.filtered_ids(Filters(camera="eos"))
        assert found == [i for i, (make, model, _) in enumerate(rows, 1) if model and "EOS" in model]
