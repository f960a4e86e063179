"""`pixseek ocr` and `index --ocr` end to end: words rendered on real photos are read, stored, found by
`search --text`; a second run reads nothing, a changed photo is read again."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import CALTECH, need_shared
from tests.harness import assert_one_line_error, cli
from tests.text_photos import cjk_font, plain_photo, render, source_photos


@pytest.fixture(scope="module")
def read_library(tmp_path_factory):
    """Two photos with rendered words and one without, indexed (demo model) and OCR'd once.

    Returns (env, photos folder, the rendered photos (a third one spare), the first OCR report)."""
    caltech = need_shared(CALTECH)
    root = tmp_path_factory.mktemp("ocr-cli")
    sources = source_photos(caltech, 4)
    rendered = render(sources[:3], root / "rendered")
    photos = root / "photos"
    photos.mkdir()
    for photo in rendered[:2]:
        shutil.copy(photo.path, photos / photo.path.name)
    plain_photo(sources[3], photos / "plain.jpg")
    env = {"PIXSEEK_LIBRARY": str(root / "library")}
    cli("index", str(photos), "--model", "demo", "--workers", "0", env=env)
    report = json.loads(cli("ocr", "--workers", "0", "--json", env=env).stdout)
    return env, photos, rendered, report


def search_text(env, words: str) -> list[dict]:
    return json.loads(cli("search", "--text", words, "--json", "-k", "3", env=env).stdout)


def test_ocr_reads_every_photo_and_finds_text_in_those_with_words(read_library):
    env, _, _, report = read_library
    assert (report["read"], report["with_text"], report["failed"]) == (3, 2, [])
    info = json.loads(cli("info", "--json", env=env).stdout)
    assert (info["text_read"], info["with_text"], info["ocr_on_index"]) == (3, 2, False)


def test_search_text_finds_the_photo_of_a_rendered_english_word_first(read_library):
    env, _, rendered, _ = read_library
    photo = rendered[0]  # (test_ocr.py measures recall over many words; OCR misses some)
    hits = search_text(env, photo.words[0])
    assert hits and Path(hits[0]["path"]).name == photo.path.name
    assert hits[0]["matched_words"][0].casefold() == photo.words[0]


def test_search_text_finds_a_rendered_chinese_word(read_library):
    if cjk_font() is None:
        pytest.skip("no CJK font installed (apt-get install fonts-wqy-microhei): Chinese words were not rendered")
    env, _, rendered, _ = read_library
    photo = rendered[1]
    hits = search_text(env, photo.words[1])
    assert hits and Path(hits[0]["path"]).name == photo.path.name


def test_a_second_run_reads_nothing_and_a_changed_photo_is_read_again(read_library):
    env, photos, rendered, _ = read_library
    assert json.loads(cli("ocr", "--workers", "0", "--json", env=env).stdout)["read"] == 0
    old_word, new_word = rendered[0].words[0], rendered[2].words[0]
    shutil.copy(rendered[2].path, photos / rendered[0].path.name)  # same name, other photo and words
    cli("index", str(photos), "--workers", "0", env=env)
    report = json.loads(cli("ocr", "--workers", "0", "--json", env=env).stdout)
    assert (report["read"], report["with_text"]) == (1, 1)
    assert [Path(r["path"]).name for r in search_text(env, new_word)][:1] == [rendered[0].path.name]
    assert search_text(env, old_word) == []


def test_ocr_text_and_boxes_are_stored_in_the_catalog(read_library):
    env, _, _, _ = read_library
    with sqlite3.connect(Path(env["PIXSEEK_LIBRARY"]) / "catalog.db") as db:
        rows = db.execute(
            "SELECT o.text, o.boxes_json FROM ocr o JOIN images i ON i.id = o.image_id WHERE i.hash = o.hash"
        ).fetchall()
    assert len(rows) == 3
    boxes = [json.loads(b) for text, b in rows if text]
    assert all(box and {"text", "box", "confidence"} <= set(box[0]) for box in boxes)


def test_index_ocr_is_remembered_and_reads_new_photos(tmp_path):
    caltech = need_shared(CALTECH)
    [photo] = render(source_photos(caltech, 1, offset=1), tmp_path / "rendered", chinese=False)
    folder = tmp_path / "photos"
    folder.mkdir()
    plain_photo(source_photos(caltech, 2, offset=2)[1], folder / "plain.jpg")
    env = {"PIXSEEK_LIBRARY": str(tmp_path / "library")}
    first = json.loads(
        cli("index", str(folder), "--model", "demo", "--workers", "0", "--ocr", "--json", env=env).stdout
    )
    assert first["ocr"]["read"] == 1
    shutil.copy(photo.path, folder / "sign.jpg")
    second = json.loads(cli("index", str(folder), "--workers", "0", "--json", env=env).stdout)
    assert second["ocr"]["read"] == 1  # only the new photo
    assert [Path(r["path"]).name for r in search_text(env, photo.words[0])] == ["sign.jpg"]
    third = json.loads(cli("index", str(folder), "--workers", "0", "--no-ocr", "--json", env=env).stdout)
    assert "ocr" not in third
    assert "ocr" not in json.loads(cli("index", str(folder), "--workers", "0", "--json", env=env).stdout)


def test_ocr_without_rapidocr_says_how_to_install_it(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "rapidocr_onnxruntime" else real(name, *a)
    )
    from pixseek_data.shapes import generate_gallery

    generate_gallery(tmp_path / "images", per_class=1, seed=2)
    env = {"PIXSEEK_LIBRARY": str(tmp_path / "library")}
    cli("index", str(tmp_path / "images"), "--model", "demo", "--workers", "0", env=env)
    assert_one_line_error(cli("ocr", code=1, env=env), 'pip install "pixseek[ocr]"')


def test_a_stopped_run_keeps_what_it_read_and_the_next_run_reads_the_rest(tmp_path, monkeypatch):
    from indexer import ocr_pass
    from pixseek_data.shapes import generate_gallery

    images = generate_gallery(tmp_path / "images", per_class=1, seed=4)
    env = {"PIXSEEK_LIBRARY": str(tmp_path / "library")}
    cli("index", str(tmp_path / "images"), "--model", "demo", "--workers", "0", env=env)
    real = ocr_pass.ocr_batch
    stop_after = ocr_pass.COMMIT_EVERY + 1

    def stopped(jobs, workers):  # Ctrl-C arrives while the photo after `stop_after` is being read
        for n, result in enumerate(real(jobs, workers), 1):
            yield result
            if n == stop_after:
                raise KeyboardInterrupt

    monkeypatch.setattr(ocr_pass, "ocr_batch", stopped)
    assert_one_line_error(cli("ocr", "--workers", "0", code=130, env=env), f"text of {stop_after} photos saved")
    monkeypatch.setattr(ocr_pass, "ocr_batch", real)
    rest = json.loads(cli("ocr", "--workers", "0", "--json", env=env).stdout)
    assert rest["read"] == len(images) - stop_after
