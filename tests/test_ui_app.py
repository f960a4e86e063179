"""The page (ui/app.py) driven by Streamlit's own test harness over small libraries of shapes.

Expected results come from the shapes generator's labels (colour, shape, folder, date taken).
The grid is one component: what it shows is read from the data the page hands it.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import shutil
import sys
from datetime import date
from pathlib import Path

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from indexer.library.catalog import Catalog
from pixseek_data.shapes import draw_shape, generate_gallery
from search import ENV_LIBRARY, Filters, Library, LibraryPaths
from tests.conftest import TEST_WORKERS
from ui.page_backend import MAX_QUERY_CHARS, MAX_TERMS, PageLibrary, PixseekError, check_query
from ui.page_text import camera, duplicates_csv, literal, shown

APP = str(Path(__file__).resolve().parents[1] / "ui" / "app.py")
# The first run in a process imports torch and loads the model.
TIMEOUT = 120
MAKE = 0x010F
MODEL = 0x0110

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


def index(folder: Path, root: Path, demo_spec) -> LibraryPaths:
    from indexer.runner import run_index

    lib = LibraryPaths.at(root)
    run_index(lib, [folder], model=demo_spec, workers=TEST_WORKERS)
    return lib


def open_page(root: Path, monkeypatch) -> AppTest:
    monkeypatch.setenv(ENV_LIBRARY, str(root))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception
    return at


def grid(at: AppTest, key: str = "grid") -> list[dict]:
    """The photos the grid with this key shows, in page order."""
    found = [e for e in at.get("bidi_component") if e.proto.id.endswith(f"-{key}")]
    return json.loads(found[0].proto.json)["photos"] if found else []


def result_ids(at: AppTest) -> list[int]:
    return [p["id"] for p in grid(at)]


def paths_of(library: LibraryPaths, ids: list[int]) -> list[str]:
    catalog = Catalog(library.catalog)
    try:
        return [catalog.get(i).path for i in ids]
    finally:
        catalog.close()


def pick_folder(at: AppTest, part: str) -> AppTest:
    """Choose the folder whose label in the folder filter contains `part`."""
    folder = at.selectbox(key="folder")
    folder.select_index(next(i for i, label in enumerate(folder.options) if part in label)).run()
    assert not at.exception
    return at


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
    photos = grid(at)
    paths = paths_of(library, [p["id"] for p in photos])
    assert len(paths) == 20  # the default page size
    first = labels[paths[0]][1]
    assert (first.colour, first.shape) == ("red", "circle")
    assert [p["name"] for p in photos] == [Path(p).name for p in paths]
    scores = [float(p["score"]) for p in photos]
    assert scores == sorted(scores, reverse=True)
    assert all(p["thumb"].startswith(f"/thumb/grid/{p['id']}-") for p in photos)  # served by id, not by path
    taken = date.fromisoformat(labels[paths[0]][2])
    assert photos[0]["date"] == f"{taken.day} {taken:%b %Y}" and photos[0]["dims"].startswith("128 × 128 px")


def test_start_page_shows_latest_photos_folders_and_one_click_browses_a_folder(library, labels, monkeypatch):
    at = open_page(library.root, monkeypatch)
    latest = paths_of(library, result_ids(at))
    taken = [labels[p][2] for p in latest]
    assert taken == sorted(taken, reverse=True) and taken[0] == max(t for _, _, t in labels.values())
    garden = next(b for b in at.button if b.key and b.key.startswith("folder-") and b.label.startswith("garden"))
    assert garden.label.endswith(f"· {sum(f == 'garden' for f, _, _ in labels.values())}")
    garden.click().run()
    shown_paths = paths_of(library, result_ids(at))
    assert shown_paths and {labels[p][0] for p in shown_paths} == {"garden"}


def test_combined_and_negative_terms_and_bad_syntax(library, labels, monkeypatch):
    at = search(open_page(library.root, monkeypatch), '"circle" - "red"')
    first = labels[paths_of(library, result_ids(at))[0]][1]
    assert first.shape == "circle" and first.colour != "red"
    search(at, '"unbalanced')
    assert "unbalanced quotes" in at.warning[0].value
    assert not result_ids(at)


def test_an_overlong_query_is_refused_before_any_model_call(library, monkeypatch):
    at = search(open_page(library.root, monkeypatch), " + ".join(f'"t{i}"' for i in range(MAX_TERMS + 1)))
    assert f"has {MAX_TERMS + 1} terms, over the page's {MAX_TERMS}" in at.warning[0].value and not result_ids(at)
    # The box stops typing at the limit; a client that skips the widget is refused by the server.
    with pytest.raises(PixseekError, match="characters long"):
        check_query("a" * (MAX_QUERY_CHARS + 1))


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
    assert any("my\\-star\\.png" in md.value for md in at.markdown)


def test_filters_narrow_by_folder_and_date_and_say_when_nothing_is_left(library, labels, monkeypatch):
    at = search(open_page(library.root, monkeypatch), "a purple star")
    at.selectbox(key="per_page").set_value(100).run()
    garden = {p for p, (folder, _, _) in labels.items() if folder == "garden"}
    pick_folder(at, "garden")
    assert set(paths_of(library, result_ids(at))) == garden
    at.selectbox(key="folder").set_value(None).run()
    # The picker only offers days between the library's first and last photo.
    last = max(taken for _, _, taken in labels.values())
    at.date_input(key="dates").set_value((date(2021, 1, 1), date.fromisoformat(last))).run()
    assert not at.exception
    assert set(paths_of(library, result_ids(at))) == {p for p, (_, _, taken) in labels.items() if taken > "2021"}
    pick_folder(at, "garden")
    assert not at.exception and not result_ids(at)  # garden is all 2020
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


def test_tags_show_on_photos_and_filter_them(library, tmp_path, monkeypatch):
    from search.tags import tag_images

    copy = tmp_path / "library"
    shutil.copytree(library.root, copy)
    lib = Library.open(copy)
    counts = tag_images(lib, ["a red shape", "a blue shape", "a green shape"])
    lib.close()
    at = open_page(copy, monkeypatch)
    tag_buttons = {b.label: b for b in at.button if b.key and b.key.startswith("tag-")}
    assert set(tag_buttons) == {f"{literal(t)} · {n}" for t, n in counts.items() if n}
    at.selectbox(key="tag").set_value("a red shape").run()
    photos = grid(at)
    assert len(photos) == min(20, counts["a red shape"])
    assert all("a red shape" in p["tags"] for p in photos)


def test_empty_and_missing_libraries_say_what_to_do(tmp_path, demo_spec, monkeypatch):
    at = open_page(tmp_path / "nowhere", monkeypatch)
    assert "no library at" in at.info[0].value
    (tmp_path / "photos").mkdir()
    empty = index(tmp_path / "photos", tmp_path / "empty", demo_spec)
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
    catalog.save_settings(model_fingerprint="local:0000000000000000")
    catalog.close()
    at = open_page(copy, monkeypatch)
    assert "changed since the library" in at.error[0].value


def test_duplicates_are_reviewed_side_by_side_and_the_keep_mark_is_stored(tmp_path, demo_spec, monkeypatch):
    photos = tmp_path / "photos"
    gallery = generate_gallery(photos, per_class=1, seed=5)
    original = gallery[0].path
    copy = photos / f"copy-of-{original.name}"
    shutil.copy(original, copy)
    lib = index(photos, tmp_path / "library", demo_spec)
    at = open_page(lib.root, monkeypatch)
    at.segmented_control(key="view").set_value("Duplicates").run()
    assert not at.exception
    catalog = Catalog(lib.catalog)
    ids = [catalog.by_path(str(p.resolve())).id for p in (original, copy)]
    catalog.close()
    assert {p["id"] for i in ids for p in grid(at, f"dupe-{i}")} == set(ids)
    keep = max(ids)
    at.button(key=f"keep-{keep}").click().run()
    assert not at.exception and at.button(key=f"keep-{keep}").label == "Kept"
    page_lib = PageLibrary(lib.root)
    assert page_lib.kept() == {keep: [i for i in ids if i != keep]}
    rows = list(csv.reader(io.StringIO(duplicates_csv(page_lib.duplicates(), page_lib.kept()).decode())))
    assert rows[0] == ["group", "decision", "path"]
    assert sorted(r[1:] for r in rows[1:]) == sorted(
        [["keep" if i == keep else "copy", p] for i, p in zip(ids, paths_of(lib, ids))]
    )
    assert original.exists() and copy.exists()  # reviewing never deletes or moves a file
    page_lib.close()


def test_a_keep_mark_replaces_those_it_overlaps_and_is_refused_while_an_index_run_writes(tmp_path, demo_spec):
    from indexer.library import write_lock

    generate_gallery(tmp_path / "photos", per_class=1, seed=5)
    lib = index(tmp_path / "photos", tmp_path / "library", demo_spec)
    page_lib = PageLibrary(lib.root)
    a, b, c = [p.id for p in page_lib.browse(Filters(), 3)]
    page_lib.mark_keep(a, [a, b])
    page_lib.mark_keep(c, [b, c])  # b is in another group now: the mark that held it goes
    with write_lock(lib), pytest.raises(PixseekError, match="already updating"):
        page_lib.mark_keep(a, [a, b])
    page_lib.close()
    reopened = PageLibrary(lib.root)
    assert reopened.kept() == {c: [b]}
    reopened.close()


def jpeg_with_camera(path: Path, make: str, model: str) -> None:
    exif = Image.Exif()
    exif[MAKE], exif[MODEL] = make, model
    draw_shape("red", "circle", random.Random(1), size=96).save(path, "JPEG", exif=exif)


def test_markup_and_bytes_in_names_and_exif_are_shown_literally(tmp_path, demo_spec, monkeypatch):
    photos = tmp_path / "photos"
    hostile = photos / "a` [Download the fix](https:evil.example) `b"
    hostile.mkdir(parents=True)  # (the name held a slash: a nested folder, not this test)
    make, model = "[click me](https://example.com/x)", "![t](https://example.com/track.png)"
    jpeg_with_camera(hostile / "camera.jpg", make, model)
    latin1 = os.path.join(os.fsencode(photos), b"Fotos_\xe9t\xe9")
    os.mkdir(latin1)
    jpeg_with_camera(Path(os.fsdecode(os.path.join(latin1, b"bad\xff\xfename.jpg"))), "Canon", "Canon EOS 5D")
    lib = index(photos, tmp_path / "library", demo_spec)
    at = open_page(lib.root, monkeypatch)
    by_name = {p["name"]: p for p in grid(at)}
    assert by_name["camera.jpg"]["camera"] == f"{make} {model}"  # the grid sets it as text (grid.js)
    assert by_name["bad\\xff\\xfename.jpg"]["camera"] == "Canon EOS 5D"
    folder_labels = [b.label for b in at.button if b.key and b.key.startswith("folder-")]
    assert "Fotos\\_\\\\xe9t\\\\xe9 · 1" in folder_labels and literal(hostile.name) + " · 1" in folder_labels
    assert any(label.startswith(shown(os.fsdecode(latin1))) for label in at.selectbox(key="folder").options)
    pick_folder(at, "Fotos_")
    assert not at.exception and [p["name"] for p in grid(at)] == ["bad\\xff\\xfename.jpg"]


def test_camera_names_the_make_once():
    assert camera("Canon", "Canon PowerShot SX60 HS") == "Canon PowerShot SX60 HS"
    assert camera("NIKON CORPORATION", "NIKON D70") == "NIKON D70"
    assert camera("Apple", "iPhone 12") == "Apple iPhone 12"
    assert camera("Canon", None) == "Canon" and camera(None, None) == ""


# words, concepts and explanations ----------------------------------------------------------------
WARM = ("red", "orange", "yellow")


def labels_by_id(library: LibraryPaths, labels: dict, ids: list[int]) -> list:
    return [labels[p][1] for p in paths_of(library, ids)]


def test_words_in_photo_keep_the_photos_whose_text_holds_them_and_rank_with_the_query(library, labels, monkeypatch):
    at = open_page(library.root, monkeypatch)
    at.text_input(key="words").input("star").run()
    assert not at.exception
    stars = sum(s.shape == "star" for _, s, _ in labels.values())
    at.selectbox(key="per_page").set_value(100).run()
    photos = grid(at)
    assert len(photos) == stars
    assert {s.shape for s in labels_by_id(library, labels, [p["id"] for p in photos])} == {"star"}
    assert all(p["words"] == "star" for p in photos)  # the file names are all the text they have
    search(at, "a red shape")
    first = labels_by_id(library, labels, result_ids(at)[:1])[0]
    assert (first.colour, first.shape) == ("red", "star") and len(result_ids(at)) == stars
    assert any(c.value == "with the words **star**" for c in at.caption)


def test_a_concept_taught_from_ticked_results_ranks_and_filters_the_results(library, labels, tmp_path, monkeypatch):
    copy = tmp_path / "library"
    shutil.copytree(library.root, copy)
    at = search(open_page(copy, monkeypatch), "a shape")
    at.selectbox(key="per_page").set_value(100).run()
    shown_ids = result_ids(at)
    colours = dict(zip(shown_ids, (s.colour for s in labels_by_id(library, labels, shown_ids))))
    warm = [i for i in shown_ids if colours[i] in WARM]
    cool = [i for i in shown_ids if colours[i] not in WARM]
    assert at.selectbox(key="concept").disabled  # nothing taught yet
    at.text_input(key="teach_name").input("warm colours")
    yes, no = random.Random(0).sample(warm, 5), random.Random(0).sample(cool, 5)
    at.multiselect(key="teach_yes").set_value(yes)
    at.multiselect(key="teach_no").set_value(no).run()
    at.button(key="teach").click().run()
    assert not at.exception and not at.warning, [w.value for w in at.warning]
    assert "Taught **warm colours** from 5 yes and 5 no examples · held-out accuracy" in at.success[0].value
    assert at.multiselect(key="teach_yes").value == [] and at.multiselect(key="teach_no").value == []

    at.selectbox(key="concept").set_value("warm colours").run()
    search(at, "")  # no query: ranked by the concept alone
    ranked = result_ids(at)
    assert len(ranked) == len(labels) and all(colours[i] in WARM for i in ranked[:20])
    search(at, "a circle")  # with a query the concept keeps the likely photos
    kept = labels_by_id(library, labels, result_ids(at))
    assert 0 < len(kept) < len(labels) and kept[0].shape == "circle" and kept[0].colour in WARM

    at.selectbox(key="concept").set_value(None).run()
    search(at, "a shape")
    at.multiselect(key="teach_yes").set_value([i for i in warm if i not in yes][:2]).run()
    at.text_input(key="teach_name").input("few").run()
    at.button(key="teach").click().run()
    assert not at.success and "a concept needs examples of both kinds" in at.error[0].value  # none on one side
    at.multiselect(key="teach_no").set_value([i for i in cool if i not in no][:1]).run()
    at.button(key="teach").click().run()
    assert "from 2 yes and 1 no examples · held-out accuracy n/a (too few examples)" in at.success[0].value
    assert [w.value.split(":")[0] for w in at.warning] == ["only 2 yes examples", "only 1 no example"]


def test_the_explain_view_splits_a_results_score_into_its_terms(library, labels, monkeypatch):
    at = search(open_page(library.root, monkeypatch), '"a red circle" - 0.5:"blue"')
    first = grid(at)[0]
    at.selectbox(key="explain_id").set_value(first["id"]).run()
    assert not at.exception
    terms = at.dataframe[0].value
    assert list(terms["Term"]) == ["a red circle", "blue"] and list(terms["Weight"]) == [1.0, -0.5]
    assert terms["Contribution"].sum() == pytest.approx(float(first["score"]), abs=0.006)  # the grid rounds
    assert f"Score **{terms['Contribution'].sum():.4f}**" in [m.value for m in at.markdown]
    assert "**Words matched** none" in [m.value for m in at.markdown]
    search(at, "a blue star")  # another search: the choice goes unless that photo is among its results
    assert at.selectbox(key="explain_id").value in [None, *result_ids(at)]


def test_the_sidebar_names_the_runtime_queries_run_on(library, monkeypatch):
    at = search(open_page(library.root, monkeypatch), "a red circle")
    about = [c.value for c in at.sidebar.caption if "photos · indexed" in c.value]
    assert len(about) == 1 and f"Runtime {literal('torch fp32 (asked for)')}" in about[0]  # the page's default
