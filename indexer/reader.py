"""The reader stage: decode files into model-ready pixels in worker processes.

Workers import only Pillow and NumPy (never torch), return uint8 pixels plus the catalog
fields, and run ahead of the embedder by a bounded number of chunks, so memory stays flat
however large the library.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from indexer.decode import DEFAULT_MAX_PIXELS, DecodeError, decode_image, to_model_input
from indexer.walk import content_hash


@dataclass
class Job:
    id: int
    path: str
    size: int


@dataclass
class ReadResult:
    id: int
    pixels: np.ndarray | None  # None when the file could not be decoded
    fields: dict[str, Any] = field(default_factory=dict)  # catalog columns learnt from the file
    reason: str | None = None
    seconds: float = 0.0  # time the worker spent on this file


def read_one(job: Job, image_size: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> ReadResult:
    start = time.perf_counter()
    try:
        digest = content_hash(job.path, job.size)
        decoded = decode_image(job.path, target_size=image_size, max_pixels=max_pixels)
        pixels = to_model_input(decoded.image, image_size)
    except DecodeError as exc:
        return ReadResult(job.id, None, reason=exc.reason, seconds=time.perf_counter() - start)
    except FileNotFoundError:
        return ReadResult(job.id, None, reason="file vanished during indexing", seconds=time.perf_counter() - start)
    except PermissionError:
        return ReadResult(job.id, None, reason="permission denied: cannot read the file",
                          seconds=time.perf_counter() - start)
    except OSError as exc:
        return ReadResult(job.id, None, reason=f"cannot read the file ({exc.strerror or exc})",
                          seconds=time.perf_counter() - start)
    meta = decoded.meta
    fields_ = {
        "hash": digest,
        "width": decoded.width,
        "height": decoded.height,
        "taken_at": meta.taken_at,
        "camera_make": meta.camera_make,
        "camera_model": meta.camera_model,
        "lat": meta.lat,
        "lon": meta.lon,
    }
    return ReadResult(job.id, pixels, fields_, seconds=time.perf_counter() - start)


def read_chunk(jobs: list[Job], image_size: int, max_pixels: int) -> list[ReadResult]:
    return [read_one(job, image_size, max_pixels) for job in jobs]


def default_workers() -> int:
    # On a CPU-only machine the model needs the cores too; one decoder per spare core, at least one.
    return max(1, (os.cpu_count() or 2) - 1)


class Reader:
    """Decodes jobs in order, `workers` processes wide, at most `ahead` chunks in flight."""

    def __init__(self, image_size: int, workers: int | None = None, chunk: int = 16,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.image_size = image_size
        self.workers = default_workers() if workers is None else workers
        self.chunk = chunk
        self.ahead = max(2, self.workers * 3)
        self.max_pixels = max_pixels
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> Reader:
        if self.workers > 0:
            # forkserver: forking a process that already runs torch's thread pools can deadlock.
            ctx = multiprocessing.get_context("forkserver")
            self._pool = ProcessPoolExecutor(self.workers, mp_context=ctx)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def read(self, jobs: Iterable[Job]) -> Iterator[ReadResult]:
        chunks = _chunks(jobs, self.chunk)
        if self._pool is None:
            for chunk in chunks:
                yield from read_chunk(chunk, self.image_size, self.max_pixels)
            return
        pending: deque[Future] = deque()
        for chunk in chunks:
            pending.append(self._pool.submit(read_chunk, chunk, self.image_size, self.max_pixels))
            if len(pending) >= self.ahead:
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()


def _chunks(jobs: Iterable[Job], size: int) -> Iterator[list[Job]]:
    chunk: list[Job] = []
    for job in jobs:
        chunk.append(job)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
