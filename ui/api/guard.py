"""The gate every request passes first: Host check, bearer token, body size, metrics.

A plain ASGI middleware rather than FastAPI dependencies, so unknown routes, the docs and
requests that never reach a route are guarded (and counted) the same way.
"""

from __future__ import annotations

import hmac
import json
import time
from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ui.api.metrics import Metrics

OPEN_PATHS = frozenset({"/healthz"})  # liveness probes carry no token


@dataclass(frozen=True)
class GuardConfig:
    token: str | None  # None: no authentication (loopback only, see ui/api/serve.py)
    allowed_hosts: frozenset[str] | None  # Host header names (no port) accepted; None: any
    max_body: int  # bytes, with or without a Content-Length


class BodyTooLarge(HTTPException):
    """Raised from `receive`: a route reading its body stops there, and the handler answers 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit // 1024} KiB")


def error_body(error: str, hint: str | None) -> bytes:
    return json.dumps({"error": error, "hint": hint}).encode()


def host_name(host_header: str) -> str:
    """`name:port`, `[v6]:port` or `name` -> the name, lower case, without brackets."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class Guard:
    def __init__(self, app: ASGIApp, config: GuardConfig, metrics: Metrics) -> None:
        self.app = app
        self.config = config
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}

        async def send_counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-content-type-options", b"nosniff")]
            await send(message)

        try:
            refusal = self._refusal(scope, headers)
            if refusal is not None:
                await self._reply(send_counted, *refusal)
                return
            await self.app(scope, self._limited(receive), send_counted)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", "other")  # the template (/api/images/{image_id}), never an id
            self.metrics.requests.inc(label, scope["method"], str(status))
            self.metrics.latency.observe(time.perf_counter() - started, label, scope["method"])

    def _refusal(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str, str, list] | None:
        allowed = self.config.allowed_hosts
        # DNS rebinding: a web page served from attacker.example resolved to 127.0.0.1 reaches this
        # server with Host: attacker.example; only the names it was started for are answered.
        if allowed is not None and host_name(headers.get("host", "")) not in allowed:
            return 400, "unknown Host header", "call the server by the name it was started for (see --allowed-host)", []
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.config.max_body):
            return 413, f"request body larger than {self.config.max_body // 1024} KiB", "send a smaller image", []
        token = self.config.token
        if token is None or scope["path"] in OPEN_PATHS or _is_preflight(scope, headers):
            return None
        scheme, _, given = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            return (
                401,
                "missing or wrong API token",
                "send the header Authorization: Bearer TOKEN",
                [(b"www-authenticate", b"Bearer")],
            )
        return None

    def _limited(self, receive: Receive) -> Receive:
        limit, seen = self.config.max_body, 0

        async def receive_limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:  # chunked uploads have no Content-Length to refuse up front
                    raise BodyTooLarge(limit)
            return message

        return receive_limited

    @staticmethod
    async def _reply(send: Send, status: int, error: str, hint: str, extra: list) -> None:
        body = error_body(error, hint)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    *extra,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _is_preflight(scope: Scope, headers: dict[str, str]) -> bool:
    # Browsers send CORS preflights without credentials; the CORS middleware answers them.
    return scope["method"] == "OPTIONS" and "origin" in headers and "access-control-request-method" in headers
