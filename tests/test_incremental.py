"""Re-indexing notices new, changed, moved and deleted files, and embeds only what it must."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from indexer import ann
from indexer.library import LibraryPaths
from indexer.library.vectors import VectorStore
from indexer.runner import run_index
from pixseek_data.shapes import draw_shape, generate_gallery
from search import Library
from tests.conftest import TEST_WORKERS


@pytest.fixture
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    generate_gallery(folder, per_class=1, seed=3)  # 24 images, one per colour x shape
    return folder


def _index(lib: LibraryPaths, roots: list[Path], spec, kind: str | None = None):
    return run_index(lib, roots, model=spec, workers=TEST_WORKERS, index_kind=kind)


def _names(lib: LibraryPaths, query: str, k: int = 3) -> list[str]:
    return [Path(r.path).name for r in Library.open(lib.root).search(query, k=k)]


def test_second_run_on_unchanged_folder_embeds_nothing(tmp_path, photos, demo_spec):
    lib = LibraryPaths.at(tmp_path / "lib")
    first = _index(lib, [photos], demo_spec)
    second = _index(lib, [photos], demo_spec)
    assert (first.added, first.embedded) == (24, 24)
    assert (second.added, second.updated, second.moved, second.removed, second.embedded) == (0, 0, 0, 0, 0)
    assert second.unchanged == 24


@pytest.mark.parametrize("kind", ["flat", "ivfpq"])
def test_add_modify_rename_delete_are_counted_and_followed_by_search(tmp_path, photos, demo_spec, kind):
    lib = LibraryPaths.at(tmp_path / "lib")
    assert _index(lib, [photos], demo_spec, kind).index["rebuilt"]
    rng = random.Random(11)

    draw_shape("red", "circle", rng).save(photos / "new-red-circle.jpg")  # added
    changed = photos / next(p.name for p in sorted(photos.iterdir()) if p.name.startswith("blue-square"))
    draw_shape("yellow", "star", rng).save(changed, format="JPEG")  # same name, new content
    os.utime(changed, ns=(1, 1))  # a distinct mtime even on coarse-timestamp filesystems
    moved_from = next(p for p in photos.iterdir() if p.name.startswith("green-triangle"))
    (photos / "sub").mkdir()
    moved_to = photos / "sub" / "renamed.jpg"
    shutil.move(moved_from, moved_to)  # moved
    deleted = next(p for p in photos.iterdir() if p.name.startswith("purple-star"))
    deleted.unlink()  # removed

    before = Library.open(lib.root)
    moved_id = before.catalog.by_path(str(moved_from)).id
    moved_vec = before.stored_vector(moved_id)

    report = _index(lib, [photos], demo_spec)
    assert (report.added, report.updated, report.moved, report.removed) == (1, 1, 1, 1)
    # A trained IVF-PQ index takes the changes in place; an exact one is simply rebuilt.
    assert (report.index["type"], report.index["rebuilt"]) == (kind, kind == "flat")
    assert report.unchanged == 24 - 3
    assert report.embedded == 2  # the moved file reuses its embedding

    after = Library.open(lib.root)
    assert after.info().images == 24
    row = after.catalog.by_path(str(moved_to))
    assert row.id == moved_id
    np.testing.assert_array_equal(after.stored_vector(row.id), moved_vec)
    assert "renamed.jpg" in _names(lib, "a green triangle", k=1)
    assert deleted.name not in _names(lib, "a purple star", k=24)
    assert changed.name in _names(lib, "a yellow star", k=2)
    assert changed.name not in _names(lib, "a blue square", k=1)
    assert "new-red-circle.jpg" in _names(lib, "a red circle", k=2)


@pytest.mark.parametrize("kind", ["flat", "ivfpq"])
def test_catalog_vectors_and_index_agree_after_changes(tmp_path, photos, demo_spec, kind):
    lib = LibraryPaths.at(tmp_path / "lib")
    _index(lib, [photos], demo_spec, kind)
    for p in list(photos.iterdir())[:5]:
        p.unlink()
    _index(lib, [photos], demo_spec)
    library = Library.open(lib.root)
    ids = library.catalog.indexed_ids()
    assert len(ids) == 19
    index = library._index.get()
    assert index.ntotal == 19
    if kind == "ivfpq":
        assert ann.ids_in(index).tolist() == ids
    vecs = VectorStore(lib.vectors, library.vectors.dim).get(np.array(ids))
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-2)


def test_indexing_one_root_leaves_another_roots_images_alone(tmp_path, demo_spec):
    a, b = tmp_path / "a", tmp_path / "b"
    generate_gallery(a, per_class=1, seed=1)
    generate_gallery(b, per_class=1, seed=2)
    lib = LibraryPaths.at(tmp_path / "lib")
    _index(lib, [a, b], demo_spec)
    report = _index(lib, [a], demo_spec)
    assert report.removed == 0
    assert Library.open(lib.root).info().images == 48


def test_walk_skips_hidden_and_resource_fork_files_and_matches_extensions_in_any_case(tmp_path, demo_spec):
    folder = tmp_path / "p"
    folder.mkdir()
    img = draw_shape("red", "square", random.Random(1))
    img.save(folder / "UPPER.JPG")
    img.save(folder / "mixed.PnG")
    img.save(folder / "._UPPER.JPG", format="JPEG")
    img.save(folder / ".hidden.jpg")
    (folder / ".secret").mkdir()
    img.save(folder / ".secret" / "inside.jpg")
    (folder / "notes.txt").write_text("not an image")
    (folder / "loop").symlink_to(folder)  # a symlink loop must not hang the walk
    report = _index(LibraryPaths.at(tmp_path / "lib"), [folder], demo_spec)
    assert report.added == 2


def test_search_says_how_far_an_unfinished_index_run_is(tmp_path, photos, demo_spec):
    """Results cover the embedded photos only: while a run goes (a --rebuild too) and after one stopped early."""
    from indexer.library import write_lock
    from indexer.library.catalog import Catalog
    from tests.harness import cli

    lib = LibraryPaths.at(tmp_path / "lib")
    run_index(lib, [photos], model=demo_spec, workers=TEST_WORKERS)
    args = ("search", "a red circle", "--library", str(lib.root), "-k", "3")
    assert "note:" not in cli(*args).stderr
    with Catalog(lib.catalog) as catalog:
        ids = catalog.indexed_ids()
        catalog.mark_pending(ids[: len(ids) // 4])  # what a run leaves that has embedded three quarters
    total, pending = len(ids), len(ids) // 4
    stopped = cli(*args).stderr
    assert f"note: {pending} of {total} photos are not embedded yet" in stopped and "pixseek index" in stopped
    with write_lock(lib):
        going = cli(*args)
    assert f"note: an index run is going: {total - pending} of {total} photos embedded so far" in going.stderr
    assert len(going.stdout.splitlines()) == 3  # the embedded photos are searched meanwhile
