"""The OCR pass (`pixseek ocr`, `index --ocr`): read the text in every indexed photo not read yet.

Incremental like indexing: a photo is read when it has no OCR row, or one made from other
content (its hash changed). Results are committed a few at a time, with the keyword documents
they change, so a killed run loses at most those and the next run continues where it stopped.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from indexer.errors import Interrupted
from indexer.library import LibraryPaths, storage_errors, write_lock
from indexer.library.catalog import Catalog
from indexer.ocr import OcrJob, OcrResult, check_available, ocr_batch
from indexer.report import Progress
from indexer.writer import now_iso

# Results per commit: OCR takes long per photo, so committing often costs little and a kill
# loses only the last few photos' work.
COMMIT_EVERY = 8


@dataclass
class OcrReport:
    read: int = 0  # photos read this run
    with_text: int = 0  # of those, photos with any text
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    seconds: float = 0.0
    ocr_seconds: float = 0.0  # summed over the photos, in the workers

    def as_dict(self) -> dict[str, object]:
        return {
            "read": self.read,
            "with_text": self.with_text,
            "failed": [{"path": p, "reason": r} for p, r in self.failed],
            "seconds": round(self.seconds, 3),
            "ocr_seconds": round(self.ocr_seconds, 3),
        }


def run_ocr(
    library: LibraryPaths | str | Path | None, workers: int | None = None, on_progress: Progress | None = None
) -> OcrReport:
    """Read the text in the library's photos that need it; safe to interrupt and run again."""
    library = LibraryPaths.at(library)
    with storage_errors(library.root), write_lock(library), Catalog(library.catalog) as catalog:
        return read_pending(catalog, workers, on_progress)


def read_pending(catalog: Catalog, workers: int | None = None, on_progress: Progress | None = None) -> OcrReport:
    """The pass itself, for a caller that holds the write lock (`pixseek index --ocr`)."""
    check_available()
    started = time.perf_counter()
    todo = catalog.ocr_todo()
    paths = {image_id: path for image_id, path, _ in todo}
    hashes = {image_id: digest for image_id, _, digest in todo}
    report = OcrReport()
    rows: list[dict[str, object]] = []

    def commit() -> None:
        catalog.save_ocr(rows)
        rows.clear()

    try:
        for done, result in enumerate(ocr_batch((OcrJob(i, p) for i, p, _ in todo), workers), 1):
            rows.append(_row(result, hashes[result.id]))
            _count(report, result, paths[result.id])
            if len(rows) >= COMMIT_EVERY:
                commit()
            if on_progress is not None:
                on_progress(done, len(todo))
    except KeyboardInterrupt:
        commit()
        raise Interrupted(
            f"interrupted: text of {report.read} photos saved", "run `pixseek ocr` again to continue where it stopped"
        ) from None
    commit()
    report.seconds = time.perf_counter() - started
    return report


def _row(result: OcrResult, digest: str | None) -> dict[str, object]:
    boxes = None if result.boxes is None else json.dumps([b.as_dict() for b in result.boxes], ensure_ascii=False)
    return {
        "image_id": result.id,
        "hash": digest,
        "text": result.text,
        "boxes_json": boxes,
        "reason": result.reason,
        "seconds": round(result.seconds, 4),
        "done_at": now_iso(),
    }


def _count(report: OcrReport, result: OcrResult, path: str) -> None:
    report.read += 1
    report.ocr_seconds += result.seconds
    if result.boxes is None:
        report.failed.append((path, result.reason or "unknown error"))
    elif result.boxes:
        report.with_text += 1
