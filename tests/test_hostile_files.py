"""Odd and hostile files through a whole `pixseek index` run: each one is indexed, or skipped with
its reason in the catalog and in `pixseek info --skipped`, and the run never crashes or hangs.
The files are built here; their expected fate follows from how each was built."""

from __future__ import annotations

import io
import json
import os
import random
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from indexer import decode
from indexer.library import LibraryPaths
from indexer.library.rows import path_from_db, path_to_db
from indexer.runner import run_index
from pixseek_data.shapes import caption, draw_shape, generate_gallery
from search import Filters, Library
from tests.conftest import TEST_WORKERS
from tests.harness import assert_consistent, forker, pixseek_env, read_state  # noqa: F401 (forker)

INDEXED = "indexed"
LOOP_REASON = "cannot read the file (Too many levels of symbolic links)"
BROKEN_LINK_REASON = "broken symbolic link: its target is missing"
NON_UTF8_GOOD = b"caf\xe9-\xff red circle.jpg"  # Latin-1 bytes: not valid UTF-8
NON_UTF8_BAD = b"notes-\xfe.jpg"
NON_UTF8_FOLDER = b"d\xe9j\xe0 vu"
UNICODE_NAME = "日本 写真 ✓ café.png"


def _shape(colour: str, shape: str, seed: int, size: int = 128) -> Image.Image:
    return draw_shape(colour, shape, random.Random(seed), size=size)


def _encoded(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def build_hostile_folder(folder: Path, can_deny_reads: bool) -> dict[str, tuple[str, str | None]]:
    """Write the files; return path -> (expected status, expected reason) for what must be catalogued."""
    folder.mkdir()
    expected: dict[str, tuple[str, str | None]] = {}

    def put(name: str | bytes, data: bytes, status: str = INDEXED, reason: str | None = None) -> Path:
        path = Path(os.fsdecode(os.path.join(os.fsencode(folder), os.fsencode(name))))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        expected[str(path)] = (status, reason)
        return path

    red_circle = _shape("red", "circle", 1)
    full_jpeg = _encoded(_shape("blue", "square", 2, size=512), "JPEG", quality=95)
    put("good.jpg", _encoded(red_circle, "JPEG"))
    put("truncated.jpg", full_jpeg[: len(full_jpeg) * 2 // 3], "skipped", decode.REASON_CORRUPT)
    put("empty.jpg", b"", "skipped", decode.REASON_EMPTY)
    put("notes.jpg", b"just some text, not a picture\n" * 20, "skipped", decode.REASON_NOT_IMAGE)
    put("really-a-jpeg.png", _encoded(_shape("green", "star", 3), "JPEG"))
    put("really-a-png.jpeg", _encoded(_shape("yellow", "triangle", 4), "PNG"))
    put(
        "bomb.png",
        _png_header_only(50_000, 50_000),
        "skipped",
        "too large: 50000x50000 px exceeds the 178-megapixel limit",
    )
    put(
        "wide-bomb.png",
        _png_header_only(400_000, 1_000),
        "skipped",
        "too large: 400000x1000 px exceeds the 178-megapixel limit",
    )
    ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)
    put("gray16.png", _encoded(Image.fromarray(ramp), "PNG"))
    put("cmyk.jpg", _encoded(_shape("purple", "circle", 5).convert("CMYK"), "JPEG"))
    palette = _shape("orange", "square", 6).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    put("palette.png", _encoded(palette, "PNG", transparency=0))
    rgba = _shape("blue", "triangle", 7).convert("RGBA")
    rgba.putalpha(200)
    put("alpha.png", _encoded(rgba, "PNG"))
    frames = [_shape("red", "square", 8), _shape("green", "circle", 9), _shape("blue", "star", 10)]
    put("animated.gif", _encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0))
    put("pages.tif", _encoded(frames[1], "TIFF", save_all=True, append_images=[frames[2]]))
    put("panorama.jpg", _encoded(_shape("yellow", "star", 11, size=512).resize((12_000, 700)), "JPEG", quality=80))
    put("UPPER.JPG", _encoded(_shape("orange", "circle", 12), "JPEG"))
    put("line\nbreak.jpg", _encoded(_shape("purple", "star", 13), "JPEG"))
    put(NON_UTF8_GOOD, _encoded(red_circle.rotate(90), "JPEG"))
    put(NON_UTF8_BAD, b"not an image either", "skipped", decode.REASON_NOT_IMAGE)
    put(NON_UTF8_FOLDER + b"/inside.jpg", _encoded(_shape("blue", "square", 19), "JPEG"))
    put(UNICODE_NAME, _encoded(_shape("green", "triangle", 14), "PNG"))
    put("folder.jpg/inside.jpg", _encoded(_shape("red", "triangle", 15), "JPEG"))  # a directory named like an image
    put("nested/deeper/inner.jpg", _encoded(_shape("blue", "circle", 16), "JPEG"))
    os.symlink("../..", folder / "nested" / "deeper" / "up")  # a directory loop: walked once
    if can_deny_reads:
        put(
            "unreadable.jpg", _encoded(_shape("yellow", "square", 17), "JPEG"), "skipped", decode.REASON_PERMISSION
        ).chmod(0)

    os.symlink("does-not-exist.jpg", folder / "broken-link.jpg")
    expected[str(folder / "broken-link.jpg")] = ("skipped", BROKEN_LINK_REASON)
    os.symlink("loop-b.jpg", folder / "loop-a.jpg")
    os.symlink("loop-a.jpg", folder / "loop-b.jpg")
    expected[str(folder / "loop-a.jpg")] = expected[str(folder / "loop-b.jpg")] = ("skipped", LOOP_REASON)
    os.symlink("good.jpg", folder / "link-to-good.jpg")
    expected[str(folder / "link-to-good.jpg")] = (INDEXED, None)

    # Not regular files: listed and refused with a reason, never opened for reading (a FIFO would block).
    os.mkfifo(folder / "pipe.jpg")
    os.symlink("/dev/zero", folder / "zero.jpg")
    for name in ("pipe.jpg", "zero.jpg"):
        expected[str(folder / name)] = ("skipped", decode.REASON_NOT_REGULAR)
    expected[_past_path_max(folder, _encoded(red_circle, "JPEG"))] = ("skipped", decode.REASON_PATH_TOO_LONG)

    # Never catalogued: hidden files.
    (folder / ".hidden.jpg").write_bytes(_encoded(red_circle, "JPEG"))
    return expected


def _past_path_max(folder: Path, data: bytes) -> str:
    """A photo whose path is longer than PATH_MAX (its folder's is not), written through folder descriptors."""
    limit = os.pathconf(folder, "PC_PATH_MAX")
    parent, fds = folder, []
    try:
        fds.append(os.open(folder, os.O_RDONLY | os.O_DIRECTORY))
        name = "p" * 246 + ".jpg"
        while len(str(parent / name)) <= limit:  # each step adds 201 bytes: the folder stays under the limit
            os.mkdir("d" * 200, dir_fd=fds[-1])
            fds.append(os.open("d" * 200, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fds[-1]))
            parent = parent / ("d" * 200)
        fd = os.open(name, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fds[-1])
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
    finally:
        for fd in fds:
            os.close(fd)
    assert len(str(parent)) < limit < len(str(parent / name))
    return str(parent / name)


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory, forker):
    """One `pixseek index` over the hostile folder."""
    root = tmp_path_factory.mktemp("hostile")
    folder, lib = root / "photos", root / "lib"
    expected = build_hostile_folder(folder, can_deny_reads=forker.permissions_apply)
    env = pixseek_env()
    run = forker.run(["index", str(folder), "--library", str(lib), "--model", "demo", "--workers", "0", "--json"], env)
    return folder, lib, expected, run, env


