"""Atomic and durable file writes: readers and crashes see a library's old file or its new one."""

from __future__ import annotations

import os
import stat
from pathlib import Path


def replace_file(path: Path, data: bytes | memoryview) -> None:
    """Write `data` as `path` atomically: readers and crashes see the old file or the new one."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data).cast("B")
            while view:
                view = view[os.write(fd, view) :]
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


def pwrite_all(fd: int, data: bytes, offset: int) -> None:
    # A nearly full disk can take part of a write without an error; the rest then raises ENOSPC.
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def move_aside(path: Path) -> Path | None:
    """Rename a folder (or FIFO, device...) standing where one of the library's files belongs.

    Kept, not deleted: whatever it holds is not pixseek's to destroy. Returns its new name, or
    None when `path` is a regular file or absent.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    if stat.S_ISREG(mode):
        return None
    aside = path.with_name(f"{path.name}.moved-aside")
    n = 1
    while aside.exists() or aside.is_symlink():
        n += 1
        aside = path.with_name(f"{path.name}.moved-aside-{n}")
    os.rename(path, aside)
    return aside
