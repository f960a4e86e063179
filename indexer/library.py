"""The library directory: where its files live, who may write it, and which model it belongs to.

    catalog.db      SQLite catalog (the truth)
    vectors.f16     float16 embeddings, row = catalog id
    index.faiss     ANN index over the vectors (a cache, rebuilt from them)
    index.lock      held by the one `pixseek index` run allowed at a time
    thumbs/         thumbnails made by the UI
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from indexer.errors import PixseekError
from indexer.model import ModelSpec

ENV_LIBRARY = "PIXSEEK_LIBRARY"


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
    def at(cls, root: str | Path | None) -> LibraryPaths:
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

    @contextmanager
    def write_lock(self) -> Iterator[None]:
        """One writer per library; the OS drops the lock if the holder dies, even by SIGKILL."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise PixseekError(f"cannot write to the library folder {self.root} ({exc.strerror})",
                               "choose a writable folder with --library") from exc
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                    raise PixseekError(
                        f"another `pixseek index` (pid {holder}) is already updating {self.root}",
                        "wait for it to finish, or stop it first",
                    ) from exc
                raise
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            yield
        finally:
            os.close(fd)


# Settings keys that tie a library to its model.
MODEL_NAME = "model_name"
MODEL_PRETRAINED = "model_pretrained"
MODEL_FINGERPRINT = "model_fingerprint"
DIM = "dim"


def recorded_spec(settings: dict[str, str]) -> ModelSpec | None:
    if MODEL_NAME not in settings:
        return None
    return ModelSpec(settings[MODEL_NAME], settings.get(MODEL_PRETRAINED) or None)


def check_same_model(settings: dict[str, str], spec: ModelSpec, library: Path) -> None:
    """Vectors from two models live in unrelated spaces: mixing them would rank nonsense."""
    recorded = recorded_spec(settings)
    if recorded is None:
        return
    if settings.get(MODEL_FINGERPRINT) != spec.fingerprint():
        raise PixseekError(
            f"the library at {library} was built with model {recorded}, not {spec}",
            "search without --model, or re-embed everything with `pixseek index --rebuild --model ...`",
        )
