"""Photo metadata (capture time, camera, GPS position) read from EXIF.

Runs inside decoding worker processes, so it imports only Pillow. Real-world
EXIF is frequently broken (bad offsets, zero denominators, junk strings), so
every field is read on its own and any failure just leaves that field None:
metadata is a bonus, never a reason to lose a photo.
"""

from __future__ import annotations

import contextlib
import html
import math
import re
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from PIL import ExifTags, Image

__all__ = ["ImageMeta", "read_metadata", "warnings_ignored"]

_T = TypeVar("_T")

# Tag numbers (EXIF 2.3 / TIFF 6.0).
_MAKE = 0x010F
_MODEL = 0x0110
_DATETIME = 0x0132
_DATETIME_ORIGINAL = 0x9003
_DATETIME_DIGITIZED = 0x9004
_GPS_LAT_REF = 1
_GPS_LAT = 2
_GPS_LON_REF = 3
_GPS_LON = 4
_DESCRIPTION = 0x010E  # ImageDescription
_XP_KEYWORDS = 0x9C9E  # Windows' keywords: UTF-16LE, ";"-separated
# XMP's Dublin Core description and subject (keywords), as Lightroom, digiKam and phones write
# them: the text of each rdf:li inside, read without an XML parser (Pillow's needs defusedxml).
_XMP_FIELD = re.compile(rb"<dc:(description|subject)>(.*?)</dc:\1>", re.DOTALL)
_XMP_ITEM = re.compile(rb"<rdf:li[^>]*>(.*?)</rdf:li>", re.DOTALL)

# EXIF says "YYYY:MM:DD HH:MM:SS", but editors and phones also write "-", "/"
# or "." separators, a "T", fractional seconds or a zone; we keep the local
# wall-clock time, which is what the photographer saw.
_DATE_RE = re.compile(
    r"^\s*(\d{4})[:\-/.](\d{1,2})[:\-/.](\d{1,2})"
    r"(?:[ T]+(\d{1,2}):(\d{1,2})(?::(\d{1,2}))?)?"
)
# Unset camera clocks write 0000:00:00 (rejected by datetime itself); any
# other year before photography existed is junk too.
_MIN_YEAR = 1826


@dataclass
class ImageMeta:
    """What the catalog stores about a photo besides its pixels."""

    taken_at: str | None = None  # local time, "YYYY-MM-DDTHH:MM:SS"
    camera_make: str | None = None
    camera_model: str | None = None
    lat: float | None = None  # decimal degrees, north positive
    lon: float | None = None  # decimal degrees, east positive
    description: str | None = None  # EXIF/XMP description and keywords, a line each (keyword search)


@contextlib.contextmanager
def warnings_ignored() -> Iterator[None]:
    """Pillow's warnings (corrupt EXIF, truncated TIFF tags, ...) must never abort a decode, even
    under `-W error`. catch_warnings swaps process-wide state, so only the main thread (decoder
    processes, the CLI) uses it: in the UI server's threads, where thumbnails decode side by
    side, one thread's exit would restore the filters under another; there a warning is logged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def read_metadata(img: Image.Image) -> ImageMeta:
    """Extract ImageMeta from an opened image's EXIF; never raises."""
    with warnings_ignored():
        exif = _safe(img.getexif)
        if exif is None:
            return ImageMeta()
        exif_ifd = _safe(lambda: exif.get_ifd(ExifTags.IFD.Exif)) or {}
        gps_ifd = _safe(lambda: exif.get_ifd(ExifTags.IFD.GPSInfo)) or {}

        # Original is when the shutter fired; Digitized/DateTime are often
        # rewritten by scanners and editors, so they are only fallbacks.
        # Some writers misplace the Exif-IFD tags in IFD0, hence both lookups.
        taken_at = next(
            (
                when
                for tag in (_DATETIME_ORIGINAL, _DATETIME_DIGITIZED, _DATETIME)
                for ifd in (exif_ifd, exif)
                if (when := _safe(lambda ifd=ifd, tag=tag: parse_exif_datetime(_get(ifd, tag))))
            ),
            None,
        )

        lat_lon = _safe(lambda: gps_to_decimal(gps_ifd)) or (None, None)
        return ImageMeta(
            taken_at=taken_at,
            camera_make=_safe(lambda: _clean_text(_get(exif, _MAKE))),
            camera_model=_safe(lambda: _clean_text(_get(exif, _MODEL))),
            lat=lat_lon[0],
            lon=lat_lon[1],
            description=_safe(lambda: _description(img, exif)),
        )


