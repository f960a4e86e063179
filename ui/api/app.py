"""The FastAPI app of `pixseek serve`: routes, error replies, start-up.

Every error is JSON {"error", "hint"} with a status that says whose fault it is; no route takes
a path, only catalog ids, and files are served only for catalogued, indexed photos.
"""

from __future__ import annotations

import base64
import binascii
import mimetypes
import os
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi import Path as PathParam
from fastapi import Query as QueryParam
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from indexer.errors import NotInLibrary, PixseekError, UnreadableImage
from search import Filters, build_request
from ui.api.backend import Backend, ModelNotReady, uses_model
from ui.api.guard import Guard, GuardConfig
from ui.api.metrics import Metrics
from ui.api.schemas import (
    MAX_NAME_CHARS,
    MAX_OFFSET,
    MAX_TERMS,
    ApiError,
    ConceptDetail,
    ConceptSummary,
    EmbedBody,
    Embedding,
    Explanation,
    Hit,
    Links,
    Photo,
    SearchBody,
    SearchParams,
    SearchResponse,
    TeachBody,
)
from ui.thumbs import GRID, LARGE, thumbnail

THUMB_SIZES = {size.name: size for size in (GRID, LARGE)}
# Types mimetypes may not know on a minimal system; the rest come from it.
IMAGE_TYPES = {".heic": "image/heic", ".heif": "image/heif", ".webp": "image/webp", ".avif": "image/avif"}
ERRORS = {status: {"model": ApiError} for status in (400, 401, 404, 413, 415, 422, 503)}


class FileGone(PixseekError):
    """A catalogued photo whose file or thumbnail cannot be had now."""


# Whose fault a PixseekError is, by its class; any other is a bad request.
STATUS = {NotInLibrary: 404, FileGone: 404, UnreadableImage: 415, ModelNotReady: 503}


def status_of(exc: PixseekError) -> int:
    return next((status for kind, status in STATUS.items() if isinstance(exc, kind)), 400)


@dataclass(frozen=True)
class ApiConfig:
    guard: GuardConfig
    max_upload: int  # bytes of one uploaded image
    cors_origins: tuple[str, ...] = ()


def error_response(status: int, error: str, hint: str | None = None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "hint": hint}, status_code=status, headers=headers)


