"""EXIF metadata extraction: capture time, camera, GPS.

Library photos are cross-checked against a tiny EXIF reader written here with
struct, so the expected values do not come from Pillow's own EXIF parser.
"""

from __future__ import annotations

import io
import struct
from fractions import Fraction
from pathlib import Path

import pytest
from PIL import ExifTags, Image
from PIL.TiffImagePlugin import IFDRational

from indexer.metadata import ImageMeta, gps_to_decimal, parse_exif_datetime, read_metadata

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LIBRARY = DATA / "photo_library"


def _library(*parts: str) -> Path:
    path = LIBRARY.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared test photos not available: {path} (needs ../shared/data beside the repo)")
    return path


# --- an independent EXIF reader (JPEG APP1 only, ASCII and RATIONAL tags) ---


def _raw_exif(path: Path) -> dict[str, dict[int, object]]:
    data = path.read_bytes()
    start = data.find(b"Exif\x00\x00")
    assert start >= 0, f"{path.name} has no EXIF APP1 segment"
    tiff = data[start + 6 :]
    order = "<" if tiff[:2] == b"II" else ">"

    def u16(off: int) -> int:
        return struct.unpack_from(order + "H", tiff, off)[0]

    def u32(off: int) -> int:
        return struct.unpack_from(order + "I", tiff, off)[0]

    def read_ifd(off: int) -> dict[int, object]:
        tags: dict[int, object] = {}
        for k in range(u16(off)):
            entry = off + 2 + 12 * k
            tag, typ, count = u16(entry), u16(entry + 2), u32(entry + 4)
            if typ == 2:  # ASCII, inline when it fits in 4 bytes
                where = entry + 8 if count <= 4 else u32(entry + 8)
                tags[tag] = tiff[where : where + count].split(b"\x00")[0].decode("latin-1")
            elif typ == 5:  # RATIONAL, always out of line
                where = u32(entry + 8)
                pairs = [(u32(where + 8 * i), u32(where + 8 * i + 4)) for i in range(count)]
                tags[tag] = [Fraction(n, d) if d else None for n, d in pairs]
            elif typ == 4:  # LONG (IFD pointers)
                tags[tag] = u32(entry + 8)
        return tags

    ifd0 = read_ifd(u32(4))
    out = {"0": ifd0, "exif": {}, "gps": {}}
    if 0x8769 in ifd0:
        out["exif"] = read_ifd(ifd0[0x8769])  # type: ignore[arg-type]
    if 0x8825 in ifd0:
        out["gps"] = read_ifd(ifd0[0x8825])  # type: ignore[arg-type]
    return out


def _raw_decimal(values: list[Fraction], ref: str) -> float:
    deg, minutes, sec = values
    value = float(deg + minutes / 60 + sec / 3600)
    return -value if ref in ("S", "W") else value


# --- library photos ---


def test_gps_folder_positions_match_an_independent_reading() -> None:
    files = sorted(_library("ianare+exif-samples", "jpg", "gps").glob("*.jpg"))
    assert len(files) >= 5
    for path in files:
        raw = _raw_exif(path)["gps"]
        with Image.open(path) as img:
            meta = read_metadata(img)
        assert meta.lat is not None and meta.lon is not None, path.name
        assert -90 <= meta.lat <= 90 and -180 <= meta.lon <= 180
        assert meta.lat == pytest.approx(_raw_decimal(raw[2], raw[1]), abs=1e-9), path.name
        assert meta.lon == pytest.approx(_raw_decimal(raw[4], raw[3]), abs=1e-9), path.name


def test_known_gps_value_dscn0010() -> None:
    # Nikon COOLPIX P6000 sample, shot in Arezzo, Tuscany (N, E).
    with Image.open(_library("ianare+exif-samples", "jpg", "gps", "DSCN0010.jpg")) as img:
        meta = read_metadata(img)
    assert meta.lat == pytest.approx(43.467448, abs=1e-5)
    assert meta.lon == pytest.approx(11.885127, abs=1e-5)
    assert meta.taken_at == "2008-10-22T16:28:39"
    assert (meta.camera_make, meta.camera_model) == ("NIKON", "COOLPIX P6000")


