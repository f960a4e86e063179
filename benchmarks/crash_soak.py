#!/usr/bin/env python3
"""SIGKILL `pixseek index` at random moments, many times over, and count what was lost.

    python3 benchmarks/crash_soak.py [--images 240] [--kills 40] [--commit-every 16] [--seed 0]

Indexes a generated shapes gallery with the demo model, killing each run (SIGKILL: no cleanup
at all) at a random moment between its start and its expected end, then starting it again.
After every kill it checks that every image committed before is still there with the same vector
and that a search ranks exactly the committed images; after the kills one run must finish with
catalog, vectors and FAISS index agreeing. Target: 0 images lost, every check passes.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import time
from pathlib import Path

import _common  # noqa: F401  (puts the repository on sys.path)
from _common import machine, temp_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=240)
    parser.add_argument("--kills", type=int, default=40)
    parser.add_argument("--commit-every", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from indexer.library import LibraryPaths
    from indexer.model import ModelSpec, load_encoder
    from indexer.runner import run_index
    from pixseek_data.shapes import caption, generate_gallery
    from search import Library
    from tests.harness import Forker, assert_consistent, read_state

    rng = random.Random(args.seed)
    demo = ModelSpec.parse("demo")
    query = load_encoder(demo, "cpu").encode_texts([caption("red", "circle")])[0]

    def committed(lib: Path) -> dict[str, bytes]:
        if not (lib / "catalog.db").exists():
            return {}
        state = read_state(lib)
        return {p: state.vectors[i].tobytes() for p, (i, st, _, _) in state.rows.items() if st == "indexed"}

    with temp_dir("crash-soak") as tmp:
        root = Path(tmp).resolve()
        photos, lib = root / "photos", root / "lib"
        records = generate_gallery(photos, per_class=max(1, args.images // 24), seed=args.seed)
        every_file = {str(r.path): "indexed" for r in records}
        forker = Forker(root)
        command = ["index", str(photos), "--library", str(lib), "--model", "demo", "--workers", "1"]
        env = {k: v for k, v in os.environ.items() if k != "PIXSEEK_LIBRARY"}

        for _ in range(2):  # uninterrupted runs, to time one (the second: warm caches, like the rest)
            start = time.perf_counter()
            forker.run(command, env, commit_every=args.commit_every)
            full_run = time.perf_counter() - start
            shutil.rmtree(lib)

        kept: dict[str, bytes] = {}
        lost = wrong_searches = completed = 0
        for _ in range(args.kills):
            run = forker.start(command, env, commit_every=args.commit_every)
            left = 1 - len(kept) / len(records)  # a resumed run has only this share of the work
            time.sleep(rng.uniform(0, full_run * max(left, 0.25)))  # a random moment of the run
            os.kill(run.pid, signal.SIGKILL)
            finished = run.wait() == 0
            now = committed(lib)
            lost += sum(now.get(p) != v for p, v in kept.items())
            if now:
                library = Library.open(lib)
                try:
                    wrong_searches += {r.path for r in library.search_vector(query, k=len(records))} != set(now)
                finally:
                    library.close()
            if finished:  # it ended before the kill: check it, then start over for more crash points
                assert_consistent(lib, every_file)
                shutil.rmtree(lib)
                completed, now = completed + 1, {}
            kept = now

        report = run_index(LibraryPaths.at(lib), [photos], model=demo, workers=0)
        assert_consistent(lib, every_file)
        forker.close()
    print(f"machine: {machine()}")
    print(f"{len(records)} images, an uninterrupted run {full_run:.1f}s, a commit every {args.commit_every} images")
    print(
        f"{args.kills} SIGKILLs at random moments, {args.kills - completed} of them mid-run ({completed} runs "
        f"had finished first): {args.kills - wrong_searches} left a library searching exactly its committed "
        f"images; images lost: {lost}"
    )
    print(f"then one run embedded the {report.embedded} missing images; catalog, vectors and index agree")
    if lost or wrong_searches:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
