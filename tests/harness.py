"""The one harness for tests that run `pixseek` as its own process: plain subprocesses, fault
injection, fork-server runs, and reading a library's files behind pixseek's back.

    cli(*args)                    `pixseek` in this process, through typer's CliRunner (most tests)
    run(args, env)                a real `pixseek` process (for what only a fresh process shows:
                                  environment variables read at import, a clean exit)
    PIXSEEK_FAULT=POINT:N:ACTION python3 tests/harness.py index FOLDER ...

The second form runs the real CLI after wrapping one internal step, so that the N-th time the run
reaches POINT the process sends itself ACTION: `kill` (SIGKILL: no cleanup of any kind), `int`
(SIGINT, what Ctrl-C sends) or `stop` (SIGSTOP: frozen right there until the test sends SIGCONT).
PIXSEEK_FAULT_COMMIT_EVERY=K makes the writer commit every K images, so a small gallery has
many commits to crash between. PIXSEEK_FAULT_DECODER=NAME:exit|hang makes a decoder worker die
or hang on the file NAME (see `_decoder_fault`). Production code carries no hooks for any of this.
`python3 tests/harness.py --serve` forks such runs from a process that has done the slow imports
once (see `serve`; the `forker` fixture is its client).

Points, in the order an index run meets them:
    migrate       inside the first schema migration, before its commit
    plan          new files have pending ids, before that transaction commits
    rebuild-unlink  --rebuild has committed its pending rows, the old vector file is not yet deleted
    embed         before the N-th model batch
    vectors-torn  half of the N-th vector batch written (the write is cut short)
    vectors       the N-th vector batch is durable, its catalog rows not yet committed
    update        the N-th catalog row update (inside an open transaction)
    flushed       the N-th batch of rows has been committed
    ann-torn      the new index file is half written, not yet renamed into place
    ann-renamed   the new index file is in place, the catalog's in_ann marks not yet updated

`running_ui(library, log)` serves `pixseek ui` for `browser_page(url)`, a headless Chromium session
(tests/test_ui_browser.py, benchmarks/ui_latency.py).
"""

from __future__ import annotations

import json
import os
import re
import selectors
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from click.testing import Result
from typer.testing import CliRunner

HARNESS = Path(__file__).resolve()
REPO = HARNESS.parents[1]
PIXSEEK = [sys.executable, "-c", "from ui.cli import main; main()"]


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


