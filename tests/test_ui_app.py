"""The page (ui/app.py) driven by Streamlit's own test harness over a small library of shapes.

Expected results come from the shapes generator's labels (colour, shape, folder, date taken).
"""

from __future__ import annotations

import io
import os
import random
import shutil
import sys
from datetime import date
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from indexer.catalog import Catalog
from indexer.library import ENV_LIBRARY, MODEL_FINGERPRINT, LibraryPaths
from search.engine import Library
from ui.shapes import draw_shape

APP = str(Path(__file__).resolve().parents[1] / "ui" / "app.py")
# The first run in a process imports torch and loads the model.
TIMEOUT = 120

_watched: set[str] = set()
_opened: list[str] = []


def _audit(event: str, args: tuple) -> None:
    if event == "open" and isinstance(args[0], (str, os.PathLike)) and os.fspath(args[0]) in _watched:
        _opened.append(os.fspath(args[0]))


@pytest.fixture(scope="module")
def opened_files():
    """Records every open() of the paths added to the returned set (audit hooks see all opens)."""
    sys.addaudithook(_audit)  # cannot be removed; it only looks at watched paths
    yield _watched, _opened
    _watched.clear()


@pytest.fixture
def library(dated_shapes_library) -> LibraryPaths:
    return dated_shapes_library[0]


@pytest.fixture
def labels(dated_shapes_library) -> dict:
    return dated_shapes_library[1]


def open_page(root: Path, monkeypatch) -> AppTest:
    monkeypatch.setenv(ENV_LIBRARY, str(root))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception
    return at


def result_ids(at: AppTest) -> list[int]:
    """Ids of the cards shown, in page order ("more like this" buttons are keyed by id)."""
    return [int(b.key.removeprefix("like-")) for b in at.button if b.key and b.key.startswith("like-")]


def card_names(at: AppTest) -> list[str]:
    """The file names the cards show (each one opens its photo)."""
    return [b.label for b in at.button if b.key and b.key.startswith("open-")]


def paths_of(library: LibraryPaths, ids: list[int]) -> list[str]:
    catalog = Catalog(library.catalog)
    try:
        return [catalog.get(i).path for i in ids]
    finally:
        catalog.close()


def search(at: AppTest, text: str) -> AppTest:
    at.text_input(key="q").input(text).run()
    assert not at.exception
    return at


def png_of(colour: str, shape: str) -> bytes:
    buf = io.BytesIO()
    draw_shape(colour, shape, random.Random(2024), size=128).save(buf, "PNG")
    return buf.getvalue()


def test_text_query_puts_a_red_circle_first(library, labels, monkeypatch):
    at = search(open_page(library.root, monkeypatch), "a red circle")
    paths = paths_of(library, result_ids(at))
    assert len(paths) == 20  # the default page size
    first = labels[paths[0]][1]
    assert (first.colour, first.shape) == ("red", "circle")
    assert card_names(at) == [Path(p).name for p in paths]  # each card is labelled with its file
    scores = [float(c.value.split("match ")[1][:4]) for c in at.caption if c.value.startswith("match ")]
    assert scores == sorted(scores, reverse=True) and len(scores) == len(paths)


def test_combined_and_negative_terms_and_bad_syntax(library, labels, monkeypatch):
    at = search(open_page(library.root, monkeypatch), '"circle" - "red"')
    first = labels[paths_of(library, result_ids(at))[0]][1]
    assert first.shape == "circle" and first.colour != "red"
    search(at, '"unbalanced')
    assert "unbalanced quotes" in at.warning[0].value
    assert not result_ids(at)


def test_typed_path_is_searched_as_text_and_never_opened(library, tmp_path, monkeypatch, opened_files):
    watched, opened = opened_files
    outside = tmp_path / "private.jpg"
    outside.write_bytes(png_of("blue", "star"))  # a real image the page must not read
    watched.add(str(outside))
    at = search(open_page(library.root, monkeypatch), str(outside))
    assert result_ids(at), "a path is just text to the page, and text always ranks something"
    assert not opened


def test_upload_searches_by_example(library, labels, monkeypatch):
    at = open_page(library.root, monkeypatch)
    at.file_uploader[0].set_value(("my-star.png", png_of("blue", "star"), "image/png")).run()
    assert not at.exception and not at.error
    first = labels[paths_of(library, result_ids(at))[0]][1]
    assert (first.colour, first.shape) == ("blue", "star")
    assert any("my-star.png" in md.value for md in at.markdown)


