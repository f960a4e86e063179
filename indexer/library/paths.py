"""Where a library's files live: one folder, named by --library, $PIXSEEK_LIBRARY or the user data folder.

catalog.db      SQLite catalog (the truth)
vectors.f16     float16 embeddings, row = catalog id
index.faiss     ANN index over the vectors (a cache, rebuilt from them)
index.lock      held by the one writer allowed at a time
thumbs/         thumbnails made by the UI
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ENV_LIBRARY = "PIXSEEK_LIBRARY"


def is_image_name(name: str) -> bool:
    """Whether a library holds a file of this name (the walker's and the query parser's rule)."""
    from indexer.decode import SUPPORTED_EXTENSIONS  # Pillow: only for commands that look at files

    if name.startswith("."):  # hidden files and macOS "._" resource forks
        return False
    ext = name.rpartition(".")[2].lower()
    return ext in SUPPORTED_EXTENSIONS


def default_library_dir() -> Path:
    env = os.environ.get(ENV_LIBRARY)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("pixseek")) / "library"


@dataclass(frozen=True)
class LibraryPaths:
    root: Path

    @classmethod
    def at(cls, root: str | Path | LibraryPaths | None) -> LibraryPaths:
        if isinstance(root, LibraryPaths):
            return root
        return cls(Path(root).expanduser().resolve() if root else default_library_dir())

    @property
    def catalog(self) -> Path:
        return self.root / "catalog.db"

    @property
    def vectors(self) -> Path:
        return self.root / "vectors.f16"

    @property
    def ann(self) -> Path:
        return self.root / "index.faiss"

    @property
    def lock_file(self) -> Path:
        return self.root / "index.lock"

    @property
    def thumbs(self) -> Path:
        return self.root / "thumbs"

    def exists(self) -> bool:
        return self.catalog.exists()
