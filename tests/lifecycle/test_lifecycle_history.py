"""Stage history on hand-made cases, on every engine (DuckDB, and Spark where Java is).

Every expected interval below was worked out by hand from the rules, the event times and
the period boundaries; the reasoning is written next to each case. Weeks are ISO weeks:
in 2024 they start on Mondays Jan 1, 8, 15, 22, 29, Feb 5, 12, 19, 26, Mar 4, 11, 18.
A period's stage is evaluated at its end (the next Monday 00:00), or at the observation
end (the midnight after the last event) for the last, unfinished period.
"""

from __future__ import annotations

from datetime import date, datetime

import pandas as pd
import pytest

from builders import events
from clm.lifecycle.history import run_model
from clm.lifecycle.model import load_model_text

D = datetime.fromisoformat

MODEL = """
name: t
version: 1
grain: week
features:
  orders: count(event = 'order_completed')
  orders_28d: count(event = 'order_completed', within = 28d)
  days_since_order: days_since(event = 'order_completed')
stages:
  - {name: lapsed, when: "orders >= 1 and days_since_order > 20"}
  - {name: active, when: "orders_28d >= 2"}
  - {name: buyer, when: "orders >= 1"}
  - {name: visitor, when: "true"}
"""


def history(
    wh, model: str = "t"
) -> dict[str, list[tuple[str, datetime, datetime | None]]]:
    h = wh.table("stage_history").to_pandas()
    h = h[h.model == model].sort_values(["customer_id", "valid_from"])
    out: dict[str, list] = {}
    for r in h.itertuples():
        vt = None if pd.isna(r.valid_to) else r.valid_to.to_pydatetime()
        out.setdefault(r.customer_id, []).append(
            (r.stage, r.valid_from.to_pydatetime(), vt)
        )
    return out


CASES = [
    # c1 moves back and forth. Orders Wed Jan 3 12:00 and Wed Jan 10 12:00, then Mon
    # Feb 12 09:00.
    # wk Jan 1 (eval Jan 8): 1 order → buyer.
    # wk Jan 8 (eval Jan 15): 2 orders in 28 days → active; still at eval Jan 29, since
    #   Jan 3 12:00 + 28 d = Jan 31 12:00 ≥ Jan 29; days since = 18.
    # wk Jan 29 (eval Feb 5): 25 days since Jan 10 12:00 → lapsed; wk Feb 5 too.
    # wk Feb 12 (eval Feb 19): order 6 days ago, the January orders left the window
    #   (Jan 10 12:00 + 28 d = Feb 7 12:00) → buyer; eval Mar 4: 20.6 → 20, not > 20.
    # wk Mar 4 (eval Mar 11): 27 days → lapsed until the end.
    ("c1", None, "2024-01-01 08:00"),
    ("c1", "order_completed", "2024-01-03 12:00"),
    ("c1", "order_completed", "2024-01-10 12:00"),
    ("c1", "order_completed", "2024-02-12 09:00"),
    # c2's only event falls in the last period (wk Mar 18) → visitor from Mar 18; it
    # also sets the observation end to Mar 21 00:00.
    ("c2", None, "2024-03-20 10:00"),
    # c3 orders exactly at a boundary, Mon Jan 15 00:00:00: that is wk Jan 15, not wk
    # Jan 8. 21 days later is exactly Feb 5 00:00, the end of wk Jan 29: floor(21) > 20
    # → lapsed from wk Jan 29.
    ("c3", "order_completed", "2024-01-15 00:00:00"),
    # c4 orders one second before the boundary, Sun Jan 14 23:59:59: wk Jan 8. It turns
    # 21 days old at Feb 4 23:59:59, first seen by the eval of Feb 5 → lapsed wk Jan 29.
    ("c4", "order_completed", "2024-01-14 23:59:59"),
]

EXPECTED = {
    "c1": [
        ("buyer", D("2024-01-01"), D("2024-01-08")),
        ("active", D("2024-01-08"), D("2024-01-29")),
        ("lapsed", D("2024-01-29"), D("2024-02-12")),
        ("buyer", D("2024-02-12"), D("2024-03-04")),
        ("lapsed", D("2024-03-04"), None),
    ],
    "c2": [("visitor", D("2024-03-18"), None)],
    "c3": [
        ("buyer", D("2024-01-15"), D("2024-01-29")),
        ("lapsed", D("2024-01-29"), None),
    ],
    "c4": [
        ("buyer", D("2024-01-08"), D("2024-01-29")),
        ("lapsed", D("2024-01-29"), None),
    ],
}


