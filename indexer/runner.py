"""The runner: walk -> read (decode, in workers) -> embed -> write -> ANN, each stage timed.

    plan = plan_changes(walk(roots))          walk.py      stat data only
    for chunk in Reader(jobs):                reader.py    worker processes, bounded read-ahead
        vectors = encoder.encode_pixels(...)  model.py     batched, on the GPU when there is one
        writer.add(...)                       writer.py    vectors fsync'd, then catalog commit
    ann.build(all indexed vectors)            ann.py       written atomically
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
from indexer.catalog import PENDING, Catalog
from indexer.errors import Interrupted
from indexer.library import (DIM, MODEL_FINGERPRINT, MODEL_NAME, MODEL_PRETRAINED, LibraryPaths,
                             check_same_model, recorded_spec)
from indexer.model import DEFAULT_MODEL, Encoder, ModelSpec, load_encoder
from indexer.reader import Job, Reader
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
    with library.write_lock():
        catalog = Catalog(library.catalog, create=True)
        try:
            spec = _resolve_model(catalog.settings(), model, rebuild, library)
            report.model = str(spec)
            encoder: Encoder | None = None
            if rebuild:
                encoder = load_encoder(spec, device)
                _start_rebuild(catalog, library, encoder)
            with timer.stage("walk"):
                plan = plan_changes(catalog, roots, walk(roots))
            jobs = _apply_plan(catalog, plan, report)
            if jobs and encoder is None:
                encoder = load_encoder(spec, device)
                if catalog.get_setting(MODEL_FINGERPRINT) is None:
                    _record_model(catalog, encoder)
            if on_model is not None and encoder is not None:
                on_model(encoder)
            if jobs:
                assert encoder is not None
                _embed(catalog, library, encoder, jobs, report, timer, workers, batch_size, on_progress)
            kind = index_kind or catalog.get_setting(INDEX_KIND) or ann.AUTO
            changed = bool(jobs or plan.moved or plan.removed)
            if changed or not library.ann.exists() or kind != catalog.get_setting(INDEX_KIND):
                with timer.stage("ann"):
                    report.index = _rebuild_ann(catalog, library, kind)
                catalog.set_setting(INDEX_KIND, kind)
            catalog.set_setting(LAST_INDEXED, now_iso())
        finally:
            catalog.close()
    report.seconds = time.perf_counter() - started
    report.stages = dict(timer.seconds)
    log.info("index run: %s", report.as_dict())
    return report


def _start_rebuild(catalog: Catalog, library: LibraryPaths, encoder: Encoder) -> None:
    """Forget every vector; all rows become pending and are embedded again with `encoder`."""
    with catalog.transaction():
        catalog.db.execute("UPDATE images SET status = ?, in_ann = 0", [PENDING])
        _record_model(catalog, encoder)
    library.vectors.unlink(missing_ok=True)
    library.ann.unlink(missing_ok=True)


def _apply_plan(catalog: Catalog, plan, report: IndexReport) -> list[Job]:
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
                                       "mtime_ns": f.mtime_ns} for f in fresh])
        for image_id, f in plan.retry:
            catalog.update(image_id, {"size": f.size, "mtime_ns": f.mtime_ns})
    report.added, report.updated = len(plan.new), len(plan.changed)
    report.moved, report.removed = len(plan.moved), len(plan.removed)
    report.unchanged = plan.unchanged + len(plan.touched)
    jobs = [Job(i, f.path, f.size) for i, f in zip(ids, fresh)]
    return jobs + [Job(i, f.path, f.size) for i, f in plan.retry]


def default_batch_size(encoder: Encoder) -> int:
    return 256 if encoder.device.startswith("cuda") else 32


def _embed(catalog: Catalog, library: LibraryPaths, encoder: Encoder, jobs: list[Job], report: IndexReport,
           timer: StageTimer, workers: int | None, batch_size: int | None, on_progress: Progress | None) -> None:
    vectors = VectorStore(library.vectors, encoder.dim)
    writer = Writer(catalog, vectors)
    batch_size = batch_size or default_batch_size(encoder)
    paths = {job.id: job.path for job in jobs}
    done = 0
    batch: list = []

    def embed_batch() -> None:
        nonlocal done
        with timer.stage("embed"):
            vecs = encoder.encode_pixels(np.stack([r.pixels for r in batch]))
        with timer.stage("write"):
            for r, v in zip(batch, vecs):
                writer.add(r, v)
        done += len(batch)
        batch.clear()

    start = time.perf_counter()
    try:
        with Reader(encoder.image_size, workers) as reader:
            results = reader.read(jobs)
            while True:
                with timer.stage("wait"):
                    result = next(results, None)
                if result is None:
                    break
                timer.add("decode (in workers)", result.seconds)
                if result.pixels is None:
                    writer.skip(result)
                    done += 1
                else:
                    batch.append(result)
                    if len(batch) >= batch_size:
                        embed_batch()
                if on_progress is not None:
                    on_progress(done + len(batch), len(jobs))
            if batch:
                embed_batch()
        with timer.stage("write"):
            writer.flush()
    except KeyboardInterrupt:
        writer.flush()
        raise Interrupted(f"interrupted: {writer.written} images saved",
                          "run `pixseek index` again to continue where it stopped") from None
    timer.add("read+embed", time.perf_counter() - start)
    report.embedded = writer.written
    report.skipped = [(paths[i], reason) for i, reason in writer.skipped]


def _rebuild_ann(catalog: Catalog, library: LibraryPaths, kind: str) -> dict[str, object]:
    ids = np.array(catalog.indexed_ids(), dtype=np.int64)
    if len(ids) == 0:
        library.ann.unlink(missing_ok=True)
        catalog.mark_in_ann([])
        return {"type": "none", "vectors": 0}
    dim = int(catalog.get_setting(DIM) or 0)
    vecs = VectorStore(library.vectors, dim).get(ids)
    index = ann.build(vecs, ids, kind)
    ann.save(index, library.ann)
    catalog.mark_in_ann(ids.tolist())
    return ann.describe(index)
