"""One Segment-spec message (a Python dict) mapped onto a row of the `events` table.

This is the per-message twin of the SQL mapping in `collect/events_file.py` and follows
the same rules, listed in that module's docstring (messageId → event_id, else an md5 of
the message; `name` for page and screen calls; `properties`, else `traits`; revenue
from `properties.revenue` else `properties.total`; url and referrer from
`context.page` else `properties`; `utm_*` from `context.campaign`; clock skew corrected
by `receivedAt - sentAt` as the Segment spec's "Timestamps" page describes). The HTTP
collector needs it per message, in Python, before the event is spooled, so it cannot
reuse the SQL; a test keeps the two in agreement on the same messages.
NOTE for the owner of events_file.py: when that module moves to per-row Python, it can
call `map_message` instead of keeping its own copy of the rules.

A message that breaks a rule raises `Invalid` with the field at fault and what was
expected; the caller stores it in `rejected`.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any

import orjson

TYPES = ("track", "page", "screen", "identify", "alias", "group")

# Events dated further than this from the moment they arrive are refused: a day ahead
# covers any device clock left uncorrected, ten years back any honest backfill.
MAX_FUTURE = timedelta(days=1)
MAX_PAST = timedelta(days=3650)


class Invalid(ValueError):
    """A message breaks a rule: `field` names it; the text says what is expected."""

    def __init__(self, field: str, problem: str, value: Any = None) -> None:
        super().__init__(f"{field}: {problem}")
        self.field, self.problem, self.value = field, problem, value


def parse_time(value: Any, field: str) -> datetime:
    """An ISO 8601 text as a naive UTC datetime; zone-less text is read as UTC."""
    if type(value) is not str:
        raise Invalid(
            field, "expected an ISO 8601 text such as 2024-05-01T12:00:00Z", value
        )
    if len(value) >= 20 and value[-1] == "Z" and value[10] == "T":
        # The common form, a full UTC date-time ending in Z: read without the Z it
        # is already the naive UTC datetime (no zone to convert away).
        try:
            ts = _fromiso(value[:-1])
        except ValueError:
            pass
        else:
            if ts.tzinfo is None:
                return ts
    try:
        # Python 3.11 reads a trailing "Z" itself; spaces and "z" need help.
        ts = _fromiso(value)
    except ValueError:
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            ts = _fromiso(text)
        except ValueError:
            raise Invalid(
                field,
                "unparseable; expected ISO 8601 such as 2024-05-01T12:00:00Z",
                value,
            ) from None
    offset = ts.utcoffset()
    if offset is not None:
        ts = ts.replace(tzinfo=None) - offset
    return ts


_fromiso = datetime.fromisoformat


def _str(msg: dict[str, Any], key: str) -> str | None:
    """A string field; numbers pass as ids (SDKs send them); else Invalid."""
    value = msg.get(key)
    if value is None:
        return None
    if type(value) is str:  # the common case first: this runs for every event
        if "\x00" in value:
            raise Invalid(key, "contains a NUL character", value)
        return value
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise Invalid(key, f"expected a string, got {type(value).__name__}", value)
    text = str(value)
    if "\x00" in text:
        raise Invalid(key, "contains a NUL character", text)
    return text


def _obj(msg: dict[str, Any], key: str) -> dict[str, Any]:
    value = msg.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Invalid(key, f"expected a JSON object, got {type(value).__name__}", value)
    return value


def _sub(obj: dict[str, Any], key: str) -> dict[str, Any]:
    value = obj.get(key)
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    if value is None or type(value) is str:
        return value
    if isinstance(value, dict | list):
        return None
    return str(value)


def _float(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


_TYPESET = frozenset(TYPES)
_ABSENT = object()  # a key not in the message (unlike a key holding null)
UTM_COLUMNS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")
_OBJECTS = ("properties", "context", "traits")


def map_message(
    msg: Any,
    received_at: datetime,
    *,
    default_type: str | None = None,
    skew: timedelta | None = None,
) -> dict[str, Any]:
    """The `events` row of one message; `default_type` is the endpoint's type.
    Columns without a value are left out of the dict (read them with `.get`).

    `skew` is `received_at - sentAt` when the caller parsed a sentAt shared by a
    whole batch once (the message has none of its own); otherwise the message's own
    `sentAt` is used. This runs for every event the collector receives, so the
    common case (fields of the expected types) takes the shortest path; anything
    else goes through the checks that name the field.
    """
    if type(msg) is not dict and not isinstance(msg, dict):
        raise Invalid("message", f"expected a JSON object, got {type(msg).__name__}")
    get = msg.get
    kind = get("type")
    if kind not in _TYPESET:
        kind = _str(msg, "type") or default_type
        if kind is None or kind.lower() not in TYPES:
            raise Invalid(
                "type", f"unknown type; expected one of {', '.join(TYPES)}", kind
            )
        kind = kind.lower()
    if default_type and kind != default_type:
        raise Invalid("type", f"this endpoint takes {default_type} calls", kind)

    user_id, anonymous_id = get("userId"), get("anonymousId")
    if user_id is not None and (type(user_id) is not str or "\x00" in user_id):
        user_id = _str(msg, "userId")
    if anonymous_id is not None and (
        type(anonymous_id) is not str or "\x00" in anonymous_id
    ):
        anonymous_id = _str(msg, "anonymousId")
    if user_id is None:
        if kind == "alias":
            raise Invalid("userId", "an alias call needs userId (and previousId)")
        if anonymous_id is None:
            raise Invalid("userId", "neither userId nor anonymousId")
    event = get("event")
    if type(event) is not str or "\x00" in event or not event:
        event = _str(msg, "event") or _str(msg, "name")
    if kind == "track" and not event:
        raise Invalid("event", "a track call without an event name")

    properties, context, traits = get("properties"), get("context"), get("traits")
    if type(properties) is not dict:
        properties = _obj(msg, "properties")
    if type(context) is not dict:
        context = _obj(msg, "context")
    if traits is None:
        traits = {}
    elif type(traits) is not dict:
        traits = _obj(msg, "traits")
    if kind == "track":
        pass
    elif kind == "identify" and not properties:
        properties = traits
    elif kind == "group":
        properties = {**properties, "groupId": _str(msg, "groupId"), "traits": traits}
    elif kind in ("page", "screen") and get("category") is not None:
        # The spec's top-level page/screen `category` has no column; keep it.
        properties = {"category": _str(msg, "category"), **properties}
    elif kind == "alias":
        properties = {**properties, "previousId": _str(msg, "previousId")}

    # Timestamps: the Segment spec's "Timestamps" page: timestamp (else
    # originalTimestamp) is the device's clock; sentAt the device's clock at sending,
    # so received_at - sentAt is the skew to add.
    ts_raw = get("timestamp", _ABSENT)
    if ts_raw is _ABSENT:
        ts_raw = get("originalTimestamp")
    ts = parse_time(ts_raw, "timestamp") if ts_raw is not None else received_at
    sent_at = get("sentAt")
    if sent_at is not None:
        ts = ts + (received_at - parse_time(sent_at, "sentAt"))
    elif skew is not None:
        ts = ts + skew
    if ts > received_at + MAX_FUTURE:
        raise Invalid("timestamp", "more than a day in the future", ts_raw)
    if ts < received_at - MAX_PAST:
        raise Invalid("timestamp", "more than ten years in the past", ts_raw)

    page = context.get("page")
    if type(page) is not dict:
        page = {}
    campaign = context.get("campaign")
    if campaign is None:
        utm: tuple[Any, ...] = (None, None, None, None, None)
    else:
        if type(campaign) is not dict:
            campaign = {}
        c = campaign.get
        utm = (
            _text(c("source")),
            _text(c("medium")),
            _text(c("name")),
            _text(c("term")),
            _text(c("content")),
        )
    message_id = get("messageId")
    if type(message_id) is not str or "\x00" in message_id:
        message_id = _str(msg, "messageId")
    if message_id is None:
        message_id = hashlib.md5(
            orjson.dumps(msg, option=orjson.OPT_SORT_KEYS)
        ).hexdigest()
    p = properties.get
    revenue = p("revenue", p("total"))
    url = page["url"] if "url" in page else p("url")
    referrer = page["referrer"] if "referrer" in page else p("referrer")
    currency, order_id = p("currency"), p("order_id", p("orderId"))
    ua, ip = context.get("userAgent"), context.get("ip")
    # Only the fields that hold a value: a column left out is NULL when the loader
    # reads the spool, and every key written costs in the request (orjson) and in
    # the loader (DuckDB's JSON reader) alike.
    row: dict[str, Any] = {
        "event_id": message_id,
        "type": kind,
        "event": event,
        "timestamp": ts,
        "received_at": received_at,
        "properties": properties,
        "context": context,
    }
    if anonymous_id is not None:
        row["anonymous_id"] = anonymous_id
    if user_id is not None:
        row["user_id"] = user_id
    if revenue is not None and (value := _float(revenue)) is not None:
        row["revenue"] = value
    if currency is not None:
        row["currency"] = currency if type(currency) is str else _text(currency)
    if order_id is not None:
        row["order_id"] = order_id if type(order_id) is str else _text(order_id)
    if url is not None:
        row["url"] = url if type(url) is str else _text(url)
    if referrer is not None:
        row["referrer"] = referrer if type(referrer) is str else _text(referrer)
    if campaign is not None:
        for name, value in zip(UTM_COLUMNS, utm, strict=True):
            if value is not None:
                row[name] = value
    if ua is not None:
        row["user_agent"] = ua if type(ua) is str else _text(ua)
    if ip is not None:
        row["ip"] = ip if type(ip) is str else _text(ip)
    return row
