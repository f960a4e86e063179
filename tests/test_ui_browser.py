"""`pixseek ui` end to end in headless Chromium: type a query, see the right photo, "more like this".

Needs Debian's chromium (`.ci/install-browser.sh`); Playwright drives it, nothing is downloaded.
The screenshot lands in test-artifacts/ui-search.png. Run with -s to see the measured latency.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
START_TIMEOUT_S = 120  # the server imports torch and Streamlit on a 2-core machine
PAGE_TIMEOUT_MS = 60_000  # the first page load also loads the model
CARD = "[class*='st-key-card-']"
# True once the last rerun has finished and the first card's thumbnail and name have been drawn
# (the name's button can be drawn a frame after the script state says the rerun is over).
FIRST_PAGE_SHOWN = """() => {
    const app = document.querySelector("[data-testid='stApp']");
    const img = document.querySelector("[class*='st-key-card-'] img");
    const name = document.querySelector("[class*='st-key-card-'] [class*='st-key-open-']");
    return app && app.dataset.testScriptState === "notRunning" && img && img.complete && img.naturalWidth > 0
        && name && name.innerText.trim().length > 0;
}"""

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no browser at {CHROMIUM}: run .ci/install-browser.sh")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_ui(library: Path, log: Path) -> Iterator[str]:
    """`pixseek ui` on a free port; yields the URL it prints, and always stops it."""
    with open(log, "w") as err:
        proc = subprocess.Popen(["pixseek", "ui", "--library", str(library), "--port", str(free_port())],
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
def browser_page(url: str) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.set_default_timeout(PAGE_TIMEOUT_MS)
            page.goto(url)
            page.get_by_text("Find any photo by describing it").wait_for()  # model loaded, nothing searched
            yield page
        finally:
            browser.close()


def press_search(page, text: str) -> float:
    """Type a query and press Enter; returns when Enter was pressed (time.perf_counter)."""
    box = page.get_by_placeholder("Describe a photo")
    box.fill(text)
    pressed = time.perf_counter()
    box.press("Enter")
    return pressed


def search_and_time(page, text: str) -> float:
    """Seconds from pressing Enter to the first page of results drawn (from a page with none yet)."""
    pressed = press_search(page, text)
    page.wait_for_function(FIRST_PAGE_SHOWN, polling="raf")
    return time.perf_counter() - pressed


def card_id(card) -> int:
    return int(re.search(r"st-key-card-(\d+)", card.get_attribute("class")).group(1))


def test_search_and_more_like_this_in_a_browser(dated_shapes_library, tmp_path):
    from playwright.sync_api import expect

    library, labels = dated_shapes_library
    names = {Path(p).name: shape for p, (_, shape, _) in labels.items()}
    with running_ui(library.root, tmp_path / "server.log") as url, browser_page(url) as page:
        seconds = search_and_time(page, "a red circle")
        print(f"\nwarm query, Enter -> first page of results drawn: {seconds * 1000:.0f} ms")
        first = page.locator(CARD).first
        name = first.locator("[class*='st-key-open-']").inner_text()
        assert (names[name].colour, names[name].shape) == ("red", "circle")

        chosen = card_id(first)
        first.get_by_role("button", name="More like this").click()
        expect(page.get_by_text(f"Photos like {name}")).to_be_visible()
        expect(page.locator(f".st-key-card-{chosen}")).to_have_count(0)
        page.wait_for_function(FIRST_PAGE_SHOWN, polling="raf")
        best = page.locator(CARD).first.locator("[class*='st-key-open-']").inner_text()
        assert (names[best].colour, names[best].shape) == ("red", "circle")

        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "ui-search.png"), full_page=False)
