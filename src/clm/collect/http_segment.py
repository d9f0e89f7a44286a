"""The Segment HTTP Tracking API, as the official SDKs speak it.

Endpoints (https://segment.com/docs/connections/sources/catalog/libraries/server/http-api/):
`/v1/track`, `/v1/identify`, `/v1/page`, `/v1/screen`, `/v1/group`, `/v1/alias` take
one message; `/v1/batch` takes `{"batch": [...]}` with an optional top-level
`context`, `integrations` and `sentAt` that apply to every message. The write key is
the HTTP basic-auth user name (password empty) or `writeKey` in the body. Limits as
the API documents them: 32 KB per message, 500 KB per batch request; a body may be
gzip-compressed (`Content-Encoding: gzip`, the Python SDK's `gzip=True`).

Answers: 200 `{"success": true}` when every message was stored. Otherwise a JSON
body `{"success": false, "error": ..., "errors": [{"index", "field", "problem"}]}`
with 400 (bad JSON or bad messages: valid messages of the same batch are still
stored; `accepted` says how many), 401 (write key), 413 (too large) or 503 (the
spool could not be written: nothing was acknowledged, retry). The SDKs retry 5xx and
429 and give up on other 4xx, which is what these statuses mean.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
from dataclasses import dataclass
from typing import Any

import orjson

from clm.collect.intake import Intake
from clm.collect.segment import TYPES, Invalid, map_message, parse_time
from clm.warehouse.engine import now_utc

MESSAGE_LIMIT = 32 * 1024
BATCH_LIMIT = 500 * 1024


@dataclass
class Answer:
    status: int
    body: dict[str, Any]


def _fail(status: int, error: str, **extra: Any) -> Answer:
    return Answer(status, {"success": False, "error": error, **extra})


def write_key_of(authorization: str | None, body: Any) -> str | None:
    """The write key from `Authorization: Basic base64(key:)`, else body `writeKey`."""
    if authorization and authorization[:6].lower() == "basic ":
        try:
            user = base64.b64decode(authorization[6:].strip(), validate=True)
            return user.decode("utf-8").partition(":")[0] or None
        except (binascii.Error, UnicodeDecodeError):
            return None
    if isinstance(body, dict) and isinstance(body.get("writeKey"), str):
        return str(body["writeKey"])
    return None


async def handle(
    intake: Intake,
    kind: str,
    body: bytes,
    authorization: str | None,
    client_ip: str | None,
) -> Answer:
    """Answer one request to `/v1/<kind>` whose (decompressed) body is `body`."""
    limit = BATCH_LIMIT if kind == "batch" else MESSAGE_LIMIT
    if len(body) > limit:
        return _fail(
            413,
            f"body of {len(body)} bytes is over the {limit // 1024} KB limit of "
            f"/v1/{kind}; send smaller batches",
            errors=[{"index": None, "field": "body", "problem": "too large"}],
        )
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        problem = (
            "not valid UTF-8" if "UTF-8" in str(exc) else f"not valid JSON ({exc})"
        )
        return _fail(
            400,
            f"the body is {problem}; send one JSON object encoded as UTF-8",
            errors=[{"index": None, "field": "body", "problem": problem}],
        )
    key = write_key_of(authorization, payload)
    if key is None or key not in intake.config.write_keys:
        return _fail(
            401,
            "missing write key; send it as the basic-auth user name or as writeKey"
            if key is None
            else "unknown write key; use one listed in the serve.write_keys setting",
            errors=[{"index": None, "field": "writeKey", "problem": "not accepted"}],
        )
    source = "segment:" + intake.config.write_keys[key]
    if not isinstance(payload, dict):
        return _fail(
            400,
            f"expected a JSON object, got {type(payload).__name__}",
            errors=[{"index": None, "field": "body", "problem": "not an object"}],
        )

    if kind == "batch":
        messages = payload.get("batch")
        if not isinstance(messages, list):
            return _fail(
                400,
                "/v1/batch needs `batch`: a list of messages",
                errors=[{"index": None, "field": "batch", "problem": "not a list"}],
            )
        shared = {k: payload[k] for k in ("context", "integrations") if k in payload}
        sent_at = payload.get("sentAt")
    else:
        messages, shared, sent_at = [payload], {}, None

    received = now_utc()
    # A batch's shared sentAt is parsed once; a bad one is left to each message,
    # whose refusal then names it.
    skew = None
    if sent_at is not None:
        with contextlib.suppress(Invalid):
            skew = received - parse_time(sent_at, "sentAt")
    records: list[bytes] = []
    errors: list[dict[str, Any]] = []
    check_size = len(body) > MESSAGE_LIMIT
    default_type = None if kind == "batch" else kind
    event = intake.event
    for i, msg in enumerate(messages):
        try:
            if type(msg) is dict:
                if shared:
                    msg = {**shared, **msg}
                if skew is None and sent_at is not None and "sentAt" not in msg:
                    msg = {**msg, "sentAt": sent_at}
                if "writeKey" in msg:
                    del msg["writeKey"]
            if check_size and len(orjson.dumps(msg)) > MESSAGE_LIMIT:
                raise Invalid("message", "over the 32 KB limit per message")
            row = map_message(msg, received, default_type=default_type, skew=skew)
            if client_ip and not row.get("ip"):
                row["ip"] = client_ip
            records.append(event(row, "segment", source))
        except Invalid as exc:
            errors.append({"index": i, "field": exc.field, "problem": exc.problem})
            if skew is not None and type(msg) is dict and "sentAt" not in msg:
                msg = {**msg, "sentAt": sent_at}  # the payload as it applied
            records.append(
                intake.reject(source, exc.field, exc.value, exc.problem, msg, received)
            )

    try:
        await intake.commit(b"".join(records))
    except OSError as exc:
        return _fail(503, f"events could not be stored ({exc}); retry later")
    if errors:
        return _fail(
            400,
            f"{len(errors)} of {len(messages)} message(s) refused: "
            + "; ".join(
                f"[{e['index']}] {e['field']}: {e['problem']}" for e in errors[:5]
            ),
            accepted=len(messages) - len(errors),
            errors=errors,
        )
    return Answer(200, {"success": True})


ENDPOINTS = (*TYPES, "batch")
