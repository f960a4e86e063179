"""End to end over the real, messy photo library in ../shared/data/photo_library."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from indexer.library import LibraryPaths
from indexer.library.rows import INDEXED, SKIPPED
from indexer.runner import run_index
from search import Library
from tests.conftest import PHOTO_LIBRARY, need_shared


@pytest.fixture(scope="module")
def real_library(tmp_path_factory, demo_spec):
    need_shared(PHOTO_LIBRARY)
    lib = LibraryPaths.at(tmp_path_factory.mktemp("real-lib"))
    # workers=1: one run through the real worker-process path on real files.
    report = run_index(lib, [PHOTO_LIBRARY], model=demo_spec, workers=1)
    return lib, report


def _row(lib: Library, path: Path):
    row = lib.catalog.by_path(str(path))
    assert row is not None, f"{path} was not seen by the walk"
    return row


def test_every_corrupt_file_is_recorded_with_a_reason_and_the_run_goes_on(real_library):
    lib_paths, report = real_library
    lib = Library.open(lib_paths.root)
    corrupt = sorted((PHOTO_LIBRARY / "_synthetic_corrupt").iterdir())
    assert corrupt
    for path in corrupt:
        row = _row(lib, path)
        with open(path, "rb") as fh:
            is_jpeg = fh.read(3) == b"\xff\xd8\xff"
        if is_jpeg and path.suffix == ".png" and path.stat().st_size > 1000:
            assert row.status == INDEXED, f"{path.name} is a valid JPEG with a .png name"
        elif row.status == SKIPPED:
            assert row.reason and "\n" not in row.reason
    skipped = {Path(p).name for p, _ in report.skipped}
    assert {"zero_bytes.jpg", "text_named.jpg", "random_bytes.png"} <= skipped
    assert lib.info().images > 140


def test_heic_and_heif_files_are_indexed_with_their_size(real_library):
    lib = Library.open(real_library[0].root)
    heics = [p for p in PHOTO_LIBRARY.rglob("*") if p.suffix.lower() in (".heic", ".heif")]
    assert len(heics) >= 5
    for path in heics:
        row = _row(lib, path)
        assert row.status == INDEXED, f"{path.name}: {row.reason}"
        assert row.width > 0 and row.height > 0


def test_gps_coordinates_are_stored_for_geotagged_photos(real_library):
    lib = Library.open(real_library[0].root)
    gps_dir = PHOTO_LIBRARY / "ianare+exif-samples" / "jpg" / "gps"
    rows = [_row(lib, p) for p in sorted(gps_dir.glob("*.jpg"))]
    located = [r for r in rows if r.lat is not None]
    assert len(located) >= len(rows) - 1
    for r in located:
        assert -90 <= r.lat <= 90 and -180 <= r.lon <= 180
        assert (r.lat, r.lon) != (0.0, 0.0)


def test_exif_orientation_is_applied_before_embedding(real_library):
    # Every recurser photo shows the same upright "F" once oriented, so all Landscape_N
    # embeddings must match Landscape_1's (orientation 1 = stored upright), and the stored
    # sizes must be landscape / portrait after orientation.
    lib = Library.open(real_library[0].root)
    folder = PHOTO_LIBRARY / "recurser+exif-orientation-examples"
    for kind, landscape in (("Landscape", True), ("Portrait", False)):
        rows = [_row(lib, folder / f"{kind}_{i}.jpg") for i in range(0, 9)]
        reference = lib.stored_vector(rows[1].id)
        for row in rows:
            assert (row.width > row.height) == landscape, row.path
            assert float(lib.stored_vector(row.id) @ reference) > 0.98, row.path
        upright = np.array([lib.stored_vector(r.id) for r in rows])
        assert upright.std(axis=0).max() < 0.05


def test_rerun_over_the_real_library_embeds_nothing(real_library, demo_spec):
    lib_paths, first = real_library
    second = run_index(lib_paths, [PHOTO_LIBRARY], model=demo_spec, workers=0)
    assert second.embedded == 0 and second.added == 0
    assert second.unchanged == first.added
