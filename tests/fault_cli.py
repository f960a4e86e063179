"""`pixseek` with a fault injected from outside, for the crash and environment tests.

    PIXSEEK_FAULT=POINT:N:ACTION python3 tests/fault_cli.py index FOLDER ...

runs the real CLI after wrapping one internal step, so that the N-th time the run reaches POINT
the process sends itself ACTION: `kill` (SIGKILL: no cleanup of any kind), `int` (SIGINT, what
Ctrl-C sends) or `stop` (SIGSTOP: frozen right there until the test sends SIGCONT).
PIXSEEK_FAULT_COMMIT_EVERY=K makes the writer commit every K images, so a small gallery has
many commits to crash between. Production code carries no hooks for any of this.
`python3 tests/fault_cli.py --serve` forks such runs from a process that has done the slow imports
once (see `serve`).

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
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

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
    from indexer import catalog

    first = catalog.MIGRATIONS[1]

    def step(db) -> None:
        first(db)
        reached()

    catalog.MIGRATIONS[1] = step


def _torn_vectors(reached) -> None:
    from indexer.vectors import VectorStore

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
    "plan": lambda reached: _after(_import("indexer.catalog.Catalog"), "insert_pending", reached),
    "rebuild-unlink": _rebuild_unlink,
    "embed": lambda reached: _before(_import("indexer.model.Encoder"), "submit_pixels", reached),
    "vectors-torn": _torn_vectors,
    "vectors": lambda reached: _after(_import("indexer.vectors.VectorStore"), "write", reached),
    "update": lambda reached: _before(_import("indexer.catalog.Catalog"), "update", reached),
    "flushed": lambda reached: _after(_import("indexer.writer.Writer"), "flush", reached,
                                      only_if=lambda writer: bool(writer._done or writer._skipped)),
    "ann-torn": _ann_file(torn=True),
    "ann-renamed": _ann_file(torn=False),
}


def run_cli(args: list[str]) -> None:
    from indexer.writer import Writer
    from ui.cli import main as cli_main

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
    import search.engine  # noqa: F401

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
        for fd, name, flags in ((0, os.devnull, os.O_RDONLY), (1, request["stdout"], os.O_WRONLY | os.O_CREAT),
                                (2, request["stderr"], os.O_WRONLY | os.O_CREAT)):
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


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    if sys.argv[1:] == ["--serve"]:
        serve()
    else:
        run_cli(sys.argv[1:])