def test_more_like_this_uses_the_stored_vector(library, labels, monkeypatch, opened_files):
    watched, opened = opened_files
    at = search(open_page(library.root, monkeypatch), "a green square")
    chosen = result_ids(at)[0]
    chosen_path = paths_of(library, [chosen])[0]
    watched.add(chosen_path)
    opened.clear()
    at.button(key=f"like-{chosen}").click().run()
    assert not at.exception
    ids = result_ids(at)
    assert chosen not in ids
    lib = Library.open(library.root)
    try:
        assert ids == [r.id for r in lib.search(like=chosen, k=len(ids))]
    finally:
        lib.close()
    assert not opened, "the chosen photo was read again instead of using its stored vector"
    assert any(f"Photos like **{Path(chosen_path).name}**" in md.value for md in at.markdown)
    assert at.text_input(key="q").value == ""  # the box no longer claims a text search
    best, chosen_label = labels[paths_of(library, ids[:1])[0]][1], labels[chosen_path][1]
    assert (best.colour, best.shape) == (chosen_label.colour, chosen_label.shape)


def test_open_shows_the_photo_with_its_metadata(library, labels, monkeypatch):
    at = search(open_page(library.root, monkeypatch), "a yellow triangle")
    chosen = result_ids(at)[0]
    path = paths_of(library, [chosen])[0]
    at.button(key=f"open-{chosen}").click().run()
    assert not at.exception
    details = next(md.value for md in at.markdown if "**Path**" in md.value)
    taken = date.fromisoformat(labels[path][2])
    assert f"`{path}`" in details
    assert f"**Taken** {taken.day} {taken:%b %Y}" in details
    assert "**Size** 128 × 128 px" in details
    assert at.button(key=f"dialog-like-{chosen}")


def test_filters_narrow_by_folder_and_date_and_say_when_nothing_is_left(library, labels, monkeypatch):
    at = search(open_page(library.root, monkeypatch), "a purple star")
    at.selectbox(key="per_page").set_value(100).run()
    garden = {p for p, (folder, _, _) in labels.items() if folder == "garden"}
    at.selectbox(key="folder").set_value(os.path.dirname(next(iter(garden)))).run()
    assert set(paths_of(library, result_ids(at))) == garden
    at.selectbox(key="folder").set_value("All folders").run()
    # The picker only offers days between the library's first and last photo.
    last = max(taken for _, _, taken in labels.values())
    at.date_input(key="dates").set_value((date(2021, 1, 1), date.fromisoformat(last))).run()
    assert not at.exception
    assert set(paths_of(library, result_ids(at))) == {p for p, (_, _, taken) in labels.items() if taken > "2021"}
    at.selectbox(key="folder").set_value(os.path.dirname(next(iter(garden)))).run()  # garden is all 2020
    assert not at.exception and not result_ids(at)
    assert "No photos found" in at.info[0].value and "widen the filters" in at.info[0].value


def test_pages_step_through_all_results(library, labels, monkeypatch):
    at = search(open_page(library.root, monkeypatch), "an orange circle")
    seen: list[int] = []
    for _ in range(len(labels) // 20):
        seen += result_ids(at)
        at.button(key="next").click().run()
    last = result_ids(at)
    assert len(last) == len(labels) % 20 and at.button(key="next").disabled
    catalog = Catalog(library.catalog)
    assert sorted(seen + last) == catalog.indexed_ids()
    catalog.close()
    at.button(key="previous").click().run()
    assert result_ids(at) == seen[-20:]


def test_empty_and_missing_libraries_say_what_to_do(tmp_path, demo_spec, monkeypatch):
    from indexer.runner import run_index

    at = open_page(tmp_path / "nowhere", monkeypatch)
    assert "no library at" in at.info[0].value
    (tmp_path / "photos").mkdir()
    empty = LibraryPaths.at(tmp_path / "empty")
    run_index(empty, [tmp_path / "photos"], model=demo_spec, workers=0)
    at = open_page(empty.root, monkeypatch)
    assert "has no photos yet" in at.info[0].value and "pixseek index" in at.info[0].value


def test_bad_uploads_get_a_message(library, monkeypatch):
    at = open_page(library.root, monkeypatch)
    at.file_uploader[0].set_value(("holiday.jpg", b"this is a letter, not a photo", "image/jpeg")).run()
    assert not at.exception
    assert "cannot read the uploaded image: not an image" in at.error[0].value
    assert not result_ids(at)
    too_big = png_of("red", "square") + bytes(20 * 1024 * 1024)
    at.file_uploader[0].set_value(("huge.png", too_big, "image/png")).run()
    assert not at.exception
    assert "over the 20 MB limit" in at.error[0].value


def test_library_of_other_weights_gets_a_message(library, tmp_path, monkeypatch):
    copy = tmp_path / "library"
    shutil.copytree(library.root, copy)
    catalog = Catalog(copy / "catalog.db")
    catalog.set_setting(MODEL_FINGERPRINT, "local:0000000000000000")
    catalog.close()
    at = open_page(copy, monkeypatch)
    assert "changed since the library" in at.error[0].value
