"""The runner: walk -> read (decode, in workers) -> embed -> write -> ANN, each stage timed.

    plan = plan_changes(walk(roots))          walk.py      stat data only
    reader.start(jobs)                        reader.py    worker processes, bounded read-ahead,
    encoder = load_encoder(spec)              model.py       decoding while the model loads
    for batch in reader.read(jobs):
        encoder.submit_pixels(batch)          model.py     batched; on a GPU the next batch is
        writer.add(previous batch)            writer.py      gathered and the last one written
                                                             while it computes; vectors fsync'd,
                                                             then the catalog commit
    ann.update or ann.build                   ann.py       new vectors added to a trained index,
                                                             or built in chunks; written atomically
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from indexer import ann
from indexer.catalog import INDEXED, PENDING, Catalog
from indexer.errors import Interrupted
from indexer.library import (DIM, MODEL_FINGERPRINT, MODEL_NAME, MODEL_PRETRAINED, LibraryPaths,
                             check_same_model, recorded_spec)
from indexer.model import DEFAULT_MODEL, Encoder, ModelSpec, PendingVectors, load_encoder, preprocess_for
from indexer.reader import Job, Reader, ReadResult
from indexer.vectors import VectorStore
from indexer.walk import check_roots, plan_changes, walk
from indexer.writer import Writer, now_iso

log = logging.getLogger(__name__)

INDEX_KIND = "index_kind"
LAST_INDEXED = "last_indexed_at"

Progress = Callable[[int, int], None]


class StageTimer:
    """Wall seconds per stage, so the log shows where an index run spends its time."""

    def __init__(self) -> None:
        self.seconds: Counter[str] = Counter()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - start

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] += seconds


@dataclass
class IndexReport:
    added: int = 0
    updated: int = 0
    moved: int = 0
    removed: int = 0
    unchanged: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) found this run
    embedded: int = 0
    seconds: float = 0.0
    stages: dict[str, float] = field(default_factory=dict)
    index: dict[str, object] = field(default_factory=dict)
    model: str = ""

    @property
    def images_per_second(self) -> float:
        embed_time = self.stages.get("read+embed", 0.0)
        return self.embedded / embed_time if embed_time > 0 else 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "added": self.added, "updated": self.updated, "moved": self.moved, "removed": self.removed,
            "unchanged": self.unchanged,
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
            "embedded": self.embedded, "seconds": round(self.seconds, 3),
            "images_per_second": round(self.images_per_second, 2),
            "stages": {k: round(v, 3) for k, v in self.stages.items()},
            "index": self.index, "model": self.model,
        }


def _resolve_model(settings: dict[str, str], model: ModelSpec | None, rebuild: bool, lib: LibraryPaths) -> ModelSpec:
    recorded = recorded_spec(settings)
    if model is None:
        return recorded or ModelSpec.parse(DEFAULT_MODEL)
    if recorded is not None and not rebuild:
        check_same_model(settings, model, lib.root)
    return model


def _record_model(catalog: Catalog, encoder: Encoder) -> None:
    catalog.set_setting(MODEL_NAME, encoder.spec.name)
    catalog.set_setting(MODEL_PRETRAINED, encoder.spec.pretrained or "")
    catalog.set_setting(MODEL_FINGERPRINT, encoder.fingerprint())
    catalog.set_setting(DIM, str(encoder.dim))


def run_index(
    library: LibraryPaths,
    roots: list[Path],
    *,
    model: ModelSpec | None = None,
    index_kind: str | None = None,
    rebuild: bool = False,
    workers: int | None = None,
    batch_size: int | None = None,
    device: str | None = None,
    on_progress: Progress | None = None,
    on_model: Callable[[Encoder], None] | None = None,
) -> IndexReport:
    """Bring the library up to date with `roots`; safe to interrupt and run again."""
    roots = check_roots(roots)
    if index_kind is not None:
        ann.choose_kind(index_kind, 0)  # reject a bad name before any work
    started = time.perf_counter()
    timer = StageTimer()
    report = IndexReport()
    with library.storage_errors(), library.write_lock():
        catalog = Catalog(library.catalog, create=True)
        try:
            _drop_orphan_files(catalog, library)
            spec = _resolve_model(catalog.settings(), model, rebuild, library)
            report.model = str(spec)
            encoder: Encoder | None = None
            if rebuild:
                encoder = load_encoder(spec, device)
                _start_rebuild(catalog, library, encoder)
            with timer.stage("walk"):
                plan = plan_changes(catalog, roots, walk(roots))
            jobs = _apply_plan(catalog, plan, report, _first_free_id(catalog, library))
            with Reader(workers) as reader:
                if jobs and encoder is None:
                    preprocess = preprocess_for(spec)
                    if preprocess is not None:
                        reader.start(jobs, preprocess)  # the first batches decode while the model loads
                    encoder = load_encoder(spec, device)
                    if catalog.get_setting(MODEL_FINGERPRINT) is None:
                        _record_model(catalog, encoder)
                if on_model is not None and encoder is not None:
                    on_model(encoder)
                if jobs:
                    assert encoder is not None
                    _embed(catalog, library, encoder, reader, jobs, report, timer, batch_size, on_progress)
            kind = index_kind or catalog.get_setting(INDEX_KIND) or ann.AUTO
            changed = bool(jobs or plan.moved or plan.removed)
            if (changed or not library.ann.exists() or kind != catalog.get_setting(INDEX_KIND)
                    or catalog.ann_stale()):
                with timer.stage("ann"):
                    report.index = _refresh_ann(catalog, library, kind)
                catalog.set_setting(INDEX_KIND, kind)
            catalog.set_setting(LAST_INDEXED, now_iso())
        finally:
            catalog.close()
    report.seconds = time.perf_counter() - started
    report.stages = dict(timer.seconds)
    log.info("index run: %s", report.as_dict())
    return report


def _drop_orphan_files(catalog: Catalog, library: LibraryPaths) -> None:
    """With no row indexed, no vector or index entry is anyone's: clear what a crash left behind.

    A rebuild killed between its commit and its deletes would otherwise leave the old model's
    vectors (perhaps of another size) under the new model's rows.
    """
    if catalog.counts().get(INDEXED, 0) == 0:
        library.vectors.unlink(missing_ok=True)
        library.ann.unlink(missing_ok=True)


def _first_free_id(catalog: Catalog, library: LibraryPaths) -> int:
    """The lowest id that never had a vector, so a reader's older snapshot never sees one change."""
    dim = int(catalog.get_setting(DIM) or 0)
    return max(1, VectorStore(library.vectors, dim).rows) if dim else 1


