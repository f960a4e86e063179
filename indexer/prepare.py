"""Before the pipeline runs: which model embeds, what a crash left behind, where new ids start."""

from __future__ import annotations

from indexer.library.catalog import Catalog
from indexer.library.paths import LibraryPaths
from indexer.library.settings import model_record
from indexer.library.vectors import VectorStore
from indexer.model import DEFAULT_MODEL, Encoder, ModelSpec


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
