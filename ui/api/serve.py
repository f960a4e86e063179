"""`pixseek serve`: decide who may call the API, then run it under uvicorn until Ctrl-C."""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from search import LibraryPaths, PixseekError
from ui.api.guard import GuardConfig
from ui.server import LOCAL_HOSTS, check_port_free, server_url

WILDCARD_HOSTS = ("0.0.0.0", "::", "")
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
# A JSON body carries the image as base64 (4/3 of its size) plus a few fields.
JSON_OVERHEAD = 64 * 1024
# How the options reach the worker processes uvicorn spawns (as PIXSEEK_TOKEN can give the token).
WORKER_ENV = "PIXSEEK_SERVE_WORKER"


MAX_WORKERS = 64


@dataclass(frozen=True)
class ServeOptions:
    library: LibraryPaths
    host: str = "127.0.0.1"
    port: int = 8700
    token: str | None = None
    cors_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    max_upload_mb: float = 20.0
    device: str | None = None
    runtime: str | None = None  # torch, onnx or auto, as for `pixseek search`
    precision: str | None = None
    workers: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 65535:
            raise PixseekError(f"--port must be from 1 to 65535, not {self.port}")
        if not 1 <= self.workers <= MAX_WORKERS:
            raise PixseekError(f"--workers must be from 1 to {MAX_WORKERS}, not {self.workers}")
        if not self.max_upload_mb > 0:
            raise PixseekError(f"--max-upload-mb must be more than 0, not {self.max_upload_mb:g}")


def api_token(options: ServeOptions, echo: Callable[[str], None]) -> str | None:
    """The token requests must carry: the one given, or on a non-loopback address a new one, printed once."""
    if options.token:
        return options.token
    if options.host in LOCAL_HOSTS:
        return None
    token = secrets.token_urlsafe(32)
    echo(f"API token (printed only now; pass --token or PIXSEEK_TOKEN to choose one): {token}")
    return token


def host_names(options: ServeOptions) -> frozenset[str] | None:
    """The Host header names answered: the address served and --allowed-host; any when on every address."""
    extra = {h.lower() for h in options.allowed_hosts}
    if options.host in WILDCARD_HOSTS:
        return frozenset(LOOPBACK_NAMES | extra) if extra else None
    names = {options.host.lower()} | extra
    return frozenset(names | LOOPBACK_NAMES if options.host in LOCAL_HOSTS else names)


def run(options: ServeOptions, echo: Callable[[str], None]) -> None:
    import uvicorn

    from ui.api.backend import Backend

    check_port_free(options.host, options.port)
    Backend(options.library).close()  # before the token is printed: a missing library fails first
    token = api_token(options, echo)
    url = server_url(options.host, options.port)
    echo(f"pixseek API at {url} (docs {url}/docs, library {options.library.root}); press Ctrl-C to stop")
    # No Server header, no forwarded-for trust: a proxy in front is the deployment's business.
    settings = dict(
        host=options.host,
        port=options.port,
        log_level="warning",
        access_log=False,
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=5,
    )
    if options.workers == 1:
        uvicorn.run(create(options, token), **settings)
        return
    # Processes of their own, each with its model and its search threads: one process's Python
    # runs on one core at a time (the GIL), however many threads it has.
    fields = dataclasses.asdict(options) | {"library": str(options.library.root), "token": token}
    os.environ[WORKER_ENV] = json.dumps(fields)
    uvicorn.run("ui.api.serve:worker_app", factory=True, workers=options.workers, **settings)


def create(options: ServeOptions, token: str | None):
    """The app serving `options`, requests checked against `token`."""
    from ui.api.app import ApiConfig, create_app
    from ui.api.backend import Backend

    backend = Backend(options.library, options.device, options.runtime, options.precision)
    max_upload = int(options.max_upload_mb * 2**20)
    guard = GuardConfig(token=token, allowed_hosts=host_names(options), max_body=max_upload * 4 // 3 + JSON_OVERHEAD)
    return create_app(backend, ApiConfig(guard=guard, max_upload=max_upload, cors_origins=options.cors_origins))


def worker_app():
    """The app of one of `--workers` processes, from the options `run` left in the environment."""
    fields = json.loads(os.environ[WORKER_ENV])
    fields["library"] = LibraryPaths.at(Path(fields["library"]))
    for name in ("cors_origins", "allowed_hosts"):
        fields[name] = tuple(fields[name])
    options = ServeOptions(**fields)
    return create(options, options.token)
