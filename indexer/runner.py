"""The runner: walk -> decode -> embed -> write -> ann, each stage timed.

walk.py     roots -> FileStat          stat data only
plan.py     FileStat -> Job            what changed; new files get pending ids
reader.py   Job -> ReadResult          decoded in worker processes, bounded read-ahead,
                                         decoding while the model loads
embed.py    ReadResult -> Embedded     batched; on a GPU the next batch is gathered and the
                                         last one written while it computes
ray_stage   Job -> Embedded            with --ray, in place of reader and embed: decode tasks
                                         and model actors on a Ray cluster
writer.py   Embedded -> catalog rows   vectors fsync'd, then the catalog commit
ann.py      indexed rows -> index      new vectors added to a trained index, or built in
                                         chunks; written atomically
ocr_pass.py indexed rows -> ocr rows   with --ocr (remembered): the text in photos not read yet
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import numpy as np

from indexer import ann, ocr_pass, prepare
from indexer.embed import Embedded, Embedder
from indexer.errors import Interrupted
from indexer.library import LibraryPaths, index_file, storage_errors, write_lock
from indexer.library.catalog import Catalog
from indexer.library.vectors import VectorStore
from indexer.model import Encoder, ModelSpec, load_encoder, preprocess_for
from indexer.ocr_pass import OcrReport, run_ocr
from indexer.plan import Job, Plan, plan_changes
from indexer.reader import Reader, ReadResult, read_one
from indexer.report import IndexOptions, IndexReport
from indexer.runtime import SAMPLE_SIZE
from indexer.timing import RateLog, StageTimer
from indexer.walk import check_roots, walk
from indexer.writer import Writer, now_iso

log = logging.getLogger(__name__)

__all__ = ["IndexOptions", "IndexReport", "OcrReport", "run_index", "run_ocr"]


def run_index(
    library: LibraryPaths | str | Path | None,
    roots: list[Path | str],
    options: IndexOptions | None = None,
    **fields: object,
) -> IndexReport:
    """Bring the library up to date with `roots`; safe to interrupt and run again.

    Options come as an IndexOptions, as its fields by name, or both (the names win).
    """
    options = replace(options or IndexOptions(), **fields)
    library = LibraryPaths.at(library)
    roots = check_roots(roots)
    started = time.perf_counter()
    timer = StageTimer()
    report = IndexReport()
    with storage_errors(library.root), write_lock(library), Catalog(library.catalog, create=True) as catalog:
        prepare.drop_orphan_files(catalog, library)
        spec = prepare.resolve_model(catalog, options.model, options.rebuild, library)
        report.model = str(spec)
        encoder: Encoder | None = None
        if options.rebuild:
            prepare.check_rebuild_covers(catalog, roots)
            encoder = _load_encoder(catalog, spec, options, None, report)
            prepare.start_rebuild(catalog, library, encoder)
        else:
            report.repaired = prepare.repair_vectors(catalog, library)
        prepare.record_roots(catalog, roots)
        with timer.stage("walk"):
            plan = plan_changes(catalog, roots, walk(roots, report.unreadable, library.thumbs), report.unreadable)
        jobs = plan.record(catalog, prepare.first_free_id(catalog, library))
        report.added, report.updated, report.moved, report.removed = (
            len(plan.new),
            len(plan.changed),
            len(plan.moved),
            len(plan.removed),
        )
        report.unchanged = plan.unchanged + len(plan.touched)
        if jobs and options.ray is not None:
            _embed_on_ray(catalog, library, spec, encoder, plan, jobs, options, report, timer)
        elif jobs:
            with Reader(options.workers) as reader:
                results: Iterable[ReadResult] | None = None
                if encoder is None:
                    preprocess = preprocess_for(spec)
                    sample = None
                    if preprocess is not None:
                        # The first batches decode while the model loads.
                        results = reader.read(jobs, preprocess)
                        if options.runtime == "auto" and catalog.settings().recorded_runtime() is None:
                            sample, results = _sample(results)
                    encoder = _load_or_forget(
                        catalog, plan, jobs, lambda: _load_encoder(catalog, spec, options, sample, report)
                    )
                    if catalog.settings().model_fingerprint is None:
                        prepare.record_model(catalog, encoder)
                    if encoder.preprocess != preprocess:
                        results = None  # the config did not describe the model's transform: decode again
                _embed(
                    catalog,
                    library,
                    encoder,
                    results or reader.read(jobs, encoder.preprocess),
                    jobs,
                    options,
                    report,
                    timer,
                )
        settings = catalog.settings()
        kind = options.index_kind or settings.index_kind or ann.AUTO
        if (
            jobs
            or plan.moved
            or plan.removed
            or kind != settings.index_kind
            or catalog.ann_stale()
            or not index_file.matches(library.ann, settings.ann_record)
        ):
            with timer.stage("ann"):
                report.index = ann.refresh(catalog, library, kind)
            catalog.save_settings(index_kind=kind)
        catalog.save_settings(last_indexed_at=now_iso())
        if options.ocr is not None:
            catalog.save_settings(ocr=int(options.ocr))
        if catalog.settings().ocr:
            with timer.stage("ocr"):
                report.ocr = ocr_pass.read_pending(catalog, options.workers, options.on_ocr_progress).as_dict()
    report.seconds = time.perf_counter() - started
    report.stages = dict(timer.seconds)
    log.info("index run: %s", report.as_dict())
    return report


def _load_encoder(
    catalog: Catalog, spec: ModelSpec, options: IndexOptions, sample: np.ndarray | None, report: IndexReport
) -> Encoder:
    """The run's encoder; a runtime check `auto` ran on `sample` is recorded, so it runs once per library."""
    encoder = load_encoder(
        spec,
        options.device,
        runtime=options.runtime,
        precision=options.precision,
        recorded=catalog.settings().recorded_runtime(),
        sample=sample,
    )
    _record_runtime(catalog, encoder, report)
    return encoder


