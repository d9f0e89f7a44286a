"""The read API under /api/v1 and the dashboard, mounted into the app of `clm serve`.

Every endpoint parses its query parameters here (`Params`), calls one function of
`clm.server.views` and returns its dict as JSON; the dashboard page of the same name
calls the same function (STYLE.md point 14). Every failure, whatever raised it, leaves
as one JSON envelope:

    {"error": {"status": 400, "code": "bad_parameter", "field": "as_of",
               "value": "2024-13-01", "valid": "YYYY-MM-DD", "message": "…",
               "retry": false}}

Read tokens (setting `serve.read_tokens`): when the list is empty the read side is
open, which suits the default bind to 127.0.0.1; otherwise every /api/v1 call needs
`Authorization: Bearer <token>` and the dashboard asks for a token once (/login) and
keeps it in an HttpOnly cookie. Dates are ISO 8601 days in the workspace's reporting
time zone (named in every answer as `timezone`); timestamps are ISO 8601 in UTC.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import date
from pathlib import Path
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route

from clm.errors import ClmError, ConfigError, EngineError, ModelError, NotFoundError
from clm.server import views
from clm.server.views import GRAINS, MAX_PAGE_SIZE, Reader

log = logging.getLogger("clm.server")

PREFIX = "/api/v1"
COOKIE = "clm_token"


class BadParam(ConfigError):
    """A query parameter with a value the endpoint cannot use."""

    def __init__(self, field: str, value: Any, valid: str, hint: str = "") -> None:
        self.field, self.value, self.valid = field, value, valid
        super().__init__(
            f"{field}={value!r} is not valid; expected {valid}"
            + (f"; {hint}" if hint else "")
        )


class Unauthorized(ClmError):
    pass


def error_body(status: int, code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {
        "error": {
            "status": status,
            "code": code,
            "message": message,
            "retry": bool(extra.pop("retry", False)),
            **extra,
        }
    }


def envelope(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """The status and the one error shape for any exception."""
    if isinstance(exc, BadParam):
        return 400, error_body(
            400,
            "bad_parameter",
            str(exc),
            field=exc.field,
            value=None if exc.value is None else str(exc.value),
            valid=exc.valid,
        )
    if isinstance(exc, Unauthorized):
        return 401, error_body(401, "unauthorized", str(exc))
    if isinstance(exc, NotFoundError):
        return 404, error_body(404, "not_found", str(exc))
    if isinstance(exc, ModelError):
        return 422, error_body(422, "invalid_model", str(exc), line=exc.line)
    if isinstance(exc, ConfigError):
        return 400, error_body(400, "bad_request", str(exc))
    if isinstance(exc, EngineError):
        return 503, error_body(503, "engine", str(exc), retry=exc.transient)
    log.exception("read API failure")
    return 500, error_body(
        500,
        "internal",
        f"{type(exc).__name__}: {exc}; this is a bug in clm, please report it",
    )


def json_response(body: Any, status: int = 200, **headers: str) -> Response:
    return Response(
        orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY, default=str),
        status,
        media_type="application/json",
        headers=headers or None,
    )


def http_error(
    path: str, method: str, status: int, headers: Mapping[str, str] | None = None
) -> Response:
    """Starlette's own 404 and 405 (no route, wrong method) in the one envelope.

    `create_app` routes every HTTPException under /api/v1 here, so a client never
    has to parse a plain-text error from the read API."""
    headers = dict(headers or {})
    if status == 405:
        allow = headers.get("Allow") or headers.get("allow") or "GET"
        body = error_body(
            405,
            "method_not_allowed",
            f"{method} is not allowed on {path}; use {allow}",
            field="method",
            value=method,
            valid=allow,
        )
    elif status == 404:
        body = error_body(
            404,
            "not_found",
            f"no endpoint {path}; the list is at {PREFIX} and {PREFIX}/openapi.json",
        )
    else:
        body = error_body(status, "http", f"HTTP {status} on {method} {path}")
    return json_response(body, status, **headers)


def is_api_path(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


# -- parameters ----------------------------------------------------------------------


class Params:
    """Typed, checked access to a request's query parameters."""

    def __init__(self, request: Request) -> None:
        self.q = request.query_params
        self.path = request.path_params

    def text(self, name: str, default: str | None = None, limit: int = 200) -> Any:
        value = self.q.get(name, default)
        if value is not None and (len(value) > limit or "\x00" in value):
            raise BadParam(name, value[:40], f"text of at most {limit} characters")
        return value

    def day(self, name: str) -> date | None:
        value = self.q.get(name)
        if value in (None, ""):
            return None
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise BadParam(name, value, "a day as YYYY-MM-DD") from None

    def grain(self) -> str | None:
        value = self.q.get("grain")
        if value in (None, ""):
            return None
        if value not in GRAINS:
            raise BadParam("grain", value, "one of " + ", ".join(GRAINS))
        return value

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        value = self.q.get(name)
        if value in (None, ""):
            return default
        try:
            n = int(value)
        except ValueError:
            raise BadParam(
                name, value, f"a whole number from {low} to {high}"
            ) from None
        if not low <= n <= high:
            raise BadParam(name, value, f"a whole number from {low} to {high}")
        return n

    def flag(self, name: str) -> bool:
        """A yes/no parameter: 1/true/yes or 0/false/no (absent: no)."""
        value = self.q.get(name)
        if value in (None, ""):
            return False
        low = value.lower()
        if low in ("1", "true", "yes"):
            return True
        if low in ("0", "false", "no"):
            return False
        raise BadParam(name, value[:40], "1 or 0 (also true/false, yes/no)")

    def page(self) -> tuple[int, int]:
        return (
            self.integer("page", 1, 1, 1_000_000),
            self.integer("page_size", 50, 1, MAX_PAGE_SIZE),
        )


