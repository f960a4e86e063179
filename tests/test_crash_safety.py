"""Killing `pixseek index` anywhere loses nothing; Ctrl-C stops cleanly; runs and searches share a
library safely. Every run is a real `pixseek index` process (forked after the slow imports, see
tests/harness.py), faults come from outside, and the library is checked file by file."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest

from indexer.library import LibraryPaths
from indexer.runner import run_index
from pixseek_data.shapes import caption, generate_gallery
from search import Library
from tests.conftest import TEST_WORKERS
from tests.harness import assert_consistent, env, forker, pixseek_env, read_state  # noqa: F401 (fixtures)

COMMIT_EVERY = 8  # 48 images: six commits to crash between
QUERY = caption("red", "circle")


@pytest.fixture(scope="module")
def gallery(tmp_path_factory):
    folder = tmp_path_factory.mktemp("crash-gallery")
    return folder, generate_gallery(folder, per_class=2, seed=7)


def _index_args(folder: Path, lib: Path, workers: int = 0) -> list[str]:
    return [
        "index",
        str(folder),
        "--library",
        str(lib),
        "--model",
        "demo",
        "--workers",
        str(workers),
        "--batch-size",
        str(COMMIT_EVERY),
    ]


def _kept_vectors(lib: Path) -> dict[str, bytes]:
    """path -> stored vector bytes of every committed ('indexed') image."""
    if not (lib / "catalog.db").exists():
        return {}
    state = read_state(lib)
    return {p: state.vectors[i].tobytes() for p, (i, st, _, _) in state.rows.items() if st == "indexed"}


@pytest.fixture(scope="module")
def query(demo_encoder) -> np.ndarray:
    return demo_encoder.encode_texts([QUERY])[0]


def _exact_ranking(lib: Path, paths: set[str], query: np.ndarray) -> list[str]:
    """`paths` ranked for `query` by brute force over their vectors, read straight from the files."""
    state = read_state(lib)
    ordered = sorted(paths)
    scores = state.vectors[[state.rows[p][0] for p in ordered]] @ query
    return [ordered[i] for i in np.argsort(-scores, kind="stable")]


def _search(lib: Path, query: np.ndarray, k: int = 100) -> list[str]:
    library = Library.open(lib)
    try:
        return [r.path for r in library.search_vector(query, k=k)]
    finally:
        library.close()


def _search_sees_exactly(lib: Path, committed: set[str], query: np.ndarray) -> None:
    assert _search(lib, query) == _exact_ranking(lib, committed, query)


def _pending_count(lib: Path) -> int:
    return len(read_state(lib).ids("pending")) if (lib / "catalog.db").exists() else 0


def _indexed_count(lib: Path) -> int:
    try:
        conn = sqlite3.connect(f"{(lib / 'catalog.db').as_uri()}?mode=ro", uri=True)
        try:
            return conn.execute("SELECT COUNT(*) FROM images WHERE status = 'indexed'").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:  # not created yet
        return 0


# Crash points in the order a run meets them; each run of the chain resumes the one killed before.
# The update point is counted past the resumed run's own updates of its pending rows (one per row),
# so that it lands inside the writer's first transaction.
CRASH_CHAIN = [
    ("migrate", lambda lib: 1),  # first schema migration, before its commit
    ("plan", lambda lib: 1),  # pending ids given, before that commit
    ("embed", lambda lib: 2),  # before the second model batch (the first is committed)
    ("vectors-torn", lambda lib: 2),  # half of a vector batch written
    ("update", lambda lib: _pending_count(lib) + COMMIT_EVERY // 2),  # inside a writer transaction
    ("vectors", lambda lib: 2),  # vectors durable, their rows not committed
    ("flushed", lambda lib: 1),  # right after a commit
    ("ann-torn", lambda lib: 1),  # index file half written
    ("ann-renamed", lambda lib: 1),  # index file in place, in_ann marks not yet updated
]


def test_sigkill_at_every_stage_loses_nothing_and_the_rerun_finishes(tmp_path, env, forker, gallery, query):
    folder, records = gallery
    lib = tmp_path / "lib"
    kept: dict[str, bytes] = {}
    for point, hit in CRASH_CHAIN:
        run = forker.run(_index_args(folder, lib), env, fault=f"{point}:{hit(lib)}:kill", commit_every=COMMIT_EVERY)
        assert run.returncode == -signal.SIGKILL, (point, run.stderr)
        now = _kept_vectors(lib)
        assert {p: now.get(p) for p in kept} == kept, f"images lost or re-embedded after a kill at {point}"
        if now:  # searchable as it stands, before any repair, showing exactly what was committed
            _search_sees_exactly(lib, set(now), query)
        kept = now
    assert 0 < len(kept) == len(records)  # the chain got through every stage

    report = run_index(LibraryPaths.at(lib), [folder], workers=TEST_WORKERS)
    assert report.embedded == 0 and report.index["vectors"] == len(records)
    assert_consistent(lib, {str(r.path): "indexed" for r in records})
    _search_sees_exactly(lib, {str(r.path) for r in records}, query)


@pytest.mark.parametrize("fault", ["flushed:2:kill", "ann-torn:1:kill"], ids=["mid-run", "before-the-index"])
def test_a_killed_update_of_an_existing_library_reruns_only_what_was_missing(
    tmp_path, env, forker, gallery, demo_spec, fault
):
    """Half the photos were indexed before; the run adding the rest is killed, then run again."""
    _, records = gallery
    photos = tmp_path / "photos"
    photos.mkdir()
    half = len(records) // 2
    for r in records[:half]:
        (photos / r.path.name).write_bytes(r.path.read_bytes())
    lib = tmp_path / "lib"
    run_index(LibraryPaths.at(lib), [photos], model=demo_spec, workers=TEST_WORKERS)
    for r in records[half:]:
        (photos / r.path.name).write_bytes(r.path.read_bytes())

    killed = forker.run(_index_args(photos, lib), env, fault=fault, commit_every=COMMIT_EVERY)
    assert killed.returncode == -signal.SIGKILL
    kept = _kept_vectors(lib)
    assert half < len(kept)
    report = run_index(LibraryPaths.at(lib), [photos], workers=TEST_WORKERS)
    assert report.embedded == len(records) - len(kept)
    assert report.index["vectors"] == len(records)  # the index is brought up to date even with nothing to embed
    assert {p: v for p, v in _kept_vectors(lib).items() if p in kept} == kept
    assert_consistent(lib, {str(photos / r.path.name): "indexed" for r in records})


def test_sigkill_from_outside_at_arbitrary_moments(tmp_path, env, forker, gallery, demo_spec):
    """Asynchronous kills, wherever each run happens to be once its next rows have landed."""
    folder, records = gallery
    lib = tmp_path / "lib"
    kept: dict[str, bytes] = {}
    for target in (1, 2 * COMMIT_EVERY, 4 * COMMIT_EVERY):
        run = forker.start(_index_args(folder, lib), env, commit_every=COMMIT_EVERY)
        while run.poll() is None and _indexed_count(lib) < target:
            time.sleep(0.005)
        os.kill(run.pid, signal.SIGKILL)
        run.wait()
        now = _kept_vectors(lib)
        assert {p: now.get(p) for p in kept} == kept
        kept = now
    run_index(LibraryPaths.at(lib), [folder], workers=TEST_WORKERS)
    after = _kept_vectors(lib)
    assert {p: after[p] for p in kept} == kept
    assert_consistent(lib, {str(r.path): "indexed" for r in records})


def test_searching_in_a_loop_during_a_run_never_fails_nor_goes_backwards(tmp_path, env, forker, gallery, query):
    folder, records = gallery
    lib = tmp_path / "lib"
    run = forker.start(_index_args(folder, lib), env, commit_every=COMMIT_EVERY)
    seen = []
    while run.poll() is None:
        if _indexed_count(lib) == 0:
            continue
        library = Library.open(lib)
        try:
            results = library.search_vector(query, k=len(records))
        finally:
            library.close()
        scores = [r.score for r in results]
        assert scores == sorted(scores, reverse=True)
        assert {r.path for r in results} <= {str(r.path) for r in records}
        seen.append(len(results))
    assert run.returncode == 0, run.stderr
    assert seen == sorted(seen) and seen, "a later search saw fewer images, or no search ran"
    assert_consistent(lib, {str(r.path): "indexed" for r in records})


# The three tests below share one run, frozen inside its second writer transaction: 8 images are
# committed, 8 more are half-way through their commit. They run in this order; the last one ends it.
@pytest.fixture(scope="module")
def paused_run(tmp_path_factory, forker, gallery):
    folder, records = gallery
    lib = tmp_path_factory.mktemp("paused") / "lib"
    env = pixseek_env()
    run = forker.start(
        _index_args(folder, lib, workers=1), env, fault=f"update:{COMMIT_EVERY + 3}:stop", commit_every=COMMIT_EVERY
    )
    run.wait_until_stopped()
    yield run, folder, lib, records, env
    if run.poll() is None:
        os.killpg(run.pid, signal.SIGKILL)
        os.killpg(run.pid, signal.SIGCONT)
        run.wait()


def test_a_second_index_run_is_refused_while_one_is_running(paused_run, forker):
    run, folder, lib, _, env = paused_run
    second = forker.run(_index_args(folder, lib), env)
    assert second.returncode == 1
    assert second.stderr == (
        f"error: another `pixseek index` (pid {run.pid}) is already updating {lib}: "
        "wait for it to finish, or stop it first\n"
    )


def test_search_during_a_run_sees_exactly_the_committed_images(paused_run, forker, query):
    run, _, lib, _, env = paused_run
    committed = set(_kept_vectors(lib))
    assert len(committed) == COMMIT_EVERY  # the open transaction's rows are invisible
    _search_sees_exactly(lib, committed, query)
    cli = forker.run(["search", QUERY, "--library", str(lib), "-k", "3"], env)
    assert cli.returncode == 0, cli.stderr
    assert [line.split()[-1] for line in cli.stdout.splitlines()] == _exact_ranking(lib, committed, query)[:3]


def test_ctrl_c_in_a_terminal_stops_the_run_and_its_workers_with_one_line(paused_run, demo_spec):
    """A terminal's Ctrl-C signals the whole process group, decoding workers included."""
    run, folder, lib, records, _ = paused_run
    os.killpg(run.pid, signal.SIGINT)
    os.killpg(run.pid, signal.SIGCONT)
    assert run.wait() == 130
    saved = _kept_vectors(lib)
    # The interrupted batch was committed on the way out, and with it any batch already embedded
    # behind it (how many were depends on how far decoding had got: timing, not the test's to fix).
    assert len(saved) >= 2 * COMMIT_EVERY
    assert run.stderr == (
        f"error: interrupted: {len(saved)} images saved: run `pixseek index` again to continue where it stopped\n"
    )

    report = run_index(LibraryPaths.at(lib), [folder], workers=TEST_WORKERS)
    assert report.embedded == len(records) - len(saved)
    assert_consistent(lib, {str(r.path): "indexed" for r in records})


