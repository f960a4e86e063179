"""The page's thumbnails (ui/thumbs.py): made once, upright, renewed when the photo changes, made
ahead by `pixseek thumbs`, and served by catalog id behind a Host check (ui/page_server.py)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from search import DecodeError, Filters, Library, LibraryPaths, Result, decode_image
from tests.conftest import TEST_WORKERS
from tests.harness import assert_one_line_error, cli
from ui.thumbs import GRID, LARGE, SIZES, make_ahead, thumb_path, thumb_url, thumbnail, upload_preview

ORIENTATION = 0x0112


def photo(path: Path, size: tuple[int, int], orientation: int | None = None, colour=(200, 30, 30)) -> Path:
    exif = Image.Exif()
    if orientation is not None:
        exif[ORIENTATION] = orientation
    Image.new("RGB", size, colour).save(path, "JPEG", exif=exif)
    return path


def result(image_id: int, path: Path, content_hash: str) -> Result:
    return Result(
        image_id,
        str(path),
        0.5,
        str(path.parent),
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        path.stat().st_size,
        content_hash,
    )


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
    thumb = thumbnail(tmp_path / "thumbs", result(1, broken, "x"))
    with pytest.raises(DecodeError) as why:
        decode_image(broken)
    assert thumb.image is None and thumb.problem == why.value.reason  # the decoder's own words


def test_make_ahead_makes_both_sizes_of_every_photo_and_counts_the_unreadable(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a photo")
    photos = [result(i, photo(tmp_path / f"p{i}.jpg", (300, 200)), f"h{i}") for i in (1, 2, 3)] + [
        result(4, broken, "h4")
    ]
    assert make_ahead(tmp_path / "thumbs", photos) == {"ready": 3, "failed": 1}
    for p in photos[:3]:
        assert all(thumb_path(tmp_path / "thumbs", p.id, p.hash, size).is_file() for size in SIZES.values())


def test_pixseek_thumbs_makes_both_sizes_of_every_indexed_photo_and_counts_the_gone(tmp_path, demo_spec):
    from indexer.runner import run_index

    (tmp_path / "photos").mkdir()
    paths = [photo(tmp_path / "photos" / f"p{i}.jpg", (300, 200 + 20 * i), colour=(60 * i, 90, 30)) for i in range(3)]
    library = LibraryPaths.at(tmp_path / "library")
    run_index(library, [tmp_path / "photos"], model=demo_spec, workers=TEST_WORKERS)
    paths[0].unlink()  # gone since it was indexed: no thumbnail, counted as failed
    out = json.loads(cli("thumbs", "--library", str(library.root), "--json").stdout)
    assert out == {"library": str(library.root), "ready": 2, "failed": 1}
    with Library.open(library.root) as lib:
        made = {
            Path(r.path): [thumb_path(lib.thumbs_dir, r.id, r.hash, s).is_file() for s in SIZES.values()]
            for r in lib.latest()
        }
    assert made == {p.resolve(): [p.exists()] * len(SIZES) for p in paths}


def test_pixseek_thumbs_without_a_library_is_one_line_error(tmp_path):
    assert_one_line_error(cli("thumbs", "--library", str(tmp_path / "nowhere"), code=1), "no library at")


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


def test_route_serves_catalog_ids_only_and_refuses_foreign_hosts(shapes_library, monkeypatch):
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.routing import Route, WebSocketRoute
    from starlette.testclient import TestClient
    from starlette.websockets import WebSocketDisconnect

    from ui.page_backend import shared_library
    from ui.page_server import HostCheck, thumb

    monkeypatch.setenv("PIXSEEK_LIBRARY", str(shapes_library.root))
    first = shared_library(shapes_library.root).browse(Filters(), 1)[0]

    async def echo(socket):
        await socket.accept()
        await socket.send_text("hello")
        await socket.close()

    app = Starlette(
        routes=[Route("/thumb/{size}/{name}.jpg", thumb), WebSocketRoute("/ws", echo)],
        middleware=[Middleware(HostCheck, hosts=frozenset({"127.0.0.1", "localhost"}))],
    )
    client = TestClient(app, base_url="http://127.0.0.1:8501")
    served = client.get(thumb_url(first, GRID))
    assert served.status_code == 200 and "immutable" in served.headers["cache-control"]
    with Image.open(io.BytesIO(served.content)) as img:
        assert img.size == (GRID.pixels, GRID.pixels)
    assert client.get("/thumb/grid/999999-x.jpg").status_code == 404  # not in the catalog
    assert client.get("/thumb/grid/..%2f..%2fetc%2fpasswd.jpg").status_code == 404
    assert client.get(thumb_url(first, GRID), headers={"Host": "evil.example:8501"}).status_code == 403
    assert client.get(thumb_url(first, GRID), headers={"Host": "localhost:8501"}).status_code == 200
    with client.websocket_connect("/ws", headers={"Host": "127.0.0.1:8501"}) as socket:
        assert socket.receive_text() == "hello"
    with pytest.raises(WebSocketDisconnect), client.websocket_connect("/ws", headers={"Host": "evil.example:8501"}):
        pass  # a DNS rebinding page's WebSocket is closed before it opens


def test_the_server_enforces_the_upload_limit_itself():
    from ui.server import MAX_UPLOAD_MB, streamlit_command

    command = streamlit_command("127.0.0.1", 8501)
    assert command[command.index("--server.maxUploadSize") + 1] == str(MAX_UPLOAD_MB)
