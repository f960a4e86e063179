"""A library damaged behind pixseek's back (issue 16): each file corrupted in the ways disks and
people corrupt files. Searches keep working and say so in one line, never score damage, and
`pixseek index` / `pixseek check --repair` bring the library back to what it was."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from indexer.library.vectors import NORM_TOLERANCE
from pixseek_data.shapes import generate_gallery
from tests.conftest import TEST_WORKERS
from tests.harness import assert_one_line_error, cli, read_state

QUERY = "a red circle"


@pytest.fixture(scope="module")
def intact(tmp_path_factory, demo_spec):
    """(photo folder, intact library, its search results for QUERY): 48 shapes, exact index."""
    from indexer.runner import run_index

    folder = tmp_path_factory.mktemp("photos")
    generate_gallery(folder, per_class=2, seed=16)
    library = tmp_path_factory.mktemp("intact") / "lib"
    run_index(library, [folder], model=demo_spec, workers=TEST_WORKERS)
    return folder, library, _search(library)


@pytest.fixture
def library(intact, tmp_path) -> Path:
    copy = tmp_path / "lib"
    shutil.copytree(intact[1], copy)
    return copy


def _search(library: Path, *extra: str) -> list[tuple[str, float]]:
    result = cli("search", QUERY, "-L", str(library), "-k", "100", "--json", *extra)
    return [(r["path"], r["score"]) for r in json.loads(result.stdout)]


def _search_warns(library: Path, *words: str) -> list[tuple[str, float]]:
    result = cli("search", QUERY, "-L", str(library), "-k", "100", "--json")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("warning: "), result.stderr
    for word in words:
        assert word in lines[0]
    return [(r["path"], r["score"]) for r in json.loads(result.stdout)]


def _index(folder: Path, library: Path) -> dict:
    return json.loads(cli("index", str(folder), "-L", str(library), "--workers", "0", "--json").stdout)


def _assert_same(got: list[tuple[str, float]], want: list[tuple[str, float]]) -> None:
    assert [p for p, _ in got] == [p for p, _ in want]
    assert np.allclose([s for _, s in got], [s for _, s in want], atol=1e-4)


# index.faiss -------------------------------------------------------------------------------------
def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _zero(path: Path) -> None:
    path.write_bytes(b"\0" * path.stat().st_size)


def _garble_header(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[:16] = b"garbage garbage!"
    path.write_bytes(bytes(data))


def _folder(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _garble_loadable(path: Path) -> None:
    """Zero the tail of the stored vectors: FAISS still loads it, and would miss matches."""
    import faiss

    before = faiss.read_index(str(path)).ntotal
    data = bytearray(path.read_bytes())
    data[-4096:-1024] = b"\0" * 3072
    path.write_bytes(bytes(data))
    assert faiss.read_index(str(path)).ntotal == before  # still loadable: only a checksum tells


@pytest.mark.parametrize("damage", [_truncate, _zero, _garble_header, _folder, _garble_loadable])
def test_damaged_index_file_is_searched_around_and_rebuilt(intact, library, damage):
    folder, _, want = intact
    damage(library / "index.faiss")

    _assert_same(_search_warns(library, "index.faiss", "pixseek check --repair"), want)
    info = json.loads(cli("info", "-L", str(library), "--json").stdout)
    assert any("index.faiss" in problem for problem in info["damage"])

    report = _index(folder, library)  # nothing changed, yet the index is rebuilt
    assert report["unchanged"] == len(want) and report["index"]["rebuilt"]
    assert not cli("search", QUERY, "-L", str(library)).stderr.strip()
    _assert_same(_search(library), want)
    assert json.loads(cli("info", "-L", str(library), "--json").stdout)["damage"] == []


# vectors.f16 -------------------------------------------------------------------------------------
def _row_bytes(library: Path) -> int:
    conn = sqlite3.connect(library / "catalog.db")
    dim = int(conn.execute("SELECT value FROM settings WHERE key = 'dim'").fetchone()[0])
    conn.close()
    return dim * 2


def _damage_vectors(library: Path, how: str) -> tuple[set[int], set[int]]:
    """Damage vectors.f16; returns (ids that must be found damaged, ids that may be).

    The overwrite covers whole rows: a row with only a few bytes changed can keep a norm near 1
    (library/vectors.py says what that costs), so which partly hit rows are found is luck."""
    path = library / "vectors.f16"
    size, row = path.stat().st_size, _row_bytes(library)
    indexed = read_state(library).ids()
    if how == "deleted":
        path.unlink()
        return indexed, set()
    if how == "truncated":
        keep = size // 2
        path.write_bytes(path.read_bytes()[:keep])
        return {i for i in indexed if (i + 1) * row > keep}, set()
    start, length = int(size * 0.3) // row * row, min(30_000, size // 3) // row * row
    data = bytearray(path.read_bytes())
    data[start : start + length] = np.random.default_rng(16).bytes(length)
    path.write_bytes(bytes(data))
    covered = {i for i in indexed if i * row >= start and (i + 1) * row <= start + length}
    touched = {i for i in indexed if i * row < start + length and (i + 1) * row > start}
    return covered, touched - covered


@pytest.mark.parametrize("how", ["truncated", "deleted", "overwritten"])
def test_damaged_vectors_are_left_out_and_reembedded(intact, library, how):
    folder, _, want = intact
    must, may = _damage_vectors(library, how)
    assert must

    got = _search_warns(library, "damaged vectors")
    scores = [s for _, s in got]
    assert all(-1 - NORM_TOLERANCE <= s <= 1 + NORM_TOLERANCE for s in scores)
    assert all(s != 0.0 for s in scores)
    rows = read_state(library).rows
    damaged_paths = {p for p, (i, *_) in rows.items() if i in must}
    assert not damaged_paths & {p for p, _ in got}

    ids_before = {p: i for p, (i, *_) in rows.items()}
    report = _index(folder, library)
    assert len(must) <= report["repaired"] <= len(must) + len(may)
    assert report["embedded"] == report["repaired"] and report["added"] == 0
    state = read_state(library)
    assert {p: i for p, (i, *_) in state.rows.items()} == ids_before  # the same rows, embedded again
    assert state.ids() == set(ids_before.values())
    _assert_same(_search(library), want)
    assert not cli("search", QUERY, "-L", str(library)).stderr.strip()


def test_a_folder_where_the_vector_file_belongs_is_moved_aside_and_reembedded(intact, library):
    folder, _, want = intact
    (library / "vectors.f16").unlink()
    (library / "vectors.f16").mkdir()
    _search_warns(library, "damaged vectors")
    report = _index(folder, library)
    assert report["repaired"] == len(want)
    assert (library / "vectors.f16.moved-aside").is_dir()
    _assert_same(_search(library), want)


# pixseek check -----------------------------------------------------------------------------------
def test_check_finds_and_repairs_every_kind_of_damage(intact, library):
    _, _, want = intact
    healthy = json.loads(cli("check", "-L", str(library), "--json").stdout)
    assert healthy["healthy"] and healthy["images"] == len(want)

    must, may = _damage_vectors(library, "overwritten")
    _zero(library / "index.faiss")
    conn = sqlite3.connect(library / "catalog.db")
    conn.execute("INSERT INTO tags (image_id, label, score) VALUES (999999, 'ghost', 0.9)")
    conn.commit()
    conn.close()

    found = json.loads(cli("check", "-L", str(library), "--json", code=1).stdout)
    assert not found["healthy"] and found["catalog"] == []
    assert must <= set(found["damaged_vectors"]) <= must | may
    assert "index.faiss" in found["index"] and found["orphan_tags"] == 1

    repaired = cli("check", "-L", str(library), "--repair")
    assert "rebuilt index.faiss" in repaired.stdout and "dropped 1 tags" in repaired.stdout
    assert f"embedded {len(found['damaged_vectors'])} images again" in repaired.stdout
    after = json.loads(cli("check", "-L", str(library), "--json").stdout)
    assert after["healthy"] and after["pending"] == 0
    _assert_same(_search(library), want)


def test_check_repair_without_the_photos_leaves_damaged_rows_pending(intact, library, tmp_path):
    _, _, want = intact
    conn = sqlite3.connect(library / "catalog.db")
    conn.execute("UPDATE settings SET value = ? WHERE key = 'roots'", [json.dumps([str(tmp_path / "unplugged")])])
    conn.commit()
    conn.close()
    must, _ = _damage_vectors(library, "truncated")
    out = cli("check", "-L", str(library), "--repair").stdout
    assert f"pending     {len(must)} rows" in out and "pixseek index FOLDER" in out
    info = json.loads(cli("info", "-L", str(library), "--json").stdout)
    assert info["pending"] == len(must) and info["images"] == len(want) - len(must)


# catalog.db --------------------------------------------------------------------------------------
def _garble_middle(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2 // 4096 * 4096
    data[middle : middle + 8192] = np.random.default_rng(12).bytes(8192)
    path.write_bytes(bytes(data))


def _checkpointed(library: Path) -> Path:
    conn = sqlite3.connect(library / "catalog.db")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.close()
    return library / "catalog.db"


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbled-header", "garbled-middle"])
def test_damaged_catalog_is_reported_with_a_way_back(library, damage):
    path = _checkpointed(library)
    if damage == "empty":
        path.write_bytes(b"")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    elif damage == "garbled-header":
        _garble_header(path)
    else:
        _garble_middle(path)
    result = cli("check", "-L", str(library), code=1)
    assert "catalog     damaged" in result.stdout and "pixseek index FOLDER" in result.stdout
    if damage == "garbled-middle":
        return  # SQLite reads the pages it needs: only the integrity check sees the damage
    for command in (["info"], ["search", QUERY]):
        proc = cli(*command, "-L", str(library), code=1)
        assert_one_line_error(proc, "catalog")
        assert "unexpected" not in proc.stderr
        assert "wait for" not in proc.stderr


def test_a_foreign_database_as_catalog_is_refused_untouched(tmp_path, intact):
    folder, _, _ = intact
    lib = tmp_path / "lib"
    lib.mkdir()
    conn = sqlite3.connect(lib / "catalog.db")
    conn.execute("CREATE TABLE contacts (name TEXT)")
    conn.commit()
    conn.close()
    refused = cli("index", str(folder), "-L", str(lib), "--workers", "0", code=1)
    assert_one_line_error(refused, "not a pixseek catalog")
    conn = sqlite3.connect(lib / "catalog.db")
    assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")] == ["contacts"]
    conn.close()