@pytest.mark.parametrize(
    ("name", "lat_sign", "lon_sign"),
    [
        ("hdr/iphone_hdr_NO.jpg", 1, -1),  # Madrid: N, W
        ("Kodak_CX7530.jpg", -1, 1),  # Kenya, just south of the equator: S, E
    ],
)
def test_hemisphere_follows_gps_refs(name: str, lat_sign: int, lon_sign: int) -> None:
    path = _library("ianare+exif-samples", "jpg", *name.split("/"))
    raw = _raw_exif(path)["gps"]
    assert (raw[1] == "S") == (lat_sign < 0) and (raw[3] == "W") == (lon_sign < 0)
    with Image.open(path) as img:
        meta = read_metadata(img)
    assert meta.lat is not None and meta.lon is not None
    assert meta.lat * lat_sign > 0 and meta.lon * lon_sign > 0
    assert meta.lat == pytest.approx(_raw_decimal(raw[2], raw[1]), abs=1e-9)
    assert meta.lon == pytest.approx(_raw_decimal(raw[4], raw[3]), abs=1e-9)


def test_heic_metadata() -> None:
    import pillow_heif

    pillow_heif.register_heif_opener()
    with Image.open(_library("ianare+exif-samples", "heic", "IMG_5195.HEIC")) as img:
        meta = read_metadata(img)
    assert meta.camera_make == "Apple"
    assert meta.camera_model == "iPhone 11 Pro Max"
    assert meta.taken_at == "2021-04-11T15:47:53"
    assert meta.lat is not None and 38 < meta.lat < 40  # Missouri: N, W
    assert meta.lon is not None and -95 < meta.lon < -93


def test_date_camera_fields_match_an_independent_reading() -> None:
    jpg = _library("ianare+exif-samples", "jpg")
    checked = 0
    for path in sorted(jpg.glob("*.jpg")) + sorted((jpg / "exif-org").glob("*.jpg")):
        if path.name == "corrupted.jpg":
            continue
        raw = _raw_exif(path) if b"Exif\x00\x00" in path.read_bytes() else None
        with Image.open(path) as img:
            meta = read_metadata(img)
        if raw is None:
            assert meta == ImageMeta()
            continue
        original = raw["exif"].get(0x9003)
        if isinstance(original, str) and original[:4].isdigit() and original[:4] != "0000":
            d, t = original.split(" ")
            assert meta.taken_at == f"{d.replace(':', '-')}T{t}", path.name
            checked += 1
        make = raw["0"].get(0x010F)
        if isinstance(make, str) and make.strip():
            assert meta.camera_make == make.strip(), path.name
        model = raw["0"].get(0x0110)
        if isinstance(model, str) and model.strip():
            assert meta.camera_model == model.strip(), path.name
    assert checked >= 20


def test_broken_exif_never_raises() -> None:
    jpg = _library("ianare+exif-samples", "jpg")
    files = [jpg / "corrupted.jpg", *sorted((jpg / "invalid").glob("*.jpg")), *sorted((jpg / "tests").glob("*.jp*g"))]
    assert len(files) >= 15
    for path in files:
        with Image.open(path) as img:
            meta = read_metadata(img)
        assert isinstance(meta, ImageMeta)
        if meta.lat is not None:
            assert -90 <= meta.lat <= 90 and meta.lon is not None and -180 <= meta.lon <= 180


def test_gps_ifd_without_coordinates_gives_none() -> None:
    # Gran Turismo 5 screenshot: a GPS IFD pointer that leads nowhere useful.
    with Image.open(_library("ianare+exif-samples", "jpg", "tests", "45-gps_ifd.jpg")) as img:
        meta = read_metadata(img)
    assert meta.lat is None and meta.lon is None
    assert meta.camera_model == "Gran Turismo 5"


