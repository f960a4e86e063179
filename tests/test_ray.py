"""`pixseek index --ray`: decoding and embedding on a local Ray instance build the library a plain
run builds, a killed Ray run resumes like a plain one, and Ray's failures are one-line errors.

Real photos (Caltech), the demo model; one Ray instance (2 CPUs) for the module, which the runs
of this process use as they find it and a killed `pixseek index` process joins by its address.
"""

from __future__ import annotations

import shutil
import signal
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

from indexer.runner import run_index
from tests.conftest import CALTECH, REPO, need_shared
from tests.harness import (
    HARNESS,
    assert_consistent,
    assert_one_line_error,
    cli,
    fault_env,
    pixseek_env,
    read_state,
)

ray = pytest.importorskip("ray", reason='Ray is an optional extra: pip install -e ".[ray]"')

PHOTOS = 30
COMMIT_EVERY = 8  # 30 photos: four commits, the run is killed after the second
FP16_STEP = 1e-3  # one float16 step near the largest entries: fp32 rounding can tip a stored value by it


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """PHOTOS Caltech photos spread over its classes, and one file that is not an image."""
    files = sorted(need_shared(CALTECH).rglob("*.jpg"))
    folder = tmp_path_factory.mktemp("ray-photos")
    for i in range(PHOTOS):
        source = files[i * len(files) // PHOTOS]
        shutil.copy(source, folder / f"{i:02d}-{source.parent.name}-{source.name}")
    (folder / "broken.jpg").write_bytes(b"not an image")
    return folder


@pytest.fixture(scope="module")
def plain(tmp_path_factory, photos, demo_spec) -> Path:
    lib = tmp_path_factory.mktemp("plain-lib")
    run_index(lib, [photos], model=demo_spec, workers=0)
    return lib


def _rows(lib: Path) -> dict[str, dict]:
    """path -> every catalog column but the time it was written."""
    with closing(sqlite3.connect(lib / "catalog.db")) as db:
        db.row_factory = sqlite3.Row
        rows = [dict(row) for row in db.execute("SELECT * FROM images")]
    return {row.pop("path"): {k: v for k, v in row.items() if k != "indexed_at"} for row in rows}


def _assert_same_library(lib: Path, plain: Path) -> None:
    rows, expected = _rows(lib), _rows(plain)
    assert rows == expected  # same ids per path, same hashes, sizes, statuses and skip reasons
    ours, theirs = read_state(lib).vectors, read_state(plain).vectors
    ids = [row["id"] for row in expected.values() if row["status"] == "indexed"]
    assert len(ids) == PHOTOS
    np.testing.assert_allclose(ours[ids], theirs[ids], rtol=0, atol=FP16_STEP)


@pytest.mark.slow
def test_a_ray_run_builds_the_library_a_plain_run_builds(cluster, tmp_path, photos, plain, demo_spec):
    lib = tmp_path / "lib"
    report = run_index(lib, [photos], model=demo_spec, ray="local")
    assert (report.added, report.embedded, [Path(p).name for p, _ in report.skipped]) == (
        PHOTOS + 1,
        PHOTOS,
        ["broken.jpg"],
    )
    _assert_same_library(lib, plain)
    assert_consistent(lib, {path: row["status"] for path, row in _rows(plain).items()})
    again = run_index(lib, [photos], ray="local")  # the incremental rules are the plain run's
    assert (again.added, again.embedded, again.unchanged) == (0, 0, PHOTOS + 1)


@pytest.mark.slow
@pytest.mark.parametrize("address", [None, "local"], ids=["plain", "ray"])
def test_a_file_uri_root_is_read_through_pyarrow_like_the_folder(cluster, tmp_path, photos, plain, demo_spec, address):
    lib = tmp_path / "lib"
    uri = photos.as_uri()
    run_index(lib, [uri], model=demo_spec, workers=0, ray=address)
    rows, expected = _rows(lib), _rows(plain)
    assert sorted(rows) == sorted(f"{uri}/{Path(p).name}" for p in expected)
    vectors, expected_vectors = read_state(lib).vectors, read_state(plain).vectors
    for path, row in expected.items():
        ours = rows[f"{uri}/{Path(path).name}"]
        assert (ours["status"], ours["reason"], ours["hash"], ours["phash"], ours["folder"]) == (
            row["status"],
            row["reason"],
            row["hash"],
            row["phash"],
            uri,
        )
        if row["status"] == "indexed":
            np.testing.assert_allclose(vectors[ours["id"]], expected_vectors[row["id"]], rtol=0, atol=FP16_STEP)


@pytest.mark.slow
def test_a_killed_ray_run_resumes_like_a_plain_one_and_ends_equal(cluster, tmp_path, photos, plain, demo_spec):
    lib = tmp_path / "lib"
    args = ["index", str(photos), "--library", str(lib), "--model", "demo", "--batch-size", str(COMMIT_EVERY)]
    env = fault_env(pixseek_env(), "flushed:2:kill", COMMIT_EVERY)
    killed = subprocess.run(
        [sys.executable, str(HARNESS), *args, "--ray-address", cluster],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    state = read_state(lib)
    # Two commits landed (the broken file, in whichever batch Ray delivered it, counts in one), the rest is pending.
    indexed = state.ids("indexed")
    assert len(indexed) + len(state.ids("skipped")) == 2 * COMMIT_EVERY
    assert len(state.ids("pending")) == PHOTOS + 1 - 2 * COMMIT_EVERY
    report = run_index(lib, [photos], ray="local")
    assert report.added == 0 and report.embedded == PHOTOS - len(indexed)
    _assert_same_library(lib, plain)


def test_ray_missing_is_a_one_line_error_naming_the_extra(tmp_path, photos, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else find_spec(name, *a))
    result = cli("index", str(photos), "--library", str(tmp_path / "lib"), "--model", "demo", "--ray", code=1)
    assert_one_line_error(result, 'pip install "pixseek[ray]"')
    assert not (tmp_path / "lib" / "catalog.db").exists()  # refused before any work


def test_a_malformed_ray_address_is_a_one_line_error(tmp_path, photos):
    result = cli("index", str(photos), "-L", str(tmp_path / "lib"), "--model", "demo", "--ray-address", "/tmp", code=1)
    assert_one_line_error(result, "ray://HOST:PORT", "/tmp")


def test_an_unreachable_ray_cluster_is_a_one_line_error_before_any_work(tmp_path, photos):
    result = cli(
        "index", str(photos), "-L", str(tmp_path / "lib"), "--model", "demo", "--ray-address", "127.0.0.1:1", code=1
    )
    assert_one_line_error(result, "cannot reach the Ray cluster at 127.0.0.1:1")
    assert not (tmp_path / "lib" / "catalog.db").exists()  # refused before the library was touched