# -- authentication ------------------------------------------------------------------


def token_ok(request: Request, tokens: list[str]) -> bool:
    if not tokens:
        return True
    given = ""
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    given = given or request.cookies.get(COOKIE, "")
    # compare_digest: the time taken does not tell how much of a token was right.
    return any(hmac.compare_digest(given.encode(), t.encode()) for t in tokens)


# -- the endpoints -------------------------------------------------------------------

Handler = Callable[[Reader, Params], Any]


def _body_text(raw: bytes, content_type: str) -> str:
    if "json" in content_type:
        try:
            data = orjson.loads(raw or b"{}")
        except orjson.JSONDecodeError as exc:
            raise BadParam("body", raw[:40].decode(errors="replace"), "JSON") from exc
        if not isinstance(data, dict) or not isinstance(data.get("yaml"), str):
            raise BadParam("yaml", None, 'a JSON object {"yaml": "<model text>"}')
        return str(data["yaml"])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadParam("body", "(bytes)", "UTF-8 YAML text") from None


ENDPOINTS: dict[str, Handler] = {
    "models": lambda r, p: views.list_models(r),
    "model": lambda r, p: views.show_model(r, p.path["name"]),
    "populations": lambda r, p: views.populations(r, p.text("model"), p.day("as_of")),
    "series": lambda r, p: views.population_series(
        r, p.text("model"), p.grain(), p.day("start"), p.day("end")
    ),
    "stage": lambda r, p: views.stage_detail(
        r, p.text("model"), p.path["stage"], p.grain(), *p.page()
    ),
    "transitions": lambda r, p: views.transitions(
        r, p.text("model"), p.day("start"), p.day("end")
    ),
    "metrics": lambda r, p: views.metrics(
        r, p.text("model"), p.grain(), p.text("stage"), p.day("start"), p.day("end")
    ),
    "overview": lambda r, p: views.overview(r, p.text("model"), p.grain()),
    "cohorts": lambda r, p: views.cohorts(r, p.integer("months", 12, 1, 36)),
    "customers": lambda r, p: views.search_customers(r, p.text("q", ""), *p.page()),
    "customer": lambda r, p: views.customer(r, p.path["customer_id"], *p.page()),
    "rfm": lambda r, p: views.rfm(r),
    "clv": lambda r, p: views.clv(r),
    "receipts": lambda r, p: views.receipts(r, p.text("operation"), *p.page()),
    "receipt": lambda r, p: views.receipt(r, p.path["receipt_id"]),
}