def test_history_by_hand(wh):
    wh.append("events", events(CASES))
    result = run_model(wh, load_model_text(MODEL), timezone="UTC")
    assert history(wh) == EXPECTED
    assert result.receipt.counts["customers"] == 4
    assert result.receipt.counts["intervals"] == 10
    assert result.receipt.details["observation_end"] == "2024-03-21 00:00:00"


def test_transitions_follow_history(wh):
    wh.append("events", events(CASES))
    run_model(wh, load_model_text(MODEL), timezone="UTC")
    t = wh.table("stage_transitions").to_pandas()
    c1 = t[t.customer_id == "c1"].sort_values("at")
    got = [
        (
            None if pd.isna(r.from_stage) else r.from_stage,
            r.to_stage,
            r.at.to_pydatetime(),
        )
        for r in c1.itertuples()
    ]
    assert got == [
        (None, "buyer", D("2024-01-01")),
        ("buyer", "active", D("2024-01-08")),
        ("active", "lapsed", D("2024-01-29")),
        ("lapsed", "buyer", D("2024-02-12")),
        ("buyer", "lapsed", D("2024-03-04")),
    ]
    assert len(t) == 10


FUNNEL = """
name: f
version: 1
grain: week
progression: {progression}
features:
  orders_28d: count(event = 'order_completed', within = 28d)
  visits: count(type = 'page')
stages:
  - {{name: customer, when: "orders_28d >= 1"}}
  - {{name: lead, when: "visits >= 2"}}
  - {{name: subscriber, when: "true"}}
"""

# c5: page Tue Jan 2 → subscriber; page Tue Jan 9 → 2 visits, lead; order Wed Jan 17
# → customer. The order leaves the 28-day window at Feb 14 00:00; the first period end
# after that is Feb 19 (wk Feb 12): a dynamic model falls back to lead there, a
# forward-only model stays customer. c2 keeps the observation open until Mar 21.
FUNNEL_EVENTS = [
    ("c5", None, "2024-01-02 00:00"),
    ("c5", None, "2024-01-09 00:00"),
    ("c5", "order_completed", "2024-01-17 00:00"),
    ("c2", None, "2024-03-20 10:00"),
]


@pytest.mark.parametrize(
    ("progression", "expected"),
    [
        (
            "dynamic",
            [
                ("subscriber", D("2024-01-01"), D("2024-01-08")),
                ("lead", D("2024-01-08"), D("2024-01-15")),
                ("customer", D("2024-01-15"), D("2024-02-12")),
                ("lead", D("2024-02-12"), None),
            ],
        ),
        (
            "forward_only",
            [
                ("subscriber", D("2024-01-01"), D("2024-01-08")),
                ("lead", D("2024-01-08"), D("2024-01-15")),
                ("customer", D("2024-01-15"), None),
            ],
        ),
    ],
)
def test_forward_only_never_goes_back(wh, progression, expected):
    wh.append("events", events(FUNNEL_EVENTS))
    run_model(
        wh, load_model_text(FUNNEL.format(progression=progression)), timezone="UTC"
    )
    assert history(wh, "f")["c5"] == expected


DAILY = """
name: d
version: 1
grain: day
features:
  orders: count(event = 'order_completed')
  days_since_order: days_since(event = 'order_completed')
stages:
  - {name: lapsed, when: "orders >= 1 and days_since_order >= 2"}
  - {name: buyer, when: "orders >= 1"}
  - {name: visitor, when: "true"}
"""


def test_reporting_time_zone_across_daylight_saving(wh):
    # Europe/Berlin springs forward on Sun 2024-03-31 at 02:00: local day Mar 30 starts
    # at Mar 29 23:00 UTC, Mar 31 at Mar 30 23:00 UTC and lasts 23 hours, Apr 1 starts
    # at Mar 31 22:00 UTC, Apr 2 at Apr 1 22:00 UTC.
    # d1 orders at Mar 30 22:30 UTC = 23:30 CET → local day Mar 30. It is two days old
    # at Apr 1 22:30 UTC; day ends are Apr 1 22:00 (too early), Apr 2 22:00 → lapsed on
    # local day Apr 2, which starts at Apr 1 22:00 UTC.
    # d3 orders at Mar 31 22:30 UTC = Apr 1 00:30 CEST → local day Apr 1 (a fixed +1 h
    # offset would wrongly put it on Mar 31).
    rows = [
        ("d1", "order_completed", "2024-03-30 22:30"),
        ("d3", "order_completed", "2024-03-31 22:30"),
        ("d2", None, "2024-04-05 12:00"),
    ]
    wh.append("events", events(rows))
    run_model(wh, load_model_text(DAILY), timezone="Europe/Berlin")
    h = history(wh, "d")
    assert h["d1"] == [
        ("buyer", D("2024-03-29 23:00"), D("2024-04-01 22:00")),
        ("lapsed", D("2024-04-01 22:00"), None),
    ]
    # d3: day Apr 1 (from Mar 31 22:00 UTC); two days old at Apr 2 22:30 UTC, first
    # day end after that is Apr 3 22:00 → lapsed on local day Apr 3 (from Apr 2 22:00).
    assert h["d3"] == [
        ("buyer", D("2024-03-31 22:00"), D("2024-04-02 22:00")),
        ("lapsed", D("2024-04-02 22:00"), None),
    ]


