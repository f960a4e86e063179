#!/usr/bin/env python3
"""Indexing throughput: the whole pipeline against the model alone, on the same machine and run.

    python3 benchmarks/index_throughput.py [FOLDER] [--model random-vit-b-32|demo|SPEC]
                                           [--limit N] [--big N] [--grain G [G ...]] [--repeat N] [--smoke]
                                           [--workers N] [--batch-size N] [--threads N]
                                           [--device cpu|cuda] [--runtime torch,onnx,onnx:int8,auto]

For FOLDER (default ../shared/data/caltech101-bench, 1,192 real JPEGs) and then for sets of
12-megapixel JPEGs (real Caltech photos upscaled to 4000x3000: plainly, and with sensor-like
grain so that they compress like camera files), it indexes into a fresh library with
`run_index` and prints: images, seconds, end-to-end images/s (whole run and steady state), the
model-only images/s (the same model, batch size and torch threads on ready uint8 tensors,
measured just before and just after the run), their ratio, the per-stage breakdown and the peak
memory of the main process plus decoder workers. With several --runtime entries (RUNTIME or
RUNTIME:PRECISION, as `pixseek index --runtime/--precision` takes them) each set is indexed once
per runtime, and a table per set compares them: images/s end to end and model-only, the
end-to-end rate over torch fp32's model-only rate, recall@10 of the stored vectors against torch
fp32's (the first entry must be torch for that), and peak memory. `auto` runs its int8 check in
the run (outside the timed read+embed), so its model-only rate is measured after the run only.

End-to-end time runs from the model being ready to the last commit. Decoders start while the
model loads and keep up to 48 photos each ahead of it, so a run begins with a full window of
photos decoded for free and ends with the model alone on the last window. The steady rate
leaves both out: it is timed between batch boundaries at least one window from either end, so
that the same number of photos is decoded ahead at both ends; it is what a 100,000-photo
library sees, and what the ratio uses.

The default model is ViT-B-32 with random weights (same cost as the real default, which cannot
be downloaded here), made once into a local-dir folder under ~/.cache/pixseek-bench.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import _common  # noqa: F401  (puts the repository on sys.path)
import numpy as np
from _common import CALTECH, RANDOM_MODEL, PeakMemory, cache_dir, fmt_stages, machine, model_spec, temp_dir

BIG_SIZE = (4000, 3000)
BIG_GRAINS = (0.0, 4.0)  # std-dev of the added noise, in 8-bit levels: 0.8 and 2.5 MB files
UNSTEADY = 1.15  # before/after model-only rates further apart than this: the machine is busy
BIG_STRIDE = 37  # coprime with the Caltech count: consecutive 12 MP photos come from all classes


@dataclass
class Figures:
    label: str
    images: int = 0
    seconds: float = 0.0  # the read+embed stage: from the model being ready to the last write
    total_seconds: float = 0.0  # the whole run, with model load, walk and ANN build
    model_rates: list[float] = field(default_factory=list)
    steady: tuple[int, int, float] | None = None  # (first image, last image, seconds between)
    stages: dict[str, float] = field(default_factory=dict)
    peak_mb: float = 0.0
    batch_size: int = 0
    threads: int = 0
    workers: int = 0
    runtime: str = ""  # what the run's runtime was and why (IndexReport.runtime)
    vectors: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # stored vectors by path

    @property
    def end_to_end(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0

    @property
    def steady_rate(self) -> float:
        if self.steady is None:
            return self.end_to_end
        first, last, seconds = self.steady
        return (last - first) / seconds

    @property
    def model_only(self) -> float:
        return sum(self.model_rates) / len(self.model_rates) if self.model_rates else 0.0

    @property
    def ratio(self) -> float:
        return self.steady_rate / self.model_only if self.model_only else 0.0

    def print(self) -> None:
        rates = " / ".join(f"{r:.2f}" for r in self.model_rates)
        print(f"== {self.label} ==")
        print(f"images          {self.images}")
        print(f"seconds         {self.seconds:.4g}   (read+embed; {self.total_seconds:.4g} with model load, walk, ANN)")
        print(f"end-to-end      {self.end_to_end:.2f} images/s   (whole run)")
        window = (
            f"images {self.steady[0]} to {self.steady[1]}, a full read-ahead window from either end"
            if self.steady
            else "too few images for a steady window: the whole run"
        )
        print(f"steady          {self.steady_rate:.2f} images/s   ({window})")
        print(
            f"model-only      {self.model_only:.2f} images/s   (before / after the run: {rates}; "
            f"batch {self.batch_size}, {self.threads} torch threads, ready tensors)"
        )
        print(f"ratio           {self.ratio:.3f}   (steady / model-only)")
        print(f"stages          {fmt_stages(self.stages)}   ({self.workers} decoder workers)")
        print(f"peak memory     {self.peak_mb:.0f} MB   (RSS summed over the main process and its children)")
        print(f"runtime         {self.runtime}")
        if self.model_rates and max(self.model_rates) > UNSTEADY * min(self.model_rates):
            print(
                f"warning         the model-only rate moved by more than {UNSTEADY - 1:.0%} during the run: "
                "something else is using the CPU, so the ratio is unreliable; run again"
            )
        sys.stdout.flush()


def image_files(folder: Path) -> list[Path]:
    from indexer.walk import walk

    return [Path(f.path) for f in walk([folder])]


def spread(files: list[Path], n: int | None) -> list[Path]:
    """n files spread evenly over the list, so a short run still sees every class and size."""
    if n is None or n >= len(files):
        return files
    return [files[i * len(files) // n] for i in range(n)]


def link_folder(files: list[Path], into: Path) -> Path:
    """A folder of symlinks: index a subset without copying photos."""
    into.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(files):
        (into / f"{i:05d}-{f.parent.name}-{f.name}").symlink_to(f)
    return into


def big_photos(sources: list[Path], n: int, grain: float) -> list[Path]:
    """n 12 MP JPEGs made from `sources`, cached between runs (each takes about a second to make).

    The i-th photo is always made from the same source, so a shorter run uses a prefix of a
    longer one's photos.
    """
    from PIL import Image, ImageOps

    folder = cache_dir() / f"big-{BIG_SIZE[0]}x{BIG_SIZE[1]}-grain{grain:g}"
    folder.mkdir(parents=True, exist_ok=True)
    photos = []
    for i in range(n):
        src = sources[(i * BIG_STRIDE) % len(sources)]
        out = folder / f"{i:04d}-{src.parent.name}-{src.stem}.jpg"
        photos.append(out)
        if out.exists():
            continue
        with Image.open(src) as im:
            rgb = im.convert("RGB")
        size = BIG_SIZE if rgb.width >= rgb.height else BIG_SIZE[::-1]
        big = np.asarray(ImageOps.fit(rgb, size, Image.Resampling.BICUBIC), dtype=np.float32)
        big += np.random.default_rng(i).normal(0.0, grain, big.shape[:2] + (1,)).astype(np.float32)
        tmp = out.with_suffix(".tmp")
        Image.fromarray(np.clip(big + 0.5, 0, 255).astype(np.uint8)).save(tmp, "JPEG", quality=90)
        tmp.replace(out)
    return photos


def steady_window(stamps: dict[int, float], window: int) -> tuple[int, int, float] | None:
    """(first, last, seconds) between the batch boundaries at least `window` images from either end.

    `stamps` maps an image count to when the run had consumed that many decoded images.
    """
    counts = sorted(stamps)
    if not counts:
        return None
    inside = [c for c in counts if window <= c <= counts[-1] - window]
    if len(inside) < 2:
        return None
    return inside[0], inside[-1], stamps[inside[-1]] - stamps[inside[0]]


def model_only_rate(encoder, batch_size: int, batches: int) -> float:
    """Images/s of encode_pixels alone on ready uint8 batches (one warm-up batch first)."""
    pixels = np.random.default_rng(0).integers(0, 256, (batch_size, *encoder.preprocess.size, 3), dtype=np.uint8)
    encoder.encode_pixels(pixels)
    start = time.perf_counter()
    for _ in range(batches):
        encoder.encode_pixels(pixels)
    return batches * batch_size / (time.perf_counter() - start)


def measure(
    label: str, folder: Path, args: argparse.Namespace, runtime: str = "torch", precision: str | None = None
) -> Figures:
    import torch

    from indexer.embed import default_batch_size
    from indexer.model import load_encoder
    from indexer.reader import READ_AHEAD, default_workers
    from indexer.runner import IndexOptions, run_index
    from search import Library

    spec = model_spec(args.model)
    figures = Figures(label)

    def model_only(recorded=None) -> float:
        encoder = load_encoder(spec, args.device, runtime=runtime, precision=precision, recorded=recorded)
        figures.batch_size = args.batch_size or default_batch_size(encoder)
        return model_only_rate(encoder, figures.batch_size, args.model_batches)

    # "Before" uses an encoder of its own: the run's decoders start while the run's model loads,
    # and must not compete with this measurement. `auto` knows its pick only once the run checked.
    if runtime != "auto":
        figures.model_rates.append(model_only())
    # When each batch's last image was consumed: a batch is embedded as its last image arrives.
    stamps: dict[int, float] = {}

    def stamp(done: int, total: int) -> None:
        # `auto`'s batch size is known only after the run: every image is stamped then.
        if not figures.batch_size or done % figures.batch_size == 0 or done == total:
            stamps[done] = time.perf_counter()

    with temp_dir("bench-lib") as lib, PeakMemory() as memory:
        report = run_index(
            lib,
            [folder],
            IndexOptions(
                model=spec,
                workers=args.workers,
                batch_size=args.batch_size,
                device=args.device,
                runtime=runtime,
                precision=precision,
                on_progress=stamp,
            ),
        )
        with Library.open(lib) as opened:
            ids = opened.catalog.indexed_ids()
            rows = opened.catalog.indexed_rows(ids)
            figures.vectors = dict(zip((rows[i].path for i in ids), opened.vectors.get(np.array(ids))))
            recorded = opened.settings.recorded_runtime()
    figures.model_rates.append(model_only(recorded))
    figures.runtime = report.runtime
    figures.images = report.embedded
    figures.seconds = report.stages.get("read+embed", 0.0)
    figures.total_seconds = report.seconds
    figures.stages = {k: v for k, v in report.stages.items() if k != "read+embed"}
    figures.peak_mb = memory.peak_mb
    figures.threads = torch.get_num_threads()
    figures.workers = default_workers() if args.workers is None else args.workers
    figures.steady = steady_window(stamps, figures.workers * READ_AHEAD)
    if report.skipped:
        print(f"({len(report.skipped)} files skipped, e.g. {report.skipped[0]})")
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, default=CALTECH)
    parser.add_argument("--model", default=RANDOM_MODEL, help=f"{RANDOM_MODEL} (default), demo, or a model spec")
    parser.add_argument(
        "--limit", type=int, help="index only this many files of FOLDER, spread over it (0: only the 12 MP set)"
    )
    parser.add_argument("--big", type=int, default=480, help="how many 12 MP photos per set (0: none)")
    parser.add_argument(
        "--grain",
        type=float,
        nargs="+",
        default=list(BIG_GRAINS),
        help="one 12 MP set per value: the noise added, as a std-dev in 8-bit levels "
        "(default: 0 = plain upscaling, ~0.8 MB files; 4 = camera-like, ~2.5 MB)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds over all the sets; with more than "
        "one, the median ratio of each set is printed at the end (the machine is shared: "
        "use 3 for figures you quote)",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny counts and the demo model: checks it runs")
    parser.add_argument("--workers", type=int, help="decoder processes (default: the indexer's)")
    parser.add_argument("--batch-size", type=int, help="images per model batch (default: the indexer's)")
    parser.add_argument("--threads", type=int, help="torch threads (default: the indexer's)")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    parser.add_argument(
        "--runtime",
        default="torch",
        help="comma-separated RUNTIME[:PRECISION] entries "
        "(torch, onnx, onnx:int8, auto, ...), each measured on every set (default: torch)",
    )
    parser.add_argument("--model-batches", type=int, default=3, help="timed batches for the model-only rate")
    parser.add_argument("--verbose", "-v", action="store_true", help="log the indexer's running per-stage rates")
    args = parser.parse_args(argv)
    if args.smoke:
        args.model = "demo" if args.model == RANDOM_MODEL else args.model
        args.limit = min(args.limit or 24, 24)
        args.big = min(args.big, 3)
        args.model_batches = 1
    if not args.folder.is_dir():
        parser.error(f"no folder {args.folder} (the Caltech set sits in ../shared/data beside the repository)")
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    runtimes = args.runtime.split(",")
    _common.use_bench_onnx_cache()
    print(f"machine: {machine()}; model: {args.model}; load average {' '.join(map(str, os.getloadavg()))}")
    with ExitStack() as stack:
        photo_sets = list(prepare_sets(args, lambda name: Path(stack.enter_context(temp_dir(name)))))
        ratios: dict[str, list[float]] = {label: [] for label, _ in photo_sets}
        # Round after round over all the sets, so that a busy spell of the machine lands on one
        # round of every set instead of on every round of one.
        for round_ in range(1, args.repeat + 1):
            for label, folder in photo_sets:
                title = label if args.repeat == 1 else f"{label}, round {round_} of {args.repeat}"
                runs = {}
                for entry in runtimes:
                    runtime, _, precision = entry.partition(":")
                    name = title if len(runtimes) == 1 else f"{title}, runtime {entry}"
                    runs[entry] = measure(name, folder, args, runtime, precision or None)
                    runs[entry].print()
                ratios[label].append(runs[runtimes[0]].ratio)
                if len(runtimes) > 1:
                    compare(title, runs)
    if args.repeat > 1:
        print(f"== ratio (steady / model-only), median of {args.repeat} rounds ==")
        for label, values in ratios.items():
            print(f"{label}: {statistics.median(values):.3f}   ({' / '.join(f'{v:.3f}' for v in values)})")
    return 0


def compare(title: str, runs: dict[str, Figures]) -> None:
    """One line per runtime; agreement and speed-up against the first entry (torch fp32 on a CPU)."""
    from indexer.runtime import recall_at_k

    first = next(iter(runs.values()))
    print(f"== runtimes, {title} (against {next(iter(runs))}) ==")
    print(
        f"{'runtime':<12} {'end-to-end':>10} {'steady':>8} {'model-only':>10} {'x model-only':>12} "
        f"{'recall@10':>9} {'peak MB':>8}"
    )
    for entry, figures in runs.items():
        same = sorted(first.vectors.keys() & figures.vectors.keys())
        recall = recall_at_k(*(np.stack([run.vectors[p] for p in same]) for run in (first, figures)))
        print(
            f"{entry:<12} {figures.end_to_end:>10.2f} {figures.steady_rate:>8.2f} {figures.model_only:>10.2f} "
            f"{figures.steady_rate / first.model_only:>12.2f} {recall:>9.3f} {figures.peak_mb:>8.0f}"
        )
    sys.stdout.flush()


def prepare_sets(args: argparse.Namespace, scratch: Callable[[str], Path]) -> Iterator[tuple[str, Path]]:
    """(label, folder) of each photo set the arguments ask for; `scratch(name)` gives a temp folder."""
    files = image_files(args.folder)
    chosen = spread(files, args.limit)
    if chosen:
        folder = args.folder if len(chosen) == len(files) else link_folder(chosen, scratch("subset") / "photos")
        yield f"{args.folder.name} ({len(chosen)} files)", folder
    for grain in args.grain if args.big > 0 else ():
        photos = big_photos(files, args.big, grain)
        megabytes = sum(p.stat().st_size for p in photos) / len(photos) / 1e6
        kind = f"grain {grain:g}" if grain else "plain upscaling"
        label = f"12 MP JPEGs, {kind} ({args.big} files, {BIG_SIZE[0]}x{BIG_SIZE[1]}, {megabytes:.1f} MB each)"
        yield label, link_folder(photos, scratch("big") / "photos")


if __name__ == "__main__":
    sys.exit(main())
