"""Guarded image decoding: the "decode" stage of walk -> decode -> embed -> store -> index.

Runs inside decoding worker processes, so it must stay light: Pillow,
pillow-heif and numpy only (no torch, open_clip or faiss). Every way a file
can fail becomes a DecodeError with a one-line reason a user can act on; the
indexer records it and moves on instead of crashing on one bad photo.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pillow_heif
from PIL import ExifTags, Image, ImageFile, PngImagePlugin

from indexer.metadata import ImageMeta, read_metadata, warnings_ignored
from indexer.preprocess import Preprocess
from indexer.regular_file import NotRegularFile, open_regular

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "SUPPORTED_EXTENSIONS",
    "DecodeError",
    "DecodedImage",
    "decode_image",
    "to_model_input",
]

log = logging.getLogger(__name__)

# Pillow's own hard limit (2 x MAX_IMAGE_PIXELS, ~179 MP): far above any
# camera (a 100 MP medium-format frame passes, as do big panoramas), while
# the RGB buffer of an image at the limit (~540 MB) still fits a worker.
DEFAULT_MAX_PIXELS = 178_956_970
# The pixel cap alone lets a 695 KB RGBA PNG at 13370 x 13370 take 3.5 GB: what a decode holds
# grows with the bytes per pixel, so those are bounded too. An RGB image at the pixel cap is
# exactly this size; wider pixels (alpha, 16 bits) must have fewer of them.
MAX_DECODED_BYTES = 3 * DEFAULT_MAX_PIXELS

SUPPORTED_EXTENSIONS: frozenset[str] = frozenset(
    {"jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff", "heic", "heif"}
)

# Sniffing is by content, but only among these decoders: a renamed file still
# works, while exotic plugins (EPS shells out to Ghostscript, PSD, ICO, ...)
# are never reached from a photo folder. JPEGs with a second (preview or
# stereo) frame come back from the JPEG opener as MPO; DIB is BMP's sibling.
_ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "DIB", "TIFF", "HEIF")
_DRAFT_FORMATS = frozenset({"JPEG", "MPO", "HEIF"})

# Same table as ImageOps.exif_transpose; see _orientation for why it is ours.
_ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_AXES = frozenset({5, 6, 7, 8})

# File signatures, only to word the reason when Pillow gives up on a file.
_MAGIC = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),  # BigTIFF
    (b"MM\x00+", "TIFF"),
    (b"BM", "BMP"),
)
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif", b"avis"})

_WHITE = (255, 255, 255)

_PILLOW_LIMIT_LOCK = threading.Lock()

# Pillow's docs: with a gap of 3 the box-reduce-then-bicubic shortcut is
# indistinguishable from a full bicubic pass, at a fraction of the cost.
_REDUCING_GAP = 3.0
# JPEG draft decoding keeps this much more than the resize's output size:
# libjpeg's DCT scaling is a cruder low-pass than an antialiased bicubic, so
# the final resize must still do a real part of the reduction for the
# pixels to match a full decode + resize (tests/test_model_fidelity.py).
_DRAFT_MARGIN = 1.5

# Pillow's decoders signal bad data with a zoo of exception types.
_CORRUPT_DATA_ERRORS = (
    SyntaxError,
    ValueError,
    TypeError,
    IndexError,
    KeyError,
    EOFError,
    struct.error,
    zlib.error,
    ZeroDivisionError,
    OverflowError,
)

REASON_EMPTY = "empty file (0 bytes)"
REASON_NOT_IMAGE = "not an image: format not recognised"
REASON_CORRUPT = "truncated or corrupt image data"
REASON_PERMISSION = "permission denied: cannot read the file"
REASON_VANISHED = "file vanished during indexing"
REASON_DIRECTORY = "not a file: the path is a directory"
REASON_MEMORY = "out of memory while decoding"
REASON_NOT_REGULAR = "not a regular file (device, pipe or socket)"
REASON_BAD_PATH = "invalid file path"
REASON_PATH_TOO_LONG = "path too long for the system (over PATH_MAX): shorten its folder names"

pillow_heif.register_heif_opener(
    # Depth maps and auxiliary images are never shown or embedded; skip them.
    depth_images=False,
    aux_images=False,
)
# Editors write XMP packets of several MB (an edit history) into PNG text chunks; past Pillow's
# 1 MB default for one decompressed chunk such a photo would be skipped as corrupt. The total text
# a PNG may decompress to stays bounded (PngImagePlugin.MAX_TEXT_MEMORY, 64 MB).
PngImagePlugin.MAX_TEXT_CHUNK = 32 * 2**20


class DecodeError(Exception):
    """A file that cannot be turned into pixels, with a reason fit for a user."""

    def __init__(self, reason: str, path: str | Path | None = None) -> None:
        # The reason lands in a one-line status column, so it must stay one line.
        self.reason = " ".join(str(reason).split()) or "unknown decoding error"
        self.path = None if path is None else str(path)
        super().__init__(self.reason)

    def __str__(self) -> str:
        return self.reason

    def __reduce__(self) -> tuple[type[DecodeError], tuple[str, str | None]]:
        # Raised in worker processes and pickled back to the parent; the
        # default (cls, args) pickling would drop the path.
        return (type(self), (self.reason, self.path))


@dataclass
class DecodedImage:
    """Pixels ready for embedding plus what the catalog needs to know."""

    image: Image.Image  # RGB, upright, possibly reduced (see decode_image)
    width: int  # full-resolution width after orientation
    height: int  # full-resolution height after orientation
    meta: ImageMeta


def decode_image(
    path: str | Path | BinaryIO,
    target_size: Preprocess | int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> DecodedImage:
    """Decode one image file to upright RGB, or raise DecodeError.

    `path` may also be an open binary stream (a query image uploaded to the
    page, held in memory); it goes through the same guards as a file.

    With target_size (a model's Preprocess, or an int for a square CLIP
    input) the returned pixels may be reduced (JPEG DCT scaling, then integer
    box reduction) as long as both sides stay >= the size that model's
    transform resizes the image to, so to_model_input still starts from more
    pixels than it keeps; width and height always describe the
    full-resolution, oriented image.
    """
    if max_pixels < 1:
        raise ValueError("max_pixels must be positive")
    if isinstance(target_size, int):
        if target_size < 1:
            raise ValueError("target_size must be positive")
        target_size = Preprocess.square(target_size)
    if hasattr(path, "read"):
        # The caller owns the stream: decode from it but leave it open.
        fp = _check_stream(path)  # type: ignore[arg-type]
        label = None
        closing: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
    else:
        fp = _open_regular_file(path)  # type: ignore[arg-type]
        label = path
        closing = fp

    with closing:
        try:
            with warnings_ignored():
                return _decode_open_file(fp, label, target_size, max_pixels)
        except DecodeError:
            raise
        except Image.UnidentifiedImageError as e:
            raise DecodeError(_unidentified_reason(fp), label) from e
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            # Pillow's backstop, for sizes the header did not state (a TIFF
            # tile far larger than its image); "too large", not corrupt.
            raise DecodeError("too large: exceeds the decompression-bomb limit", label) from e
        except MemoryError as e:
            raise DecodeError(REASON_MEMORY, label) from e
        except OSError as e:
            # Pillow reports bad data as errno-less OSError ("image file is
            # truncated", "broken data stream"); real I/O failures carry errno.
            if e.errno is None:
                raise DecodeError(REASON_CORRUPT, label) from e
            raise DecodeError(_filesystem_reason(e), label) from e
        except _CORRUPT_DATA_ERRORS as e:
            raise DecodeError(REASON_CORRUPT, label) from e
        except Exception as e:
            # A decoder bug must cost one photo, not the whole indexing run.
            log.warning("unexpected %s decoding %s", type(e).__name__, label or "a stream", exc_info=True)
            raise DecodeError(f"decoder failed: {type(e).__name__}", label) from e


def _open_regular_file(path: str | Path) -> BinaryIO:
    try:
        fp = open_regular(path)  # only regular files are images (regular_file.py says why)
        if os.fstat(fp.fileno()).st_size == 0:
            fp.close()
            raise DecodeError(REASON_EMPTY, path)
        return fp
    except NotRegularFile as e:
        raise DecodeError(REASON_NOT_REGULAR, path) from e
    except OSError as e:
        raise DecodeError(_filesystem_reason(e), path) from e
    except ValueError as e:  # e.g. an embedded NUL byte in the path
        raise DecodeError(REASON_BAD_PATH, path) from e


def _check_stream(fp: BinaryIO) -> BinaryIO:
    try:
        if fp.seekable():
            start = fp.tell()
            empty = fp.read(1) == b""
            fp.seek(start)
            if empty:
                raise DecodeError(REASON_EMPTY)
    except OSError as e:
        raise DecodeError(_filesystem_reason(e)) from e
    return fp


def _stream_size(fp: BinaryIO) -> int:
    """Bytes in the whole file or stream (its position left alone)."""
    try:
        return os.fstat(fp.fileno()).st_size
    except (AttributeError, OSError, ValueError):  # an in-memory stream
        start = fp.tell()
        end = fp.seek(0, os.SEEK_END)
        fp.seek(start)
        return end


def _luma_blocks(width: int, height: int) -> int:
    return -(-width // 8) * -(-height // 8)


def _decode_open_file(
    fp: BinaryIO, path: str | Path | None, target: Preprocess | None, max_pixels: int
) -> DecodedImage:
    img = _open_header(fp, max_pixels)
    # Only the header has been parsed so far; refusing now costs nothing.
    full_w, full_h = img.size
    if full_w * full_h > max_pixels:
        raise DecodeError(f"too large: {full_w}x{full_h} px exceeds the {_megapixels(max_pixels)} limit", path)
    if full_w < 1 or full_h < 1:
        raise DecodeError(REASON_CORRUPT, path)
    if img.format in ("JPEG", "MPO") and _stream_size(fp) * 8 < _luma_blocks(full_w, full_h):
        # Every 8x8 block of luma costs at least one bit of Huffman code: a file smaller than that
        # cannot hold the picture its header declares (libjpeg would fill the rest with grey).
        raise DecodeError(REASON_CORRUPT, path)

    if target is not None and img.format in _DRAFT_FORMATS:
        # These formats parse EXIF with the header, so the draft can be sized
        # for the upright image before any pixel is decoded.
        needed = _needed_size(target, full_w, full_h, _orientation(img) in _SWAPS_AXES)
        # JPEG: libjpeg decodes at 1/2, 1/4 or 1/8 scale straight from the
        # DCT coefficients, picking the largest reduction that keeps both
        # sides >= the size asked for. HEIF: pillow-heif swaps in an embedded
        # thumbnail when one is at least that big (an iPhone HEIC: ~4 ms
        # instead of ~400 ms). Either way the image is decoded at a fraction
        # of the cost, and memory, of the full frame.
        margin = 1.0 if img.format == "HEIF" else _DRAFT_MARGIN  # a thumbnail is properly downscaled
        img.draft("RGB", (int(needed[0] * margin), int(needed[1] * margin)))

    decoded_bytes = _decoded_bytes(img)
    if decoded_bytes > MAX_DECODED_BYTES:
        raise DecodeError(
            f"too large: {img.size[0]}x{img.size[1]} px {img.mode} decodes to "
            f"{decoded_bytes >> 20} MB, over the {MAX_DECODED_BYTES >> 20} MB limit",
            path,
        )
    img.load()  # animated/multi-page files stay on their first frame
    meta = read_metadata(img)
    orientation = _orientation(img)

    try:
        rgb = _to_rgb(img)
    except ValueError as e:  # e.g. LAB TIFFs: no converter in Pillow
        raise DecodeError(f"unsupported pixel format: {img.mode}", path) from e
    # The source's EXIF/XMP/thumbnails would only bloat the pickle sent back
    # to the parent; the colour profile is kept for later colour management.
    rgb.info = {k: v for k, v in img.info.items() if k == "icc_profile"}
    if target is not None:
        rgb = _reduce_to(rgb, _needed_size(target, full_w, full_h, orientation in _SWAPS_AXES))
    transpose = _ORIENTATION_TRANSPOSE.get(orientation)
    if transpose is not None:
        # Geometric, so it is equally right on a draft-reduced image.
        rgb = rgb.transpose(transpose)

    if orientation in _SWAPS_AXES:
        full_w, full_h = full_h, full_w
    return DecodedImage(image=rgb, width=full_w, height=full_h, meta=meta)


def to_model_input(
    image: Image.Image, preprocess: Preprocess | int, full_size: tuple[int, int] | None = None
) -> np.ndarray:
    """The model's uint8 input (height, width, 3), resized, cropped or padded as its config says.

    An int stands for a square CLIP input (shortest side, bicubic, centre
    crop). Normalisation happens later in torch (Encoder.pixels_to_tensor).
    `full_size`: the (width, height) decode_image reported, when it may
    have reduced the pixels.
    """
    if isinstance(preprocess, int):
        if preprocess < 1:
            raise ValueError("image_size must be positive")
        preprocess = Preprocess.square(preprocess)
    if image.mode != "RGB":
        image = _to_rgb(image)
    return preprocess.apply(image, full_size)


def _open_header(fp: BinaryIO, max_pixels: int) -> ImageFile.ImageFile:
    # Pillow runs its bomb check inside Image.open, before we can see the
    # size, and its message lacks the dimensions; so it is lifted for the
    # header parse only (no pixels are decoded there) and our check follows.
    # On restore it is raised to at least our limit: Pillow checks again
    # later (GIF frames, TIFF tiles) and must stay a backstop behind our
    # limit, never in front of it. The lock keeps concurrent decodes in one
    # process from restoring each other's temporary None.
    with _PILLOW_LIMIT_LOCK:
        pillow_limit = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            return Image.open(fp, formats=_ALLOWED_FORMATS)
        finally:
            Image.MAX_IMAGE_PIXELS = None if pillow_limit is None else max(pillow_limit, max_pixels)


def _orientation(img: Image.Image) -> int:
    # Read once and used both to rotate the pixels and to swap the reported
    # size, so the two can never disagree. ImageOps.exif_transpose would
    # re-read it and also re-serialise the EXIF, which raises on broken EXIF.
    # HEIF needs nothing here: pillow-heif applies the rotation and resets
    # the tag to 1.
    try:
        value = img.getexif().get(ExifTags.Base.Orientation, 1)
        return int(value) if int(value) in _ORIENTATION_TRANSPOSE else 1
    except Exception:
        return 1  # broken EXIF: show the pixels as stored


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return _high_depth_to_l(img).convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode in ("P", "L", "RGB", "1") and "transparency" in img.info):
        # Transparent areas of logos, icons and screenshots are meant to be
        # seen on a light page; compositing on black would make dark art vanish.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    # CMYK (Adobe's inverted JPEGs are handled by the JPEG plugin), YCbCr,
    # LAB, HSV, palette, L and 1-bit all have direct converters.
    return img.convert("RGB")


def _high_depth_to_l(img: Image.Image) -> Image.Image:
    arr = np.asarray(img)
    if img.mode.startswith("I;16"):
        # Full 16-bit range maps to 0-255, keeping absolute brightness.
        return Image.fromarray((arr.astype(np.uint32) // 257).astype(np.uint8), "L")
    data = arr.astype(np.float64)
    finite = data[np.isfinite(data)]
    lo = float(finite.min()) if finite.size else 0.0
    hi = float(finite.max()) if finite.size else 0.0
    # "I"/"F" carry no declared range: assume the usual one when the data
    # fits it (8-bit, 16-bit, or float 0-1), otherwise stretch min..max.
    if lo >= 0 and hi <= 255 and img.mode == "I":
        scaled = data
    elif lo >= 0 and hi <= 65535 and img.mode == "I":
        scaled = data / 257.0
    elif lo >= 0 and hi <= 1.0 and img.mode == "F":
        scaled = data * 255.0
    elif hi > lo:
        scaled = (data - lo) * (255.0 / (hi - lo))
    else:
        scaled = np.zeros_like(data)
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L")


def _needed_size(target: Preprocess, width: int, height: int, swapped: bool) -> tuple[int, int]:
    # The transform's resized size, computed on the upright image and turned
    # back to the stored orientation, which is what draft decoding sees.
    upright = (height, width) if swapped else (width, height)
    needed_w, needed_h = target.resized_size(*upright)
    return (needed_h, needed_w) if swapped else (needed_w, needed_h)


def _reduce_to(img: Image.Image, needed: tuple[int, int]) -> Image.Image:
    # Workers pickle the result back to the parent, so shipping a 12 MP
    # bitmap when the model needs 224 px would dominate IPC. An integer box
    # reduction that leaves every side >= _REDUCING_GAP x what the resize
    # keeps is Pillow's own reducing_gap shortcut: the bicubic or bilinear
    # pass that follows gives (nearly) the pixels of a full-size resize.
    factor = int(min(img.width / needed[0], img.height / needed[1]) / _REDUCING_GAP)
    return img.reduce(factor) if factor >= 2 else img


def _unidentified_reason(fp: BinaryIO) -> str:
    # "Not an image" would be wrong for, say, a TIFF with a pixel layout
    # Pillow lacks: naming the format tells the user to convert the file.
    try:
        fp.seek(0)
        head = fp.read(16)
    except (OSError, ValueError):
        return REASON_NOT_IMAGE
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return f"unsupported or damaged {name} file"
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        return "unsupported or damaged HEIF file"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "unsupported or damaged WebP file"
    return REASON_NOT_IMAGE


def _decoded_bytes(img: Image.Image) -> int:
    """Bytes of the decoded frame at the size it will be decoded (after a JPEG/HEIF draft)."""
    from PIL import ImageMode

    try:
        mode = ImageMode.getmode(img.mode)
        per_pixel = len(mode.bands) * np.dtype(mode.typestr).itemsize
    except (KeyError, TypeError):
        per_pixel = 4
    return img.size[0] * img.size[1] * per_pixel


def _megapixels(max_pixels: int) -> str:
    if max_pixels >= 1_000_000:
        return f"{max_pixels // 1_000_000}-megapixel"
    return f"{max_pixels:,}-pixel"


def _filesystem_reason(e: OSError) -> str:
    if isinstance(e, PermissionError):
        return REASON_PERMISSION
    if isinstance(e, FileNotFoundError):
        return REASON_VANISHED
    if isinstance(e, IsADirectoryError):
        return REASON_DIRECTORY
    if e.errno == errno.ENOMEM:
        return REASON_MEMORY
    detail = e.strerror or type(e).__name__
    return f"read error: {detail}"
