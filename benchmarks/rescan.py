#!/usr/bin/env python3
"""Re-running `pixseek index` on an unchanged library: a stat pass, no decoding, no model.

    python3 benchmarks/rescan.py [--files 10000] [--runs 3] [--model demo] [--smoke]

Writes FILES small JPEGs (100 per folder) to a temporary folder, indexes them once with the
demo model, then times `pixseek index` on the same folder again through the real command line
(a fresh Python process each time, as a user runs it) and in-process with `run_index` (for the
per-stage breakdown). Target: the command-line re-run of 10,000 files takes at most 2 seconds.
It also checks with `python3 -X importtime` that such a run imports none of the heavy modules.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import _common  # noqa: F401  (puts the repository on sys.path)
from _common import REPO, fmt_stages, machine, model_spec, temp_dir

TARGET_SECONDS = 2.0
PER_FOLDER = 100
HEAVY = ("torch", "open_clip", "faiss", "streamlit", "pandas")
CLI = [sys.executable, "-c", "from ui.cli import main; main()"]


def make_files(folder: Path, n: int) -> None:
    """n distinct 32x32 JPEGs: enough for the walker and the catalog, cheap to embed."""
    from PIL import Image

    for i in range(n):
        sub = folder / f"album-{i // PER_FOLDER:04d}"
        if i % PER_FOLDER == 0:
            sub.mkdir(parents=True)
        colour = ((i * 37) % 256, (i * 91) % 256, (i * 173) % 256)
        Image.new("RGB", (32, 32), colour).save(sub / f"img-{i:06d}.jpg", quality=80)


def cli_index(folder: Path, library: Path, *python_flags: str) -> subprocess.CompletedProcess:
    cmd = [CLI[0], *python_flags, *CLI[1:], "index", str(folder), "--library", str(library)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"pixseek index failed: {done.stderr.strip()}")
    return done


def imported_heavy(importtime_log: str) -> list[str]:
    """Top-level packages from HEAVY that `-X importtime` shows were imported."""
    found = set()
    for line in importtime_log.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip().split(".")[0]
            if name in HEAVY:
                found.add(name)
    return sorted(found)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3, help="timed command-line re-runs")
    parser.add_argument("--model", default="demo", help="model for the first index run (default: demo)")
    parser.add_argument("--smoke", action="store_true", help="200 files, one timed run: checks it runs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.files, args.runs = min(args.files, 200), 1

    from indexer.library import LibraryPaths
    from indexer.runner import run_index

    print(f"machine: {machine()}")
    with temp_dir("rescan") as tmp:
        folder, library = Path(tmp) / "photos", Path(tmp) / "library"
        start = time.perf_counter()
        make_files(folder, args.files)
        made = time.perf_counter() - start
        first = run_index(LibraryPaths.at(library), [folder], model=model_spec(args.model))
        if first.embedded != args.files:
            raise SystemExit(f"first run embedded {first.embedded} of {args.files} files")

        timings = []
        for _ in range(args.runs):
            start = time.perf_counter()
            cli_index(folder, library)
            timings.append(time.perf_counter() - start)
        again = run_index(LibraryPaths.at(library), [folder])
        heavy = imported_heavy(cli_index(folder, library, "-X", "importtime").stderr)

    best = min(timings)
    verdict = "PASS" if best <= TARGET_SECONDS else "FAIL"
    print("== re-run on an unchanged library ==")
    print(f"files           {args.files}   (made in {made:.1f}s, {PER_FOLDER} per folder)")
    print(
        f"first index     {first.seconds:.2f} s   ({args.model} model, {first.embedded} embedded; "
        f"stages {fmt_stages(first.stages)})"
    )
    print(
        f"re-run (CLI)    {best:.2f} s   (best of {len(timings)}: {' / '.join(f'{t:.2f}' for t in timings)}; "
        f"median {statistics.median(timings):.2f}; target {TARGET_SECONDS:.1f} s: {verdict})"
    )
    print(
        f"re-run (API)    {again.seconds:.3f} s   (run_index in-process; unchanged {again.unchanged}, "
        f"embedded {again.embedded}; stages {fmt_stages(again.stages) or 'none'})"
    )
    print(f"heavy imports   {', '.join(heavy) if heavy else 'none'}   (checked: {', '.join(HEAVY)})")
    missed_target = verdict == "FAIL" and not args.smoke  # a smoke run checks it works, not its speed
    return 1 if missed_target or heavy or again.embedded else 0


if __name__ == "__main__":
    sys.exit(main())
