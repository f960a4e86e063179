"""The reader stage: decode files into model-ready pixels in worker processes.

Workers import only Pillow and NumPy (never torch), return uint8 pixels plus the catalog
fields, and run ahead of the embedder by a bounded number of chunks, so memory stays flat
however large the library.
"""

from __future__ import annotations

import errno
import io
import multiprocessing
import os
import select
import signal
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import imagehash
import numpy as np

from indexer import object_store
from indexer.decode import (
    DEFAULT_MAX_PIXELS,
    REASON_NOT_REGULAR,
    REASON_PATH_TOO_LONG,
    DecodeError,
    decode_image,
    to_model_input,
)
from indexer.plan import Job
from indexer.preprocess import Preprocess
from indexer.regular_file import NotRegularFile
from indexer.walk import content_hash, stream_hash

READ_AHEAD = 48  # images per worker decoded ahead of the model
REASON_WORKER_DIED = "the decoder process died reading this file (out of memory, or a crash in the decoder)"


@dataclass
class ReadResult:
    id: int
    pixels: np.ndarray | None  # None when the file could not be decoded
    fields: dict[str, Any] = field(default_factory=dict)  # catalog columns learnt from the file
    reason: str | None = None
    seconds: float = 0.0  # time the worker spent on this file


def read_one(job: Job, preprocess: Preprocess, max_pixels: int = DEFAULT_MAX_PIXELS) -> ReadResult:
    start = time.perf_counter()
    try:
        if object_store.is_uri(job.path):
            # One read of the object serves the hash and the decoder.
            data = object_store.read_bytes(job.path)
            digest = stream_hash(io.BytesIO(data), len(data))
            source: str | io.BytesIO = io.BytesIO(data)
        else:
            digest, source = content_hash(job.path, job.size), job.path
        decoded = decode_image(source, target_size=preprocess, max_pixels=max_pixels)
        pixels = to_model_input(decoded.image, preprocess, (decoded.width, decoded.height))
    except DecodeError as exc:
        return ReadResult(job.id, None, reason=exc.reason, seconds=time.perf_counter() - start)
    except FileNotFoundError:
        reason = (
            "broken symbolic link: its target is missing"
            if os.path.islink(job.path)
            else "file vanished during indexing"
        )
        return ReadResult(job.id, None, reason=reason, seconds=time.perf_counter() - start)
    except NotRegularFile:  # swapped for a FIFO or device since the walk
        return ReadResult(job.id, None, reason=REASON_NOT_REGULAR, seconds=time.perf_counter() - start)
    except PermissionError:
        return ReadResult(
            job.id, None, reason="permission denied: cannot read the file", seconds=time.perf_counter() - start
        )
    except OSError as exc:
        reason = (
            REASON_PATH_TOO_LONG if exc.errno == errno.ENAMETOOLONG else f"cannot read the file ({exc.strerror or exc})"
        )
        return ReadResult(job.id, None, reason=reason, seconds=time.perf_counter() - start)
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
        "description": meta.description,
        # 256-bit pHash for near-duplicates (search/dupes.py): ~1.5 ms on the reduced image.
        "phash": str(imagehash.phash(decoded.image, hash_size=16)),
    }
    return ReadResult(job.id, pixels, fields_, seconds=time.perf_counter() - start)


def read_chunk(jobs: list[Job], preprocess: Preprocess, max_pixels: int) -> list[ReadResult]:
    return [read_one(job, preprocess, max_pixels) for job in jobs]


def _start_worker(parent: int) -> None:
    # A terminal's Ctrl-C reaches the whole process group; the parent alone handles it (it
    # saves what was embedded and shuts the pool down), instead of each worker printing a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A parent killed outright (SIGKILL, the OOM killer) cannot shut its pool down: each worker
    # watches it and exits with it rather than stay behind forever.
    threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()


def _exit_with(parent: int) -> None:
    try:
        fd = os.pidfd_open(parent)
    except (AttributeError, OSError):  # no pidfds (old kernel, not Linux): poll instead
        while _alive(parent):
            time.sleep(0.5)
    else:
        select.select([fd], [], [])  # readable once the process has exited
    os._exit(1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def default_workers() -> int:
    """One decoder per core the process may use.

    Decoders sleep whenever their read-ahead window is full, so on a CPU-only machine they take
    from the model's threads only the time decoding needs, all cores at once; fewer decoders
    make the model's threads wait longer for the one that holds their core (on 2 cores, 1 decoder
    costs ~7% more wall time on 12 MP photos, see benchmarks/README.md). While the model loads,
    every core decodes.
    """
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _context() -> multiprocessing.context.BaseContext:
    # forkserver: forking a process that already runs torch's thread pools can deadlock. Workers
    # fork from a server that has the decoder imported already, so each starts in milliseconds.
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["__main__", __name__])  # '__main__' is the default preload
    return ctx


