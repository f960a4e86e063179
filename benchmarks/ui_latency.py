#!/usr/bin/env python3
"""The page in a real browser: from pressing Enter to a page of results drawn, and back.

    python3 benchmarks/ui_latency.py [--model random-vit-b-32|demo|SPEC] [--demo N] [--caltech N]
                                     [--big N] [--per-page N] [--queries N] [--smoke]

For a demo library (generated shapes, N per colour and shape, the bundled demo model), the Caltech
photos (../shared/data/caltech101-bench, 1,192 real JPEGs, or N of them) and then N 12-megapixel JPEGs (made
once by index_throughput.py's `big_photos`), it indexes a library (kept under
~/.cache/pixseek-bench, so reruns only check it), starts `pixseek ui` on it and, in headless
Chromium (Debian's /usr/bin/chromium), runs each query in a fresh session with --per-page results
per page (fewer when the library is smaller), twice:

    cold   the library's thumbs/ emptied just before: every photo on the page is decoded once
    warm   the same queries again, after making every thumbnail ahead (as `pixseek thumbs` does):
           the model, index and thumbnails are all ready

and prints the median and worst seconds to (a) the first thumbnail drawn and (b) every thumbnail
of the page drawn; warm, also from a click on "More like this" to its first thumbnail and from a
click on a photo to its large view drawn. The server is started before the first query and its
model load is not counted.
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
from index_throughput import BIG_GRAINS, big_photos, image_files, link_folder, spread

from tests.harness import (
    CHROMIUM,
    FIRST_PAGE_SHOWN,
    GRID_ROOT,
    REMEMBER_GRID,
    RERUN_DONE,
    TILE,
    browser_page,
    press_search,
    running_ui,
)

SMOKE_CALTECH = 60
QUERIES = (
    "a motorbike",
    "an airplane",
    "a bonsai tree",
    "a butterfly",
    "a camera",
    "a chair",
    "a cup of coffee",
    "a dolphin",
    "an accordion",
    "an anchor",
)
DEMO_QUERIES = (
    "a red circle",
    "a blue star",
    "a green square",
    "a yellow triangle",
    "an orange circle",
    "a purple star",
    "a red square",
    "a blue triangle",
    "a green circle",
    "a yellow star",
)
ALL_SHOWN = (
    "() => {"
    + GRID_ROOT
    + """
    const root = gridRoot();
    const imgs = root ? [...root.querySelectorAll(".tile img")] : [];
    return imgs.length > 0 && imgs.every((i) => i.complete && i.naturalWidth > 0);
}"""
)
LARGE_SHOWN = (
    "() => {"
    + GRID_ROOT
    + """
    const viewer = gridRoot().querySelector(".viewer");
    const img = viewer.querySelector("img.large");
    return !viewer.hidden && img.complete && img.naturalWidth > 0;
}"""
)


def library_for(label: str, folder: Path, model: str):
    from indexer.runner import IndexOptions, run_index
    from search import LibraryPaths

    slug = "".join(c if c.isalnum() else "-" for c in f"{label}-{model}")
    library = LibraryPaths.at(cache_dir() / "ui-latency" / slug)
    start = time.perf_counter()
    report = run_index(library, [folder], IndexOptions(model=model_spec(model)))
    print(
        f"{label}: library {library.root} ({report.added} added, {report.unchanged} unchanged, "
        f"{time.perf_counter() - start:.0f} s)"
    )
    return library


def time_page(url: str, query: str, per_page: int, warm: bool) -> dict[str, float]:
    """Seconds to the first thumbnail and to the whole page drawn, in a fresh session; warm, also
    "More like this" and the large view."""
    from playwright.sync_api import expect

    with browser_page(url) as page:
        page.wait_for_function(ALL_SHOWN, polling="raf")  # the start page's thumbnails: no work left behind
        choice = page.get_by_role("combobox", name="Photos per page")
        choice.fill(str(per_page))
        choice.press("Enter")
        expect(choice).to_have_value(str(per_page))
        page.wait_for_function(RERUN_DONE, polling="raf")
        pressed = press_search(page, query)
        page.wait_for_function(FIRST_PAGE_SHOWN, polling="raf")
        times = {"first": time.perf_counter() - pressed}
        page.wait_for_function(ALL_SHOWN, polling="raf")
        times["whole"] = time.perf_counter() - pressed
        if warm:
            page.wait_for_function(RERUN_DONE, polling="raf")
            tile = page.locator(TILE).first
            tile.hover()
            page.evaluate(REMEMBER_GRID)
            clicked = time.perf_counter()
            tile.get_by_role("button", name="More like this").click()
            page.wait_for_function(FIRST_PAGE_SHOWN, polling="raf")
            times["like"] = time.perf_counter() - clicked
            page.wait_for_function(ALL_SHOWN, polling="raf")
            page.wait_for_function(RERUN_DONE, polling="raf")
            clicked = time.perf_counter()
            page.locator(TILE).last.click()
            page.wait_for_function(LARGE_SHOWN, polling="raf")
            times["large"] = time.perf_counter() - clicked
        return times


def summary(name: str, values: list[float]) -> str:
    return f"{name} {statistics.median(values):.2f} s median, {max(values):.2f} s worst"


def measure(label: str, folder: Path, model: str, queries: tuple[str, ...], args: argparse.Namespace) -> None:
    from search import Filters
    from ui.page_backend import PageLibrary
    from ui.thumbs import make_ahead

    library = library_for(label, folder, model)
    with running_ui(library.root, cache_dir() / "ui-latency" / "server.log") as url:
        for mode in ("cold", "warm"):
            if mode == "warm" and not args.smoke:  # (a whole library's thumbnails: a minute on 2 cores)
                # What `pixseek thumbs` does: every thumbnail ready, so no query waits for one.
                made = time.perf_counter()
                counts = make_ahead(library.thumbs, PageLibrary(library.root).browse(Filters()))
                print(f"  pixseek thumbs: {counts['ready']} photos ready in {time.perf_counter() - made:.0f} s")
            runs = []
            for query in queries:
                if mode == "cold":
                    shutil.rmtree(library.thumbs, ignore_errors=True)
                runs.append(time_page(url, query, args.per_page, warm=mode == "warm"))
            print(
                f"  {mode}: {summary('first card', [r['first'] for r in runs])}; "
                f"{summary('whole page', [r['whole'] for r in runs])} ({len(queries)} queries)"
            )
            if mode == "warm":
                print(
                    f"  warm: {summary('more like this', [r['like'] for r in runs])}; "
                    f"{summary('large view', [r['large'] for r in runs])}"
                )
            sys.stdout.flush()


def demo_folder(per_class: int) -> Path:
    from pixseek_data.shapes import generate_gallery

    folder = cache_dir() / "ui-latency" / f"shapes-{per_class}"
    if not folder.is_dir():
        generate_gallery(folder, per_class=per_class, seed=7)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=RANDOM_MODEL, help=f"{RANDOM_MODEL} (default), demo, or a model spec")
    # A prefix of index_throughput.py's 12 MP set: both use the same cached files.
    parser.add_argument("--big", type=int, default=48, help="how many 12 MP photos in the second library (0: none)")
    parser.add_argument("--caltech", type=int, default=None, help="how many Caltech photos, spread (default: all)")
    parser.add_argument("--demo", type=int, default=5, help="shapes per colour and shape in the demo library (0: none)")
    parser.add_argument("--per-page", type=int, default=20, choices=(20, 40, 60, 100))
    parser.add_argument("--queries", type=int, default=len(QUERIES), help="how many of the queries to time")
    parser.add_argument("--smoke", action="store_true", help="demo model, 2 queries, 60 Caltech photos: checks it runs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.model, args.queries, args.demo, args.caltech = "demo", 2, 0, args.caltech or SMOKE_CALTECH
    if not CHROMIUM.exists():
        parser.error(f"no browser at {CHROMIUM}: run .ci/install-browser.sh")
    if not CALTECH.is_dir():
        parser.error(f"no folder {CALTECH} (the Caltech set sits in ../shared/data beside the repository)")
    print(f"machine: {machine()}; model: {args.model}; {args.per_page} results per page")
    queries = QUERIES[: args.queries]
    if args.demo > 0:
        measure(
            f"demo shapes ({args.demo * 24} images)", demo_folder(args.demo), "demo", DEMO_QUERIES[: args.queries], args
        )
    caltech, photos = CALTECH, image_files(CALTECH)
    if args.caltech is not None and args.caltech < len(photos):
        caltech, photos = cache_dir() / "ui-latency" / f"caltech-{args.caltech}", spread(photos, args.caltech)
        if not caltech.is_dir():
            link_folder(photos, caltech)
    measure(f"caltech ({len(photos)} JPEGs)", caltech, args.model, queries, args)
    if args.big > 0:
        # A fixed folder of links keeps the library's paths, so a rerun does not embed again.
        # Camera-bitrate photos: a thumbnail costs what it would for a phone's photo.
        grain = BIG_GRAINS[-1]
        big = cache_dir() / "ui-latency" / f"big-{args.big}-grain{grain:g}"
        if not big.is_dir():
            link_folder(big_photos(image_files(CALTECH), args.big, grain), big)
        measure(f"12 MP JPEGs ({args.big}, grain {grain:g})", big, args.model, queries, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
