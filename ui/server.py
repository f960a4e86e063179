"""`pixseek ui`: run the Streamlit page as a child process and say where it is once it answers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from indexer.errors import PixseekError
from search import ENV_LIBRARY, LibraryPaths

ENV_HOSTS = "PIXSEEK_UI_HOSTS"  # the host names the page may be reached by, for ui/page_server.py
MAX_UPLOAD_MB = 20  # an example photo for "search by photo": the uploader's limit and the server's
SERVER = Path(__file__).with_name("page_server.py")
START_TIMEOUT_S = 120.0  # first start imports torch and Streamlit; a slow disk can take a while
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def streamlit_command(host: str, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(SERVER),
        "--server.address",
        host,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        # A photo app, not a dev tool: no deploy/rerun menu, no tracebacks in the browser, no
        # watching the source files for edits.
        "--client.toolbarMode",
        "viewer",
        "--client.showErrorDetails",
        "none",
        "--server.fileWatcherType",
        "none",
        # A full garbage collection after every rerun walks the model's whole heap: the page would
        # show its results and then stay busy (and deaf to the next click) for as long again.
        "--runner.postScriptGC",
        "false",
        # The uploader's limit, enforced by the server too: a client can skip the widget.
        "--server.maxUploadSize",
        str(MAX_UPLOAD_MB),
        "--server.maxMessageSize",
        str(MAX_UPLOAD_MB + 5),
    ]


def allowed_hosts(host: str) -> list[str]:
    """The Host header names a browser may use to reach a server listening on `host`.

    Any other name is refused (ui/page_server.py): a DNS rebinding page names its own.
    """
    names = {host, *LOCAL_HOSTS}
    if host in ("0.0.0.0", "::", ""):
        names |= {socket.gethostname(), socket.getfqdn()}
        try:
            names |= {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)}
        except OSError:
            pass  # a host name that does not resolve: the name itself still works
    return sorted(n.lower() for n in names if n)


def serve(library: LibraryPaths, host: str, port: int, echo: Callable[[str], None]) -> None:
    """Start the page, print its URL when it answers, and stop it on Ctrl-C or SIGTERM."""
    check_port_free(host, port)
    env = {
        **os.environ,
        ENV_LIBRARY: str(library.root),
        ENV_HOSTS: ",".join(allowed_hosts(host)),
        # A query is one small batch: a second torch thread mostly waits for the first, and on a
        # machine that is also drawing the page it costs several times what it saves
        # (benchmarks/README.md, ui_latency.py). OMP_NUM_THREADS set by the user wins.
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }
    # Streamlit's own banner would repeat the URL; its warnings and errors still reach stderr.
    child = subprocess.Popen(streamlit_command(host, port), env=env, stdout=subprocess.DEVNULL)
    # Without this a plain `kill` of pixseek would leave the server running on its own.
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        _wait_until_serving(child, host, port)
        echo(f"pixseek is running at {server_url(host, port)} (library {library.root}); press Ctrl-C to stop")
        if host not in LOCAL_HOSTS:
            echo("note: anyone who can reach this computer on that port can see your photos")
        if child.wait() != 0:
            raise PixseekError(f"the page server stopped (exit {child.returncode})", "see the messages above")
    except KeyboardInterrupt:
        echo("stopped")
    finally:
        signal.signal(signal.SIGTERM, previous)
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()


def server_url(host: str, port: int) -> str:
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()  # listening everywhere: the name others reach it by
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise PixseekError(
                f"cannot serve on {host}:{port} ({exc.strerror})",
                "pass another --port (or stop what is using this one)",
            ) from None


def _wait_until_serving(child: subprocess.Popen, host: str, port: int) -> None:
    # A server listening on every address is asked on the loopback one.
    probe = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    url = server_url(probe, port) + "/_stcore/health"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise PixseekError(
                f"the page server stopped while starting (exit {child.returncode})", "see the messages above"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)  # polling a starting server: there is nothing to wait on instead
    raise PixseekError(f"the page server did not answer within {START_TIMEOUT_S:.0f} s", "try again")