def _record_runtime(catalog: Catalog, encoder: Encoder, report: IndexReport) -> None:
    if encoder.choice.check is not None:
        catalog.save_settings(runtime_check=encoder.choice.check.to_setting())
    report.runtime = encoder.choice.reason


def _sample(results: Iterator[ReadResult]) -> tuple[np.ndarray | None, Iterator[ReadResult]]:
    """The pixels of the first SAMPLE_SIZE decodable files, for `auto`'s check; `results` given back whole."""
    taken: list[ReadResult] = []
    decoded: list[np.ndarray] = []
    for result in results:
        taken.append(result)
        if result.pixels is not None:
            decoded.append(result.pixels)
            if len(decoded) == SAMPLE_SIZE:
                break
    return (np.stack(decoded) if decoded else None), itertools.chain(taken, results)


def _load_or_forget(catalog: Catalog, plan: Plan, jobs: list[Job], load: Callable[[], Encoder]) -> Encoder:
    """The model; when it cannot load, the rows this run inserted go again, so the next run finds
    those files new (and says `added`) instead of inheriting pending rows nobody asked for."""
    try:
        return load()
    except BaseException:
        catalog.delete([job.id for job in jobs[: plan.fresh_count]])
        raise


def _embed(
    catalog: Catalog,
    library: LibraryPaths,
    encoder: Encoder,
    results: Iterable[ReadResult],
    jobs: list[Job],
    options: IndexOptions,
    report: IndexReport,
    timer: StageTimer,
) -> None:
    """decode -> embed -> write, chained; Ctrl-C keeps what was embedded."""
    writer = Writer(catalog, VectorStore(library.vectors, encoder.dim))
    embedder = Embedder(encoder, options.batch_size)
    rates = RateLog(timer, len(jobs))

    def observed(results: Iterable[ReadResult]) -> Iterator[ReadResult]:
        for decoded, result in enumerate(results, 1):
            timer.add("decode (in workers)", result.seconds)
            yield result
            # Resumed when the embedder asks for the next file: this one has been taken in.
            if options.on_progress is not None:
                options.on_progress(decoded, len(jobs))
            rates.tick(decoded, embedder.embedded, writer.received)

    log.info(
        "embedding %d files on %s with %s: batches of %d",
        len(jobs),
        encoder.device,
        encoder.choice.label,
        embedder.batch_size,
    )
    decoded = observed(timer.iterate("wait", results))
    _write(writer, timer.iterate("embed", embedder(decoded)), embedder.drain, jobs, report, timer)


