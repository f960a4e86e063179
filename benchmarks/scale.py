#!/usr/bin/env python3
"""Search at scale: a library of 1M (or 10M) synthetic images, queried by vector with and without filters.

    python3 benchmarks/scale.py [--size 1000000] [--queries 200] [--library DIR] [--smoke]

Writes SIZE clustered, L2-normalised 512-d vectors with catalog rows (folders, cameras, dates;
tests/harness.py `synthetic_library`) through the library's own catalog, vector store and ANN
build (IVF-PQ), then prints the build time, bytes per image in RAM and on disk, and for
`Library.search_vector` (the query vector given, no text embedding) the warm latency p50/p95,
recall@10 against exact search and whether every query came back full (k results), without a
filter and with filters passing 50 % (a date range), 5 % (a camera) and 0.1 % (a folder) of the
library. Targets at 1M on 2 cores: p50 <= 30 ms unfiltered, <= 60 ms filtered, recall@10 >= 0.99,
every filtered query full, ANN index <= 100 bytes per image in RAM.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import _common  # noqa: F401  (puts the repository on sys.path)
import numpy as np
from _common import machine, temp_dir

from indexer.library import LibraryPaths, index_file
from indexer.library.filters import Filters
from indexer.library.vectors import VectorStore
from search import Library
from tests.harness import SYNTH_DAYS, SYNTH_FOLDERS, Synthetic, synthetic_library

SMOKE_SIZE = 10_000
K = 10
WARMUP = 5
_CHUNK = 65_536


def rss_bytes() -> int:
    """Resident memory, after handing the heap's free pages back to the system (glibc), so that
    buffers freed after loading (the file read for its checksum) are not counted."""
    import ctypes

    import psutil

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    return psutil.Process().memory_info().rss


def held_bytes(library: Library) -> int:
    """What the loaded IVF-PQ index holds: codes and ids in its lists, coarse and PQ centroids."""
    faiss = index_file.faiss()
    loaded = library._index.get()
    ivf = faiss.extract_index_ivf(loaded)
    pq = faiss.downcast_index(ivf).pq
    listed = sum(ivf.invlists.list_size(i) for i in range(ivf.nlist))
    return listed * (ivf.code_size + 8) + ivf.nlist * ivf.d * 4 + pq.M * pq.ksub * pq.dsub * 4


def filter_sets(lib: Synthetic) -> dict[str, tuple[Filters, np.ndarray]]:
    """name -> (filters, which ids pass them), for filters passing about 50 %, 5 % and 0.1 %."""
    return {
        "dates 50%": (
            Filters(date_from=lib.day_iso(0), date_to=lib.day_iso(SYNTH_DAYS // 2 - 1)),
            lib.day < SYNTH_DAYS // 2,
        ),
        "camera 5%": (Filters(camera=lib.camera_model(7)), lib.camera == 7),
        "folder 0.1%": (Filters(folder=str(lib.folder_path(SYNTH_FOLDERS // 3))), lib.folder == SYNTH_FOLDERS // 3),
    }


def exact_top(store: VectorStore, n: int, queries: np.ndarray, masks: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """name -> (queries, K) true best ids among the ids its mask passes, in one pass over the vectors."""
    best = {name: (np.empty((len(queries), 0), np.int64), np.empty((len(queries), 0), np.float32)) for name in masks}
    for start in range(1, n + 1, _CHUNK):
        ids = np.arange(start, min(n + 1, start + _CHUNK))
        scores = queries @ store.get(ids).T
        for name, mask in masks.items():
            keep = mask[ids]
            top_ids, top_scores = best[name]
            top_ids = np.concatenate([top_ids, np.broadcast_to(ids[keep], (len(queries), keep.sum()))], axis=1)
            top_scores = np.concatenate([top_scores, scores[:, keep]], axis=1)
            if top_ids.shape[1] > K:
                part = np.argpartition(-top_scores, K - 1, axis=1)[:, :K]
                top_ids, top_scores = np.take_along_axis(top_ids, part, 1), np.take_along_axis(top_scores, part, 1)
            best[name] = (top_ids, top_scores)
    return {name: ids for name, (ids, _) in best.items()}


def measure(
    library: Library, queries: np.ndarray, truth: np.ndarray, filters: Filters | None, passing: int
) -> dict[str, float]:
    """Latency, recall@K against `truth` and how many queries came back full (K results, or all that
    pass); `first ms`: the first query with these filters (it counts and reads the passing images)."""
    start = time.perf_counter()
    library.search_vector(queries[-1], k=K, filters=filters)
    first = (time.perf_counter() - start) * 1000
    for q in queries[:WARMUP]:
        library.search_vector(q, k=K, filters=filters)
    times, recalls, full = [], [], 0
    for q, true_ids in zip(queries, truth):
        start = time.perf_counter()
        results = library.search_vector(q, k=K, filters=filters)
        times.append((time.perf_counter() - start) * 1000)
        recalls.append(len({r.id for r in results} & set(true_ids.tolist())) / max(1, len(true_ids)))
        full += len(results) == min(K, passing)
    return {
        "p50 ms": statistics.median(times),
        "p95 ms": float(np.percentile(times, 95)),
        "recall@10": float(np.mean(recalls)),
        "full": full,
        "first ms": first,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=1_000_000, help="images in the library")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument(
        "--library", type=Path, help="build here and keep it; one built before with the same --size is reused"
    )
    parser.add_argument("--smoke", action="store_true", help=f"{SMOKE_SIZE:,} images, 20 queries")
    parser.add_argument(
        "--faiss-threads", type=int, help="FAISS's OpenMP threads (default: all cores; 1 on a machine others share)"
    )
    args = parser.parse_args()
    if args.faiss_threads:
        index_file.faiss().omp_set_num_threads(args.faiss_threads)
    size, count = (SMOKE_SIZE, 20) if args.smoke else (args.size, args.queries)
    with temp_dir("scale") as tmp:
        root = args.library or Path(tmp) / "library"
        print(f"{size:,} synthetic 512-d images, {count} queries, k={K}; {machine()}; load {os.getloadavg()[0]:.2f}")
        start = time.perf_counter()
        built = root / f"built-{size}"  # written last: a library whose build finished
        if not built.is_file():
            shutil.rmtree(root, ignore_errors=True)
            synthetic_library(root, size, kind="ivfpq", keywords=False)
            built.write_text(f"{time.perf_counter() - start:.1f}\n")
        lib = synthetic_library(root, size, write=False)
        paths = LibraryPaths.at(root)
        disk = {name: p.stat().st_size for name, p in (("vectors", paths.vectors), ("index", paths.ann))}
        disk["catalog"] = sum(p.stat().st_size for p in root.glob("catalog.db*"))
        queries = Synthetic.vectors(lib, np.random.default_rng(1), count)
        sets = filter_sets(lib)
        truth = exact_top(
            VectorStore(paths.vectors, 512),
            size,
            queries,
            {"none": np.ones(size + 1, bool)} | {n: m for n, (_, m) in sets.items()},
        )
        with Library.open(root) as library:
            library.search_vector(queries[0], k=K)  # loads the index, warms the query path
            before = rss_bytes()
            again = index_file.load(paths.ann, library.settings.ann_record, mapped=True)  # a second copy
            index_ram = rss_bytes() - before
            del again
            info = library.info().index
            print(f"\n== build ({info}) ==")
            print(f"build s   {float(built.read_text()):.1f}")
            print(f"ANN index RAM bytes/image   {index_ram / size:.1f}")
            print(f"ANN index held bytes/image   {held_bytes(library) / size:.1f}")
            for name, value in disk.items():
                print(f"{name} disk bytes/image   {value / size:.1f}")
            for name, filters in [("no filter", None), *((n, f) for n, (f, _) in sets.items())]:
                passing = size if filters is None else int(sets[name][1][1:].sum())
                found = measure(library, queries, truth["none" if filters is None else name], filters, passing)
                print(f"\n== {name} ({passing:,} images pass) ==")
                print(f"p50 ms   {found['p50 ms']:.1f}")
                print(f"p95 ms   {found['p95 ms']:.1f}")
                print(f"recall@10   {found['recall@10']:.3f}")
                print(f"full queries   {found['full']} of {count}")
                print(f"first query ms   {found['first ms']:.1f}")
        print(f"\nload after   {os.getloadavg()[0]:.2f}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
