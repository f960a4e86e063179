"""The guarded decoder: orientation, pixel modes, size limits, hostile files.

Photos from ../shared/data are used where they exist (and skipped with a
reason where not); hostile inputs are built by hand in tmp_path.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from indexer import decode
from indexer.decode import (
    DEFAULT_MAX_PIXELS,
    SUPPORTED_EXTENSIONS,
    DecodedImage,
    DecodeError,
    decode_image,
    to_model_input,
)
from indexer.metadata import ImageMeta

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LIBRARY = DATA / "photo_library"
RECURSER = LIBRARY / "recurser+exif-orientation-examples"
EXIF_SAMPLES = LIBRARY / "ianare+exif-samples"
CORRUPT = LIBRARY / "_synthetic_corrupt"
SKIMAGE = LIBRARY / "skimage-0.26.0-data"

T = Image.Transpose
# Identity first, then the seven other symmetries of a rectangle.
_DIHEDRAL = [
    None,
    T.FLIP_LEFT_RIGHT,
    T.ROTATE_180,
    T.FLIP_TOP_BOTTOM,
    T.TRANSPOSE,
    T.ROTATE_270,
    T.TRANSVERSE,
    T.ROTATE_90,
]


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared test photos not available: {path} (needs ../shared/data beside the repo)")
    return path


def _signature(img: Image.Image) -> np.ndarray:
    # 32x32 grey, zero mean, unit norm: insensitive to the exposure
    # differences between sample files, sensitive to layout.
    arr = np.asarray(img.convert("L").resize((32, 32), Image.Resampling.BOX), dtype=np.float64)
    arr -= arr.mean()
    return arr / np.linalg.norm(arr)


def _assert_upright(decoded: Image.Image, reference: Image.Image, label: str) -> None:
    """decoded must match the upright reference far better than any rotation/flip of it."""
    sig = _signature(decoded)
    dists = [
        1.0 - float((sig * _signature(reference if op is None else reference.transpose(op))).sum()) for op in _DIHEDRAL
    ]
    assert dists[0] < 0.2 * min(dists[1:]), f"{label}: correlation distances to identity, then flips/rotations: {dists}"


def _assert_one_line_reason(err: DecodeError) -> None:
    assert err.reason and err.reason.strip() == err.reason
    assert "\n" not in err.reason and len(err.reason) < 120
    assert str(err) == err.reason


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png_header_only(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


# --- orientation ---------------------------------------------------------------


def _plain_open(path: Path) -> Image.Image:
    with Image.open(path) as img:  # orientation 1: stored pixels are upright
        img.load()
        return img.copy()


@pytest.mark.parametrize("target_size", [None, 224], ids=["full", "draft"])
@pytest.mark.parametrize("kind", ["Landscape", "Portrait"])
def test_recurser_orientations_decode_upright(kind: str, target_size: int | None) -> None:
    reference = _plain_open(_need(RECURSER / f"{kind}_1.jpg"))
    for i in range(9):
        decoded = decode_image(RECURSER / f"{kind}_{i}.jpg", target_size=target_size)
        _assert_upright(decoded.image, reference, f"{kind}_{i}.jpg")
        expected = (1800, 1200) if kind == "Landscape" else (1200, 1800)
        assert (decoded.width, decoded.height) == expected, f"{kind}_{i}.jpg"
        w, h = decoded.image.size
        assert (w > h) == (kind == "Landscape")
        assert abs(w / h - expected[0] / expected[1]) < 0.01
        if target_size:
            assert min(w, h) >= target_size and max(w, h) < 1800


@pytest.mark.parametrize("kind", ["landscape", "portrait"])
def test_exif_samples_orientations_decode_upright(kind: str) -> None:
    folder = _need(EXIF_SAMPLES / "jpg" / "orientation")
    reference = _plain_open(folder / f"{kind}_1.jpg")
    for i in range(1, 9):
        for target_size in (None, 224):
            decoded = decode_image(folder / f"{kind}_{i}.jpg", target_size=target_size)
            _assert_upright(decoded.image, reference, f"{kind}_{i}.jpg target={target_size}")
            assert (decoded.width, decoded.height) == reference.size


def test_draft_and_orientation_together(tmp_path: Path) -> None:
    # Stored landscape 4000x3000 with orientation 6 (rotate 90 cw to view).
    arr = np.zeros((3000, 4000, 3), np.uint8)
    arr[:1500, :, 0] = 255  # top half red when stored
    arr[1500:, :, 2] = 255  # bottom half blue
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    Image.fromarray(arr).save(path, quality=85, exif=exif)

    decoded = decode_image(path, target_size=224)
    assert (decoded.width, decoded.height) == (3000, 4000)
    w, h = decoded.image.size
    assert h > w and min(w, h) >= 224 and max(w, h) <= 1000
    pixels = np.asarray(decoded.image, dtype=np.int32)
    # After rotating 90 deg clockwise the stored top (red) is on the right.
    right, left = pixels[:, -w // 4 :].mean(axis=(0, 1)), pixels[:, : w // 4].mean(axis=(0, 1))
    assert right[0] > 200 and right[2] < 50
    assert left[2] > 200 and left[0] < 50


@pytest.mark.parametrize("ext", ["jpg", "png", "webp", "tif"])
def test_exif_orientation_applies_in_every_format(tmp_path: Path, ext: str) -> None:
    arr = np.zeros((40, 60, 3), np.uint8)
    arr[:20] = (250, 0, 0)  # stored top half red
    stored = Image.fromarray(arr)
    path = tmp_path / f"o.{ext}"
    if ext == "tif":
        stored.save(path, tiffinfo={0x0112: 6})
    else:
        exif = Image.Exif()
        exif[0x0112] = 6
        stored.save(path, exif=exif, **({"quality": 95} if ext == "jpg" else {}))
    decoded = decode_image(path)
    assert (decoded.width, decoded.height) == (40, 60) == decoded.image.size
    px = np.asarray(decoded.image, dtype=np.int32)
    assert px[:, -5:, 0].mean() > 200 and px[:, :5, 0].mean() < 50  # red now on the right


# --- draft ---------------------------------------------------------------------


def test_draft_decodes_large_jpeg_at_reduced_scale(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    path = tmp_path / "big.jpg"
    Image.fromarray(small).resize((4000, 3000), Image.Resampling.BILINEAR).save(path, quality=90)

    reduced = decode_image(path, target_size=224)
    assert (reduced.width, reduced.height) == (4000, 3000)
    assert min(reduced.image.size) >= 224
    # libjpeg's 1/8 DCT scale (the box reduction alone would give 1000x750).
    assert reduced.image.size == (500, 375)
    assert reduced.image.mode == "RGB"

    full = decode_image(path)
    assert full.image.size == (4000, 3000)
    # Same picture at either scale.
    a = to_model_input(reduced.image, 224).astype(np.int32)
    b = to_model_input(full.image, 224).astype(np.int32)
    assert np.abs(a - b).mean() < 6


def test_target_size_reduces_non_jpeg_too(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    Image.new("RGB", (3000, 2000), (10, 200, 30)).save(path)
    decoded = decode_image(path, target_size=224)
    assert (decoded.width, decoded.height) == (3000, 2000)
    assert decoded.image.size == (1500, 1000)  # box-reduced by 2, as resize(reducing_gap=3) would
    assert decoded.image.getpixel((5, 5)) == (10, 200, 30)


# --- the shared library --------------------------------------------------------


def test_heic_files_decode_to_rgb() -> None:
    files = sorted(p for p in _need(EXIF_SAMPLES / "heic").rglob("*") if p.suffix.lower() in (".heic", ".heif"))
    assert len(files) >= 4
    for path in files:
        decoded = decode_image(path, target_size=224)
        assert decoded.image.mode == "RGB"
        assert 500 <= decoded.width <= 10000 and 300 <= decoded.height <= 10000, path.name
        w, h = decoded.image.size
        assert min(w, h) >= 224
        assert abs(w / h - decoded.width / decoded.height) < 0.02, path.name
        assert np.asarray(decoded.image).std() > 5  # real picture, not a flat fill


def test_heic_thumbnail_draft_matches_full_decode() -> None:
    # The iPhone file embeds a 320 px thumbnail, which draft uses for 224.
    path = _need(EXIF_SAMPLES / "heic" / "mobile" / "iphone_13_pro_max.HEIC")
    small = decode_image(path, target_size=224)
    full = decode_image(path)
    assert max(small.image.size) <= 400
    assert full.image.size == (full.width, full.height) == (small.width, small.height)
    _assert_upright(small.image, full.image, path.name)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("zero_bytes.jpg", "empty file (0 bytes)"),
        ("text_named.jpg", "not an image: format not recognised"),
        ("random_bytes.png", "not an image: format not recognised"),
        ("truncated_20KB.jpg", "truncated or corrupt image data"),
        ("bad_crc.png", "truncated or corrupt image data"),
    ],
)
def test_synthetic_corrupt_files_are_refused(name: str, reason: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_image(_need(CORRUPT / name))
    _assert_one_line_reason(info.value)
    assert info.value.reason == reason


def test_every_synthetic_corrupt_file_is_handled() -> None:
    files = sorted(_need(CORRUPT).iterdir())
    assert len(files) >= 6
    for path in files:
        try:
            decoded = decode_image(path)
        except DecodeError as err:
            _assert_one_line_reason(err)
        else:
            assert path.name == "real_jpeg_with_png_ext.png", f"{path.name} should not decode"
            assert decoded.image.mode == "RGB" and decoded.image.size == (decoded.width, decoded.height)


def test_pillow_unreadable_tiff_is_named() -> None:
    with pytest.raises(DecodeError) as info:
        decode_image(_need(SKIMAGE / "multipage_rgb.tif"))
    assert info.value.reason == "unsupported or damaged TIFF file"


_EXPECTED_FAILURES = {
    "zero_bytes.jpg",
    "text_named.jpg",
    "random_bytes.png",
    "truncated_20KB.jpg",
    "bad_crc.png",
    "multipage_rgb.tif",
}


@pytest.mark.filterwarnings("error")  # no Pillow warning may escape decode_image
def test_whole_library_decodes_and_pickles() -> None:
    files = sorted(
        p for p in _need(LIBRARY).rglob("*") if p.is_file() and p.suffix.lower().lstrip(".") in SUPPORTED_EXTENSIONS
    )
    assert len(files) >= 150
    decoded_count = 0
    for path in files:
        try:
            decoded = decode_image(path, target_size=224)
        except DecodeError as err:
            assert path.name in _EXPECTED_FAILURES, f"{path}: {err.reason}"
            _assert_one_line_reason(err)
            assert pickle.loads(pickle.dumps(err)).reason == err.reason
            continue
        assert path.name not in _EXPECTED_FAILURES, path
        decoded_count += 1
        assert decoded.image.mode == "RGB"
        assert decoded.width > 0 and decoded.height > 0
        assert min(decoded.image.size) >= min(224, decoded.width, decoded.height)
        # Worker processes send results back by pickle.
        clone = pickle.loads(pickle.dumps(decoded))
        assert clone.image.tobytes() == decoded.image.tobytes() and clone.meta == decoded.meta
        arr = to_model_input(decoded.image, 224)
        assert arr.shape == (224, 224, 3) and arr.dtype == np.uint8
    assert decoded_count >= 140


def test_multipage_tiff_and_animated_gif_from_library() -> None:
    tif = decode_image(_need(SKIMAGE / "multipage.tif"))
    assert (tif.width, tif.height) == (10, 15)
    gif = decode_image(_need(SKIMAGE / "no_time_for_that_tiny.gif"))
    with Image.open(SKIMAGE / "no_time_for_that_tiny.gif") as img:
        first = img.convert("RGB")
    assert gif.image.tobytes() == first.tobytes()


# --- hostile and unusual files built here --------------------------------------


def test_huge_png_header_is_refused_before_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(50000, 50000))
    loads: list[object] = []

    def refuse_load(self: ImageFile.ImageFile) -> None:
        # Never let a broken guard really allocate 7.5 GB in the test run.
        loads.append(self)
        raise AssertionError("pixels were about to be decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse_load)
    with pytest.raises(DecodeError) as info:
        decode_image(path)
    assert loads == []  # no pixel buffer was ever allocated
    assert info.value.reason == "too large: 50000x50000 px exceeds the 178-megapixel limit"


def test_pixel_limit_is_ours_and_exact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "100x100.png"
    Image.new("RGB", (100, 100), "white").save(path)
    assert decode_image(path, max_pixels=10_000).width == 100
    with pytest.raises(DecodeError) as info:
        decode_image(path, max_pixels=9_999)
    assert info.value.reason == "too large: 100x100 px exceeds the 9,999-pixel limit"

    # Even when Pillow's own bomb limit is far lower, our limit decides, and
    # Pillow's DecompressionBombWarning does not escape (even as an error).
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert decode_image(path).width == 100


def test_pillow_bomb_error_becomes_decode_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "small.png"
    Image.new("RGB", (8, 8)).save(path)

    def bomb(*args: object, **kwargs: object) -> None:
        raise Image.DecompressionBombError("Image size exceeds limit")

    monkeypatch.setattr(decode.Image, "open", bomb)
    with pytest.raises(DecodeError) as info:
        decode_image(path)
    assert info.value.reason.startswith("too large")


def test_a_jpeg_declaring_13000x13000_with_little_data_is_refused_as_truncated(tmp_path: Path) -> None:
    """Its header passes the size limits; its data ends long before the picture: not grey filler."""
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")  # baseline frame header: length, precision, height, width
    data[sof + 5 : sof + 9] = struct.pack(">HH", 13_000, 13_000)
    path = tmp_path / "declared-huge.jpg"
    path.write_bytes(bytes(data))
    assert Image.open(path).size == (13_000, 13_000)
    for target in (None, 224):  # full decoding, and the reduced (draft) decoding indexing does
        with pytest.raises(DecodeError) as info:
            decode_image(path, target)
        assert info.value.reason == decode.REASON_CORRUPT


def test_a_png_with_a_3_mb_compressed_xmp_packet_decodes(tmp_path: Path) -> None:
    from PIL import PngImagePlugin

    text = PngImagePlugin.PngInfo()
    text.add_itxt("XML:com.adobe.xmp", "<x:xmpmeta>" + "<rdf:li>edit</rdf:li>" * 150_000 + "</x:xmpmeta>", zip=True)
    path = tmp_path / "edited.png"
    Image.new("RGB", (32, 24), (10, 200, 30)).save(path, "PNG", pnginfo=text)
    assert path.stat().st_size < 1_000_000  # small on disk, 3 MB of text once decompressed
    assert decode_image(path).image.getpixel((5, 5)) == (10, 200, 30)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(DecodeError) as info:
        decode_image(path)
    assert info.value.reason == "empty file (0 bytes)"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DecodeError) as info:
        decode_image(tmp_path / "gone.jpg")
    assert info.value.reason == "file vanished during indexing"
    assert info.value.path == str(tmp_path / "gone.jpg")


def test_directory(tmp_path: Path) -> None:
    folder = tmp_path / "looks_like.jpg"
    folder.mkdir()
    with pytest.raises(DecodeError) as info:
        decode_image(folder)
    assert info.value.reason == "not a file: the path is a directory"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX named pipes")
def test_named_pipe_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(DecodeError) as info:
        decode_image(fifo)
    assert info.value.reason.startswith("not a regular file")


def test_permission_denied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "secret.png"
    Image.new("RGB", (4, 4)).save(path)
    real_open = os.open

    def guarded_open(file: object, *args: object, **kwargs: object) -> object:
        if os.fspath(file) == os.fspath(path):  # type: ignore[arg-type]
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_open(file, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", guarded_open)  # decode opens with os.open (regular_file.py)
    with pytest.raises(DecodeError) as info:
        decode_image(path)
    assert info.value.reason == "permission denied: cannot read the file"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads files regardless of chmod")
def test_permission_denied_for_real(tmp_path: Path) -> None:
    path = tmp_path / "secret.png"
    Image.new("RGB", (4, 4)).save(path)
    path.chmod(0)
    try:
        with pytest.raises(DecodeError) as info:
            decode_image(path)
        assert info.value.reason == "permission denied: cannot read the file"
    finally:
        path.chmod(0o600)


def test_io_error_is_reported_as_read_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "flaky.png"
    Image.new("RGB", (4, 4)).save(path)

    def failing_open(*args: object, **kwargs: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(decode.Image, "open", failing_open)
    with pytest.raises(DecodeError) as info:
        decode_image(path)
    assert info.value.reason == "read error: Input/output error"


def test_stream_input_is_decoded_and_left_open() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(buf, "PNG")
    buf.seek(0)
    decoded = decode_image(buf, target_size=16)
    assert (decoded.width, decoded.height) == (40, 30)
    assert not buf.closed  # the caller owns it

    with pytest.raises(DecodeError) as info:
        decode_image(io.BytesIO(b""))
    assert info.value.reason == "empty file (0 bytes)" and info.value.path is None
    with pytest.raises(DecodeError) as info:
        decode_image(io.BytesIO(b"hello, not an image"))
    assert info.value.reason == "not an image: format not recognised" and info.value.path is None
    with pytest.raises(DecodeError) as info:
        decode_image(io.BytesIO(_png_header_only(50000, 50000)))
    assert info.value.reason.startswith("too large: 50000x50000 px")


def test_16bit_greyscale_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    ramp = np.tile(np.linspace(0, 65535, 256).astype(np.uint16), (8, 1))
    path = tmp_path / "grey16.png"
    Image.fromarray(ramp).save(path)
    decoded = decode_image(path)
    px = np.asarray(decoded.image, dtype=np.int32)
    assert decoded.image.mode == "RGB"
    assert (px[..., 0] == px[..., 1]).all() and (px[..., 1] == px[..., 2]).all()
    row = px[0, :, 0]
    assert row[0] == 0 and row[-1] == 255 and abs(row[128] - 128) <= 2
    assert (np.diff(row) >= 0).all()  # a ramp, not saturated to white


def test_32bit_int_and_float_tiffs(tmp_path: Path) -> None:
    ints = np.tile(np.linspace(0, 65535, 64).astype(np.int32), (4, 1))
    Image.fromarray(ints).save(tmp_path / "i.tif")
    floats = np.tile(np.linspace(0.0, 1.0, 64, dtype=np.float32), (4, 1))
    Image.fromarray(floats).save(tmp_path / "f.tif")
    odd = np.tile(np.linspace(-500.0, 9000.0, 64, dtype=np.float32), (4, 1))
    Image.fromarray(odd).save(tmp_path / "odd.tif")
    for name in ("i.tif", "f.tif", "odd.tif"):
        row = np.asarray(decode_image(tmp_path / name).image, dtype=np.int32)[0, :, 0]
        assert row[0] <= 1 and row[-1] >= 254 and (np.diff(row) >= 0).all(), name


def test_cmyk_jpeg(tmp_path: Path) -> None:
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (64, 64), (0, 255, 255, 0)).save(path, quality=95)
    decoded = decode_image(path)
    r, g, b = np.asarray(decoded.image, dtype=np.int32).reshape(-1, 3).mean(axis=0)
    assert r > 230 and g < 25 and b < 25


def test_palette_png_with_transparency_goes_on_white(tmp_path: Path) -> None:
    img = Image.new("P", (20, 10), 0)
    img.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    img.paste(1, (10, 0, 20, 10))
    path = tmp_path / "pal.png"
    img.save(path, transparency=0)
    px = np.asarray(decode_image(path).image)
    assert (px[:, :10] == 255).all()  # transparent black index -> white
    assert (px[:, 10:] == [0, 0, 255]).all()


def test_rgba_png_is_composited_onto_white(tmp_path: Path) -> None:
    arr = np.zeros((10, 30, 4), np.uint8)
    arr[:, 10:20] = (255, 0, 0, 128)  # half-transparent red
    arr[:, 20:] = (0, 128, 0, 255)  # opaque green
    path = tmp_path / "rgba.png"
    Image.fromarray(arr, "RGBA").save(path)
    px = np.asarray(decode_image(path).image, dtype=np.int32)
    assert (px[:, :10] == 255).all()  # fully transparent black -> white, not black
    assert np.abs(px[:, 10:20] - [255, 127, 127]).max() <= 1
    assert (px[:, 20:] == [0, 128, 0]).all()


def test_greyscale_alpha_png(tmp_path: Path) -> None:
    path = tmp_path / "la.png"
    Image.new("LA", (8, 8), (0, 0)).save(path)
    assert (np.asarray(decode_image(path).image) == 255).all()


def test_animated_gif_gives_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    with Image.open(path) as img:
        assert img.n_frames == 3
    assert decode_image(path).image.getpixel((8, 8)) == (255, 0, 0)


def test_multipage_tiff_gives_first_page(tmp_path: Path) -> None:
    pages = [Image.new("RGB", (16, 12), (0, 200, 0)), Image.new("RGB", (40, 40), (200, 0, 0))]
    path = tmp_path / "pages.tif"
    pages[0].save(path, save_all=True, append_images=pages[1:])
    decoded = decode_image(path)
    assert (decoded.width, decoded.height) == (16, 12)
    assert decoded.image.getpixel((3, 3)) == (0, 200, 0)


def test_one_bit_image(tmp_path: Path) -> None:
    arr = np.indices((16, 16)).sum(axis=0) % 2 == 0
    path = tmp_path / "bits.png"
    Image.fromarray(arr).convert("1").save(path)
    with Image.open(path) as img:
        assert img.mode == "1"
    px = np.asarray(decode_image(path).image)
    assert set(np.unique(px)) == {0, 255}
    assert (px[0, 0] == 255).all() and (px[0, 1] == 0).all()


@pytest.mark.parametrize("ext", sorted(SUPPORTED_EXTENSIONS - {"heic", "heif"}))
def test_each_supported_extension_round_trips(tmp_path: Path, ext: str) -> None:
    path = tmp_path / f"img.{ext}"
    Image.new("RGB", (32, 24), (30, 90, 200)).save(path)
    decoded = decode_image(path)
    assert (decoded.width, decoded.height) == (32, 24)
    assert np.abs(np.asarray(decoded.image, dtype=np.int32) - [30, 90, 200]).mean() < 8


def test_exotic_formats_are_not_sniffed(tmp_path: Path) -> None:
    # Pillow can read ICO, but it is no photo format: never reached from here.
    path = tmp_path / "icon.jpg"
    Image.new("RGB", (16, 16)).save(path, format="ICO")
    with pytest.raises(DecodeError) as info:
        decode_image(path)
    assert info.value.reason == "not an image: format not recognised"


def test_constants() -> None:
    assert SUPPORTED_EXTENSIONS == frozenset(
        {"jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff", "heic", "heif"}
    )
    assert DEFAULT_MAX_PIXELS >= 100_000_000


def test_decode_error_pickles_with_path() -> None:
    err = pickle.loads(pickle.dumps(DecodeError("empty file (0 bytes)", "/photos/a.jpg")))
    assert (err.reason, err.path, str(err)) == ("empty file (0 bytes)", "/photos/a.jpg", "empty file (0 bytes)")
    assert DecodeError("two\nlines").reason == "two lines"


def test_decode_module_does_not_import_torch() -> None:
    code = (
        "import sys, indexer.decode, indexer.metadata; "
        "bad = [m for m in ('torch', 'open_clip', 'faiss') if m in sys.modules]; "
        "sys.exit(f'heavy imports: {bad}' if bad else 0)"
    )
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True, timeout=60)


# --- to_model_input ------------------------------------------------------------


@pytest.mark.parametrize("size", [(640, 480), (480, 640), (224, 224), (50, 30), (3000, 100), (1, 1)])
def test_model_input_shape_and_dtype(size: tuple[int, int]) -> None:
    arr = to_model_input(Image.new("RGB", size, (1, 2, 3)), 224)
    assert arr.shape == (224, 224, 3) and arr.dtype == np.uint8
    assert (arr == [1, 2, 3]).all()


def test_model_input_centre_crops_wide_image() -> None:
    arr = np.zeros((300, 900, 3), np.uint8)
    arr[:, :300] = (255, 0, 0)
    arr[:, 300:600] = (0, 255, 0)
    arr[:, 600:] = (0, 0, 255)
    out = to_model_input(Image.fromarray(arr), 224).astype(np.int32)
    green = (out[..., 1] > 200) & (out[..., 0] < 50) & (out[..., 2] < 50)
    assert green.mean() > 0.95


def test_model_input_centre_crops_tall_image() -> None:
    arr = np.zeros((900, 300, 3), np.uint8)
    arr[:300] = (255, 0, 0)
    arr[300:600] = (0, 255, 0)
    arr[600:] = (0, 0, 255)
    out = to_model_input(Image.fromarray(arr), 224).astype(np.int32)
    assert (out[..., 1] > 200).mean() > 0.95


def test_model_input_converts_other_modes() -> None:
    arr = to_model_input(Image.new("LA", (300, 300), (0, 0)), 224)
    assert arr.shape == (224, 224, 3) and (arr == 255).all()


def test_model_input_matches_plain_bicubic() -> None:
    # The reducing_gap shortcut must stay visually identical to what
    # torchvision's Resize(bicubic) + CenterCrop computes.
    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).resize(
        (2400, 1800), Image.Resampling.BICUBIC
    )
    fast = to_model_input(img, 224).astype(np.int32)
    exact = img.resize((298, 224), Image.Resampling.BICUBIC)
    left = int(round((298 - 224) / 2.0))
    ref = np.asarray(exact.crop((left, 0, left + 224, 224)), dtype=np.int32)
    assert np.abs(fast - ref).mean() < 3


# --- fuzz ----------------------------------------------------------------------


def _seed_jpeg() -> bytes:
    real = EXIF_SAMPLES / "jpg" / "Kodak_CX7530.jpg"  # 6 KB, full EXIF with GPS
    if real.exists():
        return real.read_bytes()
    # Fallback for a clone without ../shared: still a JPEG with EXIF.
    exif = Image.Exif()
    exif[0x010F] = "Fuzz"
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(buf, "JPEG", exif=exif)
    return buf.getvalue()


SEED_JPEG = _seed_jpeg()
_mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, len(SEED_JPEG) - 1), st.integers(0, 7)),
    st.tuples(st.just("truncate"), st.integers(0, len(SEED_JPEG) - 1), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, len(SEED_JPEG)), st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("overwrite"), st.integers(0, len(SEED_JPEG) - 1), st.binary(min_size=1, max_size=16)),
)


def _mutate(data: bytes, mutations: list[tuple[str, int, object]]) -> bytes:
    buf = bytearray(data)
    for kind, pos, arg in mutations:
        pos = min(pos, len(buf))
        if kind == "flip" and pos < len(buf):
            buf[pos] ^= 1 << int(arg)  # type: ignore[arg-type]
        elif kind == "truncate":
            del buf[pos:]
        elif kind == "insert":
            buf[pos:pos] = arg  # type: ignore[assignment]
        elif kind == "overwrite":
            buf[pos : pos + len(arg)] = arg  # type: ignore[arg-type]
    return bytes(buf)


# derandomize: the same 150 cases on every run, so CI never flakes; no
# example database, so nothing is written into the checkout.
@settings(
    max_examples=150, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(mutations=st.lists(_mutation, min_size=1, max_size=6), target_size=st.sampled_from([None, 32]))
def test_fuzzed_jpeg_gives_image_or_decode_error(
    mutations: list[tuple[str, int, object]], target_size: int | None
) -> None:
    data = _mutate(SEED_JPEG, mutations)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.jpg"
        path.write_bytes(data)
        try:
            decoded = decode_image(path, target_size=target_size)
        except DecodeError as err:
            _assert_one_line_reason(err)
            # Every failure must land in a known category, not the catch-all.
            assert not err.reason.startswith("decoder failed"), repr(err.__cause__)
        else:
            assert isinstance(decoded, DecodedImage) and isinstance(decoded.meta, ImageMeta)
            assert decoded.image.mode == "RGB" and decoded.width > 0 and decoded.height > 0


def test_decoding_in_threads_leaves_the_process_wide_warning_filters_alone(tmp_path: Path, monkeypatch) -> None:
    import threading

    path = tmp_path / "photo.jpg"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(path)
    guarded_in: list[str] = []
    real = warnings.catch_warnings

    def recording(*args, **kwargs):
        guarded_in.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(warnings, "catch_warnings", recording)
    decoded: list[int] = []
    threads = [
        threading.Thread(target=lambda: decoded.append(decode_image(path).width), name=f"ui-{i}") for i in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert decoded == [64] * 4 and guarded_in == []  # the UI server's threads: no swap of global state
    assert decode_image(path).width == 64  # in decoder processes and the CLI: the main thread
    assert set(guarded_in) == {threading.main_thread().name}
