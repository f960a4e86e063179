#!/usr/bin/env python3
"""Indexing throughput: the whole pipeline against the model alone, on the same machine and run.

    python3 benchmarks/index_throughput.py [FOLDER] [--model random-vit-b-32|demo|SPEC]
                                           [--limit N] [--big N] [--smoke] [--workers N]
                                           [--batch-size N] [--threads N] [--device cpu|cuda]

For FOLDER (default ../shared/data/caltech101-bench, 1,192 real JPEGs) and then for a set of
12-megapixel JPEGs (real Caltech photos upscaled to 4000x3000 with a little sensor-like grain,
so they decode like camera files), it indexes into a fresh library with `run_index` and prints:
images, seconds, end-to-end images/s, the model-only images/s (the same model, batch size and
torch threads on ready uint8 tensors, measured just before and just after the run), their
ratio, the per-stage breakdown and the peak memory of the main process plus decoder workers.

End-to-end time runs from the model being ready to the last commit; decoding that overlapped
the model's load is a real saving and is not counted. So that the figure shows the steady
state, not that start-up, the default 12 MP set (160) is larger than what the decoders hold
ahead of the model (48 per worker).

The default model is ViT-B-32 with random weights (same cost as the real default, which cannot
be downloaded here), made once into a local-dir folder under ~/.cache/pixseek-bench.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import _common  # noqa: F401  (puts the repository on sys.path)
from _common import CALTECH, RANDOM_MODEL, PeakMemory, cache_dir, fmt_stages, machine, model_spec, temp_dir

BIG_SIZE = (4000, 3000)
BIG_GRAIN = 4.0  # std-dev of the added noise, in 8-bit levels: files come out ~2 MB, like a phone's
UNSTEADY = 1.15  # before/after model-only rates further apart than this: the machine is busy
BIG_STRIDE = 37  # coprime with the Caltech count: consecutive 12 MP photos come from all classes


@dataclass
class Figures:
    label: str
    images: int = 0
    seconds: float = 0.0  # the read+embed stage: from the model being ready to the last write
    total_seconds: float = 0.0  # the whole run, with model load, walk and ANN build
    model_rates: list[float] = field(default_factory=list)
    stages: dict[str, float] = field(default_factory=dict)
    peak_mb: float = 0.0
    batch_size: int = 0
    threads: int = 0
    workers: int = 0

    @property
    def end_to_end(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0

    @property
    def model_only(self) -> float:
        return sum(self.model_rates) / len(self.model_rates) if self.model_rates else 0.0

    def print(self) -> None:
        rates = " / ".join(f"{r:.2f}" for r in self.model_rates)
        print(f"== {self.label} ==")
        print(f"images          {self.images}")
        print(f"seconds         {self.seconds:.2f}   (read+embed; {self.total_seconds:.2f} with model load, walk, ANN)")
        print(f"end-to-end      {self.end_to_end:.2f} images/s")
        print(f"model-only      {self.model_only:.2f} images/s   (before / after the run: {rates}; "
              f"batch {self.batch_size}, {self.threads} torch threads, ready tensors)")
        print(f"ratio           {self.end_to_end / self.model_only if self.model_only else 0.0:.3f}")
        print(f"stages          {fmt_stages(self.stages)}   ({self.workers} decoder workers)")
        print(f"peak memory     {self.peak_mb:.0f} MB   (RSS summed over the main process and its children)")
        if self.model_rates and max(self.model_rates) > UNSTEADY * min(self.model_rates):
            print(f"warning         the model-only rate moved by more than {UNSTEADY - 1:.0%} during the run: "
                  "something else is using the CPU, so the ratio is unreliable; run again")
        sys.stdout.flush()


def image_files(folder: Path) -> list[Path]:
    from indexer.walk import walk

    return [Path(f.path) for f in walk([folder])]


def spread(files: list[Path], n: int | None) -> list[Path]:
    """n files spread evenly over the list, so a short run still sees every class and size."""
    if n is None or n >= len(files):
        return files
    step = len(files) / n
    return [files[int(i * step)] for i in range(n)]


def link_folder(files: list[Path], into: Path) -> Path:
    """A folder of symlinks: index a subset without copying photos."""
    into.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(files):
        (into / f"{i:05d}-{f.parent.name}-{f.name}").symlink_to(f)
    return into


def big_photos(sources: list[Path], n: int) -> list[Path]:
    """n 12 MP JPEGs made from `sources`, cached between runs (each takes about a second to make).

    The i-th photo is always made from the same source, so a shorter run uses a prefix of a
    longer one's photos.
    """
    import numpy as np
    from PIL import Image, ImageOps

    folder = cache_dir() / f"big-{BIG_SIZE[0]}x{BIG_SIZE[1]}"
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
        grain = np.random.default_rng(i).normal(0.0, BIG_GRAIN, big.shape[:2] + (1,)).astype(np.float32)
        tmp = out.with_suffix(".tmp")
        Image.fromarray(np.clip(big + grain + 0.5, 0, 255).astype(np.uint8)).save(tmp, "JPEG", quality=90)
        tmp.replace(out)
    return photos


def model_only_rate(encoder, batch_size: int, batches: int) -> float:
    """Images/s of encode_pixels alone on ready uint8 batches (one warm-up batch first)."""
    import numpy as np

    size = encoder.image_size
    pixels = np.random.default_rng(0).integers(0, 256, (batch_size, size, size, 3), dtype=np.uint8)
    encoder.encode_pixels(pixels)
    start = time.perf_counter()
    for _ in range(batches):
        encoder.encode_pixels(pixels)
    return batches * batch_size / (time.perf_counter() - start)


def measure(label: str, folder: Path, args: argparse.Namespace) -> Figures:
    import torch

    from indexer.library import LibraryPaths
    from indexer.model import load_encoder
    from indexer.reader import default_workers
    from indexer.runner import default_batch_size, run_index

    spec = model_spec(args.model)
    figures = Figures(label)
    # "Before" uses an encoder of its own: the run's decoders start while the run's model loads,
    # and must not compete with this measurement.
    encoder = load_encoder(spec, args.device)
    figures.batch_size = args.batch_size or default_batch_size(encoder)
    figures.model_rates.append(model_only_rate(encoder, figures.batch_size, args.model_batches))
    del encoder
    encoders = []
    with temp_dir("bench-lib") as lib, PeakMemory() as memory:
        report = run_index(LibraryPaths.at(lib), [folder], model=spec, workers=args.workers,
                           batch_size=args.batch_size, device=args.device, on_model=encoders.append)
    figures.model_rates.append(model_only_rate(encoders[0], figures.batch_size, args.model_batches))
    figures.images = report.embedded
    figures.seconds = report.stages.get("read+embed", 0.0)
    figures.total_seconds = report.seconds
    figures.stages = {k: v for k, v in report.stages.items() if k != "read+embed"}
    figures.peak_mb = memory.peak_mb
    figures.threads = torch.get_num_threads()
    figures.workers = default_workers() if args.workers is None else args.workers
    if report.skipped:
        print(f"({len(report.skipped)} files skipped, e.g. {report.skipped[0]})")
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, default=CALTECH)
    parser.add_argument("--model", default=RANDOM_MODEL, help=f"{RANDOM_MODEL} (default), demo, or a model spec")
    parser.add_argument("--limit", type=int, help="index only this many files of FOLDER (spread over it)")
    parser.add_argument("--big", type=int, default=160, help="how many 12 MP photos to run on (0: none)")
    parser.add_argument("--smoke", action="store_true", help="tiny counts and the demo model: checks it runs")
    parser.add_argument("--workers", type=int, help="decoder processes (default: the indexer's)")
    parser.add_argument("--batch-size", type=int, help="images per model batch (default: the indexer's)")
    parser.add_argument("--threads", type=int, help="torch threads (default: the indexer's)")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when present)")
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

    print(f"machine: {machine()}; model: {args.model}")
    files = image_files(args.folder)
    chosen = spread(files, args.limit)
    with temp_dir("subset") as tmp:
        folder = args.folder if len(chosen) == len(files) else link_folder(chosen, Path(tmp) / "photos")
        measure(f"{args.folder.name} ({len(chosen)} files)", folder, args).print()
    if args.big > 0:
        with temp_dir("big") as tmp:
            folder = link_folder(big_photos(files, args.big), Path(tmp) / "photos")
            measure(f"12 MP JPEGs ({args.big} files, {BIG_SIZE[0]}x{BIG_SIZE[1]})", folder, args).print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
