"""`pixseek ui` end to end in headless Chromium, over one small library served once for the module.

Needs Debian's chromium (`.ci/install-browser.sh`); Playwright drives it, nothing is downloaded.
Screenshots land in test-artifacts/. Run with -s to see the measured latency.
"""

from __future__ import annotations

import os
import random
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
START_TIMEOUT_S = 120  # the server imports torch and Streamlit on a 2-core machine
PAGE_TIMEOUT_MS = 60_000  # the first page load also loads the model
DESKTOP = {"width": 1440, "height": 1000}
# The grid is a component in a shadow root under the element keyed "grid".
GRID_ROOT = """const gridRoot = () => {
    const box = document.querySelector(".st-key-grid");
    for (const el of box ? box.querySelectorAll("*") : []) if (el.shadowRoot) return el.shadowRoot;
    return null;
};"""
# True once a grid drawn since the last press_search (which remembers the grid that was there
# before) shows its first thumbnail: what the user sees, whatever the rest of the rerun still does.
FIRST_PAGE_SHOWN = "() => {" + GRID_ROOT + """
    const root = gridRoot();
    const grid = root && root.querySelector(".pixseek-grid");
    const img = grid && grid.querySelector(".tile img");
    return grid && grid !== window.__gridBefore && img && img.complete && img.naturalWidth > 0;
}"""
# Then the rerun is over: the next click is not queued behind it.
RERUN_DONE = """() => document.querySelector("[data-testid='stApp']").dataset.testScriptState === 'notRunning'"""
REMEMBER_GRID = "() => {" + GRID_ROOT + """
    const root = gridRoot();
    window.__gridBefore = root && root.querySelector(".pixseek-grid");
}"""
TILE = ".tile"
MAKE, MODEL = "[click me](https://example.com/x)", "![t](https://example.com/track.png)"

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no browser at {CHROMIUM}: run .ci/install-browser.sh")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_ui(library: Path, log: Path) -> Iterator[str]:
    """`pixseek ui` of this checkout on a free port; yields the URL it prints, and always stops it."""
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-c", "from ui.cli import main; main()", "ui", "--library",
                                 str(library), "--port", str(free_port())], cwd=REPO,
                                stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True)
    try:
        yield _printed_url(proc, log)
    finally:
        proc.terminate()  # pixseek must take its Streamlit child down with it...
        try:
            proc.wait(timeout=15)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # ...and whatever did not is killed here
            except ProcessLookupError:
                pass


def _printed_url(proc: subprocess.Popen, log: Path) -> str:
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if not selector.select(timeout=deadline - time.monotonic()):
            break
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"pixseek ui exited ({proc.wait()}): {log.read_text()}")
        found = re.search(r"running at (http://\S+)", line)
        if found:
            return found.group(1)
    raise AssertionError(f"pixseek ui printed no URL within {START_TIMEOUT_S} s: {log.read_text()}")


