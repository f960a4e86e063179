#!/usr/bin/env python3
"""`pixseek index --ray` against a plain run: wall time of the whole command, and equal libraries.

    python3 benchmarks/ray_index.py [FOLDER] [--model random-vit-b-32|demo|SPEC] [--ray ADDRESS]
                                    [--repeat N] [--ray-first] [--limit N]

Indexes FOLDER (default ../shared/data/caltech101-bench, 1,192 real JPEGs) into a fresh library
once plainly and once with `--ray` (or `--ray-address ADDRESS`; default local: a Ray instance
started by the run), round after round, alternating which goes first, each as its own
`pixseek index` process: the wall time is what a user waits, imports, Ray's start and stop and
the model loads included. Prints both times per round, their
ratio (target: ray <= 1.3 x plain), the stages of each run, and checks the two libraries hold the
same paths with vectors equal to fp32 rounding. The load average is printed before and after:
the ratio is only meaningful when it did not move much.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import _common  # noqa: F401  (puts the repository on sys.path)
import numpy as np
from _common import CALTECH, RANDOM_MODEL, REPO, fmt_stages, machine, model_spec, temp_dir

TARGET = 1.3


def index(folder: Path, library: Path, spec: str, ray: str | None) -> tuple[float, dict]:
    """(wall seconds, --json report) of one `pixseek index` process."""
    args = ["index", str(folder), "--library", str(library), "--model", spec, "--json"]
    if ray is not None:
        args += ["--ray"] if ray == "local" else ["--ray-address", ray]
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", "from ui.cli import main; main()", *args], cwd=REPO, capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"pixseek index failed:\n{done.stderr[-3000:]}")
    return seconds, json.loads(done.stdout)


def stored(library: Path) -> dict[str, np.ndarray]:
    """path -> stored vector of every indexed image, read from the files."""
    from indexer.library.rows import path_from_db

    with closing(sqlite3.connect(library / "catalog.db")) as db:
        rows = db.execute("SELECT id, path FROM images WHERE status = 'indexed'").fetchall()
        dim = int(db.execute("SELECT value FROM settings WHERE key = 'dim'").fetchone()[0])
    vectors = np.fromfile(library / "vectors.f16", dtype=np.float16).reshape(-1, dim).astype(np.float32)
    return {path_from_db(path): vectors[i] for i, path in rows}


def linked_subset(folder: Path, n: int, into: Path) -> Path:
    from indexer.walk import walk

    files = [Path(f.path) for f in walk([folder])]
    into.mkdir()
    for i in range(n):
        f = files[i * len(files) // n]
        (into / f"{i:04d}-{f.parent.name}-{f.name}").symlink_to(f)
    return into


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path, default=CALTECH)
    parser.add_argument("--model", default=RANDOM_MODEL)
    parser.add_argument("--ray", default="local", help="the address --ray is given (default: local)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds, alternating which run goes first")
    parser.add_argument("--ray-first", action="store_true", help="the Ray run goes first in round 1")
    parser.add_argument("--limit", type=int, default=None, help="index this many files, spread over the folder")
    args = parser.parse_args()
    spec = str(model_spec(args.model))
    limit = args.limit
    print(f"machine         {machine()}")
    print(f"model           {spec}")
    with temp_dir("ray-bench") as tmp:
        folder = linked_subset(args.folder, limit, Path(tmp) / "photos") if limit else args.folder
        ratios = []
        for r in range(1, args.repeat + 1):
            before = load()
            # The order alternates round by round, so a machine that gets busier or quieter during a
            # round does not favour one side in every round.
            ray_first = (r % 2 == 1) == args.ray_first
            if ray_first:
                ray_s, ray = index(folder, Path(tmp) / f"ray-{r}", spec, args.ray)
            plain_s, plain = index(folder, Path(tmp) / f"plain-{r}", spec, None)
            if not ray_first:
                ray_s, ray = index(folder, Path(tmp) / f"ray-{r}", spec, args.ray)
            ratios.append(ray_s / plain_s)
            a, b = stored(Path(tmp) / f"plain-{r}"), stored(Path(tmp) / f"ray-{r}")
            if a.keys() != b.keys():
                sys.exit(f"the libraries differ: {len(a.keys() ^ b.keys())} paths in one only")
            diff = max((float(np.abs(a[p] - b[p]).max()) for p in a), default=0.0)
            print(f"== round {r} of {args.repeat} ({'ray' if ray_first else 'plain'} first) ==")
            print(f"images          {plain['embedded']}   (ray: {ray['embedded']})")
            print(f"plain           {plain_s:.2f} s   ({fmt_stages(plain['stages'])})")
            print(f"ray             {ray_s:.2f} s   ({fmt_stages(ray['stages'])})")
            print(f"ratio           {ray_s / plain_s:.3f}   (ray / plain wall time; target <= {TARGET})")
            print(f"max difference  {diff:.3g}   (stored float16 vectors, same paths: {len(a)})")
            print(f"load average    {before} before, {load()} after")
            sys.stdout.flush()
        print("== summary ==")
        print(f"median ratio    {statistics.median(ratios):.3f}   ({' / '.join(f'{x:.3f}' for x in ratios)})")


if __name__ == "__main__":
    main()