def _start_rebuild(catalog: Catalog, library: LibraryPaths, encoder: Encoder) -> None:
    """Forget every vector; all rows become pending and are embedded again with `encoder`."""
    with catalog.transaction():
        catalog.db.execute("UPDATE images SET status = ?, in_ann = 0", [PENDING])
        _record_model(catalog, encoder)
    library.vectors.unlink(missing_ok=True)
    library.ann.unlink(missing_ok=True)


def _apply_plan(catalog: Catalog, plan, report: IndexReport, first_id: int) -> list[Job]:
    """Record moves, removals and touches; give every file to embed an id. One transaction."""
    with catalog.transaction():
        catalog.delete(plan.removed)
        for image_id, f in plan.moved:
            catalog.update(image_id, {"path": f.path, "folder": f.folder, "size": f.size, "mtime_ns": f.mtime_ns})
        for image_id, f in plan.touched:
            catalog.update(image_id, {"size": f.size, "mtime_ns": f.mtime_ns})
        # A changed file gets a fresh id (and so a fresh vector row): its old vector stays intact
        # for readers of the previous snapshot until this run commits.
        catalog.delete([image_id for image_id, _ in plan.changed])
        fresh = plan.new + [f for _, f in plan.changed]
        ids = catalog.insert_pending([{"path": f.path, "folder": f.folder, "size": f.size,
                                       "mtime_ns": f.mtime_ns} for f in fresh], first_id)
        for image_id, f in plan.retry:
            catalog.update(image_id, {"size": f.size, "mtime_ns": f.mtime_ns})
    report.added, report.updated = len(plan.new), len(plan.changed)
    report.moved, report.removed = len(plan.moved), len(plan.removed)
    report.unchanged = plan.unchanged + len(plan.touched)
    jobs = [Job(i, f.path, f.size) for i, f in zip(ids, fresh)]
    return jobs + [Job(i, f.path, f.size) for i, f in plan.retry]


def default_batch_size(encoder: Encoder) -> int:
    return 256 if encoder.device.startswith("cuda") else 32


PROGRESS_EVERY = 5.0  # seconds between the running-rate lines of a verbose run


class _RateLog:
    """Running per-stage rates every few seconds, logged at INFO (`pixseek index --verbose`),
    so a user sees which stage holds a long run back while it runs."""

    def __init__(self, timer: StageTimer, total: int, every: float) -> None:
        self.timer = timer
        self.total = total
        self.every = every
        self.decoded = self.embedded = self.written = 0
        self._start = time.perf_counter()
        self._next = self._start + every

    def tick(self) -> None:
        now = time.perf_counter()
        if now < self._next:
            return
        self._next = now + self.every
        s = self.timer.seconds
        log.info("%d/%d decoded, %d embedded, %d written: %.1f images/s | decode %.1f images/s per worker, "
                 "embed %.1f images/s, write %.0f images/s, %.1fs waiting for decoders",
                 self.decoded, self.total, self.embedded, self.written, self.written / (now - self._start),
                 _rate(self.decoded, s["decode (in workers)"]), _rate(self.embedded, s["embed"]),
                 _rate(self.written, s["write"]), s["wait"])


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else 0.0