# --- synthetic EXIF written with Pillow ---


def _jpeg_with_exif(
    ifd0: dict[int, object], exif_ifd: dict[int, object] | None = None, gps: dict[int, object] | None = None
) -> Image.Image:
    exif = Image.Exif()
    for tag, value in ifd0.items():
        exif[tag] = value
    for tag, value in (exif_ifd or {}).items():
        exif.get_ifd(ExifTags.IFD.Exif)[tag] = value
    for tag, value in (gps or {}).items():
        exif.get_ifd(ExifTags.IFD.GPSInfo)[tag] = value
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "gray").save(buf, "JPEG", exif=exif)
    buf.seek(0)
    return Image.open(buf)


def test_date_precedence_original_then_digitized_then_datetime() -> None:
    img = _jpeg_with_exif(
        {0x0132: "2020:01:01 00:00:01"},
        {0x9003: "2018:05:06 07:08:09", 0x9004: "2019:01:01 00:00:00"},
    )
    assert read_metadata(img).taken_at == "2018-05-06T07:08:09"
    img = _jpeg_with_exif(
        {0x0132: "2020:01:01 00:00:01"}, {0x9003: "0000:00:00 00:00:00", 0x9004: "2019:02:03 04:05:06"}
    )
    assert read_metadata(img).taken_at == "2019-02-03T04:05:06"
    img = _jpeg_with_exif({0x0132: "2020:01:01 00:00:01"}, {0x9003: "    :  :     :  :  "})
    assert read_metadata(img).taken_at == "2020-01-01T00:00:01"
    img = _jpeg_with_exif({0x0132: "garbage"})
    assert read_metadata(img).taken_at is None


def test_camera_strings_are_stripped() -> None:
    img = _jpeg_with_exif({0x010F: "Canon\x00\x00   ", 0x0110: "  EOS 5D\x00"})
    meta = read_metadata(img)
    assert meta.camera_make == "Canon" and meta.camera_model == "EOS 5D"
    img = _jpeg_with_exif({0x010F: "\x00\x00\x00", 0x0110: "   "})
    meta = read_metadata(img)
    assert meta.camera_make is None and meta.camera_model is None


def test_gps_round_trip_southern_western() -> None:
    img = _jpeg_with_exif(
        {},
        gps={
            1: "S",
            2: (IFDRational(33, 1), IFDRational(51, 1), IFDRational(3549, 100)),
            3: "W",
            4: (IFDRational(151, 1), IFDRational(12, 1), IFDRational(3042, 100)),
        },
    )
    meta = read_metadata(img)
    assert meta.lat == pytest.approx(-(33 + 51 / 60 + 35.49 / 3600))
    assert meta.lon == pytest.approx(-(151 + 12 / 60 + 30.42 / 3600))


def test_gps_zero_denominator_in_file_gives_none() -> None:
    img = _jpeg_with_exif(
        {},
        gps={1: "N", 2: (IFDRational(10, 0), IFDRational(0, 1), IFDRational(0, 1)), 3: "E", 4: (1.0, 2.0, 3.0)},
    )
    meta = read_metadata(img)
    assert meta.lat is None and meta.lon is None


# --- parsers on their own ---


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2008:05:30 15:56:01", "2008-05-30T15:56:01"),
        (b"2008:05:30 15:56:01\x00", "2008-05-30T15:56:01"),
        ("2008-05-30T15:56:01+02:00", "2008-05-30T15:56:01"),
        ("2008/05/30 15:56:01.123", "2008-05-30T15:56:01"),
        ("2008:05:30", "2008-05-30T00:00:00"),
        ("0000:00:00 00:00:00", None),
        ("    :  :     :  :  ", None),
        ("2008:13:01 00:00:00", None),
        ("2008:02:30 00:00:00", None),
        ("2008:05:30 25:00:00", None),
        ("1000:01:01 00:00:00", None),
        ("", None),
        ("\x00\x00", None),
        ("yesterday", None),
        (None, None),
        (20080530, None),
        ((1, 2), None),
    ],
)
def test_parse_exif_datetime(value: object, expected: str | None) -> None:
    assert parse_exif_datetime(value) == expected