def test_a_search_opening_the_library_during_its_first_migration_waits_and_works(
    tmp_path, env, forker, gallery, monkeypatch
):
    """The search reads schema version 0, then the index run commits its migration: the search
    must not run the same migration again."""
    import threading

    from indexer.library.catalog import Catalog

    folder, _ = gallery
    lib = tmp_path / "lib"
    run = forker.start(_index_args(folder, lib), env, fault="migrate:1:stop")
    run.wait_until_stopped()
    read_old_version = threading.Event()
    original = Catalog._schema_version

    def schema_version(self):
        version = original(self)
        read_old_version.set()
        return version

    monkeypatch.setattr(Catalog, "_schema_version", schema_version)
    opened: list[object] = []
    reader = threading.Thread(target=lambda: opened.append(_open_catalog(lib)))
    reader.start()
    read_old_version.wait(timeout=60)
    os.kill(run.pid, signal.SIGCONT)
    reader.join(timeout=120)
    assert isinstance(opened[0], Catalog), opened
    opened[0].close()
    assert run.wait() == 0, run.stderr


def _open_catalog(lib: Path):
    from indexer.library.catalog import Catalog

    try:
        return Catalog(lib / "catalog.db")
    except Exception as exc:  # reported by the test's assertion
        return exc


def test_a_changed_file_gets_a_new_id_so_older_snapshots_keep_their_vector(tmp_path, gallery, demo_spec):
    folder, records = gallery
    photos = tmp_path / "photos"
    photos.mkdir()
    for r in records[:8]:
        (photos / r.path.name).write_bytes(r.path.read_bytes())
    lib = LibraryPaths.at(tmp_path / "lib")
    run_index(lib, [photos], model=demo_spec, workers=TEST_WORKERS)
    before = read_state(lib.root)
    last_path, (last_id, *_) = max(before.rows.items(), key=lambda item: item[1][0])  # SQLite would reuse this id
    Path(last_path).write_bytes(records[-1].path.read_bytes())
    os.utime(last_path, ns=(1, 1))

    run_index(lib, [photos], workers=TEST_WORKERS)
    after = assert_consistent(lib.root, {p: "indexed" for p in before.rows}, files_changed=True)
    assert after.rows[last_path][0] > last_id
    assert after.vectors[last_id].tobytes() == before.vectors[last_id].tobytes()


def test_search_finds_everything_without_the_index_file_and_the_next_run_rebuilds_it(
    tmp_path, gallery, demo_spec, query
):
    folder, records = gallery
    lib = LibraryPaths.at(tmp_path / "lib")
    run_index(lib, [folder], model=demo_spec, workers=TEST_WORKERS)
    lib.ann.unlink()  # the ANN index is a cache: losing it must not lose images
    everything = {str(r.path) for r in records}
    _search_sees_exactly(lib.root, everything, query)
    report = run_index(lib, [folder], workers=TEST_WORKERS)
    assert report.index["vectors"] == len(records)
    assert_consistent(lib.root, {p: "indexed" for p in everything})
