"""The page's thumbnail cache (ui/thumbs.py): made once, upright, renewed when the photo changes."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from indexer.decode import DecodeError, decode_image
from search.engine import Result
from ui.thumbs import GRID, LARGE, thumb_path, thumbnail, thumbnails, upload_preview

ORIENTATION = 0x0112


def photo(path: Path, size: tuple[int, int], orientation: int | None = None, colour=(200, 30, 30)) -> Path:
    exif = Image.Exif()
    if orientation is not None:
        exif[ORIENTATION] = orientation
    Image.new("RGB", size, colour).save(path, "JPEG", exif=exif)
    return path


def result(image_id: int, path: Path, content_hash: str) -> Result:
    return Result(image_id, str(path), 0.5, str(path.parent), None, None, None, None, None, None, None,
                  path.stat().st_size, content_hash)


def test_thumbnail_is_made_once_and_then_read_from_disk(tmp_path):
    src = photo(tmp_path / "a.jpg", (800, 600))
    first = thumbnail(tmp_path / "thumbs", result(7, src, "h1"))
    assert first.image == str(thumb_path(tmp_path / "thumbs", 7, "h1", GRID))
    with Image.open(first.image) as img:
        assert img.size == (GRID.pixels, GRID.pixels)
    src.unlink()  # a second call must not need the photo at all
    assert thumbnail(tmp_path / "thumbs", result(7, tmp_path / "thumbs", "h1")).image == first.image


def test_large_view_is_upright_by_exif_orientation(tmp_path):
    # Stored 400x200 with "rotate 90°" (6): upright it is 200 wide and 400 high.
    src = photo(tmp_path / "rotated.jpg", (400, 200), orientation=6)
    with Image.open(thumbnail(tmp_path / "thumbs", result(1, src, "h"), LARGE).image) as img:
        assert img.size == (200, 400)


def test_changed_photo_gets_a_new_thumbnail_and_the_old_one_goes(tmp_path):
    thumbs = tmp_path / "thumbs"
    src = photo(tmp_path / "a.jpg", (300, 300), colour=(200, 30, 30))
    old = thumbnail(thumbs, result(3, src, "old")).image
    photo(src, (300, 300), colour=(30, 30, 200))
    new = thumbnail(thumbs, result(3, src, "new")).image
    assert new != old and not Path(old).exists()
    with Image.open(new) as img:
        r, _, b = img.getpixel((10, 10))
        assert b > r  # the edited (blue) picture, not the cached red one


def test_unreadable_photo_gives_a_reason_not_an_exception(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff this is not really a jpeg")
    thumbs = thumbnails(tmp_path / "thumbs", [result(1, broken, "x"), result(2, photo(tmp_path / "ok.jpg", (50, 50)), "y")])
    with pytest.raises(DecodeError) as why:
        decode_image(broken)
    assert thumbs[0].image is None and thumbs[0].problem == why.value.reason  # the decoder's own words
    assert thumbs[1].image is not None and thumbs[1].problem is None


def test_unwritable_library_still_gets_pictures(tmp_path):
    blocked = tmp_path / "thumbs"
    blocked.write_text("a file where the thumbs folder should be")
    thumb = thumbnail(blocked, result(1, photo(tmp_path / "a.jpg", (500, 400)), "h"))
    assert isinstance(thumb.image, bytes)
    with Image.open(io.BytesIO(thumb.image)) as img:
        assert img.size == (GRID.pixels, GRID.pixels)


def test_upload_preview_goes_through_the_guarded_decoder(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (640, 480), (0, 120, 0)).save(buf, "PNG")
    with Image.open(io.BytesIO(upload_preview(buf.getvalue()))) as img:
        assert img.format == "JPEG" and img.size == (GRID.pixels, GRID.pixels)
