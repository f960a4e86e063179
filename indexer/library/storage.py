"""A failed write to the library (disk full, read-only, no permission) as one sentence with a next step.

The library stays as it was at its last commit: vectors are fsync'd before their rows commit and
the index file is replaced whole, so the next run continues from there.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from indexer.errors import PixseekError


@contextmanager
def storage_errors(root: Path) -> Iterator[None]:
    """Turn a failed write under `root` into a PixseekError; other errors pass unchanged."""
    try:
        yield
    except sqlite3.Error as exc:
        text = str(exc).lower()
        code = next((c for words, c in _SQLITE_ERRNOS if any(w in text for w in words)), None)
        if code is None:
            raise
        raise storage_error(root, code) from exc
    except OSError as exc:
        outside = exc.filename is not None and not _is_under(os.fsdecode(exc.filename), root)
        if exc.errno not in STORAGE_PROBLEMS or outside:
            raise
        raise storage_error(root, exc.errno) from exc


def storage_error(root: Path, code: int) -> PixseekError:
    if code == errno.EIO and _nearly_full(root):
        code = errno.ENOSPC  # SQLite reports a full disk as an I/O error when its WAL index cannot grow
    problem, hint = STORAGE_PROBLEMS[code]
    return PixseekError(problem.format(root=root), hint)


_FREE_SPACE = "free some space, then run `pixseek index` again (what was indexed so far is kept)"
_NO_PERMISSION = (
    "no permission to write the library {root}",
    "fix the folder's permissions or choose another with --library (searching still works)",
)
STORAGE_PROBLEMS = {
    errno.ENOSPC: ("the disk holding the library {root} is full", _FREE_SPACE),
    errno.EDQUOT: ("the disk quota for the library {root} is used up", _FREE_SPACE),
    errno.EROFS: (
        "the library {root} is on read-only storage",
        "choose a writable folder with --library (searching this one still works)",
    ),
    errno.EACCES: _NO_PERMISSION,
    errno.EPERM: _NO_PERMISSION,
    errno.EIO: (
        "the disk holding the library {root} reported an I/O error",
        "check the drive, then run `pixseek index` again (what was indexed so far is kept)",
    ),
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