def test_new_version_replays_and_keeps_the_old(wh):
    wh.append("events", events(CASES))
    run_model(wh, load_model_text(MODEL), timezone="UTC")
    v2 = MODEL.replace("version: 1", "version: 2").replace("> 20", "> 40")
    run_model(wh, load_model_text(v2), timezone="UTC")
    h = wh.table("stage_history").to_pandas()
    assert sorted(h.model_version.unique()) == [1, 2]
    v1_c3 = h[(h.model_version == 1) & (h.customer_id == "c3")]
    v2_c3 = h[(h.model_version == 2) & (h.customer_id == "c3")]
    assert sorted(v1_c3.stage) == ["buyer", "lapsed"]
    # 41 days after Jan 15 00:00 is Feb 25 00:00, first seen at the end of wk Feb 19
    # (Feb 26) → lapsed from Feb 19.
    assert sorted(zip(v2_c3.stage, v2_c3.valid_from, strict=True)) == [
        ("buyer", pd.Timestamp("2024-01-15")),
        ("lapsed", pd.Timestamp("2024-02-19")),
    ]
    # Running version 2 again replaces it rather than adding to it.
    run_model(wh, load_model_text(v2), timezone="UTC")
    again = wh.table("stage_history").to_pandas()
    assert len(again) == len(h)


def test_as_of_cuts_the_observation(wh):
    wh.append("events", events(CASES))
    result = run_model(
        wh, load_model_text(MODEL), timezone="UTC", as_of=date(2024, 1, 31)
    )
    h = history(wh)
    # Observation ends Feb 1 00:00: c1 is lapsed? no: at Feb 1, 21.5 days since Jan 10
    # 12:00 → 21 > 20 → lapsed in wk Jan 29 (evaluated at Feb 1).
    assert h["c1"][-1] == ("lapsed", D("2024-01-29"), None)
    assert "c2" not in h  # its only event is after the observation end
    assert result.receipt.details["observation_end"] == "2024-02-01 00:00:00"


def test_bot_events_make_no_customer(wh):
    # The collector flags crawlers in context.clm.bot; they are left out of stages.
    frame = events(
        [("human", None, "2024-01-02 10:00"), ("crawler", None, "2024-01-02 11:00")]
    )
    frame["context"] = [None, '{"clm":{"bot":true,"browser":"Googlebot"}}']
    wh.append("events", frame)
    run_model(wh, load_model_text(MODEL), timezone="UTC")
    assert set(history(wh)) == {"human"}


def test_activity_template_by_hand(wh):
    """The built-in `activity` template counts every event (`count()`, no filter)
    in the period, the two periods and all time. On CASES, weekly in UTC:
    c1 (page Mon Jan 1, orders Wed Jan 3 and 10, Mon Feb 12): two events in wk Jan 1
    and all it has → new; one in wk Jan 8 with three over two weeks → returning;
    none from wk Jan 15 → dormant; one in wk Feb 12, none in wk Feb 5, four in all →
    resurrecting; none from wk Feb 19 → dormant. c2, c3, c4: new in the week of
    their only event, dormant from the next (c2's is the last week)."""
    from clm.lifecycle.model import load_model

    wh.append("events", events(CASES))
    run_model(wh, load_model("activity"), timezone="UTC")
    assert history(wh, "activity") == {
        "c1": [
            ("new", D("2024-01-01"), D("2024-01-08")),
            ("returning", D("2024-01-08"), D("2024-01-15")),
            ("dormant", D("2024-01-15"), D("2024-02-12")),
            ("resurrecting", D("2024-02-12"), D("2024-02-19")),
            ("dormant", D("2024-02-19"), None),
        ],
        "c2": [("new", D("2024-03-18"), None)],
        "c3": [
            ("new", D("2024-01-15"), D("2024-01-22")),
            ("dormant", D("2024-01-22"), None),
        ],
        "c4": [
            ("new", D("2024-01-08"), D("2024-01-15")),
            ("dormant", D("2024-01-15"), None),
        ],
    }
