"""Search finds what a query means, with the project's own small CLIP, exact and IVF-PQ."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from indexer.library import LibraryPaths
from indexer.runner import run_index
from pixseek_data.shapes import COLOURS, SHAPES, draw_shape
from search import Library
from tests.conftest import TEST_WORKERS

QUERIES = [(c, s) for c in COLOURS for s in SHAPES]


def _precision_at_10(lib: Library, colour: str, shape: str, labels: dict[str, tuple[str, str]]) -> float:
    results = lib.search(f"a {colour} {shape}", k=10)
    return sum(labels[Path(r.path).name] == (colour, shape) for r in results) / 10


@pytest.fixture(scope="module")
def labels(shapes_gallery) -> dict[str, tuple[str, str]]:
    _, images = shapes_gallery
    return {img.path.name: (img.colour, img.shape) for img in images}


@pytest.fixture(scope="module")
def ivfpq_library(tmp_path_factory, shapes_gallery, demo_spec) -> LibraryPaths:
    folder, _ = shapes_gallery
    lib = LibraryPaths.at(tmp_path_factory.mktemp("ivfpq-lib"))
    run_index(lib, [folder], model=demo_spec, index_kind="ivfpq", workers=TEST_WORKERS)
    return lib


def test_every_colour_shape_query_has_precision_at_10_of_at_least_0_9(shapes_library, labels):
    lib = Library.open(shapes_library.root)
    assert lib.info().index["type"] == "flat"
    low = {q: p for q in QUERIES if (p := _precision_at_10(lib, *q, labels)) < 0.9}
    assert not low, f"precision@10 below 0.9 for {low}"


def test_forced_ivfpq_index_with_reranking_matches_exact_results(shapes_library, ivfpq_library, labels):
    exact, approx = Library.open(shapes_library.root), Library.open(ivfpq_library.root)
    assert approx.info().index["type"] == "ivfpq"
    for colour, shape in QUERIES:
        assert _precision_at_10(approx, colour, shape, labels) >= 0.9
        query = f"a {colour} {shape}"
        exact_top = [(Path(r.path).name, round(r.score, 4)) for r in exact.search(query, k=10)]
        approx_top = [(Path(r.path).name, round(r.score, 4)) for r in approx.search(query, k=10)]
        assert approx_top == exact_top


def test_image_query_with_a_new_red_circle_returns_red_circles_first(shapes_library, labels, tmp_path):
    query = tmp_path / "query.png"
    draw_shape("red", "circle", random.Random(99)).save(query)
    results = Library.open(shapes_library.root).search(image=query, k=5)
    assert [labels[Path(r.path).name] for r in results] == [("red", "circle")] * 5


def test_combined_query_takes_colour_from_the_image_and_shape_from_the_text(shapes_library, labels, tmp_path):
    query = tmp_path / "query.png"
    draw_shape("blue", "square", random.Random(5)).save(query)
    lib = Library.open(shapes_library.root)
    alone = [labels[Path(r.path).name] for r in lib.search(image=query, k=5)]
    combined = [labels[Path(r.path).name] for r in lib.search('2:"a circle"', image=query, k=5)]
    assert alone == [("blue", "square")] * 5
    assert combined == [("blue", "circle")] * 5


def test_scores_are_cosine_similarities_in_descending_order(shapes_library):
    results = Library.open(shapes_library.root).search("a green star", k=20)
    scores = [r.score for r in results]
    assert scores == sorted(scores, reverse=True)
    assert all(-1.0001 <= s <= 1.0001 for s in scores)