class Reader:
    """Decodes jobs in order, `workers` processes wide (0: inline), at most `ahead` chunks in flight.

    Each worker has about READ_AHEAD images decoded or in progress while the model works, more
    than a CPU batch, so the model finds its next batch ready; the bound keeps memory flat.
    """

    def __init__(self, workers: int | None = None, chunk: int = 16, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.workers = default_workers() if workers is None else workers
        self.chunk = chunk
        self.ahead = max(2, self.workers * READ_AHEAD // chunk)
        self.max_pixels = max_pixels
        self._pool: ProcessPoolExecutor | None = None
        self._started: tuple[int, Iterator[ReadResult]] | None = None

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        self._started = None
        if kind is not None:
            self._kill_workers()  # Ctrl-C or a failure: what they decode now would be thrown away
        self._close_pool()

    def _kill_workers(self) -> None:
        # ProcessPoolExecutor can only wait for a worker's task to end, which a file on a hung
        # network drive may never do; Ctrl-C must end the run in a moment, so they are killed.
        if self._pool is not None:
            for process in list((self._pool._processes or {}).values()):
                process.kill()

    def _close_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _new_pool(self) -> ProcessPoolExecutor:
        self._close_pool()
        self._pool = ProcessPoolExecutor(
            self.workers, mp_context=_context(), initializer=_start_worker, initargs=(os.getpid(),)
        )
        return self._pool

    def _after_crash(self, chunk: list[Job], preprocess: Preprocess) -> list[ReadResult]:
        """A worker died (the OOM killer, a decoder crash) while `chunk` was in flight: each of its
        files is tried alone in a fresh pool, and the one that kills its worker again is skipped."""
        results = []
        for job in chunk:
            try:
                results += self._new_pool().submit(read_chunk, [job], preprocess, self.max_pixels).result()
            except BrokenProcessPool:
                results.append(ReadResult(job.id, None, reason=REASON_WORKER_DIED))
        self._new_pool()
        return results

    def start(self, jobs: Iterable[Job], preprocess: Preprocess) -> None:
        """Begin decoding now, while the caller does something else (loads the model)."""
        self._started = (preprocess, self._read(jobs, preprocess))

    def read(self, jobs: Iterable[Job], preprocess: Preprocess) -> Iterator[ReadResult]:
        """Decoded `jobs` in order: those `start` began, if it was given the same preprocessing."""
        if self._started is not None and self._started[0] == preprocess:
            started, self._started = self._started[1], None
            return started
        return self._read(jobs, preprocess)

    def _read(self, jobs: Iterable[Job], preprocess: Preprocess) -> Iterator[ReadResult]:
        chunks = _chunks(jobs, self.chunk)
        if self.workers == 0:
            return (r for chunk in chunks for r in read_chunk(chunk, preprocess, self.max_pixels))
        if self._pool is None:
            self._new_pool()

        def submit(chunk: list[Job]) -> tuple[list[Job], Future]:
            return chunk, self._pool.submit(read_chunk, chunk, preprocess, self.max_pixels)

        # The first window goes out before this returns: decoding has started when the caller
        # gets the iterator, not when it first asks for a result.
        pending: deque[tuple[list[Job], Future]] = deque(submit(chunk) for chunk in islice(chunks, self.ahead))

        def results() -> Iterator[ReadResult]:
            while pending:
                chunk, future = pending.popleft()
                try:
                    done = future.result()
                except BrokenProcessPool:
                    done = self._after_crash(chunk, preprocess)
                    # Every other chunk in flight died with that pool: send them again.
                    resend = [c for c, _ in pending]
                    pending.clear()
                    pending.extend(submit(c) for c in resend)
                yield from done
                # Refill a chunk per worker at once, so the workers decode side by side: on a
                # CPU-only machine each burst then holds all cores for a short time, instead of
                # one core for longer while torch's other threads wait for the one it displaced
                # (2 cores, Caltech: ~2% more images/s than chunk by chunk; benchmarks/README.md).
                if len(pending) <= self.ahead - self.workers:
                    pending.extend(submit(chunk) for chunk in islice(chunks, self.ahead - len(pending)))

        return results()


def _chunks(jobs: Iterable[Job], size: int) -> Iterator[list[Job]]:
    chunk: list[Job] = []
    for job in jobs:
        chunk.append(job)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
