"""Duplicates (content hash, perceptual hash, embeddings) and zero-shot auto-tags (issue 6)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from indexer.errors import PixseekError
from indexer.library import LibraryPaths
from indexer.runner import run_index
from pixseek_data.shapes import COLOURS, SHAPES, generate_gallery
from search import Filters, Library
from search.dupes import find_duplicates, phash_pairs
from search.tags import read_labels, tag_images
from tests.conftest import CALTECH, TEST_WORKERS, need_shared
from tests.harness import cli


def _resized_copy(src, dst, scale: float = 0.6, quality: int = 75) -> None:
    with Image.open(src) as img:
        img = img.convert("RGB")
        img.resize((int(img.width * scale), int(img.height * scale)), Image.Resampling.LANCZOS).save(
            dst, "JPEG", quality=quality
        )


# finding near pairs ------------------------------------------------------------------------------
@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), max_distance=st.integers(0, 32))
def test_phash_pairs_match_brute_force(seed, max_distance):
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 2, (200, 256), dtype=np.uint8)
    for _ in range(60):  # plant neighbours at every distance up to and past the limit
        i, j = rng.integers(0, 200, 2)
        bits[j] = bits[i]
        bits[j, rng.choice(256, rng.integers(0, max_distance + 4), replace=False)] ^= 1
    hashes = np.packbits(bits, axis=1)
    dist = (bits[:, None, :] != bits[None, :, :]).sum(axis=2)
    expected = {(i, j) for i, j in zip(*np.nonzero(dist <= max_distance)) if i < j}
    assert {tuple(p) for p in phash_pairs(hashes, max_distance).tolist()} == expected


# dupes on real photos ----------------------------------------------------------------------------
# Three photos each from classes whose pictures are all distinct (checked by eye and by pHash).
CALTECH_PICKS = [
    "accordion/image_0001.jpg",
    "accordion/image_0002.jpg",
    "butterfly/image_0001.jpg",
    "butterfly/image_0002.jpg",
    "dolphin/image_0001.jpg",
    "dolphin/image_0002.jpg",
]


@pytest.fixture(scope="module")
def caltech_copies(tmp_path_factory, demo_spec):
    """Six real photos, a resized re-encoded copy of one and a byte-for-byte copy of another."""
    caltech = need_shared(CALTECH)
    images = tmp_path_factory.mktemp("caltech") / "images"
    images.mkdir()
    originals = []
    for name in CALTECH_PICKS:
        dst = images / name.replace("/", "-")
        shutil.copy(caltech / name, dst)
        originals.append(dst.resolve())
    resized = images / "copies" / "smaller.jpg"
    resized.parent.mkdir()
    _resized_copy(originals[2], resized, scale=0.5, quality=70)
    exact = images / "copies" / "same-bytes.jpg"
    shutil.copy(originals[4], exact)
    paths = LibraryPaths.at(images.parent / "library")
    run_index(paths, [images], model=demo_spec, workers=TEST_WORKERS)
    return paths, originals, resized.resolve(), exact.resolve()


def test_resized_copy_is_grouped_with_its_original_and_a_byte_copy_as_exact(caltech_copies):
    paths, originals, resized, exact = caltech_copies
    lib = Library.open(paths.root)
    groups = {g.kind: {r.path for r in g.images} for g in find_duplicates(lib.catalog, lib.vectors)}
    assert groups == {"near": {str(originals[2]), str(resized)}, "exact": {str(originals[4]), str(exact)}}


def test_dupes_command_prints_json_with_the_largest_copy_first(caltech_copies):
    paths, originals, resized, _ = caltech_copies
    data = json.loads(cli("dupes", "--library", str(paths.root), "--json").stdout)
    near = next(g for g in data["groups"] if g["kind"] == "near")
    assert [i["path"] for i in near["images"]] == [str(originals[2]), str(resized)]
    assert data["images_without_phash"] == 0
    assert "2 groups" in cli("dupes", "--library", str(paths.root)).stdout
    refused = cli("dupes", "--library", str(paths.root), "--max-distance", "40", code=1)
    assert refused.output == (
        "error: --max-distance must be between 0 and 32, not 40: 16 finds resized and re-encoded copies\n"
    )


def test_embedding_similarity_finds_copies_without_a_phash(caltech_copies, tmp_path):
    paths, originals, resized, _ = caltech_copies
    shutil.copytree(paths.root, tmp_path / "lib")
    lib = Library.open(tmp_path / "lib")
    lib.catalog.db.execute("UPDATE images SET phash = NULL")  # as a library indexed by an older pixseek
    assert [g.kind for g in find_duplicates(lib.catalog, lib.vectors)] == ["exact"]
    groups = [{r.path for r in g.images} for g in find_duplicates(lib.catalog, lib.vectors, min_cosine=0.98)]
    assert {str(originals[2]), str(resized)} in groups


# --dedupe in search ------------------------------------------------------------------------------
def test_dedupe_collapses_copies_to_the_best_scoring_one(tmp_path, demo_spec):
    gallery = generate_gallery(tmp_path / "images", per_class=2, seed=8)
    reds = [g for g in gallery if g.colour == "red"]
    for g in reds:  # a smaller re-encoded copy of every red picture
        _resized_copy(g.path, g.path.with_name(f"copy-{g.path.name}"), scale=0.75, quality=80)
    paths = LibraryPaths.at(tmp_path / "library")
    run_index(paths, [tmp_path / "images"], model=demo_spec, workers=TEST_WORKERS)
    lib = Library.open(paths.root)

    def source(path: str) -> str:  # the picture a result shows, whichever file holds it
        return path.replace("copy-", "")

    plain = lib.search("a red circle", k=4)
    assert len({source(r.path) for r in plain}) < 4  # copies crowd the plain results
    deduped = lib.search("a red circle", k=4, dedupe=True)
    assert len(deduped) == 4 and len({source(r.path) for r in deduped}) == 4
    best = {}
    for r in lib.search("a red circle", k=len(gallery) + len(reds)):
        best.setdefault(source(r.path), r.score)
    assert [r.score for r in deduped] == [best[source(r.path)] for r in deduped]


# auto-tags ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tagged(tmp_path_factory, shapes_library, shapes_gallery):
    """A copy of the shapes library (the shared one stays read-only), tagged by shape."""
    root = tmp_path_factory.mktemp("tagged") / "library"
    shutil.copytree(shapes_library.root, root)
    lib = Library.open(root)
    counts = tag_images(lib, list(SHAPES))
    yield lib, counts, {str(g.path.resolve()): g for g in shapes_gallery[1]}
    lib.close()


def _tags(lib: Library) -> dict[str, list[tuple[str, float]]]:
    out: dict[str, list[tuple[str, float]]] = {}
    cur = lib.catalog.db.execute(
        "SELECT i.path, t.label, t.score FROM tags t JOIN images i ON i.id = t.image_id ORDER BY t.score DESC"
    )
    for path, label, score in cur:
        out.setdefault(path, []).append((label, score))
    return out


def test_tagging_by_shape_is_right_for_at_least_90_percent_of_images(tagged):
    lib, counts, truth = tagged
    tags = _tags(lib)
    right = sum(tags.get(path, [("", 0)])[0][0] == g.shape for path, g in truth.items())
    assert right / len(truth) >= 0.9, right
    assert sum(counts.values()) == sum(len(t) for t in tags.values())
    assert all(0.2 <= score <= 1 for t in tags.values() for _, score in t)


def test_tag_filter_returns_exactly_the_images_carrying_the_tag(tagged):
    lib, _, truth = tagged
    carrying = {path for path, t in _tags(lib).items() if "circle" in {label for label, _ in t}}
    results = lib.search("a shape", k=len(truth), filters=Filters(tag="Circle"))
    assert {r.path for r in results} == carrying
    assert sum(truth[p].shape == "circle" for p in carrying) / len(carrying) >= 0.9
    with pytest.raises(PixseekError, match="no image is tagged 'hexagon'.*circle"):
        lib.search("a shape", filters=Filters(tag="hexagon"))


def test_tags_of_a_removed_image_go_with_it(tagged):
    lib, _, _ = tagged
    image_id = lib.catalog.db.execute("SELECT image_id FROM tags LIMIT 1").fetchone()[0]
    with lib.catalog.transaction():
        lib.catalog.delete([image_id])
    assert lib.catalog.db.execute("SELECT COUNT(*) FROM tags WHERE image_id = ?", [image_id]).fetchone()[0] == 0


def test_tag_command_reads_a_labels_file_and_reuses_it(shapes_library, shapes_gallery, tmp_path):
    root = tmp_path / "library"
    shutil.copytree(shapes_library.root, root)
    labels = tmp_path / "labels.txt"
    labels.write_text("# colours\n" + "\n".join(COLOURS) + "\n\nred\n", encoding="utf-8")
    tagged = json.loads(cli("tag", "--labels", str(labels), "--library", str(root), "--json", "--top", "1").stdout)
    tagged = tagged["tagged"]
    assert list(tagged) == list(COLOURS) and sum(tagged.values()) <= len(shapes_gallery[1])  # --top 1
    again = cli("tag", "--library", str(root), "--json", "--top", "1")
    assert json.loads(again.stdout)["tagged"] == tagged
    found = cli("search", "a shape", "--tag", "blue", "--library", str(root), "--json", "-k", "240")
    assert len(json.loads(found.stdout)) == tagged["blue"]


def test_labels_file_needs_two_labels(tmp_path):
    one = tmp_path / "one.txt"
    one.write_text("cat\n\n# a comment\ncat\n")
    with pytest.raises(PixseekError, match="at least two labels"):
        read_labels(one)
    with pytest.raises(PixseekError, match="cannot read labels file"):
        read_labels(tmp_path / "missing.txt")