def test_gps_to_decimal_variants() -> None:
    r = IFDRational
    north = (r(43, 1), r(28, 1), r(282, 100))
    east = (r(11, 1), r(53, 1), r(65, 10))
    lat, lon = gps_to_decimal({1: "N", 2: north, 3: "E", 4: east})  # type: ignore[misc]
    assert lat == pytest.approx(43 + 28 / 60 + 2.82 / 3600)
    assert lon == pytest.approx(11 + 53 / 60 + 6.5 / 3600)
    # Refs as NUL-padded bytes and lowercase.
    assert gps_to_decimal({1: b"S\x00", 2: north, 3: "w", 4: east}) == (pytest.approx(-lat), pytest.approx(-lon))
    # A missing ref reads as N/E.
    assert gps_to_decimal({2: north, 4: east}) == (pytest.approx(lat), pytest.approx(lon))
    # Plain decimal degrees in a single rational.
    assert gps_to_decimal({1: "N", 2: r(4575, 100), 3: "E", 4: 12.5}) == (45.75, 12.5)


@pytest.mark.parametrize(
    "gps",
    [
        {},
        None,
        {1: "N", 2: (IFDRational(1, 0), IFDRational(0, 0), IFDRational(0, 0)), 3: "E", 4: (1, 2, 3)},
        {1: "N", 2: (0, 0, 0), 3: "E", 4: (0, 0, 0)},  # "Null Island": no fix
        {1: "N", 2: (95, 0, 0), 3: "E", 4: (10, 0, 0)},  # beyond the pole
        {1: "N", 2: (45, 0, 0), 3: "E", 4: (190, 0, 0)},
        {1: "N", 2: (45, 75, 0), 3: "E", 4: (10, 0, 0)},  # 75 minutes
        {1: "N", 2: (-45, 0, 0), 3: "E", 4: (10, 0, 0)},
        {1: "X", 2: (45, 0, 0), 3: "E", 4: (10, 0, 0)},  # junk ref
        {1: "E", 2: (45, 0, 0), 3: "N", 4: (10, 0, 0)},  # refs of the wrong axis
        {1: "N", 2: "junk", 3: "E", 4: (10, 0, 0)},
        {1: "N", 2: (), 3: "E", 4: (10, 0, 0)},
        {1: "N", 2: (float("nan"), 0, 0), 3: "E", 4: (10, 0, 0)},
        {1: "N", 2: (45, 0, 0)},  # latitude only
        {1: 7, 2: (45, 0, 0), 3: [1], 4: (10, 0, 0)},
    ],
)
def test_gps_to_decimal_rejects_junk(gps: object) -> None:
    assert gps_to_decimal(gps) is None


def test_read_metadata_never_raises() -> None:
    class Exploding:
        def getexif(self) -> None:
            raise SyntaxError("corrupt EXIF")

    assert read_metadata(Exploding()) == ImageMeta()  # type: ignore[arg-type]

    class BrokenIfd(dict):  # type: ignore[type-arg]
        def get_ifd(self, tag: int) -> None:
            raise ZeroDivisionError

        def get(self, *args: object) -> None:  # type: ignore[override]
            raise struct.error("bad offset")

    class Img:
        def getexif(self) -> BrokenIfd:
            return BrokenIfd()

    assert read_metadata(Img()) == ImageMeta()  # type: ignore[arg-type]


def test_image_without_exif() -> None:
    assert read_metadata(Image.new("RGB", (4, 4))) == ImageMeta()