def test_every_hostile_file_is_indexed_or_skipped_with_its_reason(hostile_run):
    folder, lib, expected, run, _ = hostile_run
    assert run.returncode == 0, run.stderr
    state = assert_consistent(lib, {p: status for p, (status, _) in expected.items()})
    assert {p: reason for p, (_, st, reason, _) in state.rows.items() if st == "skipped"} == {
        p: reason for p, (status, reason) in expected.items() if status == "skipped"
    }
    report = json.loads(run.stdout)
    assert len(report["skipped"]) == sum(status == "skipped" for status, _ in expected.values())


def test_info_skipped_json_lists_each_file_and_reason(hostile_run, forker):
    _, lib, expected, _, env = hostile_run
    info = forker.run(["info", "--skipped", "--json", "--library", str(lib)], env)
    assert info.returncode == 0, info.stderr
    data = json.loads(info.stdout.encode("utf-8", "surrogateescape").decode("utf-8"))  # valid UTF-8 JSON
    listed = {item["path"]: item["reason"] for item in data["skipped_files"]}
    assert listed == {p: reason for p, (status, reason) in expected.items() if status == "skipped"}
    assert sum(data["skipped_reasons"].values()) == data["skipped"] == len(listed)
    text = forker.run(["info", "--skipped", "--library", str(lib)], env)
    assert text.returncode == 0 and f"{os.fsdecode(NON_UTF8_BAD)}: {decode.REASON_NOT_IMAGE}" in text.stdout


def test_non_utf8_file_name_round_trips_to_a_path_that_opens(hostile_run, forker):
    folder, lib, _, _, env = hostile_run
    target = os.fsencode(folder) + b"/" + NON_UTF8_GOOD
    found = forker.run(["search", caption("red", "circle"), "--json", "-k", "30", "--library", str(lib)], env)
    assert found.returncode == 0, found.stderr
    results = json.loads(found.stdout.encode("utf-8", "surrogateescape").decode("utf-8"))
    paths = [r["path"] for r in results]
    match = [p for p in paths if os.fsencode(p) == target]
    assert len(match) == 1
    with open(match[0], "rb") as fh, open(target, "rb") as direct:
        assert fh.read() == direct.read()
    plain = forker.run(["search", caption("red", "circle"), "-k", "30", "--library", str(lib)], env)
    assert plain.returncode == 0 and os.fsdecode(target) in plain.stdout  # the raw name, as ls prints it

    library = Library.open(lib)
    like = library.search(like=os.fsdecode(target), k=3)
    assert os.fsdecode(target) not in [r.path for r in like]
    assert like[0].path in {str(folder / "good.jpg"), str(folder / "link-to-good.jpg")}  # the same circle, unrotated
    assert library.find_id(os.fsdecode(target)) is not None
    odd_folder = os.fsdecode(os.fsencode(folder) + b"/" + NON_UTF8_FOLDER)
    assert odd_folder in library.folders()
    inside = library.search(caption("blue", "square"), k=5, filters=Filters(folder=odd_folder))
    assert [r.path for r in inside] == [odd_folder + "/inside.jpg"]


