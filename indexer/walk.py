"""The walk stage: image files under the roots, with their stat data (plan.py decides what changed)."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from indexer import object_store
from indexer.errors import PixseekError
from indexer.library.paths import is_image_name
from indexer.regular_file import open_regular

HASH_CHUNK = 64 * 1024


@dataclass(frozen=True)
class FileStat:
    path: str
    size: int
    mtime_ns: int

    @property
    def folder(self) -> str:
        return os.path.dirname(self.path)


def check_roots(roots: list[Path | str]) -> list[Path | str]:
    """Folders resolved, object-storage URIs (object_store.py) kept as strings."""
    resolved: list[Path | str] = []
    for root in roots:
        if object_store.is_uri(str(root)):
            resolved.append(object_store.check_root(str(root)))
            continue
        path = Path(root).expanduser()
        if not path.exists():
            raise PixseekError(f"folder not found: {root}", "check the path (and that the drive is mounted)")
        if not path.is_dir():
            raise PixseekError(f"not a folder: {root}", "pass the folder that holds your photos")
        resolved.append(path.resolve())
    return resolved


def walk(roots: list[Path | str], unreadable: list[str] | None = None, skip: Path | None = None) -> Iterator[FileStat]:
    """Image files under `roots`, following directory symlinks once each (no loops).

    Folders that exist but cannot be listed (permissions, I/O errors) are appended to `unreadable`.
    `skip`: a folder left out (the library's own, kept inside a photo folder: its thumbnails).
    """
    seen_dirs: set[tuple[int, int]] = set()
    if skip is not None:
        try:
            st = os.stat(skip)
            seen_dirs.add((st.st_dev, st.st_ino))
        except OSError:
            pass  # not created yet: nothing in it to leave out
    seen_files: set[str] = set()
    for uri in [str(r) for r in roots if isinstance(r, str)]:
        for path, size, mtime_ns in object_store.list_files(uri):
            yield FileStat(path, size, mtime_ns)
    stack = [str(r) for r in reversed(roots) if not isinstance(r, str)]
    while stack:
        top = stack.pop()
        try:
            st = os.stat(top)
            if (st.st_dev, st.st_ino) in seen_dirs:
                continue
            seen_dirs.add((st.st_dev, st.st_ino))
            entries = sorted(os.scandir(top), key=lambda e: e.name)
        except FileNotFoundError:
            continue  # vanished since its parent was listed
        except OSError:
            if unreadable is not None:
                unreadable.append(top)
            continue
        subdirs = []
        for entry in entries:
            if entry.name.startswith(".") or entry.path in seen_files:
                continue
            try:
                if entry.is_dir():
                    subdirs.append(entry.path)
                    continue
                if not is_image_name(entry.name):
                    continue
                st = entry.stat() if entry.is_file() else _dangling_link(entry)
            except OSError:  # a symlink loop (ELOOP), or gone since the listing
                st = _dangling_link(entry) if is_image_name(entry.name) else None
            if st is not None:
                seen_files.add(entry.path)
                yield FileStat(entry.path, st.st_size, st.st_mtime_ns)
        stack.extend(reversed(subdirs))


def _dangling_link(entry: os.DirEntry) -> os.stat_result | None:
    """The link's own stat when `entry` is a symlink leading nowhere (missing target or a loop).

    Such a file is still listed, so the run records why it was skipped; its link stat changes
    once the link is fixed, which makes the next run pick it up. Anything else that is not a
    regular file (a FIFO would block the reader forever) is left out.
    """
    try:
        if entry.is_symlink() and not os.path.exists(entry.path):
            return entry.stat(follow_symlinks=False)
    except OSError:
        pass  # gone since the listing
    return None


def content_hash(path: str, size: int | None = None) -> str:
    """blake2b of the size, the first and the last 64 KiB: cheap, and stable across renames."""
    if object_store.is_uri(path):
        data = object_store.read_bytes(path)
        return stream_hash(io.BytesIO(data), len(data))
    with open_regular(path) as fh:
        return stream_hash(fh, os.fstat(fh.fileno()).st_size if size is None else size)


def stream_hash(fh: BinaryIO, size: int) -> str:
    """content_hash of an open file of `size` bytes."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(str(size).encode())
    digest.update(fh.read(HASH_CHUNK))
    if size > 2 * HASH_CHUNK:
        fh.seek(size - HASH_CHUNK)
        digest.update(fh.read(HASH_CHUNK))
    elif size > HASH_CHUNK:
        digest.update(fh.read())
    return digest.hexdigest()
