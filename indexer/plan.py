"""Deciding what changed since the last run, and recording it before any image is decoded.

Change detection reads stat data only; content is hashed just for files that might have moved
(a new path whose size matches a vanished one), so an unchanged library re-indexes in a stat pass.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from indexer import decode
from indexer.library.catalog import Catalog
from indexer.library.rows import INDEXED, PENDING, ImageRow
from indexer.walk import FileStat, content_hash

# Skip reasons that say more about the moment than about the file (permissions, a flaky drive,
# memory): such files are tried again on the next run even when their stat data did not change.
_TRANSIENT_REASONS = (
    decode.REASON_PERMISSION,
    decode.REASON_MEMORY,
    decode.REASON_VANISHED,
    "read error:",
    "cannot read the file (",
)


def is_transient(reason: str | None) -> bool:
    return reason is not None and reason.startswith(_TRANSIENT_REASONS)


@dataclass
class Job:
    """A file for the decode stage: its catalog id (pending), path and size."""

    id: int
    path: str
    size: int


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

    def record(self, catalog: Catalog, first_id: int) -> list[Job]:
        """Record moves, removals and touches; give every file to embed an id. One transaction."""
        with catalog.transaction():
            catalog.delete(self.removed)
            for image_id, f in self.moved:
                catalog.update(image_id, path=f.path, folder=f.folder, size=f.size, mtime_ns=f.mtime_ns)
            catalog.refresh_keywords([image_id for image_id, _ in self.moved])  # the new name finds it
            for image_id, f in self.touched:
                catalog.update(image_id, size=f.size, mtime_ns=f.mtime_ns)
            # A changed file gets a fresh id (and so a fresh vector row): its old vector stays intact
            # for readers of the previous snapshot until this run commits.
            catalog.delete([image_id for image_id, _ in self.changed])
            fresh = self.new + [f for _, f in self.changed]
            ids = catalog.insert_pending(
                [ImageRow(path=f.path, folder=f.folder, size=f.size, mtime_ns=f.mtime_ns) for f in fresh], first_id
            )
            for image_id, f in self.retry:
                catalog.update(image_id, size=f.size, mtime_ns=f.mtime_ns)
        jobs = [Job(i, f.path, f.size) for i, f in zip(ids, fresh)]
        return jobs + [Job(i, f.path, f.size) for i, f in self.retry]

    @property
    def fresh_count(self) -> int:
        """How many of `record`'s jobs (the first ones) got rows inserted by this run."""
        return len(self.new) + len(self.changed)


def is_under(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def plan_changes(
    catalog: Catalog, roots: list[Path], files: Iterator[FileStat], unreadable: list[str] | None = None
) -> Plan:
    """What changed under `roots`. `unreadable`: folders the walk could not list (filled while
    `files` is consumed); their catalogued photos are kept, not taken for deleted."""
    plan = Plan()
    known = catalog.stat_index()
    retry_skipped = {row.id for row in catalog.skipped() if is_transient(row.reason)}
    seen: set[str] = set()
    fresh: list[FileStat] = []
    for f in files:
        seen.add(f.path)
        old = known.get(f.path)
        if old is None:
            fresh.append(f)
            continue
        image_id, size, mtime_ns, status = old
        if status == PENDING or image_id in retry_skipped:
            plan.retry.append((image_id, f))
        elif size == f.size and mtime_ns == f.mtime_ns:
            plan.unchanged += 1
        else:
            digest = _safe_hash(f)
            old_hash = catalog.hashes([image_id]).get(image_id)
            same = old_hash is not None and old_hash == digest
            (plan.touched if same and status == INDEXED else plan.changed).append((image_id, f))

    # Only files under the roots being indexed can have been deleted; other roots are left alone.
    root_strs = [str(r) for r in roots]
    kept = unreadable or []
    vanished = [p for p in known if p not in seen and is_under(p, root_strs) and not is_under(p, kept)]
    by_size: dict[int, list[int]] = defaultdict(list)
    for p in vanished:
        image_id, size, _, status = known[p]
        if status == INDEXED:
            by_size[size].append(image_id)
    claimed: set[int] = set()
    if by_size:
        vanished_hash = catalog.hashes([i for ids in by_size.values() for i in ids])
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
