"""Walking image folders and deciding what changed since the last run.

Change detection reads stat data only; content is hashed just for files that might have moved
(a new path whose size matches a vanished one), so an unchanged library re-indexes in a stat pass.
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from indexer.catalog import INDEXED, PENDING, Catalog
from indexer.decode import SUPPORTED_EXTENSIONS
from indexer.errors import PixseekError

HASH_CHUNK = 64 * 1024


@dataclass(frozen=True)
class FileStat:
    path: str
    size: int
    mtime_ns: int

    @property
    def folder(self) -> str:
        return os.path.dirname(self.path)


def is_image_name(name: str) -> bool:
    if name.startswith("."):  # hidden files and macOS "._" resource forks
        return False
    ext = name.rpartition(".")[2].lower()
    return ext in SUPPORTED_EXTENSIONS


def check_roots(roots: list[Path]) -> list[Path]:
    resolved = []
    for root in roots:
        path = Path(root).expanduser()
        if not path.exists():
            raise PixseekError(f"folder not found: {root}", "check the path (and that the drive is mounted)")
        if not path.is_dir():
            raise PixseekError(f"not a folder: {root}", "pass the folder that holds your photos")
        resolved.append(path.resolve())
    return resolved


def walk(roots: list[Path]) -> Iterator[FileStat]:
    """Image files under `roots`, following directory symlinks once each (no loops)."""
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: set[str] = set()
    stack = [str(r) for r in reversed(roots)]
    while stack:
        top = stack.pop()
        try:
            st = os.stat(top)
            if (st.st_dev, st.st_ino) in seen_dirs:
                continue
            seen_dirs.add((st.st_dev, st.st_ino))
            entries = sorted(os.scandir(top), key=lambda e: e.name)
        except OSError:
            continue  # unreadable or vanished folder: nothing under it can be indexed anyway
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
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        if size is None:
            size = os.fstat(fh.fileno()).st_size
        digest.update(str(size).encode())
        digest.update(fh.read(HASH_CHUNK))
        if size > 2 * HASH_CHUNK:
            fh.seek(size - HASH_CHUNK)
            digest.update(fh.read(HASH_CHUNK))
        elif size > HASH_CHUNK:
            digest.update(fh.read())
    return digest.hexdigest()


@dataclass
class Plan:
    """What an index run must do, decided before any image is decoded."""

    new: list[FileStat] = field(default_factory=list)
    changed: list[tuple[int, FileStat]] = field(default_factory=list)  # (old id, new stat)
    retry: list[tuple[int, FileStat]] = field(default_factory=list)  # pending ids left by a crash
    moved: list[tuple[int, FileStat]] = field(default_factory=list)
    touched: list[tuple[int, FileStat]] = field(default_factory=list)  # new mtime, same content
    removed: list[int] = field(default_factory=list)
    unchanged: int = 0

    @property
    def to_embed(self) -> int:
        return len(self.new) + len(self.changed) + len(self.retry)


def _under(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def plan_changes(catalog: Catalog, roots: list[Path], files: Iterator[FileStat]) -> Plan:
    plan = Plan()
    known = catalog.stat_index()
    hashes: dict[str, str | None] = {}
    seen: set[str] = set()
    fresh: list[FileStat] = []
    for f in files:
        seen.add(f.path)
        old = known.get(f.path)
        if old is None:
            fresh.append(f)
            continue
        image_id, size, mtime_ns, status = old
        if status == PENDING:
            plan.retry.append((image_id, f))
        elif size == f.size and mtime_ns == f.mtime_ns:
            plan.unchanged += 1
        else:
            hashes[f.path] = _safe_hash(f)
            row = catalog.get(image_id)
            same = row is not None and row.hash is not None and row.hash == hashes[f.path]
            (plan.touched if same and status == INDEXED else plan.changed).append((image_id, f))

    # Only files under the roots being indexed can have been deleted; other roots are left alone.
    root_strs = [str(r) for r in roots]
    vanished = [p for p in known if p not in seen and _under(p, root_strs)]
    by_size: dict[int, list[int]] = defaultdict(list)
    for p in vanished:
        image_id, size, _, status = known[p]
        if status == INDEXED:
            by_size[size].append(image_id)
    claimed: set[int] = set()
    if by_size:
        vanished_hash = {r.id: r.hash for r in catalog.rows(f"id IN ({','.join(str(i) for s in by_size.values() for i in s)})")}
        for f in fresh:
            candidates = [i for i in by_size.get(f.size, ()) if i not in claimed]
            if not candidates:
                plan.new.append(f)
                continue
            digest = _safe_hash(f)
            match = next((i for i in candidates if vanished_hash.get(i) == digest), None)
            if match is None:
                plan.new.append(f)
            else:
                claimed.add(match)
                plan.moved.append((match, f))
    else:
        plan.new = fresh
    plan.removed = [known[p][0] for p in vanished if known[p][0] not in claimed]
    return plan


def _safe_hash(f: FileStat) -> str | None:
    try:
        return content_hash(f.path, f.size)
    except OSError:
        return None  # unreadable: the decoder will record the reason
