#!/usr/bin/env python3
"""The page in a real browser: from pressing Enter to a page of results drawn.

    python3 benchmarks/ui_latency.py [--model random-vit-b-32|demo|SPEC] [--big N] [--per-page N]
                                     [--queries N] [--smoke]

For the Caltech photos (../shared/data/caltech101-bench, 1,192 real JPEGs) and then for N
12-megapixel JPEGs (made once by index_throughput.py's `big_photos`), it indexes a library
(kept under ~/.cache/pixseek-bench, so reruns only check it), starts `pixseek ui` on it and, in
headless Chromium (Debian's /usr/bin/chromium), runs each query in a fresh session with
--per-page results per page (fewer when the library is smaller), twice:

    cold   the library's thumbs/ emptied just before: every photo on the page is decoded once
    warm   the same queries again: the model, index and thumbnails are all ready

and prints the median and worst seconds to (a) the first card drawn and (b) every thumbnail of
the page drawn. The server is started before the first query and its model load is not counted.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

import _common  # noqa: F401  (puts the repository on sys.path)
from _common import CALTECH, RANDOM_MODEL, cache_dir, machine, model_spec
from index_throughput import BIG_GRAINS, big_photos, image_files, link_folder

from tests.test_ui_browser import CHROMIUM, FIRST_PAGE_SHOWN, browser_page, press_search, running_ui

QUERIES = ("a motorbike", "an airplane", "a bonsai tree", "a butterfly", "a camera", "a chair",
           "a cup of coffee", "a dolphin", "an accordion", "an anchor")
ALL_SHOWN = """() => {
    const app = document.querySelector("[data-testid='stApp']");
    const cards = document.querySelectorAll("[class*='st-key-card-']").length;
    const imgs = [...document.querySelectorAll("[class*='st-key-card-'] img")];
    return app.dataset.testScriptState === "notRunning" && cards > 0 && imgs.length === cards
        && imgs.every((i) => i.complete && i.naturalWidth > 0);
}"""


def library_for(label: str, folder: Path, model: str):
    from indexer.library import LibraryPaths
    from indexer.runner import run_index

    slug = "".join(c if c.isalnum() else "-" for c in f"{label}-{model}")
    library = LibraryPaths.at(cache_dir() / "ui-latency" / slug)
    start = time.perf_counter()
    report = run_index(library, [folder], model=model_spec(model))
    print(f"{label}: library {library.root} ({report.added} added, {report.unchanged} unchanged, "
          f"{time.perf_counter() - start:.0f} s)")
    return library


def time_page(url: str, query: str, per_page: int) -> tuple[float, float]:
    """(seconds to the first card drawn, seconds to the whole page drawn) in a fresh session."""
    from playwright.sync_api import expect

    with browser_page(url) as page:
        choice = page.get_by_role("combobox", name="Photos per page")
        choice.fill(str(per_page))
        choice.press("Enter")
        expect(choice).to_have_value(str(per_page))
        pressed = press_search(page, query)
        page.wait_for_function(FIRST_PAGE_SHOWN, polling="raf")
        first = time.perf_counter() - pressed
        page.wait_for_function(ALL_SHOWN, polling="raf")
        return first, time.perf_counter() - pressed


def measure(label: str, folder: Path, args: argparse.Namespace) -> None:
    library = library_for(label, folder, args.model)
    queries = QUERIES[: args.queries]
    with running_ui(library.root, cache_dir() / "ui-latency" / "server.log") as url:
        for mode in ("cold", "warm"):
            firsts, wholes = [], []
            for query in queries:
                if mode == "cold":
                    shutil.rmtree(library.thumbs, ignore_errors=True)
                first, whole = time_page(url, query, args.per_page)
                firsts.append(first)
                wholes.append(whole)
            print(f"  {mode}: first card {statistics.median(firsts):.2f} s median, {max(firsts):.2f} s worst; "
                  f"whole page {statistics.median(wholes):.2f} s median, "
                  f"{max(wholes):.2f} s worst ({len(queries)} queries)")
            sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=RANDOM_MODEL, help=f"{RANDOM_MODEL} (default), demo, or a model spec")
    # A prefix of index_throughput.py's 12 MP set: both use the same cached files.
    parser.add_argument("--big", type=int, default=48, help="how many 12 MP photos in the second library (0: none)")
    parser.add_argument("--per-page", type=int, default=60, choices=(20, 40, 60, 100))
    parser.add_argument("--queries", type=int, default=len(QUERIES), help="how many of the queries to time")
    parser.add_argument("--smoke", action="store_true", help="demo model and 2 queries: checks it runs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.model, args.queries = "demo", 2
    if not CHROMIUM.exists():
        parser.error(f"no browser at {CHROMIUM}: run .ci/install-browser.sh")
    if not CALTECH.is_dir():
        parser.error(f"no folder {CALTECH} (the Caltech set sits in ../shared/data beside the repository)")
    print(f"machine: {machine()}; model: {args.model}; {args.per_page} results per page")
    measure(f"caltech ({len(image_files(CALTECH))} JPEGs)", CALTECH, args)
    if args.big > 0:
        # A fixed folder of links keeps the library's paths, so a rerun does not embed again.
        # Camera-bitrate photos: a thumbnail costs what it would for a phone's photo.
        grain = BIG_GRAINS[-1]
        big = cache_dir() / "ui-latency" / f"big-{args.big}-grain{grain:g}"
        if not big.is_dir():
            link_folder(big_photos(image_files(CALTECH), args.big, grain), big)
        measure(f"12 MP JPEGs ({args.big}, grain {grain:g})", big, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
