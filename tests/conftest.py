"""Shared fixtures: the project's own small CLIP, generated shape galleries, real photos."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

from indexer.library import LibraryPaths
from indexer.model import DEMO_MODEL_DIR, ModelSpec

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
PHOTO_LIBRARY = SHARED_DATA / "photo_library"
CALTECH = SHARED_DATA / "caltech101-bench"

# Property tests draw the same examples on every run and keep no example database, so a test
# passes or fails by the code, never by the luck of the draw (CI and a fresh clone alike).
settings.register_profile("derandomized", derandomize=True, database=None)
settings.load_profile("derandomized")

# Index runs in tests decode inline: worker start-up would dominate these small galleries.
TEST_WORKERS = 0


@pytest.fixture(scope="session", autouse=True)
def onnx_cache(tmp_path_factory):
    """ONNX exports (`--runtime auto` is the CLI's default) go to a test folder, never to the user's cache."""
    from indexer.onnx_export import CACHE_ENV

    root = tmp_path_factory.mktemp("onnx-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(root))
        yield root


def need_shared(path: Path = PHOTO_LIBRARY) -> Path:
    if not path.is_dir():
        pytest.skip(f"real photos not found at {path} (../shared/data sits beside the repo on dev machines and CI)")
    return path


@pytest.fixture(scope="session")
def demo_spec() -> ModelSpec:
    """The small CLIP trained by data/train_demo_model.py, loaded through the local-dir path."""
    if not (DEMO_MODEL_DIR / "open_clip_config.json").is_file():
        pytest.fail(f"demo model missing at {DEMO_MODEL_DIR}: run python3 data/train_demo_model.py")
    return ModelSpec.parse(f"local-dir:{DEMO_MODEL_DIR}")


@pytest.fixture(scope="session")
def demo_encoder(demo_spec):
    from indexer.model import load_encoder

    return load_encoder(demo_spec, "cpu")


@pytest.fixture(scope="session")
def shapes_gallery(tmp_path_factory):
    """240 generated images (10 per colour x shape) with their true labels."""
    from pixseek_data.shapes import generate_gallery

    folder = tmp_path_factory.mktemp("gallery")
    return folder, generate_gallery(folder, per_class=10, seed=1234)


@pytest.fixture(scope="session")
def shapes_library(tmp_path_factory, shapes_gallery, demo_spec) -> LibraryPaths:
    """The shapes gallery indexed with the demo model (exact index). Read-only for tests."""
    from indexer.runner import run_index

    folder, _ = shapes_gallery
    lib = LibraryPaths.at(tmp_path_factory.mktemp("shapes-lib"))
    run_index(lib, [folder], model=demo_spec, workers=TEST_WORKERS)
    return lib


@pytest.fixture
def cli_env(tmp_path) -> dict[str, str]:
    """Environment for running the `pixseek` CLI in a subprocess against a fresh library."""
    env = dict(os.environ)
    env["PIXSEEK_LIBRARY"] = str(tmp_path / "library")
    env.pop("PIXSEEK_DEBUG", None)
    return env


@pytest.fixture(scope="session")
def dated_shapes_library(tmp_path_factory, demo_spec):
    """72 shapes in two folders, dated by EXIF: garden/ (1 per class, taken 2020-07-15) and
    studio/ (2 per class, taken 2022-05-01), indexed with the demo model. Read-only for tests.

    Returns (LibraryPaths, {file path: (folder name, ShapeImage, date taken)}).
    """
    from PIL import Image

    from indexer.runner import run_index
    from pixseek_data.shapes import generate_gallery

    root = tmp_path_factory.mktemp("dated-shapes")
    labels = {}
    shoots = (("garden", 1, 11, "2020:07:15 10:30:00"), ("studio", 2, 22, "2022:05:01 16:00:00"))
    for name, per_class, seed, taken in shoots:
        for shape in generate_gallery(root / name, per_class=per_class, seed=seed):
            with Image.open(shape.path) as img:
                pixels = img.copy()
            exif = Image.Exif()
            exif[0x0132] = taken  # DateTime
            pixels.save(shape.path, quality=92, exif=exif)
            labels[str(shape.path.resolve())] = (name, shape, taken[:10].replace(":", "-"))
    lib = LibraryPaths.at(tmp_path_factory.mktemp("dated-shapes-lib"))
    run_index(lib, [root], model=demo_spec, workers=TEST_WORKERS)
    return lib, labels


@pytest.fixture(scope="session")
def family_photos(tmp_path_factory) -> Path:
    """tests/model_families.py's real photos of every shape, copied once for the model agreement tests."""
    from tests.model_families import copy_photos

    need_shared()
    need_shared(CALTECH)
    return copy_photos(tmp_path_factory.mktemp("family-photos"))