def _embed_on_ray(
    catalog: Catalog,
    library: LibraryPaths,
    spec: ModelSpec,
    encoder: Encoder | None,
    plan: Plan,
    jobs: list[Job],
    options: IndexOptions,
    report: IndexReport,
    timer: StageTimer,
) -> None:
    """--ray: the cluster decodes and embeds (ray_stage.py), this process writes as in a local run.

    The model loads here too: the library records it, and `auto` decides the runtime here, on
    photos decoded here, for every actor."""
    from indexer import ray_stage

    recorded = catalog.settings().recorded_runtime()

    def load() -> Encoder:  # beside Ray's start, in a thread: no catalog (its connection stays in this one)
        preprocess = preprocess_for(spec)
        sample = None
        if preprocess is not None and options.runtime == "auto" and recorded is None:
            sample, _ = _sample(read_one(job, preprocess) for job in jobs)
        return load_encoder(
            spec, options.device, runtime=options.runtime, precision=options.precision, recorded=recorded, sample=sample
        )

    with ThreadPoolExecutor(1) as pool, ExitStack() as cluster:

        def connect_and_load() -> Encoder:
            loading = pool.submit(load) if encoder is None else None
            with timer.stage("ray start"):
                cluster.enter_context(ray_stage.connected(options.ray))
            return encoder if loading is None else loading.result()

        loaded = encoder is None
        encoder = _load_or_forget(catalog, plan, jobs, connect_and_load)
        if loaded:
            _record_runtime(catalog, encoder, report)
        if catalog.settings().model_fingerprint is None:
            prepare.record_model(catalog, encoder)
        writer = Writer(catalog, VectorStore(library.vectors, encoder.dim))
        rates = RateLog(timer, len(jobs))

        def observed(batches: Iterable[Embedded]) -> Iterator[Embedded]:
            done = 0
            for batch in batches:
                for result in batch.results:
                    timer.add("decode (in workers)", result.seconds)
                done += len(batch.results)
                yield batch
                if options.on_progress is not None:
                    options.on_progress(done, len(jobs))
                rates.tick(done, done, writer.received)

        batches = ray_stage.embedded(jobs, spec, encoder.choice, encoder.preprocess, options.batch_size, options.device)
        _write(writer, observed(timer.iterate("embed", batches)), lambda: [], jobs, report, timer)


def _write(
    writer: Writer,
    batches: Iterable[Embedded],
    drain: Callable[[], list[Embedded]],
    jobs: list[Job],
    report: IndexReport,
    timer: StageTimer,
) -> None:
    """`batches` written; on Ctrl-C, with what `drain` still gives, before the run stops."""
    start = time.perf_counter()
    try:
        with timer.stage("write"):
            writer(batches)
    except KeyboardInterrupt:
        for batch in drain():
            writer.add(batch)
        writer.flush()
        raise Interrupted(
            f"interrupted: {writer.written} images saved", "run `pixseek index` again to continue where it stopped"
        ) from None
    timer.add("read+embed", time.perf_counter() - start)
    paths = {job.id: job.path for job in jobs}
    report.embedded = writer.written
    report.skipped = [(paths[i], reason) for i, reason in writer.skipped]
