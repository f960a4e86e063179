"""Helpers for the crash, hostile-file and environment tests: run `pixseek` as its own process
(optionally with a fault from tests/fault_cli.py) and read a library's files behind pixseek's
back, to check that catalog, vectors and FAISS index agree."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

FAULT_CLI = Path(__file__).resolve().parent / "fault_cli.py"


def pixseek_env() -> dict[str, str]:
    """This process's environment without PIXSEEK_LIBRARY: the runs here always name --library."""
    return {k: v for k, v in os.environ.items() if k != "PIXSEEK_LIBRARY"}


def fault_env(env: dict[str, str], fault: str | None, commit_every: int | None) -> dict[str, str]:
    env = dict(env)
    env.pop("PIXSEEK_FAULT", None)
    if fault is not None:
        env["PIXSEEK_FAULT"] = fault
    if commit_every is not None:
        env["PIXSEEK_FAULT_COMMIT_EVERY"] = str(commit_every)
    return env


class Forker:
    """Client of `tests/fault_cli.py --serve`: `pixseek` runs forked from a process that has
    already imported torch and open_clip, so each run starts in milliseconds, not seconds."""

    def __init__(self, workdir: Path, prefix: list[str] = ()) -> None:
        self.workdir = workdir
        self.server = subprocess.Popen([*prefix, sys.executable, str(FAULT_CLI), "--serve"], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, text=True)
        self.count = 0

    def _ask(self, request: dict) -> dict:
        self.server.stdin.write(json.dumps(request) + "\n")
        self.server.stdin.flush()
        return json.loads(self.server.stdout.readline())

    def start(self, args: list[str], env: dict[str, str], *, fault: str | None = None,
              commit_every: int | None = None) -> ForkedRun:
        self.count += 1
        out, err = self.workdir / f"run{self.count}.out", self.workdir / f"run{self.count}.err"
        pid = self._ask({"args": args, "env": fault_env(env, fault, commit_every),
                         "stdout": str(out), "stderr": str(err)})["pid"]
        return ForkedRun(self, pid, out, err)

    def run(self, args: list[str], env: dict[str, str], **kwargs) -> ForkedRun:
        run = self.start(args, env, **kwargs)
        run.wait()
        return run

    def close(self) -> None:
        self.server.kill()  # its runs have all been waited for; nothing to finish
        self.server.wait()


@dataclass
class ForkedRun:
    forker: Forker
    pid: int
    out: Path
    err: Path
    returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.forker._ask({"wait": self.pid, "block": False})["status"]
        return self.returncode

    def wait(self) -> int:
        if self.returncode is None:
            self.returncode = self.forker._ask({"wait": self.pid, "block": True})["status"]
        return self.returncode

    @property
    def stdout(self) -> str:
        return self.out.read_bytes().decode("utf-8", "surrogateescape")

    @property
    def stderr(self) -> str:
        return self.err.read_bytes().decode("utf-8", "surrogateescape")

    def wait_until_stopped(self, timeout: float = 120) -> None:
        """Block until the run has frozen itself (a `:stop` fault); fail if it ended instead."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(f"/proc/{self.pid}/stat") as fh:
                state = fh.read().rsplit(")", 1)[1].split()[0]
            if state == "T":
                return
            if state == "Z":
                raise AssertionError(f"ended ({self.wait()}) before reaching its stop point: {self.stderr}")
            time.sleep(0.01)
        raise AssertionError("the run never reached its stop point")


@dataclass
class LibraryState:
    rows: dict[str, tuple[int, str, str | None, int]]  # path -> (id, status, reason, in_ann)
    ann_ids: set[int] | None  # None: no index file
    vectors: np.ndarray  # float32, row = id

    def ids(self, status: str = "indexed") -> set[int]:
        return {i for i, st, _, _ in self.rows.values() if st == status}

    def nonzero_vector_ids(self) -> set[int]:
        return set(np.flatnonzero(np.abs(self.vectors).sum(axis=1) > 0).tolist())


def read_state(root: Path) -> LibraryState:
    """Everything on disk, read with plain sqlite3/numpy/faiss rather than pixseek's own classes."""
    from indexer.catalog import path_from_db

    conn = sqlite3.connect(f"{(root / 'catalog.db').as_uri()}?mode=ro", uri=True)
    try:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        rows = {path_from_db(p): (i, st, reason, in_ann) for p, i, st, reason, in_ann in
                conn.execute("SELECT path, id, status, reason, in_ann FROM images")} if "images" in tables else {}
        settings = dict(conn.execute("SELECT key, value FROM settings").fetchall()) if "settings" in tables else {}
        dim = int(settings.get("dim") or 0)
    finally:
        conn.close()
    vectors = np.zeros((0, max(dim, 1)), np.float32)
    if dim and (root / "vectors.f16").exists():
        raw = np.fromfile(root / "vectors.f16", dtype=np.float16)
        vectors = raw[: len(raw) // dim * dim].reshape(-1, dim).astype(np.float32)
    ann_ids = None
    if (root / "index.faiss").exists():
        import faiss

        index = faiss.read_index(str(root / "index.faiss"))
        ann_ids = set(faiss.vector_to_array(index.id_map).tolist())
    return LibraryState(rows, ann_ids, vectors)


def assert_consistent(root: Path, expected: dict[str, str], files_changed: bool = False) -> LibraryState:
    """The library holds exactly one row per file with the expected status (path -> status), and
    catalog, vectors and ANN index agree on the indexed ids; no temporary file is left over.

    files_changed: a changed or deleted file leaves its old vector row behind (never reused, as a
    reader of the older snapshot may still score it), so only indexed ids must have vectors.
    """
    state = read_state(root)
    assert {p: st for p, (_, st, _, _) in state.rows.items()} == expected
    indexed = state.ids("indexed")
    assert (state.ann_ids or set()) == indexed
    if files_changed:
        assert state.nonzero_vector_ids() >= indexed
    else:
        assert state.nonzero_vector_ids() == indexed
    assert all(in_ann == (st == "indexed") for _, st, _, in_ann in state.rows.values())
    assert not [p.name for p in root.iterdir() if p.name.endswith(".tmp")]
    return state


def unprivileged_prefix() -> list[str] | None:
    """A command prefix under which file permissions apply: none needed when not root; as root,
    setpriv drops the capabilities that let root ignore them (None: no way to do it here)."""
    if os.geteuid() != 0:
        return []
    caps = "-dac_override,-dac_read_search"
    return ["setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}"] if shutil.which("setpriv") else None


@pytest.fixture(scope="module")
def forker(tmp_path_factory):
    """One fork server per test module (import as a fixture). Its runs obey file permissions
    where that can be arranged (`permissions_apply`), so chmod really denies access, as for users."""
    prefix = unprivileged_prefix()
    server = Forker(tmp_path_factory.mktemp("runs"), prefix or [])
    server.permissions_apply = prefix is not None
    yield server
    server.close()


@pytest.fixture
def env() -> dict[str, str]:
    return pixseek_env()
