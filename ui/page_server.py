"""The page's web server (`streamlit run ui/page_server.py`): Streamlit's own app plus two things.

* `/thumb/{size}/{id}-{hash}.jpg` serves a photo's thumbnail as a plain, immutable file, made on
  first request: the grid is one HTML element whose pictures the browser fetches in parallel and
  caches, instead of Streamlit re-sending every picture on every rerun. Only catalog ids are
  accepted, so no request can name a path.
* Every request whose Host header is not one the server was started for is refused (a DNS
  rebinding page would otherwise reach the photos through the user's browser).
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send
from streamlit.starlette import App

from ui.page_backend import PixseekError, library_root, shared_library
from ui.server import ENV_HOSTS
from ui.thumbs import SIZES, thumbnail

# The URL holds the content hash, so a cached thumbnail is never stale: a changed photo gets a new URL.
IMMUTABLE = {"Cache-Control": "public, max-age=31536000, immutable"}


def allowed_hosts() -> frozenset[str]:
    return frozenset(h.strip().lower() for h in os.environ.get(ENV_HOSTS, "").split(",") if h.strip())


def host_name(header: str) -> str | None:
    """The host name of a Host header without its port ('[::1]:8501' -> '::1'), or None if malformed."""
    try:
        parts = urlsplit(f"//{header}")
        _ = parts.port  # raises on a bad port
    except ValueError:
        return None
    if parts.hostname is None or parts.username is not None or parts.path or parts.query or parts.fragment:
        return None
    return parts.hostname.rstrip(".")


class HostCheck:
    """Refuses HTTP requests (403) and WebSocket upgrades whose Host is not allowed."""

    def __init__(self, app: ASGIApp, hosts: frozenset[str]) -> None:
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and self.hosts:
            header = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            if host_name(header) not in self.hosts:
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                else:
                    await PlainTextResponse("unknown host", status_code=403)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def thumb(request: Request) -> Response:
    size = SIZES.get(request.path_params["size"])
    image_id, _, _ = request.path_params["name"].partition("-")
    if size is None or not image_id.isdigit():
        return PlainTextResponse("no such thumbnail", status_code=404)
    try:
        library = shared_library(library_root())
        photo = library.get(int(image_id))
    except PixseekError as exc:
        return PlainTextResponse(str(exc), status_code=404)
    if photo is None:
        return PlainTextResponse("no such photo", status_code=404)
    made = thumbnail(library.thumbs_dir, photo, size)
    if made.image is None:
        return PlainTextResponse(made.problem or "cannot show this photo", status_code=404)
    if isinstance(made.image, bytes):
        return Response(made.image, media_type="image/jpeg", headers=IMMUTABLE)
    return FileResponse(made.image, media_type="image/jpeg", headers=IMMUTABLE)


app = App(
    "app.py",
    routes=[Route("/thumb/{size}/{name}.jpg", thumb)],
    middleware=[Middleware(HostCheck, hosts=allowed_hosts())],
)
