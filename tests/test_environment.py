"""A hostile environment: read-only library, full disk, newer schema, another model, --rebuild.
Each failure is one line and leaves the library readable and intact; each interrupted job can be
picked up again. Read-only storage and full disks are real (a read-only bind mount, a tiny
tmpfs) when the tests run as root, and skipped with a reason otherwise."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from indexer import ann
from indexer.decode import decode_image
from indexer.errors import Interrupted, PixseekError
from indexer.library import LibraryPaths
from indexer.library.schema import SCHEMA_VERSION
from indexer.model import DEMO_MODEL_DIR, ModelSpec
from indexer.runner import run_index
from indexer.writer import Writer
from pixseek_data.shapes import caption, generate_gallery
from search import Library
from tests.conftest import TEST_WORKERS
from tests.harness import assert_consistent, env, forker, read_state  # noqa: F401 (fixtures)

QUERY = caption("red", "circle")


@pytest.fixture(scope="module")
def gallery(tmp_path_factory):
    """Two folders of 24 shapes each: the library holds the first, runs under test add the second."""
    root = tmp_path_factory.mktemp("env-gallery")
    return (
        root / "a",
        generate_gallery(root / "a", per_class=1, seed=31),
        root / "b",
        generate_gallery(root / "b", per_class=1, seed=32),
    )


def _fingerprints(lib: Path) -> dict[str, str]:
    """Hashes of the library's data files (the lock file holds the last runner's pid: not data)."""
    names = ("catalog.db", "catalog.db-wal", "vectors.f16", "index.faiss")
    return {n: hashlib.sha256((lib / n).read_bytes()).hexdigest() for n in names if (lib / n).exists()}


def _red_circles(*galleries) -> set[str]:
    return {str(r.path) for records in galleries for r in records if (r.colour, r.shape) == ("red", "circle")}


def _search_paths(lib: Path, k: int) -> set[str]:
    library = Library.open(lib)
    try:
        return {r.path for r in library.search(QUERY, k=k)}
    finally:
        library.close()


def _mount(*args: str) -> bool:
    return os.geteuid() == 0 and subprocess.run(["mount", *args], capture_output=True).returncode == 0


@contextmanager
def read_only_storage(folder: Path):
    """`folder` on read-only storage (EROFS, which stops root too): bind-mounted onto itself, ro."""
    if not _mount("--bind", str(folder), str(folder)):
        pytest.skip("needs root (mount --bind) to put a folder on read-only storage")
    try:
        assert _mount("-o", "remount,ro,bind", str(folder), str(folder))
        yield
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


@contextmanager
def no_write_permission(folder: Path, forker):
    """`folder` and its files without write permission (which binds root too in `forker`'s runs)."""
    if not forker.permissions_apply:
        pytest.skip("setpriv is needed to make file permissions apply to root")
    modes = {p: p.stat().st_mode for p in [folder, *folder.iterdir()]}
    for p, mode in modes.items():
        p.chmod(mode & ~0o222)
    try:
        yield
    finally:
        for p, mode in modes.items():
            p.chmod(mode)


def _first_folder_library(tmp_path_factory, gallery, spec: ModelSpec, name: str) -> Path:
    lib = tmp_path_factory.mktemp(name) / "lib"
    run_index(LibraryPaths.at(lib), [gallery[0]], model=spec, workers=TEST_WORKERS)
    return lib


@pytest.fixture(scope="module")
def demo_library(tmp_path_factory, gallery, demo_spec) -> Path:
    """A library of the first folder, built once; tests work on copies."""
    return _first_folder_library(tmp_path_factory, gallery, demo_spec, "demo-library")


@pytest.fixture
def built(tmp_path, gallery, demo_library):
    """A copy of demo_library; the second folder is there to be added."""
    folder_a, records_a, folder_b, records_b = gallery
    lib = tmp_path / "lib"
    shutil.copytree(demo_library, lib)
    return lib, folder_a, records_a, folder_b, records_b


@pytest.mark.parametrize("storage", ["read-only storage", "no write permission"])
def test_read_only_library_refuses_to_index_in_one_line_and_still_searches(built, env, forker, storage):
    lib, folder_a, records_a, folder_b, records_b = built
    before = _fingerprints(lib)
    if storage == "read-only storage":
        guard, words = read_only_storage(lib), f"the library {lib} is on read-only storage: choose a writable"
    else:
        guard, words = no_write_permission(lib, forker), f"no permission to write the library {lib}: fix the"
    with guard:
        proc = forker.run(["index", str(folder_a), str(folder_b), "--library", str(lib)], env)
        assert proc.returncode == 1
        assert proc.stderr.startswith("error: ") and words in proc.stderr and proc.stderr.count("\n") == 1
        # Searching works on the unwritable library: SQLite cannot add its shared-memory file there.
        found = forker.run(["search", QUERY, "--json", "-k", "1", "--library", str(lib)], env)
        assert found.returncode == 0, found.stderr
        assert {r["path"] for r in json.loads(found.stdout)} <= _red_circles(records_a)
    assert _fingerprints(lib) == before
    run_index(LibraryPaths.at(lib), [folder_a, folder_b], workers=TEST_WORKERS)  # writable again: it catches up
    assert_consistent(lib, {str(r.path): "indexed" for r in records_a + records_b})


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MB tmpfs: a disk that really fills up."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if not _mount("-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)):
        pytest.skip("needs root (mount -t tmpfs) for a small disk to fill")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)


