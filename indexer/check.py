"""`pixseek check [--repair]`: find a library's damage, say what it means, and repair what can be.

catalog.db    SQLite's integrity check. The catalog is the truth: a damaged one is not
              patched over but reported, with the way back (an index run over the folders).
vectors.f16   every indexed row against its unit norm (library/vectors.py says why norms).
              Damaged rows become pending and are embedded again, at the same ids.
index.faiss   against the size and checksum recorded when it was written; a cache, so a
              damaged one is simply built again from the vectors.
tags          rows whose image is gone are dropped.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from indexer.errors import PixseekError
from indexer.library import LibraryPaths, storage_errors, write_lock
from indexer.library.catalog import Catalog, integrity_problems
from indexer.library.index_file import DamagedIndex, load
from indexer.library.rows import PENDING
from indexer.library.vectors import VectorStore


@dataclass
class CheckReport:
    library: str
    catalog: list[str] = field(default_factory=list)  # SQLite's findings; [] when sound
    images: int = 0  # indexed rows checked
    damaged_vectors: list[int] = field(default_factory=list)  # ids
    index: str | None = None  # what is wrong with the index file; None when it is sound
    orphan_tags: int = 0
    pending: int = 0  # rows waiting for an index run (damaged ones repaired, or a stopped run)
    repaired: list[str] = field(default_factory=list)  # what --repair did, one sentence each
    advice: list[str] = field(default_factory=list)  # what the user should do next

    @property
    def healthy(self) -> bool:
        return not (self.catalog or self.damaged_vectors or self.index or self.orphan_tags)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "healthy": self.healthy}


def check_library(library: LibraryPaths | str | Path | None, repair: bool = False) -> CheckReport:
    paths = LibraryPaths.at(library)
    if not paths.catalog.is_file():
        raise PixseekError(f"no library at {paths.root}", "run `pixseek index FOLDER` to create one")
    report = CheckReport(str(paths.root))
    report.catalog = integrity_problems(paths.catalog)
    if report.catalog:
        report.advice.append(
            f"the catalog cannot be trusted: move {paths.catalog} aside and run "
            "`pixseek index FOLDER...` to build it again (its photos are embedded again)"
        )
        return report
    with Catalog(paths.catalog) as catalog:
        _inspect(catalog, paths, report)
        if repair and not report.healthy:
            with storage_errors(paths.root), write_lock(paths):
                _repair(catalog, paths, report)
        report.pending = catalog.counts().get(PENDING, 0)
        roots = [r for r in catalog.settings().root_list if Path(r).is_dir()]
    if repair and report.pending:
        _embed_pending(paths, roots, report)
    elif report.pending:
        report.advice.append("run `pixseek index FOLDER` (or `pixseek check --repair`) to embed the pending rows")
    if not repair and not report.healthy:
        report.advice.append("run `pixseek check --repair` to repair it")
    return report


def _inspect(catalog: Catalog, paths: LibraryPaths, report: CheckReport) -> None:
    settings = catalog.settings()
    ids = catalog.indexed_ids()
    report.images = len(ids)
    if settings.dim:
        report.damaged_vectors = VectorStore(paths.vectors, settings.dim).damaged_ids(ids)
    if ids and not paths.ann.exists():
        report.index = f"{paths.ann.name} is missing"
    elif paths.ann.exists():
        try:
            load(paths.ann, settings.ann_record)
        except (DamagedIndex, OSError) as exc:
            report.index = str(exc)
    report.orphan_tags = catalog.orphan_tags()


def _repair(catalog: Catalog, paths: LibraryPaths, report: CheckReport) -> None:
    from indexer import ann

    if report.damaged_vectors:
        catalog.mark_pending(report.damaged_vectors)
        report.repaired.append(f"marked {len(report.damaged_vectors)} rows with damaged vectors for embedding again")
    if report.orphan_tags:
        catalog.delete_orphan_tags()
        report.repaired.append(f"dropped {report.orphan_tags} tags of images no longer in the library")
    if report.index or report.damaged_vectors:
        ann.refresh(catalog, paths, catalog.settings().index_kind or ann.AUTO)
        report.repaired.append(f"rebuilt {paths.ann.name} from the vectors")


def _embed_pending(paths: LibraryPaths, roots: list[str], report: CheckReport) -> None:
    """Embed the pending rows now, over the folders the library recorded, if the model loads."""
    from indexer.runner import run_index

    if not roots:
        report.advice.append("run `pixseek index FOLDER` to embed the pending rows (no recorded folder is present)")
        return
    try:
        result = run_index(paths, [Path(r) for r in roots])
    except PixseekError as exc:
        report.advice.append(f"the pending rows wait for `pixseek index FOLDER`: {exc.format_message()}")
        return
    report.repaired.append(f"embedded {result.embedded} images again")
    with Catalog(paths.catalog) as catalog:
        report.pending = catalog.counts().get(PENDING, 0)