def create_app(backend: Backend, config: ApiConfig) -> FastAPI:
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Loaded beside the server, not before it: /healthz answers while a big model loads.
        threading.Thread(target=backend.load_model, name="load-model", daemon=True).start()
        yield
        backend.close()

    app = FastAPI(
        title="pixseek",
        version="0.1.0",
        lifespan=lifespan,
        redoc_url=None,
        responses=ERRORS,
        description="Semantic search over a pixseek photo library. Ids only: no request names a file.",
    )
    if config.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(Guard, config=config.guard, metrics=metrics)
    _add_error_handlers(app)

    def upload_bytes(encoded: str | None) -> bytes | None:
        if encoded is None:
            return None
        if len(encoded) > config.max_upload * 4 // 3 + 4:
            raise _too_large(config.max_upload)
        try:
            return base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise HTTPException(422, "image is not valid base64") from None

    async def read_upload(file: UploadFile) -> bytes:
        data = await file.read(config.max_upload + 1)
        if len(data) > config.max_upload:
            raise _too_large(config.max_upload)
        return data

    async def run_search(params: SearchParams, image: bytes | None) -> Response:
        given = [
            kind
            for kind, value in (
                ("text", params.text),
                ("image", image),
                ("like", params.like),
                ("words", params.words),
                ("concept", params.concept),
            )
            if value is not None
        ]
        if not given:
            raise HTTPException(422, "nothing to search for: give text, image, like, words or concept")
        if params.text is not None and backend.count_terms(params.text) > MAX_TERMS:
            raise PixseekError(f"the query has more than {MAX_TERMS} terms", "search for fewer things at once")
        window = params.offset + params.k
        f = params.filters
        filters = Filters(
            folder=f.folder,
            date_from=_day(f.date_from),
            date_to=_day(f.date_to),
            camera=f.camera,
            has_gps=f.gps,
            tag=f.tag,
        )
        request = build_request(
            params.text,
            words=params.words,
            image=image,
            like=params.like,
            k=window,
            min_score=params.min_score,
            min_z=params.min_z,
            filters=filters,
            sort=params.sort,
            dedupe=params.dedupe,
            ensemble=params.ensemble,
            allow_paths=False,
            concept=params.concept,
            min_prob=params.min_prob,
            explain=params.explain,
        )

        def answer() -> str:
            # On the search thread, not the event loop, which every request's parsing goes through.
            results, note = backend.search(request)
            # Hits are built from the catalog's typed rows, unvalidated: validating each hit again,
            # and the response once more in FastAPI, was a good part of a search request's CPU.
            page = [
                Hit.model_construct(
                    rank=params.offset + i + 1,
                    score=round(r.score, 4),
                    matched_words=r.matched_words,
                    explanation=None if r.explanation is None else Explanation.model_validate(r.explanation),
                    **_photo_fields(r),
                )
                for i, r in enumerate(results[params.offset : window])
            ]
            more = len(results) == window and window <= MAX_OFFSET
            return SearchResponse.model_construct(
                results=page, offset=params.offset, k=params.k, next_offset=window if more else None, note=note
            ).model_dump_json()

        started = time.perf_counter()
        body = await backend.call(answer, model=uses_model(request))
        metrics.search.observe(time.perf_counter() - started, given[0] if len(given) == 1 else "mixed")
        return Response(body, media_type="application/json")

    async def run_embed(text: str | None, image: bytes | None, ensemble: bool) -> Embedding:
        started = time.perf_counter()
        if text is not None:
            vector = await backend.call(backend.embed_text, text, ensemble, model=True)
        else:
            vector = await backend.call(backend.embed_image, image, model=True)
        kind = "text" if text is not None else "image"
        metrics.embed.observe(time.perf_counter() - started, kind)
        info = await backend.call(backend.info)
        return Embedding(vector=[float(x) for x in vector], dim=len(vector), model=info.model, kind=kind)

    ImageId = PathParam(ge=1, le=2**62, description="A catalog id, as in search results.")

    @app.get("/healthz", tags=["service"], summary="Liveness: the process answers")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["service"], summary="Readiness: the model is loaded")
    async def readyz() -> dict[str, object]:
        if not await backend.call(backend.ready):
            backend_error = backend.model_error
            return error_response(
                503, "the model is still loading" if backend_error is None else backend_error, "retry shortly"
            )
        return {"ready": True}

    @app.get("/metrics", tags=["service"], summary="Prometheus metrics", response_class=Response)
    async def metrics_text() -> Response:
        info = await backend.call(backend.info)
        gauges = {
            "pixseek_library_images": ("Indexed photos in the library.", info.images),
            "pixseek_library_pending": ("Photos found but not embedded yet.", info.pending),
            "pixseek_model_ready": ("1 once the model is loaded.", float(backend.model_loaded)),
        }
        return Response(metrics.render(gauges), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/api/info", tags=["library"], summary="What is in the library")
    async def info() -> dict[str, object]:
        return (await backend.call(backend.info)).as_dict()

    @app.post(
        "/api/search",
        tags=["search"],
        summary="Search by text, a base64 image, an indexed photo, or a mix",
        response_model=SearchResponse,
    )
    async def search(body: SearchBody) -> Response:
        return await run_search(body, upload_bytes(body.image))

    @app.post(
        "/api/search/upload",
        tags=["search"],
        summary="Search by an uploaded image file (multipart)",
        response_model=SearchResponse,
    )
    async def search_upload(
        image: UploadFile = File(description="The example image."),
        params: str = Form(
            "{}", max_length=16_384, description="Other search fields as JSON, as for POST /api/search."
        ),
    ) -> Response:
        try:
            parsed = SearchParams.model_validate_json(params)
        except ValidationError as exc:
            raise RequestValidationError(exc.errors(include_url=False, include_context=False)) from None
        return await run_search(parsed, await read_upload(image))

    @app.post("/api/embed", tags=["model"], summary="The model's normalised vector of a text or a base64 image")
    async def embed(body: EmbedBody) -> Embedding:
        return await run_embed(body.text, upload_bytes(body.image), body.ensemble)

    @app.post("/api/embed/upload", tags=["model"], summary="The model's normalised vector of an uploaded image")
    async def embed_upload(image: UploadFile = File(description="The image.")) -> Embedding:
        return await run_embed(None, await read_upload(image), True)

    ConceptName = PathParam(min_length=1, max_length=MAX_NAME_CHARS, description="A concept's name.")

    @app.post(
        "/api/concepts",
        tags=["concepts"],
        status_code=201,
        summary="Teach a concept from photos that show it and photos that don't; teaching again adds examples",
    )
    async def teach(body: TeachBody) -> ConceptSummary:
        concept = await backend.call(backend.teach, body.name, body.yes, body.no)
        return ConceptSummary(**concept.as_dict())

    @app.get("/api/concepts", tags=["concepts"], summary="The library's concepts")
    async def concepts() -> list[ConceptSummary]:
        return [ConceptSummary(**c.as_dict()) for c in await backend.call(backend.concepts)]

    @app.get("/api/concepts/{name}", tags=["concepts"], summary="A concept, with the paths of its examples")
    async def concept(name: str = ConceptName) -> ConceptDetail:
        found, paths = await backend.call(backend.concept, name)
        return ConceptDetail(
            **found.as_dict(),
            yes_paths=[_printable(paths[i]) for i in found.yes_ids],
            no_paths=[_printable(paths[i]) for i in found.no_ids],
        )

    @app.delete("/api/concepts/{name}", tags=["concepts"], status_code=204, summary="Forget a concept")
    async def forget(name: str = ConceptName) -> Response:
        await backend.call(backend.forget, name)
        return Response(status_code=204)

    @app.get("/api/images/{image_id}", tags=["library"], summary="A photo's metadata")
    async def image_info(image_id: int = ImageId) -> Photo:
        return Photo(**_photo_fields(await backend.call(backend.get, image_id)))

    @app.get(
        "/api/images/{image_id}/thumbnail",
        tags=["library"],
        summary="A photo's thumbnail (JPEG)",
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {}}}},
    )
    async def image_thumbnail(
        image_id: int = ImageId,
        size: Literal["grid", "large"] = QueryParam("grid", description="grid: a square crop; large: the whole photo"),
    ) -> Response:
        result = await backend.call(backend.get, image_id)
        # Decoding a photo for its thumbnail needs neither the model nor the catalog.
        thumb = await run_in_threadpool(thumbnail, backend.thumbs_dir, result, THUMB_SIZES[size])
        if thumb.image is None:
            raise FileGone(f"image {image_id} has no thumbnail: {thumb.problem}", "run `pixseek index` to update it")
        headers = {"cache-control": "private, max-age=3600"}
        if isinstance(thumb.image, bytes):
            return Response(thumb.image, media_type="image/jpeg", headers=headers)
        return FileResponse(thumb.image, media_type="image/jpeg", headers=headers)

    @app.get(
        "/api/images/{image_id}/file",
        tags=["library"],
        summary="The original photo file",
        response_class=FileResponse,
        responses={200: {"content": {"image/*": {}}}},
    )
    async def image_file(image_id: int = ImageId) -> FileResponse:
        path = Path((await backend.call(backend.get, image_id)).path)
        # Linked photos are served as the indexer read them: through the link the catalog lists.
        if not path.is_file():
            raise FileGone(f"the file of image {image_id} is gone", "run `pixseek index` to update the library")
        kind = IMAGE_TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return FileResponse(path, media_type=kind, filename=_printable(path.name), content_disposition_type="inline")

    return app


