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
import shutil
import sqlite3
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
    def storage_errors(self) -> Iterator[None]:
        """Turn a failed write to the library (disk full, read-only, no permission) into one line.

        The library stays as it was at its last commit: vectors are fsync'd before their rows
        commit and the index file is replaced whole, so the next run continues from there.
        """
        try:
            yield
        except sqlite3.Error as exc:
            text = str(exc).lower()
            code = next((c for words, c in _SQLITE_ERRNOS if any(w in text for w in words)), None)
            if code is None:
                raise
            raise self._storage_error(code) from exc
        except OSError as exc:
            outside = exc.filename is not None and not _is_under(os.fsdecode(exc.filename), self.root)
            if exc.errno not in _STORAGE_PROBLEMS or outside:
                raise
            raise self._storage_error(exc.errno) from exc

    def _storage_error(self, code: int) -> PixseekError:
        if code == errno.EIO and _nearly_full(self.root):
            code = errno.ENOSPC  # SQLite reports a full disk as an I/O error when its WAL index cannot grow
        problem, hint = _STORAGE_PROBLEMS[code]
        return PixseekError(problem.format(root=self.root), hint)

    @contextmanager
    def write_lock(self) -> Iterator[None]:
        """One writer per library; the OS drops the lock if the holder dies, even by SIGKILL."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            if exc.errno in _STORAGE_PROBLEMS:
                raise self._storage_error(exc.errno) from exc
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


_FREE_SPACE = "free some space, then run `pixseek index` again (what was indexed so far is kept)"
_NO_PERMISSION = ("no permission to write the library {root}",
                  "fix the folder's permissions or choose another with --library (searching still works)")
_STORAGE_PROBLEMS = {
    errno.ENOSPC: ("the disk holding the library {root} is full", _FREE_SPACE),
    errno.EDQUOT: ("the disk quota for the library {root} is used up", _FREE_SPACE),
    errno.EROFS: ("the library {root} is on read-only storage",
                  "choose a writable folder with --library (searching this one still works)"),
    errno.EACCES: _NO_PERMISSION,
    errno.EPERM: _NO_PERMISSION,
    errno.EIO: ("the disk holding the library {root} reported an I/O error",
                "check the drive, then run `pixseek index` again (what was indexed so far is kept)"),
}
# SQLite words the same problems instead of giving an errno. (Read-only media stop a run at the
# lock file already, so a read-only database means its file's permissions.)
_SQLITE_ERRNOS = (
    (("disk is full",), errno.ENOSPC),
    (("readonly database",), errno.EACCES),
    (("disk i/o error",), errno.EIO),
)


def _nearly_full(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < 1 << 20
    except OSError:
        return False


def _is_under(path: str, root: Path) -> bool:
    return os.path.abspath(path).startswith(str(root) + os.sep)


def replace_file(path: Path, data: bytes | memoryview) -> None:
    """Write `data` as `path` atomically: readers and crashes see the old file or the new one."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data).cast("B")
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new file in `folder` survive a power cut, not only a crash."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
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
        if recorded == spec:
            raise PixseekError(
                f"the weights of model {spec} changed since the library at {library} was built",
                "re-embed everything with `pixseek index --rebuild FOLDER`",
            )
        raise PixseekError(
            f"the library at {library} was built with model {recorded}, not {spec}",
            "search without --model, or re-embed everything with `pixseek index --rebuild --model ...`",
        )
