"""Chinese and English queries find their photos with the bundled bilingual model (data/demo-model-zh).

The model is a transformers ALIGN trained on the shapes world captioned in both languages
(data/train_zh_model.py), loaded through the transformers backend like any hf-dir: folder. Every
colour x shape query, in Chinese ("红色的圆形") and in English ("a red circle"), over a fresh
gallery, exact and IVF-PQ.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from indexer.library import LibraryPaths
from indexer.model import ModelSpec
from indexer.runner import run_index
from pixseek_data.shapes import COLOURS, SHAPES, caption, caption_zh
from search import Library
from tests.conftest import TEST_WORKERS
from tests.harness import cli

QUERIES = [(c, s) for c in COLOURS for s in SHAPES]


@pytest.fixture(scope="module")
def labels(shapes_gallery) -> dict[str, tuple[str, str]]:
    _, images = shapes_gallery
    return {img.path.name: (img.colour, img.shape) for img in images}


@pytest.fixture(scope="module", params=["flat", "ivfpq"])
def zh_library(request, tmp_path_factory, shapes_gallery) -> Library:
    folder, _ = shapes_gallery
    paths = LibraryPaths.at(tmp_path_factory.mktemp(f"zh-{request.param}"))
    run_index(paths, [folder], model=ModelSpec.parse("demo-zh"), index_kind=request.param, workers=TEST_WORKERS)
    library = Library.open(paths.root)
    assert library.info().index["type"] == request.param
    yield library
    library.close()


@pytest.mark.parametrize("language, name", [("zh", caption_zh), ("en", caption)])
def test_every_colour_shape_query_has_precision_at_10_of_at_least_0_9(zh_library, labels, language, name):
    precision = {}
    for colour, shape in QUERIES:
        results = zh_library.search(name(colour, shape), k=10)
        precision[name(colour, shape)] = sum(labels[Path(r.path).name] == (colour, shape) for r in results) / 10
    print(f"{language}: min precision@10 {min(precision.values()):.2f}")
    low = {q: p for q, p in precision.items() if p < 0.9}
    assert not low, f"precision@10 below 0.9 for {low}"


def test_search_in_chinese_from_the_command_line_returns_red_circles_first(tmp_path):
    library = tmp_path / "demo" / "library"
    out = cli("demo", "--lang", "zh", "--dir", str(tmp_path / "demo"), "--per-class", "3").stdout
    assert "pixseek search '红色的圆形'" in out
    found = json.loads(cli("search", "红色的圆形", "-k", "3", "--json", "--library", str(library)).stdout)
    names = [Path(hit["path"]).name for hit in found]
    assert len(names) == 3 and all(n.startswith("red-circle") for n in names), names