def _description(img: Image.Image, exif: Any) -> str | None:
    """The photo's description and keywords from EXIF and XMP, a line each, repeats dropped."""
    lines = [_clean_text(_get(exif, _DESCRIPTION))]
    xp = _get(exif, _XP_KEYWORDS)
    if isinstance(xp, (bytes, tuple)):
        lines += bytes(xp).decode("utf-16-le", errors="replace").rstrip("\x00").split(";")
    xmp = img.info.get("xmp")
    if isinstance(xmp, bytes):
        for _, body in _XMP_FIELD.findall(xmp):
            lines += [html.unescape(item.decode("utf-8", errors="replace")) for item in _XMP_ITEM.findall(body)]
    kept = list(dict.fromkeys(line.strip() for line in lines if line and line.strip()))
    return "\n".join(kept) or None


def parse_exif_datetime(value: Any) -> str | None:
    """EXIF date string (or bytes) -> "YYYY-MM-DDTHH:MM:SS", None for junk."""
    text = _clean_text(value)
    if not text:
        return None
    m = _DATE_RE.match(text)
    if not m:
        return None
    parts = [int(g) if g is not None else 0 for g in m.groups()]
    try:
        dt = datetime(*parts)
    except ValueError:  # month 13, day 0, hour 24, ...
        return None
    if dt.year < _MIN_YEAR:
        return None
    return dt.strftime("%Y-%m-%dT%H:%M:%S")


def gps_to_decimal(gps: Any) -> tuple[float, float] | None:
    """GPS IFD mapping -> (lat, lon) in decimal degrees, None when unusable."""
    if not gps:
        return None
    lat = _coordinate(_get(gps, _GPS_LAT), _get(gps, _GPS_LAT_REF), "N", "S", 90.0)
    lon = _coordinate(_get(gps, _GPS_LON), _get(gps, _GPS_LON_REF), "E", "W", 180.0)
    # Half a position is useless for a map, so it is both or neither.
    if lat is None or lon is None:
        return None
    # Receivers without a fix commonly write zeros: "Null Island" is a
    # placeholder, not a place anyone photographed.
    if lat == 0.0 and lon == 0.0:
        return None
    return lat, lon


def _coordinate(value: Any, ref: Any, positive: str, negative: str, limit: float) -> float | None:
    if value is None:
        return None
    if isinstance(value, (tuple, list)):
        parts = [_to_float(v) for v in value[:3]]
    else:  # a few writers store plain decimal degrees
        parts = [_to_float(value)]
    if not parts or any(p is None or p < 0 for p in parts):
        return None
    degrees = parts[0]
    minutes = parts[1] if len(parts) > 1 else 0.0
    seconds = parts[2] if len(parts) > 2 else 0.0
    if minutes > 60 or seconds > 60:
        return None
    decimal = degrees + minutes / 60.0 + seconds / 3600.0
    if not math.isfinite(decimal) or decimal > limit:
        return None

    if ref is not None and not isinstance(ref, (str, bytes)):
        return None
    ref_text = (_clean_text(ref) or "").upper()[:1]
    if ref_text == negative:
        decimal = -decimal
    # A missing ref is common and read as N/E (what most viewers do); a ref
    # naming the other axis or garbage means the block cannot be trusted.
    elif ref_text not in ("", positive):
        return None
    return decimal


def _to_float(value: Any) -> float | None:
    try:
        # IFDRational with a zero denominator becomes nan rather than raising.
        f = float(value)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        return None
    return f if math.isfinite(f) else None


def _clean_text(value: Any) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if not isinstance(value, str):
        return None
    # EXIF ASCII is NUL-terminated inside fixed-width fields: what follows the
    # first NUL is padding or leftover junk ("ION230\x00F" is model ION230).
    for segment in value.split("\x00"):
        if segment.strip():
            return segment.strip()
    return None


def _get(mapping: Any, tag: int) -> Any:
    try:
        return mapping.get(tag)
    except Exception:
        return None


def _safe(fn: Callable[[], _T]) -> _T | None:
    # Broken EXIF surfaces as almost any exception type (struct.error,
    # ZeroDivisionError, KeyError, UnicodeDecodeError, ...); none may escape.
    try:
        return fn()
    except Exception:
        return None
