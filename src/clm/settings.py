"""The one settings table: every setting's name, type, default, help and environment
variable. `clm.yaml`, the CLI and the docs all read it; `docs/settings.md` is generated
from it and a test fails when the two disagree.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from clm.errors import ConfigError


@dataclass(frozen=True)
class Setting:
    name: str
    type: type
    default: Any
    help: str

    @property
    def env(self) -> str:
        return "CLM_" + self.name.upper().replace(".", "_")


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "warehouse",
        str,
        "clm.duckdb",
        "DuckDB file of the warehouse, relative to the workspace",
    ),
    Setting(
        "timezone",
        str,
        "UTC",
        "Reporting time zone (IANA name): periods start at its midnight",
    ),
    Setting("currency", str, "EUR", "Currency of revenue figures (ISO 4217)"),
    Setting("language", str, "en", "Language of reports: en or de"),
    Setting(
        "models",
        list,
        ["ecommerce"],
        "Stage models in use: template names or YAML paths",
    ),
    Setting("threads", int, 0, "Engine threads; 0 lets the engine choose"),
    Setting(
        "memory_limit",
        str,
        "3GB",
        "Most memory the engine may use before it spills to disk (DuckDB syntax)",
    ),
    # -- clm serve: the HTTP collector (docs/collector.md) ----------------------------
    Setting("serve.host", str, "127.0.0.1", "Address `clm serve` binds to"),
    Setting("serve.port", int, 8700, "Port `clm serve` listens on"),
    Setting(
        "serve.write_keys",
        list,
        [],
        "Segment write keys as KEY=SOURCE (or KEY); SOURCE names the source in events",
    ),
    Setting(
        "serve.matomo_sites",
        list,
        [],
        "Matomo idsite values accepted; empty accepts any positive integer",
    ),
    Setting(
        "serve.spool_dir",
        str,
        "spool",
        "Folder of the durable event spool, relative to the workspace",
    ),
    Setting(
        "serve.batch_size",
        int,
        32,
        "Spool segments the loader moves into the warehouse per transaction",
    ),
    Setting(
        "serve.flush_interval_ms",
        int,
        1000,
        "How often (ms) the spool seals a segment and the loader runs",
    ),
    Setting(
        "serve.dedup_window_minutes",
        int,
        1440,
        "How far back (minutes) the loader looks for an event id already stored; "
        "the ids of that span are held in memory (16-32 bytes each), so lower it "
        "for very high event rates",
    ),
    Setting(
        "serve.session_timeout_minutes",
        int,
        30,
        "Minutes of inactivity after which a visitor's next event starts a session",
    ),
    Setting(
        "serve.anonymize_ip",
        int,
        1,
        "1: zero the IPv4 last octet / IPv6 last 80 bits before storing; 0: keep IPs",
    ),
    Setting(
        "serve.bot_filter",
        int,
        1,
        "1: flag bot and crawler events (context.clm.bot) so metrics skip them; 0: off",
    ),
    # -- identity resolution (docs/identity.md) ----------------------------------------
    Setting(
        "identity.cap",
        int,
        5,
        "An identifier linked to more user ids than this is quarantined, not merged",
    ),
    Setting(
        "identity.conflicts",
        str,
        "block",
        "Links joining two customers that each have a user id: block (record) or merge",
    ),
    Setting(
        "identity.salt",
        str,
        "",
        "Salt of email/phone hashes; empty: generated per workspace, kept in clm_meta",
    ),
    Setting(
        "identity.custom_ids",
        list,
        ["crm_id"],
        "Trait names whose values are identifiers (custom ids from a CRM or shop)",
    ),
    Setting(
        "serve.read_tokens",
        list,
        [],
        "Tokens for the read API and dashboard (Bearer); empty: open to whoever can "
        "reach serve.host",
    ),
)
BY_NAME = {s.name: s for s in SETTINGS}
LANGUAGES = ("en", "de")
CONFLICT_POLICIES = ("block", "merge")


def resolve(values: dict[str, Any]) -> dict[str, Any]:
    """Defaults, overlaid by clm.yaml `values`, overlaid by CLM_* variables."""
    unknown = set(values) - set(BY_NAME)
    if unknown:
        from clm.errors import known

        raise ConfigError(
            f"clm.yaml: unknown setting(s) {', '.join(sorted(unknown))}; "
            f"known: {known(BY_NAME)}"
        )
    out: dict[str, Any] = {}
    for s in SETTINGS:
        value = values.get(s.name, s.default)
        if s.env in os.environ:
            raw = os.environ[s.env]
            value = (
                [v.strip() for v in raw.split(",") if v.strip()]
                if s.type is list
                else raw
            )
        out[s.name] = _coerce(s, value)
    return out


def _coerce(s: Setting, value: Any) -> Any:
    try:
        if s.type is list:
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list):
                raise TypeError
            value = [str(v) for v in value]
        elif s.type is int:
            value = int(value)
        else:
            value = str(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"setting `{s.name}`: {value!r} is not a {s.type.__name__}"
        ) from None
    if s.name == "timezone":
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(
                f"setting `timezone`: {value!r} is not an IANA time zone "
                "(for example Europe/Berlin or UTC)"
            ) from None
    if s.name == "identity.conflicts" and value not in CONFLICT_POLICIES:
        raise ConfigError(
            f"setting `identity.conflicts`: {value!r}; expected one of "
            f"{', '.join(CONFLICT_POLICIES)}"
        )
    if s.name == "currency":
        _check_currency(value)
    if s.name == "language" and value not in LANGUAGES:
        raise ConfigError(f"setting `language`: {value!r}; expected one of en, de")
    return value


def _check_currency(value: str) -> None:
    """Only ISO 4217 codes: reports format money by the code (Babel's list, which
    also holds withdrawn codes such as DEM, so old data keeps its currency)."""
    from babel.numbers import list_currencies

    codes = list_currencies()
    if value in codes:
        return
    upper = value.strip().upper()
    hint = f"; did you mean {upper!r}?" if upper in codes else ""
    raise ConfigError(
        f"setting `currency`: {value!r} is not an ISO 4217 currency code; expected "
        f"three capital letters such as EUR, USD, GBP or CHF{hint}"
    )


def markdown_table() -> str:
    rows = [
        "| setting | type | default | environment | meaning |",
        "|---|---|---|---|---|",
    ]
    for s in SETTINGS:
        rows.append(
            f"| `{s.name}` | {s.type.__name__} | `{s.default}` | `{s.env}` | {s.help} |"
        )
    return "\n".join(rows) + "\n"


DOC_HEADER = (
    "# Settings\n\nEvery key of `clm.yaml`, generated from `clm.settings.SETTINGS` by "
    "`python -m clm.settings > docs/settings.md` (a test fails when this page and the "
    "table disagree). An environment variable overrides the file.\n\n"
)

if __name__ == "__main__":
    print(DOC_HEADER + markdown_table(), end="")