@contextmanager
def browser_page(url: str, viewport: dict[str, int] = DESKTOP, requests: list[str] | None = None) -> Iterator[object]:
    """A fresh session on the start page (model loaded, latest photos drawn); every URL the page
    requests is appended to `requests`."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport=viewport)
            if requests is not None:
                page.on("request", lambda request: requests.append(request.url))
            page.set_default_timeout(PAGE_TIMEOUT_MS)
            page.goto(url)
            page.get_by_text("Latest photos").wait_for()
            page.wait_for_function(FIRST_PAGE_SHOWN, polling="raf")
            yield page
        finally:
            browser.close()


def press_search(page, text: str) -> float:
    """Type a query and press Enter; returns when Enter was pressed (time.perf_counter)."""
    box = page.get_by_placeholder("Describe a photo")
    box.fill(text)
    page.evaluate(REMEMBER_GRID)
    pressed = time.perf_counter()
    box.press("Enter")
    return pressed


def wait_for_new_grid(page) -> None:
    page.wait_for_function(FIRST_PAGE_SHOWN, polling="raf")
    page.wait_for_function(RERUN_DONE, polling="raf")


def open_folder(page, name: str) -> None:
    page.evaluate(REMEMBER_GRID)
    page.get_by_role("button", name=re.compile("^" + re.escape(name) + " · ")).click()
    wait_for_new_grid(page)


def tile_names(page) -> list[str]:
    return [t.get_attribute("aria-label") for t in page.locator(TILE).all()]


@pytest.fixture(scope="module")
def gallery(tmp_path_factory, demo_spec):
    """Shapes ({file name: (colour, shape)}), three portrait photos, a folder and an EXIF camera written to
    inject markup, and a folder and file whose names are not UTF-8; indexed with the demo model."""
    from PIL import Image

    from indexer.library import LibraryPaths
    from indexer.runner import run_index
    from ui.shapes import draw_shape, generate_gallery

    root = tmp_path_factory.mktemp("browser-photos")
    shapes = {s.path.name: (s.colour, s.shape) for s in generate_gallery(root / "shapes", per_class=2, seed=3)}
    (root / "portrait").mkdir()
    for i, (w, h) in enumerate(((600, 1500), (500, 1400), (700, 1600))):
        Image.new("RGB", (w, h), (40 + 60 * i, 90, 160)).save(root / "portrait" / f"tall-{i}.jpg", quality=90)
    hostile = root / "a` [Download the fix](https:evil.example) `b"
    hostile.mkdir()
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = MAKE, MODEL
    draw_shape("red", "circle", random.Random(1), size=96).save(hostile / "camera.jpg", "JPEG", exif=exif)
    shapes["camera.jpg"] = ("red", "circle")
    latin1 = os.path.join(os.fsencode(root), b"Fotos_\xe9t\xe9")
    os.mkdir(latin1)
    draw_shape("blue", "star", random.Random(2), size=96).save(os.fsdecode(os.path.join(latin1, b"bad\xff.jpg")))
    library = LibraryPaths.at(tmp_path_factory.mktemp("browser-library"))
    run_index(library, [root], model=demo_spec, workers=0)
    return library, shapes


@pytest.fixture(scope="module")
def url(gallery, tmp_path_factory) -> Iterator[str]:
    with running_ui(gallery[0].root, tmp_path_factory.mktemp("server") / "server.log") as served:
        yield served


def screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=False)


def test_search_is_fast_private_and_more_like_this_keeps_the_shape(gallery, url):
    _, shapes = gallery
    requests: list[str] = []
    with browser_page(url, requests=requests) as page:
        pressed = press_search(page, "a red circle")
        page.wait_for_function(FIRST_PAGE_SHOWN, polling="raf")
        measured = time.perf_counter() - pressed
        page.wait_for_function(RERUN_DONE, polling="raf")
        caption = page.get_by_text(re.compile(r"^Best matches first · ")).inner_text()
        claimed = float(re.search(r"· ([\d.]+) s$", caption).group(1))
        print(f"\nwarm query, Enter -> first thumbnail drawn: {measured * 1000:.0f} ms (page says {claimed:.2f} s)")
        assert claimed <= measured, "the page claims to be faster than it was"
        first = page.locator(TILE).first
        name = first.get_attribute("aria-label")
        assert shapes[name] == ("red", "circle")
        chosen = first.get_attribute("data-id")
        first.hover()
        page.evaluate(REMEMBER_GRID)
        first.get_by_role("button", name="More like this").click()
        wait_for_new_grid(page)
        assert page.get_by_text(f"Photos like {name}").is_visible()
        assert chosen not in [t.get_attribute("data-id") for t in page.locator(TILE).all()]
        assert shapes[tile_names(page)[0]] == ("red", "circle")
    server = urlsplit(url).netloc
    elsewhere = {u for u in requests if urlsplit(u).scheme in ("http", "https", "ws", "wss")
                 and urlsplit(u).netloc != server}
    assert requests and not elsewhere, f"the page asked other hosts: {sorted(elsewhere)}"


# (window, photos wholly above the fold at least, columns at least)
SIZES = (({"width": 1440, "height": 1000}, 15, 6), ({"width": 820, "height": 1180}, 12, 3),
         ({"width": 390, "height": 844}, 4, 2))


def test_grid_fills_the_window_at_three_sizes(url):
    with browser_page(url) as page:
        for viewport, above_the_fold, columns in SIZES:
            page.set_viewport_size(viewport)
            page.wait_for_function(f"() => window.innerWidth === {viewport['width']}")
            page.wait_for_timeout(300)  # let the layout settle after the resize
            boxes = [t.bounding_box() for t in page.locator(TILE).all()]
            visible = [b for b in boxes if b["y"] + b["height"] <= viewport["height"]]
            lefts = {round(b["x"]) for b in boxes}
            grid = page.locator(".tiles").bounding_box()
            screenshot(page, f"ui-grid-{viewport['width']}x{viewport['height']}.png")
            assert len(visible) >= above_the_fold, viewport
            assert len(lefts) >= columns, viewport
            right = max(b["x"] + b["width"] for b in boxes)
            assert abs(right - (grid["x"] + grid["width"])) <= 2, "the last column must end at the grid's right edge"


def test_large_view_fits_a_portrait_photo_and_the_keys_step_through(url):
    with browser_page(url) as page:
        open_folder(page, "portrait")
        tiles = page.locator(TILE)
        ids = [t.get_attribute("data-id") for t in tiles.all()]
        assert len(ids) == 3
        tiles.first.click()
        viewer = page.locator(".viewer")
        large = viewer.locator("img.large")
        page.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=large.element_handle())
        natural = large.evaluate("(img) => [img.naturalWidth, img.naturalHeight]")
        box = large.bounding_box()
        screenshot(page, "ui-large-view.png")
        assert natural[1] > natural[0]  # the large view of a portrait photo is portrait
        assert box["x"] >= 0 and box["y"] >= 0
        assert box["x"] + box["width"] <= DESKTOP["width"] and box["y"] + box["height"] <= DESKTOP["height"]
        assert viewer.get_attribute("data-id") == ids[0]
        page.keyboard.press("ArrowRight")
        assert viewer.get_attribute("data-id") == ids[1]
        page.keyboard.press("ArrowLeft")
        page.keyboard.press("ArrowLeft")
        assert viewer.get_attribute("data-id") == ids[2]  # it wraps around
        page.keyboard.press("Escape")
        assert viewer.is_hidden()
        tiles.nth(1).focus()
        page.keyboard.press("Enter")
        assert viewer.is_visible() and viewer.get_attribute("data-id") == ids[1]


def test_hostile_names_and_exif_are_shown_as_text(url):
    requests: list[str] = []
    with browser_page(url, requests=requests) as page:
        open_folder(page, "a` [Download the fix](https:evil.example) `b")
        page.locator(TILE).first.click()
        camera = page.locator(".viewer dd").nth(1)
        assert camera.inner_text() == f"{MAKE} {MODEL}"
        page.goto(url)  # a new session: back on the start page
        page.get_by_text("Latest photos").wait_for()
        open_folder(page, "Fotos_\\xe9t\\xe9")
        assert tile_names(page) == ["bad\\xff.jpg"]
        links = page.evaluate("() => [...document.querySelectorAll('a')].map((a) => a.href)")
    assert not [u for u in links + requests if "example" in u]