def cli(*args: str, code: int = 0, env: dict[str, str | None] | None = None) -> Result:
    """`pixseek ARGS` in this process, as sqlite-utils tests its CLI: asserts the exit code and returns
    the result (`stdout`, `stderr`, `output`). A crash (not a user error) is raised as it is.
    `env` changes environment variables for the call (None removes one)."""
    from ui.cli import app

    result = CliRunner().invoke(app, list(args), env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == code, result.output
    return result


def run(args: list[str], env: dict[str, str], timeout: int = 180) -> subprocess.CompletedProcess:
    """`pixseek ARGS` as a process of its own, from the repository root."""
    return subprocess.run(PIXSEEK + args, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(proc: subprocess.CompletedProcess | Result | ForkedRun, *words: str) -> None:
    """A failed `run`, `cli` or forked run: a non-zero exit and one line `error: ...` on stderr holding `words`."""
    assert (proc.returncode if hasattr(proc, "returncode") else proc.exit_code) != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    for word in words:
        assert word in lines[0], lines[0]


class Forker:
    """Client of `tests/harness.py --serve`: `pixseek` runs forked from a process that has
    already imported torch and open_clip, so each run starts in milliseconds, not seconds."""

    def __init__(self, workdir: Path, prefix: list[str] = ()) -> None:
        self.workdir = workdir
        self.server = subprocess.Popen(
            [*prefix, sys.executable, str(HARNESS), "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.count = 0

    def _ask(self, request: dict) -> dict:
        self.server.stdin.write(json.dumps(request) + "\n")
        self.server.stdin.flush()
        return json.loads(self.server.stdout.readline())

    def start(
        self, args: list[str], env: dict[str, str], *, fault: str | None = None, commit_every: int | None = None
    ) -> ForkedRun:
        self.count += 1
        out, err = self.workdir / f"run{self.count}.out", self.workdir / f"run{self.count}.err"
        pid = self._ask(
            {"args": args, "env": fault_env(env, fault, commit_every), "stdout": str(out), "stderr": str(err)}
        )["pid"]
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
        return _output(self.out)

    @property
    def stderr(self) -> str:
        return _output(self.err)

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


def _output(path: Path) -> str:
    """What a forked run has written to `path`: nothing yet if it has not opened the file."""
    try:
        return path.read_bytes().decode("utf-8", "surrogateescape")
    except FileNotFoundError:
        return ""


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
    from indexer.library.rows import path_from_db

    conn = sqlite3.connect(f"{(root / 'catalog.db').as_uri()}?mode=ro", uri=True)
    try:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        rows = (
            {
                path_from_db(p): (i, st, reason, in_ann)
                for p, i, st, reason, in_ann in conn.execute("SELECT path, id, status, reason, in_ann FROM images")
            }
            if "images" in tables
            else {}
        )
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


# fault injection (in the process that runs the CLI) --------------------------------------------------
ACTIONS = {"kill": signal.SIGKILL, "int": signal.SIGINT, "stop": signal.SIGSTOP}


def install(spec: str) -> None:
    """Arrange for ACTION on the N-th time the run reaches POINT (spec: "POINT:N:ACTION")."""
    point, n, action = spec.split(":")
    calls = 0

    def reached() -> None:
        nonlocal calls
        calls += 1
        if calls == int(n):
            os.kill(os.getpid(), ACTIONS[action])

    _POINTS[point](reached)


def _before(owner, name: str, reached) -> None:
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        reached()
        return original(*args, **kwargs)

    setattr(owner, name, wrapper)


def _after(owner, name: str, reached, only_if=lambda *args: True) -> None:
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        counts = only_if(*args)  # judged before the call changes things
        result = original(*args, **kwargs)
        if counts:
            reached()
        return result

    setattr(owner, name, wrapper)


def _migrate(reached) -> None:
    from indexer.library import schema

    first = schema.MIGRATIONS[1]

    def step(db) -> None:
        first(db)
        reached()

    schema.MIGRATIONS[1] = step


def _torn_vectors(reached) -> None:
    from indexer.library.vectors import VectorStore

    original = VectorStore.write

    def write(self, ids, vectors) -> None:
        half = max(1, len(ids) // 2)
        original(self, ids[:half], vectors[:half])
        reached()
        original(self, ids, vectors)

    VectorStore.write = write


def _ann_file(torn: bool):
    def install_(reached) -> None:
        original = os.replace

        def replace(src, dst, *args, **kwargs) -> None:
            is_index = Path(dst).name == "index.faiss"
            if is_index and torn:
                os.truncate(src, os.stat(src).st_size // 2)
                reached()
            original(src, dst, *args, **kwargs)
            if is_index and not torn:
                reached()

        os.replace = replace

    return install_


def _rebuild_unlink(reached) -> None:
    original = Path.unlink

    def unlink(self, missing_ok: bool = False) -> None:
        if self.name == "vectors.f16":
            reached()
        original(self, missing_ok=missing_ok)

    Path.unlink = unlink


def _import(dotted: str):
    module, _, name = dotted.rpartition(".")
    return getattr(__import__(module, fromlist=[name]), name)


_POINTS = {
    "migrate": _migrate,
    "plan": lambda reached: _after(_import("indexer.library.catalog.Catalog"), "insert_pending", reached),
    "rebuild-unlink": _rebuild_unlink,
    "embed": lambda reached: _before(_import("indexer.model.Encoder"), "submit_pixels", reached),
    "vectors-torn": _torn_vectors,
    "vectors": lambda reached: _after(_import("indexer.library.vectors.VectorStore"), "write", reached),
    "update": lambda reached: _before(_import("indexer.library.catalog.Catalog"), "update", reached),
    "flushed": lambda reached: _after(
        _import("indexer.writer.Writer"), "flush", reached, only_if=lambda writer: bool(writer._done or writer._skipped)
    ),
    "ann-torn": _ann_file(torn=True),
    "ann-renamed": _ann_file(torn=False),
}


def run_cli(args: list[str]) -> None:
    from indexer.writer import Writer
    from ui.cli import main as cli_main

    # Ctrl-C as in a terminal, even when the tests themselves run as a background job of a
    # non-interactive shell, which starts them with SIGINT ignored (and Python keeps it so).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if os.environ.get("PIXSEEK_FAULT"):
        install(os.environ["PIXSEEK_FAULT"])
    if os.environ.get("PIXSEEK_FAULT_COMMIT_EVERY"):
        Writer.commit_every = int(os.environ["PIXSEEK_FAULT_COMMIT_EVERY"])
    sys.argv = ["pixseek", *args]
    cli_main()


def serve() -> None:
    """Start-up server: import torch, open_clip and pixseek once, then fork one CLI run per request.

    Each request is a JSON line on stdin: {"args", "env", "stdout", "stderr"} forks a run and
    answers {"pid"}; {"wait": pid, "block": bool} answers {"status"} (None while still running;
    negative: killed by that signal). A forked run is a process of its own, in its own session,
    so tests can kill, stop and interrupt it like any other; it only skips the seconds of imports.
    """
    import faiss  # noqa: F401
    import open_clip  # noqa: F401
    import torch  # noqa: F401

    import indexer.runner  # noqa: F401
    import search.library  # noqa: F401

    for line in sys.stdin:
        request = json.loads(line)
        if "wait" in request:
            pid, status = os.waitpid(request["wait"], 0 if request["block"] else os.WNOHANG)
            reply = {"status": os.waitstatus_to_exitcode(status) if pid else None}
        else:
            pid = os.fork()
            if pid == 0:
                _forked_run(request)
            reply = {"pid": pid}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


def _forked_run(request: dict) -> None:
    code = 1
    try:
        os.setsid()
        for fd, name, flags in (
            (0, os.devnull, os.O_RDONLY),
            (1, request["stdout"], os.O_WRONLY | os.O_CREAT),
            (2, request["stderr"], os.O_WRONLY | os.O_CREAT),
        ):
            os.dup2(os.open(name, flags, 0o644), fd)
        os.environ.clear()
        os.environ.update(request["env"])
        run_cli(request["args"])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


# the page in a browser (tests/test_ui_browser.py, benchmarks/ui_latency.py) -----------------------
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
UI_START_TIMEOUT_S = 120  # the server imports torch and Streamlit on a 2-core machine
PAGE_TIMEOUT_MS = 60_000  # the first page load also loads the model
DESKTOP = {"width": 1440, "height": 1000}
# The grid is a component in a shadow root under the element keyed "grid".
GRID_ROOT = """const gridRoot = () => {
    const box = document.querySelector(".st-key-grid");
    for (const el of box ? box.querySelectorAll("*") : []) if (el.shadowRoot) return el.shadowRoot;
    return null;
};"""
# True once a grid drawn since the last press_search (which remembers the grid that was there
# before) shows its first thumbnail: what the user sees, whatever the rest of the rerun still does.
FIRST_PAGE_SHOWN = (
    "() => {"
    + GRID_ROOT
    + """
    const root = gridRoot();
    const grid = root && root.querySelector(".pixseek-grid");
    const img = grid && grid.querySelector(".tile img");
    return grid && grid !== window.__gridBefore && img && img.complete && img.naturalWidth > 0;
}"""
)
# Then the rerun is over: the next click is not queued behind it.
RERUN_DONE = """() => document.querySelector("[data-testid='stApp']").dataset.testScriptState === 'notRunning'"""
REMEMBER_GRID = (
    "() => {"
    + GRID_ROOT
    + """
    const root = gridRoot();
    window.__gridBefore = root && root.querySelector(".pixseek-grid");
}"""
)
TILE = ".tile"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_ui(library: Path, log: Path) -> Iterator[str]:
    """`pixseek ui` of this checkout on a free port; yields the URL it prints, and always stops it."""
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [*PIXSEEK, "ui", "--library", str(library), "--port", str(free_port())],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            start_new_session=True,
        )
    try:
        yield _printed_url(proc, log)
    finally:
        proc.terminate()  # pixseek must take its Streamlit child down with it...
        try:
            proc.wait(timeout=15)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # ...and whatever did not is killed here
            except ProcessLookupError:
                pass


def _printed_url(proc: subprocess.Popen, log: Path) -> str:
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + UI_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if not selector.select(timeout=deadline - time.monotonic()):
            break
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"pixseek ui exited ({proc.wait()}): {log.read_text()}")
        found = re.search(r"running at (http://\S+)", line)
        if found:
            return found.group(1)
    raise AssertionError(f"pixseek ui printed no URL within {UI_START_TIMEOUT_S} s: {log.read_text()}")


@contextmanager
def browser_page(url: str, viewport: dict[str, int] = DESKTOP, requests: list[str] | None = None) -> Iterator[object]:
    """A fresh session on the start page (model loaded, latest photos drawn); every URL the page
    requests is appended to `requests`."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport=viewport)
            if requests is not None:
                page.on("request", lambda request: requests.append(request.url))
            page.set_default_timeout(PAGE_TIMEOUT_MS)
            page.goto(url)
            page.get_by_text("Latest photos").wait_for()
            page.wait_for_function(FIRST_PAGE_SHOWN, polling="raf")
            yield page
        finally:
            browser.close()


def press_search(page, text: str) -> float:
    """Type a query and press Enter; returns when Enter was pressed (time.perf_counter)."""
    box = page.get_by_placeholder("Describe a photo")
    box.fill(text)
    page.evaluate(REMEMBER_GRID)
    pressed = time.perf_counter()
    box.press("Enter")
    return pressed


# fault injection in decoder workers ---------------------------------------------------------------
DECODER_FAULT = "PIXSEEK_FAULT_DECODER"  # "NAME:exit" or "NAME:hang": what a worker does on the file NAME


def _decoder_fault(spec: str) -> None:
    """Make decoding the file named NAME kill its worker (os._exit, as the OOM killer would) or hang it
    (as a dead network drive would). Installed where workers come from: multiprocessing's forkserver
    imports the main script (this file) as __mp_main__ before it forks any worker."""
    import indexer.reader

    name, action = spec.rsplit(":", 1)
    original = indexer.reader.read_one

    def read_one(job, *args, **kwargs):
        if os.path.basename(job.path) == name:
            if action == "exit":
                os._exit(1)
            time.sleep(3600)
        return original(job, *args, **kwargs)

    indexer.reader.read_one = read_one


if __name__ == "__mp_main__" and os.environ.get(DECODER_FAULT):
    _decoder_fault(os.environ[DECODER_FAULT])

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    if sys.argv[1:] == ["--serve"]:
        serve()
    else:
        run_cli(sys.argv[1:])


# synthetic libraries: many images without photos (tests/test_scale.py, benchmarks/scale.py) -----
SYNTH_ROOT = Path("/synthetic")
SYNTH_FOLDERS, SYNTH_CAMERAS, SYNTH_DAYS = 1000, 20, 2000
_SYNTH_LATENT = 64  # vectors vary along this many directions, as embeddings do along a few


@dataclass
class Synthetic:
    """A library of clustered unit vectors whose catalog rows carry a folder (one of SYNTH_FOLDERS),
    a camera (one of SYNTH_CAMERAS) and a day (one of SYNTH_DAYS), each drawn uniformly."""

    root: Path
    folder: np.ndarray  # per id (row 0 unused), like the vector file
    camera: np.ndarray
    day: np.ndarray
    centres: np.ndarray  # (clusters, latent)
    basis: np.ndarray  # (latent, dim), orthonormal rows
    spread: float

    def vectors(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """n vectors drawn as the library's were (queries: near the library's images, not among them)."""
        latent = self.centres[rng.integers(0, len(self.centres), n)] + rng.normal(0, self.spread, (n, len(self.basis)))
        out = latent @ self.basis + rng.normal(0, 0.01, (n, self.basis.shape[1]))
        return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)

    @staticmethod
    def folder_path(folder: int) -> Path:
        return SYNTH_ROOT / f"f{folder:03d}"

    @staticmethod
    def camera_model(camera: int) -> str:
        return f"Model {camera:02d}"

    @staticmethod
    def day_iso(day: int) -> str:
        from datetime import date, timedelta

        return (date(2015, 1, 1) + timedelta(days=int(day))).isoformat()


def synthetic_library(
    root: Path,
    n: int,
    dim: int = 512,
    *,
    kind: str = "auto",
    seed: int = 0,
    batch: int = 100_000,
    keywords: bool = True,
    write: bool = True,
) -> Synthetic:
    """Write `n` synthetic images into a new library at `root` through the library's own catalog,
    vector store and ANN build, as an index run would (no photos, no model). keywords: write
    their keyword documents; write=False only describes the library written before (same seed)."""
    from indexer import ann
    from indexer.library import LibraryPaths
    from indexer.library.catalog import Catalog
    from indexer.library.rows import INDEXED, ImageRow
    from indexer.library.vectors import VectorStore

    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(dim, _SYNTH_LATENT)))[0].T
    centres = rng.normal(0, 1, (max(8, min(1000, n // 100)), _SYNTH_LATENT))
    lib = Synthetic(
        root,
        folder=rng.integers(0, SYNTH_FOLDERS, n + 1),
        camera=rng.integers(0, SYNTH_CAMERAS, n + 1),
        day=rng.integers(0, SYNTH_DAYS, n + 1),
        centres=centres,
        basis=basis,
        spread=0.35,
    )
    if not write:
        return lib
    paths = LibraryPaths.at(root)
    root.mkdir(parents=True, exist_ok=True)
    store = VectorStore(paths.vectors, dim)
    with Catalog(paths.catalog, create=True) as catalog:
        catalog.save_settings(model_name="synthetic", model_fingerprint="synthetic", dim=dim)
        for start in range(1, n + 1, batch):
            ids = np.arange(start, min(n, start + batch - 1) + 1)
            store.write(ids, lib.vectors(rng, len(ids)))
            rows = [
                ImageRow(
                    id=int(i),
                    path=str(lib.folder_path(lib.folder[i]) / f"{i:08d}.jpg"),
                    folder=str(lib.folder_path(lib.folder[i])),
                    taken_at=f"{lib.day_iso(lib.day[i])}T12:00:00",
                    camera_make="Synthetic",
                    camera_model=lib.camera_model(lib.camera[i]),
                    size=1,
                    hash=f"{i:016x}",
                    status=INDEXED,
                )
                for i in ids.tolist()
            ]
            catalog.insert_rows(rows, keywords=keywords)
        ann.refresh(catalog, paths, kind)
        catalog.save_settings(index_kind=kind, last_indexed_at="2026-01-01T00:00:00")
    return lib
