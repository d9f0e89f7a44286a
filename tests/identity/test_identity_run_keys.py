"""The customer keys `clm run` makes once for its steps: same attribution as the
identity join, dropped after the run. Expected owners are worked out by hand."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from clm.identity.resolve import (
    current_customer_keys,
    customer_keys,
    resolve,
    run_customer_keys,
)
from clm.warehouse.engine import Warehouse


def _ev(
    eid: str, anon: str | None, user: str | None, context: Any = None
) -> dict[str, Any]:
    return {
        "event_id": eid,
        "type": "track",
        "event": "viewed",
        "anonymous_id": anon,
        "user_id": user,
        "timestamp": pd.Timestamp("2024-03-01 10:00") + pd.Timedelta(minutes=len(eid)),
        # Compact JSON, as `clm serve` writes it (the bot flag is matched as text).
        "context": json.dumps(context, separators=(",", ":")) if context else None,
        "import_id": "b1",
    }


def _owners(wh: Warehouse) -> dict[str, str]:
    with customer_keys(wh) as made:
        ev = made.events(wh).join(made.keys, "ck").select("event_id", "customer_id")
        df = ev.to_pandas()
    return dict(zip(df.event_id, df.customer_id, strict=True))


def test_keys_attribute_events_like_resolution() -> None:
    wh = Warehouse.duckdb(None)
    rows = [
        _ev("e1", "a1", None),  # anonymous visit, later identified as u1
        _ev("e2", "a1", "u1"),
        _ev("e3", None, " u1 "),  # spaces around the user id: the same person
        _ev("e4", "a2", None),  # never identified
        _ev("e5", "a3", "null"),  # placeholder user id: the anonymous id counts
        _ev("e6", None, "undefined"),  # no usable identifier: left out
        _ev("e7", "a1", None, {"clm": {"bot": True}}),  # a bot: left out
    ]
    wh.append("events", pd.DataFrame(rows))
    resolve(wh, salt="s")
    # By hand: a1 and u1 are one person whose id is the user id; a2 and a3 stay
    # anonymous customers under their `anon:` key.
    expected = {
        "e1": "u1",
        "e2": "u1",
        "e3": "u1",
        "e4": "anon:a2",
        "e5": "anon:a3",
    }
    assert _owners(wh) == expected
    with run_customer_keys(wh) as made:
        assert current_customer_keys(wh) is made
        assert _owners(wh) == expected  # read through the run's keys
        names = {made.pairs.get_name(), made.keys.get_name()}
        # Three customers, each with its own integer key.
        keys = made.keys.to_pandas()
        assert sorted(keys.customer_id) == ["anon:a2", "anon:a3", "u1"]
        assert keys.ck.nunique() == 3
    assert current_customer_keys(wh) is None
    assert not names & set(wh.con.list_tables())


def test_keys_without_resolution_fall_back_to_raw_ids() -> None:
    # No resolution has run: the user id, else `anon:` + the anonymous id.
    wh = Warehouse.duckdb(None)
    wh.append("events", pd.DataFrame([_ev("e1", "a1", None), _ev("e2", "a1", "u1")]))
    assert _owners(wh) == {"e1": "anon:a1", "e2": "u1"}
