"""The ASGI app behind `clm serve`: routes requests to the collection protocols.

The app only reads requests and writes answers; the protocols live in
`clm.collect.http_segment` and `clm.collect.http_matomo`, durability in
`clm.collect.spool`. Bodies are read with a cap (a body larger than its endpoint's
limit is refused with 413 before it is read whole), gzip bodies are inflated with
the same cap, and every answer to a browser carries permissive CORS headers because
/clm.js may be served from another origin than the collector.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route

from clm.collect import http_matomo, http_segment
from clm.collect.http_segment import Answer
from clm.collect.intake import Intake
from clm.server.api import http_error, is_api_path, read_routes

log = logging.getLogger("clm.server")

CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, Content-Encoding",
    "Access-Control-Max-Age": "86400",
}


class TooLarge(Exception):
    pass


async def read_body(request: Request, limit: int) -> bytes:
    """The body, inflated when gzip'd; TooLarge once it passes `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise TooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge
        chunks.append(chunk)
    body = b"".join(chunks)
    if request.headers.get("content-encoding", "").lower() == "gzip":
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            body = inflater.decompress(body, limit + 1)
        except zlib.error as exc:
            raise ValueError(f"not valid gzip: {exc}") from None
        if len(body) > limit:
            raise TooLarge
    return body


def answer(a: Answer) -> Response:
    return Response(
        orjson.dumps(a.body), a.status, headers=CORS, media_type="application/json"
    )


def _problem(status: int, field: str, problem: str, error: str) -> Response:
    return answer(
        Answer(
            status,
            {
                "success": False,
                "error": error,
                "errors": [{"index": None, "field": field, "problem": problem}],
            },
        )
    )


def create_app(intake: Intake) -> Starlette:
    """The ASGI app; `intake` is started and stopped with the app's lifespan."""

    async def segment(request: Request) -> Response:
        kind = request.path_params["kind"]
        if kind not in http_segment.ENDPOINTS:
            return _problem(
                404,
                "path",
                "unknown endpoint",
                f"no endpoint /v1/{kind}; known: "
                + ", ".join(f"/v1/{k}" for k in http_segment.ENDPOINTS),
            )
        if request.method == "OPTIONS":
            return Response(status_code=204, headers=CORS)
        limit = (
            http_segment.BATCH_LIMIT if kind == "batch" else http_segment.MESSAGE_LIMIT
        )
        try:
            body = await read_body(request, limit)
        except TooLarge:
            return _problem(
                413,
                "body",
                "too large",
                f"body over the {limit // 1024} KB limit of /v1/{kind}; "
                "send smaller batches",
            )
        except ValueError as exc:
            return _problem(400, "body", str(exc), f"the body is {exc}")
        result = await http_segment.handle(
            intake,
            kind,
            body,
            request.headers.get("authorization"),
            request.client.host if request.client else None,
        )
        return answer(result)

    async def matomo(request: Request) -> Response:
        if request.method == "OPTIONS":
            return Response(status_code=204, headers=CORS)
        try:
            body = await read_body(request, http_matomo.BULK_LIMIT)
        except TooLarge:
            return _problem(413, "body", "too large", "body over 1 MB; split it")
        except ValueError as exc:
            return _problem(400, "body", str(exc), f"the body is {exc}")
        result = await http_matomo.handle(
            intake,
            request.method,
            request.url.query,
            body,
            request.headers.get("user-agent"),
            request.headers.get("accept-language"),
            request.client.host if request.client else None,
        )
        if result is None:
            return Response(status_code=204, headers=CORS)
        if isinstance(result, bytes):
            return Response(result, 200, headers=CORS, media_type="image/gif")
        return answer(result)

    async def health(request: Request) -> Response:
        return answer(Answer(200, {"status": "ok", **intake.status()}))

    script = resources.files("clm.server").joinpath("static/clm.js").read_bytes()

    async def clm_js(request: Request) -> Response:
        return Response(
            script,
            headers={**CORS, "Cache-Control": "public, max-age=3600"},
            media_type="application/javascript",
        )

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        intake.start()
        log.info("collector ready; spool at %s", intake.config.spool_dir)
        try:
            yield
        finally:
            intake.stop()
            log.info("collector stopped: %s", intake.status())

    routes = [
        Route("/v1/health", health, methods=["GET"]),
        Route("/v1/{kind}", segment, methods=["POST", "OPTIONS"]),
        Route("/matomo.php", matomo, methods=["GET", "POST", "OPTIONS"]),
        Route("/piwik.php", matomo, methods=["GET", "POST", "OPTIONS"]),
        Route("/clm.js", clm_js, methods=["GET"]),
        Mount("", routes=read_routes(intake)),  # read API and dashboard (server.api)
    ]

    async def http_exception(request: Request, exc: Exception) -> Response:
        # No route or a wrong method: the read API's JSON envelope under /api/v1,
        # Starlette's plain text elsewhere.
        assert isinstance(exc, HTTPException)
        if is_api_path(request.url.path):
            return http_error(
                request.url.path, request.method, exc.status_code, exc.headers
            )
        if exc.status_code in (204, 304):
            return Response(status_code=exc.status_code, headers=exc.headers)
        return PlainTextResponse(exc.detail, exc.status_code, headers=exc.headers)

    return Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: http_exception},
    )
