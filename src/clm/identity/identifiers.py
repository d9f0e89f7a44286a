"""Identifiers: what counts as one, how it is normalised, and how events yield them.

An identifier is stored as one text key `kind:value` so that every table joins on a
single column: `user:<user id>`, `anon:<anonymous id>`, `email:<hash>`, `phone:<hash>`
and `custom:<trait>:<value>`. Emails are trimmed and lower-cased, phones reduced to
their digits, and both are hashed (SHA-256 of the workspace salt and the value) so the
identity tables never hold an address in clear.

Where identifiers come from (Segment spec, https://segment.com/docs/connections/spec/):
`userId` and `anonymousId` of every event (Matomo's `uid` and visitor id `_id` arrive
in the same columns through the collector); `email`, `phone` and the configured custom
ids in the traits of identify calls (kept in `properties`) and in `context.traits` of
any event; an alias call's `previousId` when the collector keeps it in `properties`.
Shortcoming: a `previousId` is taken as an anonymous id; an alias between two user ids
is seen only when the call also carries the old id as `anonymousId`.

Placeholder values (`undefined`, `null`, `0`, empty, `anonymous`, … compared
case-insensitively after trimming) are not identifiers: SDKs and templates send them
when the real id is missing, and linking on them would merge strangers.
"""

from __future__ import annotations

from collections.abc import Sequence

KINDS = ("user", "anon", "email", "phone", "custom")
USER = "user:"
ANON = "anon:"

# Values seen in the wild when an id is missing: JavaScript's String(undefined/null),
# template defaults, zeroed UUIDs. Compared after trim + lower.
PLACEHOLDERS = (
    "",
    "undefined",
    "null",
    "none",
    "nil",
    "nan",
    "0",
    "-1",
    "false",
    "true",
    "anonymous",
    "anon",
    "unknown",
    "guest",
    "n/a",
    "na",
    "-",
    "[object object]",
    "00000000-0000-0000-0000-000000000000",
)


def is_placeholder(value: str | None) -> bool:
    return value is None or value.strip().lower() in PLACEHOLDERS


def sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def valid_sql(col: str) -> str:
    """SQL: `col` is a real identifier value (not NULL, not a placeholder)."""
    values = ", ".join(sql_str(p) for p in PLACEHOLDERS)
    return f"({col} IS NOT NULL AND lower(trim({col})) NOT IN ({values}))"


def key_sql(col: str, prefix: str) -> str:
    """SQL: the identifier key of a user or anonymous id column, NULL if invalid."""
    return f"CASE WHEN {valid_sql(col)} THEN {sql_str(prefix)} || trim({col}) END"


def event_key_sql(user_col: str = "user_id", anon_col: str = "anonymous_id") -> str:
    """SQL: the key an event is attributed by: its user id, else its anonymous id.

    The user id comes first so that an event sent after a login on a shared device
    belongs to the person who logged in, whatever the device's other links.
    """
    return f"coalesce({key_sql(user_col, USER)}, {key_sql(anon_col, ANON)})"


def customer_id_of(key: str) -> str:
    """The customer id a key gives when it names a customer: a user's own id, else
    the key itself (`anon:…`, `email:…`), which cannot collide with a user id's key."""
    return key[len(USER) :] if key.startswith(USER) else key


def key_of_customer_id(cid: str) -> str:
    """Inverse of `customer_id_of`."""
    if any(cid.startswith(k + ":") for k in KINDS if k != "user"):
        return cid
    return USER + cid


def _hashed(expr: str, salt: str) -> str:
    return f"sha256({sql_str(salt)} || ':' || {expr})"


# Only identify and alias calls and events carrying context.traits can hold more than a
# user and an anonymous id ("rich" events); every other event is "plain".
RICH_SQL = (
    "coalesce(type IN ('identify', 'alias') OR context LIKE '%\"traits\"%', false)"
)


def plain_sql(where: str) -> str:
    """SQL over plain events matching `where`: one row per distinct raw id pair.

    Plain events are grouped by their raw (user id, anonymous id) before any text
    work, so the placeholder checks and key building run once per distinct pair, not
    once per event. Columns: `ukey`, `akey` (NULL when not a valid identifier),
    `first_seen`, `last_seen` and `event_id`, the earliest event by (time, event id).
    """
    return f"""SELECT {key_sql("user_id", USER)} AS ukey,
        {key_sql("anonymous_id", ANON)} AS akey, first_seen, last_seen, event_id
        FROM (SELECT user_id, anonymous_id, min(timestamp) AS first_seen,
          max(timestamp) AS last_seen,
          arg_min(event_id, (timestamp, event_id)) AS event_id
          FROM events WHERE ({where}) AND NOT {RICH_SQL} GROUP BY ALL)"""


def extract_sql(source: str, salt: str, custom_ids: Sequence[str]) -> str:
    """SQL over rich events in `source`: one row per event with its identifier keys.

    Columns: event_id, timestamp, reason (identify, alias or event), `hub` (the first
    valid key: user, else anonymous, else a trait) and `ids`: the candidate keys,
    NULL where a value is missing or invalid, possibly repeating `hub`.
    """
    # Each JSON text is parsed once: a list of paths gives a list of values. Traits
    # come from identify calls' properties, else from context.traits.
    names = ["email", "phone", *custom_ids]
    props = ", ".join(sql_str("$." + n) for n in names)
    ctx = ", ".join(sql_str("$.traits." + n) for n in names)
    traits = ", ".join(
        f"coalesce(p[{k}], c[{k}]) AS t{k}" for k in range(1, len(names) + 1)
    )
    email = "lower(trim(t1))"
    phone = "regexp_replace(t2, '[^0-9]', '', 'g')"
    parts = [
        key_sql("user_id", USER),
        key_sql("anonymous_id", ANON),
        f"CASE WHEN {valid_sql(email)} AND {email} LIKE '%@%' "
        f"THEN 'email:' || {_hashed(email, salt)} END",
        f"CASE WHEN length({phone}) >= 5 THEN 'phone:' || {_hashed(phone, salt)} END",
        key_sql("coalesce(prev[1], prev[2])", ANON),
    ]
    for k, name in enumerate(custom_ids, start=3):
        parts.append(
            f"CASE WHEN {valid_sql(f't{k}')} THEN "
            f"{sql_str('custom:' + name + ':')} || trim(t{k}) END"
        )
    return f"""SELECT event_id, timestamp, reason, coalesce(ids[1], {
        ", ".join(f"ids[{k}]" for k in range(2, len(parts) + 1))
    }) AS hub, ids
        FROM (SELECT event_id, timestamp, reason, [{", ".join(parts)}] AS ids
        FROM (SELECT event_id, timestamp, user_id, anonymous_id, reason, prev,
          {traits}
        FROM (SELECT event_id, timestamp, user_id, anonymous_id,
          CASE WHEN type IN ('identify', 'alias') THEN type ELSE 'event' END
            AS reason,
          CASE WHEN type = 'identify' THEN json_extract_string(properties, [{props}])
            END AS p,
          json_extract_string(context, [{ctx}]) AS c,
          CASE WHEN type = 'alias' THEN json_extract_string(properties,
            ['$.previousId', '$.previous_id']) END AS prev
        FROM {source} WHERE {RICH_SQL})))"""