# A path reaches the catalog as os.fsdecode gives it (os.scandir, sys.argv, Path.resolve): lone
# surrogates only in U+DC80..U+DCFF, one per undecodable byte, which `name` covers. Any other lone
# surrogate names no file (os.fsencode refuses it), so `text` is real text: no surrogates.
_REAL_TEXT = st.characters(exclude_categories=("Cs",))


@settings(max_examples=300, deadline=None)
@given(name=st.binary(min_size=1), text=st.text(st.characters(min_codepoint=0x10FF00) | _REAL_TEXT))
def test_any_file_name_survives_the_catalog_as_text(name, text):
    """Any bytes (as os.fsdecode gives them) and any text, the escape block included, round-trip."""
    for path in (os.fsdecode(b"/photos/" + name), "/photos/" + text):
        stored = path_to_db(path)
        stored.encode("utf-8")  # what SQLite text needs
        assert path_from_db(stored) == path


def test_animated_gif_and_multipage_tiff_are_indexed_by_their_first_frame(hostile_run, demo_encoder):
    folder, lib, *_ = hostile_run
    state = read_state(lib)
    for name in ("animated.gif", "pages.tif"):
        stored = state.vectors[state.rows[str(folder / name)][0]]
        with Image.open(folder / name) as img:
            frames = []
            for i in range(img.n_frames):
                img.seek(i)
                frames.append(img.convert("RGB"))
        sims = demo_encoder.encode_images(frames) @ stored
        assert sims[0] > 0.99 and sims[0] > max(sims[1:]) + 0.05, (name, sims)


def test_second_run_over_hostile_files_changes_nothing_and_a_fixed_link_is_picked_up(hostile_run, forker):
    folder, lib, expected, _, env = hostile_run
    again = forker.run(["index", str(folder), "--library", str(lib), "--json"], env)
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert (report["added"], report["updated"], report["removed"], report["embedded"]) == (0, 0, 0, 0)

    (folder / "does-not-exist.jpg").write_bytes(_encoded(_shape("green", "square", 18), "JPEG"))
    fixed = forker.run(["index", str(folder), "--library", str(lib), "--json"], env)
    assert json.loads(fixed.stdout)["embedded"] == 2  # the link's target, and the link itself
    statuses = {p: status for p, (status, _) in expected.items()}
    statuses.update({str(folder / "broken-link.jpg"): INDEXED, str(folder / "does-not-exist.jpg"): INDEXED})
    assert_consistent(lib, statuses)


def test_files_that_vanish_or_change_during_a_run_settle_on_the_next_run(tmp_path, demo_spec, demo_encoder):
    folder = tmp_path / "photos"
    records = generate_gallery(folder, per_class=2, seed=5)  # 48 files; decoded in chunks of 16
    vanishing, rewritten, half_copied = records[-1].path, records[-2].path, records[-3].path
    complete_copy = half_copied.read_bytes()

    def meddle(done: int, total: int) -> None:
        if done == 1:  # the first chunk is decoded; the last files are not yet
            vanishing.unlink()
            _shape("yellow", "star", 20).save(rewritten, "JPEG")
            half_copied.write_bytes(complete_copy[: len(complete_copy) // 2])

    lib = LibraryPaths.at(tmp_path / "lib")
    first = run_index(lib, [folder], model=demo_spec, workers=TEST_WORKERS, on_progress=meddle)
    assert dict(first.skipped) == {str(vanishing): decode.REASON_VANISHED, str(half_copied): decode.REASON_CORRUPT}

    half_copied.write_bytes(complete_copy)  # the copy finishes
    os.utime(half_copied, ns=(1, 1))  # a distinct mtime even on coarse-timestamp filesystems
    second = run_index(lib, [folder], model=demo_spec, workers=TEST_WORKERS)
    # Both changed files are embedded again: the catalog holds their stat from before the change.
    assert (second.removed, second.updated, second.embedded) == (1, 2, 2)
    assert_consistent(lib.root, {str(r.path): INDEXED for r in records[:-1]}, files_changed=True)
    state = read_state(lib.root)
    stored = state.vectors[state.rows[str(rewritten)][0]]
    with Image.open(rewritten) as img:
        assert float(demo_encoder.encode_images([img.convert("RGB")])[0] @ stored) > 0.99  # its new content