def _fill(disk: Path) -> Path:
    """Take every free byte of `disk`."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for chunk in (b"\0" * 65536, b"\0" * 512):  # big steps, then the last scraps
            try:
                while True:
                    os.write(fd, chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def _fill_when(monkeypatch, owner, name: str, disk: Path) -> None:
    """Fill the disk just before the run reaches owner.name (another program taking the space)."""
    original = getattr(owner, name)

    def filled_first(*args, **kwargs):
        if not (disk / "filler").exists():
            _fill(disk)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, filled_first)


@pytest.mark.parametrize("fills_up", ["before the run", "before vectors are written", "before the index is saved"])
def test_full_disk_stops_in_one_line_and_the_next_run_completes(
    small_disk, gallery, demo_library, monkeypatch, fills_up
):
    folder_a, records_a, folder_b, records_b = gallery
    lib = LibraryPaths.at(small_disk / "lib")
    shutil.copytree(demo_library, lib.root)
    kept = {p: v.tobytes() for p, v in _indexed_vectors(lib.root).items()}
    monkeypatch.setattr(Writer, "commit_every", 8)
    if fills_up == "before the run":
        _fill(small_disk)
    elif fills_up == "before vectors are written":
        from indexer.library.vectors import VectorStore

        _fill_when(monkeypatch, VectorStore, "write", small_disk)
    else:
        _fill_when(monkeypatch, ann, "save", small_disk)

    with pytest.raises(PixseekError) as err:
        run_index(lib, [folder_a, folder_b], workers=TEST_WORKERS)
    assert str(err.value) == (
        f"the disk holding the library {lib.root} is full: free some space, then run "
        "`pixseek index` again (what was indexed so far is kept)"
    )
    monkeypatch.undo()

    now = _indexed_vectors(lib.root)
    assert {p: now[p].tobytes() for p in kept} == kept  # nothing committed was lost
    assert _search_paths(lib.root, k=100) == set(now)  # readable, exactly what was committed
    assert not list(lib.root.glob("*.tmp"))

    (small_disk / "filler").unlink()
    run_index(lib, [folder_a, folder_b], workers=TEST_WORKERS)
    assert_consistent(lib.root, {str(r.path): "indexed" for r in records_a + records_b})


def _indexed_vectors(lib: Path) -> dict[str, np.ndarray]:
    state = read_state(lib)
    return {p: state.vectors[i] for p, (i, st, _, _) in state.rows.items() if st == "indexed"}


def test_newer_schema_is_refused_with_an_upgrade_hint_and_left_untouched(built, env, forker):
    lib, folder_a, *_ = built
    conn = sqlite3.connect(lib / "catalog.db")
    conn.execute("UPDATE settings SET value = ? WHERE key = 'schema_version'", [str(SCHEMA_VERSION + 1)])
    conn.commit()
    conn.close()
    before = _fingerprints(lib)
    message = (
        f"error: this library was written by a newer pixseek (schema {SCHEMA_VERSION + 1}, this one knows "
        f"{SCHEMA_VERSION}): upgrade pixseek (pip install -U pixseek) to open it\n"
    )
    for args in (["info"], ["search", QUERY], ["index", str(folder_a)]):
        run = forker.run([*args, "--library", str(lib)], env)
        assert (run.returncode, run.stderr) == (1, message), args
    assert _fingerprints(lib) == before


@pytest.fixture(scope="module")
def other_model(tmp_path_factory) -> ModelSpec:
    """Another model that loads offline: the demo architecture with a smaller embedding, random
    weights. It stands for 'the model a library was built with before'; nothing semantic is asked of it."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("other-model")
    config = json.loads((DEMO_MODEL_DIR / "open_clip_config.json").read_text())
    config["model_cfg"]["embed_dim"] //= 2
    torch.manual_seed(0)
    model = open_clip.CLIP(**config["model_cfg"])
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "open_clip_model.safetensors")
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    return ModelSpec.parse(f"local-dir:{folder}")


def _expected_vectors(records, encoder) -> dict[str, np.ndarray]:
    """Each file embedded directly by the encoder, the way the indexer decodes it."""
    images = [decode_image(r.path, target_size=encoder.preprocess).image for r in records]
    return dict(zip((str(r.path) for r in records), encoder.encode_images(images)))


def _assert_embedded_by(lib: Path, expected: dict[str, np.ndarray]) -> None:
    stored = _indexed_vectors(lib)
    assert set(stored) == set(expected)
    for path, vec in expected.items():
        np.testing.assert_allclose(stored[path], vec, atol=2e-3, err_msg=path)