def _embed(catalog: Catalog, library: LibraryPaths, encoder: Encoder, reader: Reader, jobs: list[Job],
           report: IndexReport, timer: StageTimer, batch_size: int | None, on_progress: Progress | None) -> None:
    vectors = VectorStore(library.vectors, encoder.dim)
    writer = Writer(catalog, vectors)
    batch_size = batch_size or default_batch_size(encoder)
    paths = {job.id: job.path for job in jobs}
    batch: list[ReadResult] = []
    # The batch the model is computing; it is written after the next one is submitted, so on a
    # GPU the host writes and gathers while the device computes (see Encoder.submit_pixels).
    in_flight: tuple[list[ReadResult], PendingVectors] | None = None
    rates = _RateLog(timer, len(jobs), PROGRESS_EVERY)

    def write_in_flight() -> None:
        nonlocal in_flight
        if in_flight is None:
            return
        results, pending = in_flight
        in_flight = None
        with timer.stage("embed"):
            vecs = pending.result()
        with timer.stage("write"):
            for r, v in zip(results, vecs):
                writer.add(r, v)
        rates.written += len(results)

    def embed_batch() -> None:
        nonlocal in_flight
        with timer.stage("embed"):
            pending = encoder.submit_pixels(np.stack([r.pixels for r in batch]))
        for r in batch:
            r.pixels = None  # stacked above; the writer keeps results for up to a commit's worth
        write_in_flight()
        in_flight = (batch.copy(), pending)
        rates.embedded += len(batch)
        batch.clear()

    start = time.perf_counter()
    try:
        log.info("embedding %d files on %s: batches of %d, %d decoder processes",
                 len(jobs), encoder.device, batch_size, reader.workers)
        results = reader.read(jobs, encoder.preprocess)
        while True:
            with timer.stage("wait"):
                result = next(results, None)
            if result is None:
                break
            timer.add("decode (in workers)", result.seconds)
            rates.decoded += 1
            if result.pixels is None:
                writer.skip(result)
            else:
                batch.append(result)
                if len(batch) >= batch_size:
                    embed_batch()
            if on_progress is not None:
                on_progress(rates.decoded, len(jobs))
            rates.tick()
        if batch:
            embed_batch()
        write_in_flight()
        with timer.stage("write"):
            writer.flush()
    except KeyboardInterrupt:
        write_in_flight()
        writer.flush()
        raise Interrupted(f"interrupted: {writer.written} images saved",
                          "run `pixseek index` again to continue where it stopped") from None
    timer.add("read+embed", time.perf_counter() - start)
    report.embedded = writer.written
    report.skipped = [(paths[i], reason) for i, reason in writer.skipped]


def _refresh_ann(catalog: Catalog, library: LibraryPaths, kind: str) -> dict[str, object]:
    """Make the ANN file hold exactly the indexed rows: updated in place when it can be, else built."""
    ids = np.array(catalog.indexed_ids(), dtype=np.int64)
    if len(ids) == 0:
        library.ann.unlink(missing_ok=True)
        catalog.mark_in_ann([])
        return {"type": "none", "vectors": 0}
    dim = int(catalog.get_setting(DIM) or 0)
    fetch = VectorStore(library.vectors, dim).get
    index = _updated_in_place(library, ids, dim, fetch, kind)
    rebuilt = index is None
    if rebuilt:
        index = ann.build(ids, dim, fetch, kind)
    ann.save(index, library.ann)
    catalog.mark_in_ann(ids.tolist())
    return {**ann.describe(index), "rebuilt": rebuilt}


def _updated_in_place(library: LibraryPaths, ids: np.ndarray, dim: int,
                      fetch: Callable[[np.ndarray], np.ndarray], kind: str):
    """The library's IVF-PQ index brought up to date without training, or None to build anew.

    Exact indexes are always rebuilt: they need no training, so that costs only the copy.
    """
    if ann.choose_kind(kind, len(ids)) != ann.IVFPQ or not library.ann.exists():
        return None
    try:
        index = ann.load(library.ann)
    except RuntimeError:  # unreadable: FAISS says so with a RuntimeError; a new one replaces it
        return None
    return index if ann.update(index, ids, dim, fetch) else None
