"""Before the pipeline runs: which model embeds, what a crash left behind, where new ids start."""

from __future__ import annotations

import json
from pathlib import Path

from indexer.errors import PixseekError
from indexer.library.catalog import Catalog
from indexer.library.files import move_aside
from indexer.library.paths import LibraryPaths
from indexer.library.settings import model_record
from indexer.library.vectors import VectorStore
from indexer.model import DEFAULT_MODEL, Encoder, ModelSpec
from indexer.plan import is_under


def resolve_model(catalog: Catalog, model: ModelSpec | None, rebuild: bool, library: LibraryPaths) -> ModelSpec:
    """The model of this run: the one asked for (the library's own, unless rebuilding), or the library's."""
    settings = catalog.settings()
    recorded = settings.model_spec()
    if model is None:
        return recorded or ModelSpec.parse(DEFAULT_MODEL)
    if recorded is not None and not rebuild:
        settings.check_same_model(model, library.root)
    return model


def record_model(catalog: Catalog, encoder: Encoder) -> None:
    catalog.save_settings(**model_record(encoder))


def drop_orphan_files(catalog: Catalog, library: LibraryPaths) -> None:
    """With no row indexed, no vector or index entry is anyone's: clear what a crash left behind.

    A rebuild killed between its commit and its deletes would otherwise leave the old model's
    vectors (perhaps of another size) under the new model's rows.
    """
    if catalog.indexed_count() == 0:
        library.vectors.unlink(missing_ok=True)
        library.ann.unlink(missing_ok=True)


def start_rebuild(catalog: Catalog, library: LibraryPaths, encoder: Encoder) -> None:
    """Forget every vector; all rows become pending and are embedded again with `encoder`."""
    with catalog.transaction():
        catalog.mark_all_pending()
        record_model(catalog, encoder)
    library.vectors.unlink(missing_ok=True)
    library.ann.unlink(missing_ok=True)


def first_free_id(catalog: Catalog, library: LibraryPaths) -> int:
    """The lowest id that never had a vector, so a reader's older snapshot never sees one change."""
    dim = catalog.settings().dim
    return max(1, VectorStore(library.vectors, dim).rows) if dim else 1


def repair_vectors(catalog: Catalog, library: LibraryPaths) -> int:
    """Damaged vector rows (vectors.f16 truncated, deleted or overwritten) become pending again, so
    this run re-embeds exactly them; returns how many. A folder where the file belongs is moved aside."""
    dim = catalog.settings().dim
    if not dim:
        return 0
    move_aside(library.vectors)
    damaged = VectorStore(library.vectors, dim).damaged_ids(catalog.indexed_ids())
    catalog.mark_pending(damaged)
    return len(damaged)


def check_rebuild_covers(catalog: Catalog, roots: list[Path]) -> None:
    """`--rebuild` forgets every vector, so it must be given every folder the library holds.

    Refused rather than widened to the recorded folders: one of those may be an unplugged drive,
    whose photos a rebuild would then drop from the library.
    """
    given = [str(r) for r in roots]
    outside = catalog.paths_outside(given)
    if not outside:
        return
    recorded = [r for r in catalog.settings().root_list if not is_under(r, given)]
    others = recorded or [str(Path(outside[0]).parent)]
    raise PixseekError(
        f"--rebuild re-embeds the whole library, which also holds photos from {', '.join(others)}",
        f"name every folder: pixseek index --rebuild {' '.join(given + others)}",
    )


def record_roots(catalog: Catalog, roots: list[Path]) -> None:
    """Remember the folders indexed so far (a folder inside another is covered by it)."""
    known = sorted(set(catalog.settings().root_list) | {str(r) for r in roots})
    kept = [r for r in known if not any(r != o and is_under(r, [o]) for o in known)]
    catalog.save_settings(roots=json.dumps(kept))  # ASCII escapes: a non-UTF-8 name survives
