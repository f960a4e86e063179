"""Opening a photo for reading, refusing anything that is not a regular file.

A FIFO swapped in for a photo would block a plain open() forever, and a device (a /dev/zero
link) would stream without end. The file is opened without blocking, checked with fstat (the
file actually opened, not a path that may change between a stat and an open), then read.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO


class NotRegularFile(OSError):
    """A FIFO, device or socket where a photo was expected."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(errno.EINVAL, "not a regular file", str(path))


def open_regular(path: str | Path) -> BinaryIO:
    """`path` opened for binary reading; IsADirectoryError for a folder, NotRegularFile for the rest."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        if not stat.S_ISREG(mode):
            raise NotRegularFile(path)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
