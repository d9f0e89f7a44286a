"""The OpenAPI 3.1 document of the read API, written from the route table in `api`.

Parameters are declared once here per endpoint; the response schemas name the keys
every answer carries (views may add more), and every error is the one envelope of
`clm.server.api`. A schemathesis run in the tests fuzzes the API against this file.
"""

from __future__ import annotations

from typing import Any

from clm.server.views import GRAINS, MAX_PAGE_SIZE


def _q(name: str, schema: dict[str, Any], text: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": text,
    }


def _path(name: str, text: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        # Ids never hold line breaks (Starlette's path matching stops at them).
        "schema": {"type": "string", "minLength": 1, "pattern": "^[^\\r\\n]+$"},
        "description": text,
    }


DAY = {"type": "string", "format": "date"}
MODEL = _q("model", {"type": "string"}, "Stage model name (default: the first)")
GRAIN = _q("grain", {"type": "string", "enum": list(GRAINS)}, "Reporting period")
PAGE = [
    _q("page", {"type": "integer", "minimum": 1, "maximum": 1_000_000}, "1-based"),
    _q(
        "page_size",
        {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE},
        "Rows per page (default 50)",
    ),
]

PARAMS: dict[str, list[dict[str, Any]]] = {
    "models": [],
    "model": [_path("name", "Stage model name")],
    "populations": [MODEL, _q("as_of", DAY, "Local day (default: the last run's)")],
    "series": [
        MODEL,
        GRAIN,
        _q("start", DAY, "First period"),
        _q("end", DAY, "Last period"),
    ],
    "stage": [_path("stage", "Stage name"), MODEL, GRAIN, *PAGE],
    "transitions": [
        MODEL,
        _q("start", DAY, "From this local day"),
        _q("end", DAY, "To this local day"),
    ],
    "metrics": [
        MODEL,
        GRAIN,
        _q("stage", {"type": "string"}, "Only this stage"),
        _q("start", DAY, "First period"),
        _q("end", DAY, "Last period"),
    ],
    "overview": [MODEL, GRAIN],
    "cohorts": [
        _q(
            "months",
            {"type": "integer", "minimum": 1, "maximum": 36},
            "Months after the first order (default 12)",
        )
    ],
    "customers": [
        _q(
            "q",
            {"type": "string", "maxLength": 200},
            "Any identifier, id or trait value",
        ),
        *PAGE,
    ],
    "customer": [_path("customer_id", "Customer id"), *PAGE],
    "rfm": [],
    "clv": [],
    "receipts": [_q("operation", {"type": "string"}, "Only this operation"), *PAGE],
    "receipt": [_path("receipt_id", "Receipt id")],
}

SUMMARY = {
    "models": "Stage models in use",
    "model": "One stage model with its YAML and last run",
    "populations": "Customers per stage as of a day",
    "series": "Customers per stage at the end of each period",
    "stage": "A stage: KPIs, entries and exits, time in stage, channels, customers",
    "transitions": "Transition matrix and flows between two days",
    "metrics": "KPIs per stage and period with the change on the previous period",
    "overview": "Populations now and over time, KPI cards, caveats",
    "cohorts": "Retention by first-order month",
    "customers": "Search customers by any identifier or trait",
    "customer": "The single customer view with a paged timeline",
    "rfm": "Customers per RFM segment (after `clm clv predict`)",
    "clv": "Predicted CLV and P(alive) summary (after `clm clv predict`)",
    "receipts": "Import and run receipts, newest first",
    "receipt": "One receipt",
}

# Keys each answer always has; the schemas stay open to more.
REQUIRED = {
    "models": ["models"],
    "model": ["name", "version", "yaml", "stages"],
    "populations": ["model", "as_of", "timezone", "stages", "total"],
    "series": ["model", "grain", "series"],
    "stage": ["stage", "kpis", "customers"],
    "transitions": ["start", "end", "rows", "columns", "matrix", "flows"],
    "metrics": ["grain", "values"],
    "overview": ["populations", "series", "cards", "caveats"],
    "cohorts": ["months", "cohorts"],
    "customers": ["q", "page", "page_size", "total", "rows"],
    "customer": ["customer_id", "profile", "identifiers", "stage_history", "timeline"],
    "rfm": ["customers", "segments"],
    "clv": ["customers", "columns"],
    "receipts": ["page", "total", "rows"],
    "receipt": ["receipt_id", "operation", "body"],
}

ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["status", "code", "message", "retry"],
            "properties": {
                "status": {"type": "integer"},
                "code": {"type": "string"},
                "message": {"type": "string"},
                "retry": {"type": "boolean"},
                "field": {"type": "string"},
                "valid": {"type": "string"},
            },
        }
    },
}


def _error(text: str) -> dict[str, Any]:
    return {
        "description": text,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
        },
    }


def _operation(name: str) -> dict[str, Any]:
    return {
        "operationId": name,
        "summary": SUMMARY[name],
        "parameters": PARAMS[name],
        "responses": {
            "200": {
                "description": "OK",
                "content": {
                    "application/json": {
                        "schema": {"type": "object", "required": REQUIRED[name]}
                    }
                },
            },
            "400": _error("A parameter has a bad value"),
            "401": _error("A read token is needed"),
            "404": _error("No such model, stage, customer or receipt, or no data yet"),
            "422": _error("A stored model does not validate"),
            "503": _error("The warehouse is not available"),
        },
    }


def document() -> dict[str, Any]:
    from clm.server.api import GET_ROUTES, PREFIX

    paths: dict[str, Any] = {
        f"{PREFIX}{path}": {"get": _operation(name)} for path, name in GET_ROUTES
    }
    draft = {
        "required": True,
        "content": {
            "application/x-yaml": {"schema": {"type": "string"}},
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["yaml"],
                    "properties": {"yaml": {"type": "string"}},
                }
            },
        },
    }
    exact = {
        "name": "exact",
        "in": "query",
        "required": False,
        "description": (
            "1: replay every customer (as slow as the stage step of `clm run`); "
            "default 0: the saved model's stored populations, else an estimate on "
            "a sample of customers (`estimate`, `sample_customers`, `margin`)"
        ),
        "schema": {"type": "string", "enum": ["0", "1", "true", "false", "yes", "no"]},
    }
    for action, text in (
        ("validate", "Check a draft stage model; errors carry their line"),
        ("preview", "Populations under a draft, estimated on a sample of customers"),
    ):
        paths[f"{PREFIX}/models/{action}"] = {
            "post": {
                "operationId": f"model_{action}",
                "summary": text,
                "parameters": [exact] if action == "preview" else [],
                "requestBody": draft,
                "responses": {
                    "200": {
                        "description": "The check (and preview)",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["valid", "errors"],
                                }
                            }
                        },
                    },
                    "400": _error('The body is not YAML text or {"yaml": …}'),
                    "401": _error("A read token is needed"),
                    "404": _error("No data to preview on"),
                    "503": _error("The warehouse is not available"),
                },
            }
        }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "clm read API",
            "version": "1",
            "description": (
                "Stage models, populations, transitions, metrics, cohorts, customers, "
                "RFM/CLV and receipts. Days are ISO dates in the workspace's reporting "
                "time zone; timestamps are ISO 8601 in UTC."
            ),
        },
        "servers": [{"url": "/"}],
        "components": {
            "schemas": {"Error": ERROR},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}, {}],
        "paths": paths,
    }
