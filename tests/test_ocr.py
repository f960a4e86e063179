"""OCR over real photos with rendered words (several fonts, sizes, colours, angles; English and
Chinese), and the keyword index over what it read."""

from __future__ import annotations

import json
import sqlite3

import pytest
from PIL import Image, ImageDraw, ImageFont

from indexer import ocr
from indexer.library import keywords
from indexer.ocr import OcrJob, TextBox, ocr_batch, ocr_one, read_text
from tests.conftest import CALTECH, need_shared
from tests.text_photos import cjk_font, find_font, plain_photo, render, source_photos

TEXT_PHOTOS = 16
PLAIN_PHOTOS = 4


def normalised(text: str) -> str:
    # OCR drops or adds spaces between words; a word counts as read when its letters are there.
    return "".join(text.split()).casefold()


@pytest.fixture(scope="module")
def read_photos(tmp_path_factory):
    """The rendered photos and plain ones, OCR'd once (in this process), with their keyword index."""
    caltech = need_shared(CALTECH)
    folder = tmp_path_factory.mktemp("ocr-photos")
    sources = source_photos(caltech, TEXT_PHOTOS + PLAIN_PHOTOS)
    photos = render(sources[:TEXT_PHOTOS], folder / "text")
    (folder / "plain").mkdir()
    plain = [plain_photo(s, folder / "plain" / f"plain-{i}.jpg") for i, s in enumerate(sources[TEXT_PHOTOS:])]
    paths = [p.path for p in photos] + plain
    results = {r.id: r for r in ocr_batch([OcrJob(i, str(p)) for i, p in enumerate(paths)], workers=0)}
    conn = sqlite3.connect(":memory:")
    keywords.ensure_table(conn)
    docs = [(i, keywords.document(p, root=folder, ocr_text=results[i].text)) for i, p in enumerate(paths)]
    keywords.upsert(conn, docs)
    return photos, results, conn


def recall(photos, results, language: str) -> float:
    words = [(i, w) for i, p in enumerate(photos) for w in p.words if (w.isascii()) == (language == "en")]
    if not words:
        pytest.skip(f"no {language} words rendered")
    return sum(normalised(w) in normalised(results[i].text) for i, w in words) / len(words)


def test_ocr_reads_most_english_words_rendered_on_real_photos(read_photos):
    photos, results, _ = read_photos
    assert recall(photos, results, "en") >= 0.85


def test_ocr_reads_most_chinese_words_rendered_on_real_photos(read_photos):
    if cjk_font() is None:
        pytest.skip("no CJK font installed (apt-get install fonts-wqy-microhei): Chinese words were not rendered")
    photos, results, _ = read_photos
    assert recall(photos, results, "zh") >= 0.85


def test_keyword_search_finds_the_photo_of_a_rendered_word_in_the_top_3(read_photos):
    photos, _, conn = read_photos
    words = [(i, w) for i, p in enumerate(photos) for w in p.words]
    found = [i in [hit for hit, _ in keywords.keyword_search(conn, [w], limit=3)] for i, w in words]
    assert sum(found) / len(words) >= 0.9


def test_real_photos_without_text_give_no_text(read_photos):
    _, results, _ = read_photos
    assert all(results[TEXT_PHOTOS + i].boxes == [] for i in range(PLAIN_PHOTOS))


def test_pictures_without_text_stop_after_the_cheap_look(monkeypatch):
    def no_recognition(*args, **kwargs):
        raise AssertionError("the recogniser ran on a picture without text")

    engine = ocr._engine()
    monkeypatch.setattr(engine.ocr, "text_rec", no_recognition)
    monkeypatch.setattr(engine.ocr, "text_cls", no_recognition)
    gradient = Image.linear_gradient("L").resize((1200, 900)).convert("RGB")
    for picture in [Image.new("RGB", (800, 600), (120, 160, 200)), gradient]:
        assert not ocr.has_text(picture)
        assert read_text(picture) == []


def test_the_cheap_look_sees_the_rendered_words(read_photos):
    photos, _, _ = read_photos
    assert all(ocr.has_text(Image.open(p.path)) for p in photos)


def test_boxes_are_in_full_resolution_upright_coordinates(tmp_path):
    """A big JPEG is decoded reduced; the box must still land where the word is in the full photo."""
    font = find_font("DejaVuSans-Bold.ttf")
    if font is None:
        pytest.skip("DejaVu fonts not installed")
    img = Image.new("RGB", (4000, 3000), (235, 230, 220))
    draw, big = ImageDraw.Draw(img), ImageFont.truetype(str(font), 160)
    draw.text((2400, 1800), "HARBOUR", font=big, fill=(20, 20, 20))
    word_left, word_top, word_right, word_bottom = draw.textbbox((2400, 1800), "HARBOUR", font=big)
    path = tmp_path / "big.jpg"
    img.save(path, quality=90)
    result = ocr_one(OcrJob(7, str(path)))
    [box] = [b for b in result.boxes if "HARBOUR" in b.text.upper()]
    xs, ys = [x for x, _ in box.box], [y for _, y in box.box]
    # The box holds the word, give or take a margin of a tenth of its height.
    margin = (word_bottom - word_top) / 10 + 8
    assert abs(min(xs) - word_left) < 3 * margin and abs(max(xs) - word_right) < 3 * margin
    assert abs(min(ys) - word_top) < 3 * margin and abs(max(ys) - word_bottom) < 3 * margin
    assert 0.5 <= box.confidence <= 1.0
    assert TextBox.from_dict(json.loads(json.dumps(box.as_dict()))).text == box.text


def test_batch_in_worker_processes_keeps_order_and_reports_undecodable_files(tmp_path):
    font = find_font("DejaVuSans-Bold.ttf")
    if font is None:
        pytest.skip("DejaVu fonts not installed")
    good = tmp_path / "sign.png"
    img = Image.new("RGB", (500, 200), (250, 250, 250))
    ImageDraw.Draw(img).text((30, 60), "STATION", font=ImageFont.truetype(str(font), 64), fill=(0, 0, 0))
    img.save(good)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg at all")
    jobs = [OcrJob(3, str(broken)), OcrJob(5, str(good))]
    out = list(ocr_batch(jobs, workers=1))
    assert [r.id for r in out] == [3, 5]
    assert out[0].boxes is None and "not an image" in out[0].reason
    assert "STATION" in out[1].text.upper() and out[1].seconds > 0


@pytest.mark.parametrize(
    "size, mode", [((1, 1), "RGB"), ((10, 10), "L"), ((3000, 15), "RGBA"), ((15, 3000), "P"), ((40, 40), "1")]
)
def test_tiny_and_sliver_images_give_no_text_and_no_error(size, mode):
    assert read_text(Image.new(mode, size)) == []
