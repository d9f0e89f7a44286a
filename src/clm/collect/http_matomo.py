"""The Matomo Tracking HTTP API (https://developer.matomo.org/api-reference/tracking-api),
as Matomo's and Piwik PRO's JavaScript trackers send it to `/matomo.php` and
`/piwik.php`: GET with a query string, POST with a form body, and the bulk form, a
POST of `{"requests": ["?idsite=1&rec=1&...", ...], "token_auth": ...}`.

Parameters used, with the event they make:
- `idsite` (required, a positive integer, restricted by `serve.matomo_sites`) and
  `rec=1` (required: Matomo ignores requests without it).
- Visitor: `uid` → user_id; `cid` (forced visitor id) else `_id` → anonymous_id; with
  neither, a daily hash of site, anonymised IP and user agent (Matomo's cookieless
  "config id" idea).
- What happened: `idgoal=0` with `ec_id` → track `order_completed` (order_id = ec_id,
  revenue, `ec_items` as `[sku, name, category, price, quantity]` lists), `idgoal=0`
  without `ec_id` → `cart_updated`; `idgoal>0` → `goal_converted`; `e_c`+`e_a` →
  track named by `e_a` with category, action, name (`e_n`) and value (`e_v`);
  `ping=1` → track `ping`; otherwise a page view named by `action_name`.
- `url`, `urlref`, `ua` (else the User-Agent header), `lang` (else Accept-Language),
  `res`, `dimensionN` custom dimensions, `_rcn`/`_rck` campaign name and keyword.
- `cdt` (event time) and `cip` (visitor IP) override what the server saw and are
  only honoured with a `token_auth` listed in `serve.write_keys`, as in Matomo.
The event id is an md5 of the request's parameters (the trackers add a random `r`
to every request, so a resent request dedups and two real hits do not).

Answers: a single request gets 204 (or Matomo's 1×1 GIF when the request did not set
`send_image=0`); a bulk request gets `{"status": "success", "tracked", "invalid",
"invalid_indices"}`. Invalid requests get 400 with `errors` naming field and problem;
the valid requests of the same bulk are still stored.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import orjson

from clm.collect.enrich import anonymize_ip
from clm.collect.http_segment import Answer
from clm.collect.intake import Intake
from clm.collect.segment import MAX_FUTURE, MAX_PAST, Invalid, parse_time
from clm.warehouse.engine import now_utc

GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\x00\x00\x00!\xf9\x04\x01\x00"
    b"\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
BULK_LIMIT = 1024 * 1024
_HEX16 = re.compile(r"^[0-9a-fA-F]{16}$")
_DIM = re.compile(r"^dimension(\d+)$")


def parse_params(text: str) -> dict[str, str]:
    """A query string (leading `?` allowed) as a dict; the last value of a key wins."""
    return dict(parse_qsl(text.lstrip("?"), keep_blank_values=True))


def _num(params: dict[str, str], key: str) -> float | None:
    if key not in params or params[key] == "":
        return None
    try:
        return float(params[key])
    except ValueError:
        raise Invalid(key, "expected a number", params[key]) from None


def _cdt(value: str) -> datetime:
    """`cdt`: a Unix timestamp or 'YYYY-MM-DD HH:MM:SS' in UTC (the API's two forms)."""
    try:
        return datetime.fromtimestamp(float(value), UTC).replace(tzinfo=None)
    except (ValueError, OverflowError, OSError):
        return parse_time(value.replace(" ", "T"), "cdt")


def _items(text: str) -> list[dict[str, Any]]:
    try:
        raw = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise Invalid("ec_items", "not valid JSON", text) from None
    if not isinstance(raw, list):
        raise Invalid("ec_items", "expected a JSON list of item lists", text)
    items = []
    for item in raw:
        if not isinstance(item, list) or not item:
            raise Invalid("ec_items", "each item is [sku, name, category, price, qty]")
        sku, name, category, price, qty = (list(item) + [None] * 5)[:5]
        items.append(
            {
                "sku": sku,
                "name": name,
                "category": category,
                "price": price,
                "quantity": qty,
            }
        )
    return items


def map_request(
    params: dict[str, str],
    intake: Intake,
    received: datetime,
    header_ua: str | None,
    header_lang: str | None,
    client_ip: str | None,
    token: str | None,
) -> tuple[dict[str, Any], str]:
    """The `events` row of one tracking request and its source (`matomo:<idsite>`)."""
    site = params.get("idsite", "")
    if not site.isdigit() or int(site) < 1:
        raise Invalid("idsite", "expected a positive integer site id", site or None)
    if intake.config.matomo_sites and site not in intake.config.matomo_sites:
        raise Invalid("idsite", "site not in the serve.matomo_sites setting", site)
    if params.get("rec") != "1":
        raise Invalid(
            "rec", "must be 1 for the request to be recorded", params.get("rec")
        )
    if any("\x00" in v for v in params.values()):
        bad = next(k for k, v in params.items() if "\x00" in v)
        raise Invalid(bad, "contains a NUL character")
    token = params.get("token_auth") or token
    trusted = token is not None and token in intake.config.write_keys
    for key in ("cdt", "cip"):
        if params.get(key) and not trusted:
            raise Invalid(key, "overriding time or IP needs a valid token_auth")

    ts = _cdt(params["cdt"]) if params.get("cdt") else received
    if ts > received + MAX_FUTURE:
        raise Invalid("cdt", "more than a day in the future", params.get("cdt"))
    if ts < received - MAX_PAST:
        raise Invalid("cdt", "more than ten years in the past", params.get("cdt"))
    ip = params.get("cip") or client_ip
    ua = params.get("ua") or header_ua
    visitor = params.get("cid") or params.get("_id")
    if visitor is not None and not _HEX16.match(visitor):
        raise Invalid(
            "cid" if "cid" in params else "_id", "expected 16 hex digits", visitor
        )
    if visitor is None and not params.get("uid"):
        # Cookieless: a per-day hash, never the address itself (PRODUCT.md §9).
        seed = f"{site}|{anonymize_ip(ip)}|{ua}|{received.date()}"
        visitor = hashlib.md5(seed.encode()).hexdigest()[:16]

    properties: dict[str, Any] = {}
    event: str | None
    revenue = _num(params, "revenue")
    goal = params.get("idgoal")
    if goal is not None and goal != "":
        if not goal.isdigit():
            raise Invalid("idgoal", "expected a goal number (0 for ecommerce)", goal)
        if goal == "0":
            event = "order_completed" if params.get("ec_id") else "cart_updated"
            if params.get("ec_items"):
                properties["products"] = _items(params["ec_items"])
            for k, name in (
                ("ec_st", "subtotal"),
                ("ec_tx", "tax"),
                ("ec_sh", "shipping"),
                ("ec_dt", "discount"),
            ):
                if (v := _num(params, k)) is not None:
                    properties[name] = v
        else:
            event = "goal_converted"
            properties["goal_id"] = int(goal)
        kind = "track"
    elif params.get("e_c") or params.get("e_a"):
        if not (params.get("e_c") and params.get("e_a")):
            missing = "e_a" if params.get("e_c") else "e_c"
            raise Invalid(
                missing, "an event needs both e_c (category) and e_a (action)"
            )
        kind, event = "track", params["e_a"]
        properties.update(category=params["e_c"], action=params["e_a"])
        if "e_n" in params:
            properties["label"] = params["e_n"]
        if (v := _num(params, "e_v")) is not None:
            properties["value"] = v
    elif params.get("ping") == "1":
        kind, event = "track", "ping"
    else:
        kind, event = "page", params.get("action_name") or None
    if revenue is not None:
        properties["revenue"] = revenue
    if params.get("ec_id"):
        properties["order_id"] = params["ec_id"]
    dims = {m.group(1): v for k, v in params.items() if (m := _DIM.match(k))}
    if dims:
        properties["dimensions"] = dims

    context: dict[str, Any] = {
        "matomo": {k: v for k, v in params.items() if k != "token_auth"},
    }
    if "cip" in params and intake.config.anonymize_ip:
        # The address must not survive in the kept parameters either (§9).
        context["matomo"]["cip"] = anonymize_ip(params["cip"])
    if lang := params.get("lang") or header_lang:
        context["locale"] = lang.split(",")[0]
    if res := params.get("res"):
        context["screen"] = res
    canonical = "&".join(
        f"{k}={v}" for k, v in sorted(params.items()) if k != "token_auth"
    )
    row = {
        "event_id": hashlib.md5(canonical.encode()).hexdigest(),
        "type": kind,
        "event": event,
        "anonymous_id": visitor,
        "user_id": params.get("uid") or None,
        "timestamp": ts,
        "received_at": received,
        "session_id": None,
        "properties": properties,
        "context": context,
        "revenue": revenue,
        "currency": None,
        "order_id": params.get("ec_id") or None,
        "url": params.get("url") or None,
        "referrer": params.get("urlref") or None,
        "channel": None,
        "utm_source": None,
        "utm_medium": None,
        "utm_campaign": params.get("_rcn") or None,
        "utm_term": params.get("_rck") or None,
        "utm_content": None,
        "user_agent": ua,
        "ip": ip,
        "source": None,
        "import_id": None,
    }
    return row, f"matomo:{site}"


async def handle(
    intake: Intake,
    method: str,
    query: str,
    body: bytes,
    header_ua: str | None,
    header_lang: str | None,
    client_ip: str | None,
) -> Answer | bytes | None:
    """Answer one request: an `Answer` (JSON), the GIF bytes, or None for 204."""
    if len(body) > BULK_LIMIT:
        return Answer(
            413,
            {
                "status": "error",
                "error": "body over 1 MB; split it",
                "errors": [{"index": None, "field": "body", "problem": "too large"}],
            },
        )
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return Answer(
            400,
            {
                "status": "error",
                "error": "the body is not valid UTF-8",
                "errors": [
                    {"index": None, "field": "body", "problem": "not valid UTF-8"}
                ],
            },
        )
    received = now_utc()
    bulk = method == "POST" and text.lstrip().startswith("{")
    token: str | None = None
    if bulk:
        try:
            payload = orjson.loads(text)
            requests = payload["requests"]
            if not isinstance(requests, list) or not all(
                isinstance(r, str) for r in requests
            ):
                raise TypeError
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return Answer(
                400,
                {
                    "status": "error",
                    "error": 'bulk body must be {"requests": ["?idsite=…", …]}',
                    "errors": [
                        {
                            "index": None,
                            "field": "requests",
                            "problem": "not a list of query strings",
                        }
                    ],
                },
            )
        token = payload.get("token_auth") if isinstance(payload, dict) else None
        param_sets = [parse_params(r.partition("?")[2] or r) for r in requests]
    else:
        params = parse_params(query)
        if method == "POST" and text:
            params.update(parse_params(text))
        param_sets = [params]

    records: list[bytes] = []
    errors: list[dict[str, Any]] = []
    for i, params in enumerate(param_sets):
        site = params.get("idsite", "?")
        try:
            row, source = map_request(
                params, intake, received, header_ua, header_lang, client_ip, token
            )
            records.append(intake.event(row, "matomo", source))
        except Invalid as exc:
            errors.append({"index": i, "field": exc.field, "problem": exc.problem})
            raw = {k: v for k, v in params.items() if k != "token_auth"}
            records.append(
                intake.reject(
                    f"matomo:{site}", exc.field, exc.value, exc.problem, raw, received
                )
            )
    try:
        await intake.commit(b"".join(records))
    except OSError as exc:
        return Answer(
            503,
            {"status": "error", "error": f"events could not be stored ({exc}); retry"},
        )
    tracked = len(param_sets) - len(errors)
    if errors:
        return Answer(
            400,
            {
                "status": "error",
                "error": "; ".join(
                    f"[{e['index']}] {e['field']}: {e['problem']}" for e in errors[:5]
                ),
                "tracked": tracked,
                "invalid": len(errors),
                "invalid_indices": [e["index"] for e in errors],
                "errors": errors,
            },
        )
    if bulk:
        return Answer(
            200,
            {
                "status": "success",
                "tracked": tracked,
                "invalid": 0,
                "invalid_indices": [],
            },
        )
    if param_sets[0].get("send_image") == "0":
        return None
    return GIF
