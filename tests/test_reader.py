"""The decode stage and the pipeline around it: bounded read-ahead, same vectors however decoded."""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import numpy as np
from PIL import Image

from indexer import timing
from indexer.library import LibraryPaths
from indexer.library.catalog import Catalog
from indexer.library.vectors import VectorStore
from indexer.plan import Job
from indexer.reader import Reader
from indexer.runner import run_index
from pixseek_data.shapes import COLOURS, SHAPES, generate_gallery


def stored_vectors(lib: LibraryPaths) -> dict[str, np.ndarray]:
    """path -> stored vector of every indexed image."""
    with Catalog(lib.catalog) as catalog:
        ids = catalog.indexed_ids()
        rows = [catalog.get(i) for i in ids]
        vectors = VectorStore(lib.vectors, catalog.settings().dim).get(np.array(ids, dtype=np.int64))
    return {r.path: v for r, v in zip(rows, vectors)}


def tiny_jobs(tmp_path, n: int) -> tuple[list[Job], Path]:
    path = tmp_path / "tiny.png"
    Image.new("RGB", (8, 8), (200, 30, 30)).save(path)
    return [Job(i, str(path), path.stat().st_size) for i in range(n)], path


def test_read_ahead_starts_at_once_and_stays_bounded_however_slow_the_consumer(tmp_path):
    listed, _ = tiny_jobs(tmp_path, 300)
    pulled = 0

    def jobs():
        nonlocal pulled
        for job in listed:
            pulled += 1
            yield job

    ids, most_in_flight = [], 0
    with Reader(workers=1, chunk=4) as reader:
        bound = reader.ahead * reader.chunk
        feed = jobs()
        reader.start(feed, 8)
        assert pulled == bound  # decoding began before any result was asked for (the model loads)
        # A slow consumer: the worker finishes its window meanwhile, and nothing more may be
        # taken from the job list until results are asked for.
        time.sleep(0.3)
        assert pulled == bound
        for consumed, result in enumerate(reader.read(feed, 8)):
            in_flight = pulled - consumed  # jobs taken whose results the consumer has not finished
            most_in_flight = max(most_in_flight, in_flight)
            assert in_flight <= bound
            ids.append(result.id)
    assert ids == list(range(300))  # in order, none lost
    assert most_in_flight == bound


def test_reading_at_another_size_than_started_decodes_again(tmp_path):
    jobs, _ = tiny_jobs(tmp_path, 40)
    with Reader(workers=1, chunk=4) as reader:
        reader.start(jobs, 8)
        results = list(reader.read(jobs, 16))
    assert [r.id for r in results] == list(range(40))
    assert all(r.pixels.shape == (16, 16, 3) for r in results)


def test_worker_processes_and_inline_decoding_store_the_same_vectors(tmp_path, demo_spec):
    photos = tmp_path / "photos"
    gallery = generate_gallery(photos, per_class=1, seed=5)
    assert len(gallery) == len(COLOURS) * len(SHAPES)
    # 7 does not divide 24: the last, short batch and the one in flight must be written too.
    libs = [LibraryPaths.at(tmp_path / f"lib-{w}") for w in (0, 1)]
    for workers, lib in zip((0, 1), libs):
        report = run_index(lib, [photos], model=demo_spec, workers=workers, batch_size=7)
        assert report.embedded == len(gallery) and not report.skipped
    inline, pooled = (stored_vectors(lib) for lib in libs)
    assert sorted(inline) == sorted(str(s.path.resolve()) for s in gallery)
    assert inline.keys() == pooled.keys()
    for path, vector in inline.items():
        assert np.array_equal(vector, pooled[path]), path
        assert abs(np.linalg.norm(vector) - 1) < 1e-2  # a real embedding, not an empty row


def test_verbose_run_logs_running_rates_per_stage(tmp_path, demo_spec, monkeypatch, caplog):
    photos = tmp_path / "photos"
    n = len(generate_gallery(photos, per_class=1, seed=6))
    monkeypatch.setattr(timing, "PROGRESS_EVERY", 0.0)  # a line after every file instead of every 5 s
    with caplog.at_level(logging.INFO, logger="indexer"):
        run_index(LibraryPaths.at(tmp_path / "lib"), [photos], model=demo_spec, workers=0, batch_size=8)
    pattern = re.compile(
        rf"(\d+)/{n} decoded, (\d+) embedded, (\d+) written: [\d.]+ images/s \| "
        r"decode [\d.]+ images/s per worker, embed [\d.]+ images/s, write \d+ images/s, "
        r"[\d.]+s waiting for decoders"
    )
    lines = [m for r in caplog.records if (m := pattern.search(r.getMessage()))]
    assert len(lines) == n
    decoded = [int(m.group(1)) for m in lines]
    assert decoded == list(range(1, n + 1))
    # Written trails embedded (the batch in flight), which trails decoded (the batch being filled).
    assert all(int(m.group(3)) <= int(m.group(2)) <= int(m.group(1)) for m in lines)
    assert int(lines[-1].group(2)) == n - n % 8
