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
from datetime import UTC, datetime, timedelta
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
    if not isinstance(value, str):
        raise Invalid(
            field, "expected an ISO 8601 text such as 2024-05-01T12:00:00Z", value
        )
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        raise Invalid(
            field, "unparseable; expected ISO 8601 such as 2024-05-01T12:00:00Z", value
        ) from None
    if ts.tzinfo is not None:
        ts = ts.astimezone(UTC).replace(tzinfo=None)
    return ts


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


def map_message(
    msg: Any, received_at: datetime, *, default_type: str | None = None
) -> dict[str, Any]:
    """The `events` row of one message; `default_type` is the endpoint's type."""
    if not isinstance(msg, dict):
        raise Invalid("message", f"expected a JSON object, got {type(msg).__name__}")
    kind = _str(msg, "type") or default_type
    if kind is None or kind.lower() not in TYPES:
        raise Invalid("type", f"unknown type; expected one of {', '.join(TYPES)}", kind)
    kind = kind.lower()
    if default_type and kind != default_type:
        raise Invalid("type", f"this endpoint takes {default_type} calls", kind)

    user_id, anonymous_id = _str(msg, "userId"), _str(msg, "anonymousId")
    if kind == "alias" and user_id is None:
        raise Invalid("userId", "an alias call needs userId (and previousId)")
    if user_id is None and anonymous_id is None:
        raise Invalid("userId", "neither userId nor anonymousId")
    event = _str(msg, "event") or _str(msg, "name")
    if kind == "track" and not event:
        raise Invalid("event", "a track call without an event name")

    properties, context = _obj(msg, "properties"), _obj(msg, "context")
    traits = _obj(msg, "traits")
    if kind == "identify" and not properties:
        properties = traits
    elif kind == "group":
        properties = {**properties, "groupId": _str(msg, "groupId"), "traits": traits}
    elif kind in ("page", "screen") and msg.get("category") is not None:
        # The spec's top-level page/screen `category` has no column; keep it.
        properties = {"category": _str(msg, "category"), **properties}
    elif kind == "alias":
        properties = {**properties, "previousId": _str(msg, "previousId")}

    # Timestamps: the Segment spec's "Timestamps" page: timestamp (else
    # originalTimestamp) is the device's clock; sentAt the device's clock at sending,
    # so received_at - sentAt is the skew to add.
    ts_raw = msg.get("timestamp", msg.get("originalTimestamp"))
    ts = parse_time(ts_raw, "timestamp") if ts_raw is not None else received_at
    sent_at = msg.get("sentAt")
    if sent_at is not None:
        ts = ts + (received_at - parse_time(sent_at, "sentAt"))
    if ts > received_at + MAX_FUTURE:
        raise Invalid("timestamp", "more than a day in the future", ts_raw)
    if ts < received_at - MAX_PAST:
        raise Invalid("timestamp", "more than ten years in the past", ts_raw)

    page = _sub(context, "page")
    campaign = _sub(context, "campaign")
    message_id = _str(msg, "messageId")
    if message_id is None:
        message_id = hashlib.md5(
            orjson.dumps(msg, option=orjson.OPT_SORT_KEYS)
        ).hexdigest()
    revenue = properties.get("revenue", properties.get("total"))
    return {
        "event_id": message_id,
        "type": kind,
        "event": event,
        "anonymous_id": anonymous_id,
        "user_id": user_id,
        "timestamp": ts,
        "received_at": received_at,
        "session_id": None,
        "properties": properties,
        "context": context,
        "revenue": _float(revenue),
        "currency": _text(properties.get("currency")),
        "order_id": _text(properties.get("order_id", properties.get("orderId"))),
        "url": _text(page.get("url", properties.get("url"))),
        "referrer": _text(page.get("referrer", properties.get("referrer"))),
        "channel": None,
        "utm_source": _text(campaign.get("source")),
        "utm_medium": _text(campaign.get("medium")),
        "utm_campaign": _text(campaign.get("name")),
        "utm_term": _text(campaign.get("term")),
        "utm_content": _text(campaign.get("content")),
        "user_agent": _text(context.get("userAgent")),
        "ip": _text(context.get("ip")),
        "source": None,
        "import_id": None,
    }
