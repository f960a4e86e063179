"""Thumbnails for the page, made once per version of a photo and kept in the library's thumbs/.

A thumbnail is keyed by catalog id + content hash: a moved photo keeps its thumbnail, an edited
one gets a new file (and the old one is removed). Photos are decoded by the indexer's guarded
decoder, so thumbnails are upright (EXIF orientation), JPEGs are DCT-scaled while decoding, and a
bad file costs one placeholder, not the page. Only paths from the catalog ever reach this module.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

from PIL import Image, ImageOps

from ui.page_backend import DecodeError, Result, decode_image

# Files per subfolder of thumbs/: keeps directories small and the stale-version sweep cheap.
BUCKET = 1000
JPEG_QUALITY = 85
# Decoding releases the GIL, so a few threads make a cold page of thumbnails several times faster.
THREADS = min(4, os.cpu_count() or 1)


@dataclass(frozen=True)
class ThumbSize:
    name: str
    pixels: int  # side of the square, or the longest side
    square: bool  # centre-cropped square (the grid) or the whole photo (the large view)


GRID = ThumbSize("grid", 360, square=True)
LARGE = ThumbSize("large", 1280, square=False)
SIZES = {size.name: size for size in (GRID, LARGE)}


@dataclass(frozen=True)
class Thumb:
    image: str | bytes | None  # a JPEG file or its bytes: what st.image takes
    problem: str | None = None  # why there is no image (file gone, corrupt...)


def thumb_path(thumbs_dir: Path, image_id: int, content_hash: str | None, size: ThumbSize) -> Path:
    return thumbs_dir / f"{image_id // BUCKET:04d}" / f"{image_id}-{content_hash or 'nohash'}-{size.name}.jpg"


def thumb_url(result: Result, size: ThumbSize) -> str:
    """Where the page server (ui/page_server.py) serves this thumbnail; changes when the photo does."""
    return f"/thumb/{size.name}/{result.id}-{result.hash or 'nohash'}.jpg"


def thumbnail(thumbs_dir: Path, result: Result, size: ThumbSize = GRID) -> Thumb:
    """The cached thumbnail of a search result, made now if missing."""
    target = thumb_path(thumbs_dir, result.id, result.hash, size)
    if target.is_file():
        return Thumb(str(target))
    try:
        # Shortest side >= size.pixels is all either shape needs; the decoder reduces to that.
        decoded = decode_image(result.path, target_size=size.pixels)
    except DecodeError as exc:
        return Thumb(None, exc.reason)
    data = _jpeg(decoded.image, size)
    try:
        _write_atomic(target, data)
    except OSError:
        return Thumb(data)  # a read-only library (e.g. on a DVD) still gets its pictures
    _remove_old_versions(target, result.id, size)
    return Thumb(str(target))


def make_ahead(
    thumbs_dir: Path, photos: list[Result], on_progress: Callable[[int, int], None] | None = None
) -> dict[str, int]:
    """Both thumbnails of every photo, so no page waits for one: counts of 'ready' and 'failed' photos.

    on_progress(done, total) is called after each photo."""
    counts = {"ready": 0, "failed": 0}

    def make(photo: Result) -> bool:
        return all(thumbnail(thumbs_dir, photo, size).image is not None for size in SIZES.values())

    with ThreadPoolExecutor(THREADS) as pool:
        for done, ok in enumerate(pool.map(make, photos), 1):
            counts["ready" if ok else "failed"] += 1
            if on_progress is not None:
                on_progress(done, len(photos))
    return counts


def upload_preview(data: bytes, size: ThumbSize = GRID) -> bytes:
    """A small JPEG of an uploaded query photo, through the same guarded decoder (raises DecodeError)."""
    return _jpeg(decode_image(BytesIO(data), target_size=size.pixels).image, size)


def _jpeg(image: Image.Image, size: ThumbSize) -> bytes:
    if size.square:
        image = ImageOps.fit(image, (size.pixels, size.pixels), Image.Resampling.LANCZOS)
    else:
        image.thumbnail((size.pixels, size.pixels), Image.Resampling.LANCZOS)
    buffer = BytesIO()
    image.save(buffer, "JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def _write_atomic(target: Path, data: bytes) -> None:
    # Two sessions may make the same thumbnail at once; a reader must never see half a file.
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".jpg")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _remove_old_versions(current: Path, image_id: int, size: ThumbSize) -> None:
    for old in current.parent.glob(f"{image_id}-*-{size.name}.jpg"):
        if old != current:
            old.unlink(missing_ok=True)