def _photo_fields(result) -> dict[str, object]:
    links = Links.model_construct(
        self=f"/api/images/{result.id}",
        thumbnail=f"/api/images/{result.id}/thumbnail",
        file=f"/api/images/{result.id}/file",
    )
    return dict(
        id=result.id,
        name=_printable(os.path.basename(result.path)),
        path=_printable(result.path),
        folder=_printable(result.folder),
        width=result.width,
        height=result.height,
        taken_at=result.taken_at,
        camera_make=result.camera_make,
        camera_model=result.camera_model,
        lat=result.lat,
        lon=result.lon,
        size=result.size,
        links=links,
    )


def _day(day: date | None) -> str | None:
    return day.isoformat() if day else None


def _printable(text: str) -> str:
    # A non-UTF-8 file name arrives as lone surrogates (PEP 383), which JSON cannot carry.
    return os.fsencode(text).decode("utf-8", "replace")


def _too_large(limit: int) -> HTTPException:
    return HTTPException(413, f"image larger than {limit / 2**20:g} MiB")


# Statuses of the HTTP exceptions FastAPI and Starlette raise, with what to do about them.
_HINTS = {
    400: "check the request against /docs",
    404: "see /docs for the routes",
    405: "see /docs for the methods of this route",
    413: "send a smaller image (see --max-upload-mb)",
    422: "see /docs for the request schema",
}


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(PixseekError)
    async def pixseek_error(_: Request, exc: PixseekError) -> JSONResponse:
        return error_response(status_of(exc), exc.problem, exc.hint)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), _HINTS.get(exc.status_code), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        expected = "multipart/form-data" if request.url.path.endswith("/upload") else "application/json"
        if request.method == "POST" and expected not in request.headers.get("content-type", ""):
            return error_response(415, f"expected a body of type {expected}", _HINTS[422])
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return error_response(400, "malformed JSON body", "send a JSON object, as in /docs")
        where = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body') or 'body'}: {e.get('msg')}" for e in errors[:5]
        )
        return error_response(422, f"invalid request: {where}", _HINTS[422])

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        # The traceback goes to the server's log, never to the client.
        return error_response(500, f"internal error ({type(exc).__name__})", "see the server log")
