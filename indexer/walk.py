"""The walk stage: image files under the roots, with their stat data (plan.py decides what changed)."""

from __future__ import annotations

import errno
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
                st = entry.stat()
                found: FileStat | None = FileStat(entry.path, st.st_size, st.st_mtime_ns)
            except OSError as exc:  # a symlink loop (ELOOP) or to nowhere, a path over PATH_MAX, or gone
                found = _unfollowed(entry, exc) if is_image_name(entry.name) else None
            if found is not None:
                # Everything named like an image is listed, FIFOs and devices too: the reader refuses
                # what is not a regular file (without opening it for reading, which could block), and
                # the run records why it was skipped.
                seen_files.add(entry.path)
                yield found
        stack.extend(reversed(subdirs))


def _unfollowed(entry: os.DirEntry, exc: OSError) -> FileStat | None:
    """What is known of an entry that cannot be stat'ed through: a symlink leading nowhere (missing
    target or a loop) by the link's own stat, which changes once the link is fixed; a path too long
    to stat by a zero stat, so it is listed and its reason recorded. None: gone since the listing."""
    if exc.errno == errno.ENAMETOOLONG:
        return FileStat(entry.path, 0, 0)
    try:
        st = entry.stat(follow_symlinks=False)
    except OSError:
        return None
    return FileStat(entry.path, st.st_size, st.st_mtime_ns)


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