# (path, endpoint name); the OpenAPI document is written from the same table.
GET_ROUTES: list[tuple[str, str]] = [
    ("/models", "models"),
    ("/models/{name}", "model"),
    ("/stages", "populations"),
    ("/stages/series", "series"),
    ("/stages/{stage}", "stage"),
    ("/transitions", "transitions"),
    ("/metrics", "metrics"),
    ("/overview", "overview"),
    ("/cohorts", "cohorts"),
    ("/customers", "customers"),
    ("/customers/{customer_id}", "customer"),
    ("/rfm", "rfm"),
    ("/clv", "clv"),
    ("/receipts", "receipts"),
    ("/receipts/{receipt_id}", "receipt"),
]


def make_reader(intake: Any) -> Reader | None:
    wh = getattr(intake, "wh", None)
    if wh is None:
        return None
    return Reader.for_warehouse(wh, Path(intake.config.spool_dir))


def read_routes(intake: Any) -> list[BaseRoute]:
    """The API and dashboard routes; `create_app` mounts them once."""
    from clm.server import openapi
    from clm.server.dashboard import pages

    state: dict[str, Reader | None] = {}

    def reader() -> Reader:
        if "r" not in state:
            state["r"] = make_reader(intake)
            made = state["r"]
            if made is not None:
                made.look()  # starts building the customer pages' look-ups
        r = state["r"]
        if r is None:
            raise EngineError("this server has no warehouse to read", transient=False)
        return r

    def tokens() -> list[str]:
        try:
            return list(reader().ws.config.get("serve.read_tokens") or [])
        except EngineError:
            return []

    def endpoint(name: str) -> Callable[[Request], Awaitable[Response]]:
        handler = ENDPOINTS[name]

        async def run(request: Request) -> Response:
            try:
                if not token_ok(request, tokens()):
                    raise Unauthorized(
                        "a read token is needed: send `Authorization: Bearer <token>` "
                        "with one of the tokens of the setting `serve.read_tokens`"
                    )
                r = reader()
                params = Params(request)
                body = await run_in_threadpool(handler, r, params)
                return json_response(body)
            except Exception as exc:
                status, err = envelope(exc)
                extra = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
                return json_response(err, status, **extra)

        return run

    async def model_post(request: Request) -> Response:
        action = request.path_params["action"]
        try:
            if not token_ok(request, tokens()):
                raise Unauthorized(
                    "a read token is needed: send `Authorization: Bearer <token>`"
                )
            if action not in ("validate", "preview"):
                raise NotFoundError(
                    f"no action {action!r}; known: preview, validate "
                    "(POST /api/v1/models/validate or /api/v1/models/preview)"
                )
            raw = await request.body()
            if len(raw) > 256 * 1024:
                raise BadParam("body", f"{len(raw)} bytes", "at most 256 KB of YAML")
            text = _body_text(raw, request.headers.get("content-type", ""))
            if action == "validate":
                body = views.validate_model(text)
            else:
                exact = Params(request).flag("exact")
                body = await run_in_threadpool(
                    views.preview_model, reader(), text, exact
                )
            return json_response(body)
        except Exception as exc:
            status, err = envelope(exc)
            return json_response(err, status)

    async def index(request: Request) -> Response:
        r = state.get("r")
        looks = r.lookups if r is not None else None
        return json_response(
            {
                "version": "v1",
                "openapi": f"{PREFIX}/openapi.json",
                "endpoints": [PREFIX + p for p, _ in GET_ROUTES],
                # Whether the customer pages read their look-up tables yet.
                "lookups": looks.status() if looks is not None else None,
            }
        )

    async def spec(request: Request) -> Response:
        return json_response(openapi.document())

    async def missing(request: Request) -> Response:
        status, err = (
            404,
            error_body(
                404,
                "not_found",
                f"no endpoint {request.url.path}; the list is at {PREFIX} and "
                f"{PREFIX}/openapi.json",
            ),
        )
        return json_response(err, status)

    api: list[BaseRoute] = [
        Route("/", index, methods=["GET"]),
        Route("/openapi.json", spec, methods=["GET"]),
        Route("/models/{action}", model_post, methods=["POST"]),
    ]
    api += [
        Route(path, endpoint(name), methods=["GET"], name=f"api.{name}")
        for path, name in GET_ROUTES
    ]
    api.append(Route("/{rest:path}", missing))
    return [
        Mount(PREFIX, routes=api),
        *pages.routes(reader, tokens),
    ]
