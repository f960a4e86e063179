"""One writer per library: `pixseek index` and `pixseek tag` take the same lock."""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager

from indexer.errors import PixseekError
from indexer.library.paths import LibraryPaths
from indexer.library.storage import STORAGE_PROBLEMS, storage_error


@contextmanager
def write_lock(paths: LibraryPaths) -> Iterator[None]:
    """Held while writing; the OS drops the lock if the holder dies, even by SIGKILL."""
    try:
        if paths.root.is_file():
            raise PixseekError(f"{paths.root} is a file, not a library folder", "pass --library a folder")
        paths.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(paths.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        if exc.errno in STORAGE_PROBLEMS:
            raise storage_error(paths.root, exc.errno) from exc
        raise PixseekError(
            f"cannot write to the library folder {paths.root} ({exc.strerror})",
            "choose a writable folder with --library",
        ) from exc
    # The folder is locked too: index.lock can be deleted during a run (a clean-up script, a
    # user), and a second writer would then lock a new file of that name; the folder stays.
    folder_fd = os.open(paths.root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for locked in (fd, folder_fd):
            try:
                fcntl.flock(locked, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                    raise PixseekError(
                        f"another `pixseek index` (pid {holder}) is already updating {paths.root}",
                        "wait for it to finish, or stop it first",
                    ) from exc
                raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(folder_fd)
        os.close(fd)


def held(paths: LibraryPaths) -> bool:
    """Whether a writer holds the library's lock now (an index or tag run is under way)."""
    try:
        fd = os.open(paths.root, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False