@pytest.fixture(scope="module")
def other_model_library(tmp_path_factory, gallery, other_model) -> Path:
    return _first_folder_library(tmp_path_factory, gallery, other_model, "other-library")


@pytest.fixture
def other_library(tmp_path, gallery, other_model_library):
    """A copy of a library built with other_model."""
    folder_a, records_a, *_ = gallery
    lib = tmp_path / "lib"
    shutil.copytree(other_model_library, lib)
    return lib, folder_a, records_a


def test_opening_with_another_model_names_both_and_the_rebuild_option(other_library, demo_spec):
    lib, *_ = other_library
    with pytest.raises(
        PixseekError,
        match=r"was built with model local-dir:.*other-model.*, not local-dir:.*"
        r"demo-model: .*pixseek index --rebuild --model",
    ):
        Library.open(lib, model=demo_spec)


def test_rebuild_re_embeds_everything_with_the_new_model(other_library, demo_spec, demo_encoder):
    lib, folder_a, records_a = other_library
    report = run_index(LibraryPaths.at(lib), [folder_a], model=demo_spec, rebuild=True, workers=TEST_WORKERS)
    assert report.embedded == len(records_a)
    assert_consistent(lib, {str(r.path): "indexed" for r in records_a})
    _assert_embedded_by(lib, _expected_vectors(records_a, demo_encoder))
    assert Library.open(lib).info().model_fingerprint == demo_spec.fingerprint()
    assert _search_paths(lib, k=1) <= _red_circles(records_a)


def test_an_open_library_follows_a_rebuild_with_another_model(other_library, demo_spec, other_model):
    lib, folder_a, records_a = other_library
    opened = Library.open(lib)  # a long-lived reader, as the UI keeps
    opened.search(QUERY, k=1)
    assert opened.encoder.fingerprint() == other_model.fingerprint()
    run_index(LibraryPaths.at(lib), [folder_a], model=demo_spec, rebuild=True, workers=TEST_WORKERS)
    found = {r.path for r in opened.search(QUERY, k=1)}  # the old model's vectors are half as long
    assert opened.encoder.fingerprint() == demo_spec.fingerprint()
    assert found <= _red_circles(records_a)
    assert opened.info().model_fingerprint == demo_spec.fingerprint()


def test_an_open_library_that_was_empty_searches_once_indexed(tmp_path, gallery, demo_spec):
    folder_a, records_a, *_ = gallery
    lib = LibraryPaths.at(tmp_path / "lib")
    (tmp_path / "empty").mkdir()
    run_index(lib, [tmp_path / "empty"], model=demo_spec, workers=TEST_WORKERS)
    opened = Library.open(lib.root)
    with pytest.raises(PixseekError, match="no indexed images"):
        opened.search(QUERY, k=3)
    run_index(lib, [folder_a], model=demo_spec, workers=TEST_WORKERS)
    assert {r.path for r in opened.search(QUERY, k=1)} <= _red_circles(records_a)


def test_rebuild_interrupted_by_ctrl_c_continues_with_a_plain_index_run(
    other_library, demo_spec, demo_encoder, monkeypatch
):
    lib, folder_a, records_a = other_library
    monkeypatch.setattr(Writer, "commit_every", 8)
    original_flush = Writer.flush

    def flush_then_ctrl_c(self):
        original_flush(self)
        if self.written == 8 and not pressed:
            pressed.append(True)
            raise KeyboardInterrupt  # what Python raises on SIGINT

    pressed: list[bool] = []

    monkeypatch.setattr(Writer, "flush", flush_then_ctrl_c)
    with pytest.raises(Interrupted, match="8 images saved"):
        run_index(LibraryPaths.at(lib), [folder_a], model=demo_spec, rebuild=True, workers=TEST_WORKERS)
    monkeypatch.undo()
    assert _search_paths(lib, k=100) == set(_indexed_vectors(lib))  # the 8 new-model images already search

    report = run_index(LibraryPaths.at(lib), [folder_a], workers=TEST_WORKERS)
    assert report.embedded == len(records_a) - 8
    assert_consistent(lib, {str(r.path): "indexed" for r in records_a})
    _assert_embedded_by(lib, _expected_vectors(records_a, demo_encoder))


@pytest.mark.parametrize("fault", ["rebuild-unlink:1:kill", "flushed:1:kill"])
def test_rebuild_killed_at_any_point_continues_with_a_plain_index_run(other_library, env, forker, demo_encoder, fault):
    lib, folder_a, records_a = other_library
    killed = forker.run(
        [
            "index",
            str(folder_a),
            "--library",
            str(lib),
            "--model",
            "demo",
            "--rebuild",
            "--workers",
            "0",
            "--batch-size",
            "8",
        ],
        env,
        fault=fault,
        commit_every=8,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    run_index(LibraryPaths.at(lib), [folder_a], workers=TEST_WORKERS)
    assert_consistent(lib, {str(r.path): "indexed" for r in records_a})
    _assert_embedded_by(lib, _expected_vectors(records_a, demo_encoder))
