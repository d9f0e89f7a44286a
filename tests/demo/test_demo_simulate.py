"""The simulated shop: schema, determinism, consistency and realism of its events."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clm.demo.simulate import simulate_shop, write_parquet
from clm.errors import ConfigError

START = date(2024, 1, 1)
WEEKS = 104
END = datetime(2024, 1, 1) + timedelta(weeks=WEEKS)


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return simulate_shop(5000, seed=7, start=START, weeks=WEEKS)


@pytest.fixture(scope="module")
def events(table: pa.Table) -> pd.DataFrame:
    return table.to_pandas()


def test_schema_is_exactly_the_warehouse_events_table(table: pa.Table) -> None:
    # Written out from PRODUCT.md §3 / warehouse/schema.py, not read from the code.
    strings = ["event_id", "type", "event", "anonymous_id", "user_id"]
    expected = [(name, pa.string()) for name in strings]
    expected += [("timestamp", pa.timestamp("us")), ("received_at", pa.timestamp("us"))]
    expected += [
        (name, pa.string()) for name in ["session_id", "properties", "context"]
    ]
    expected += [("revenue", pa.float64())]
    expected += [
        (name, pa.string())
        for name in [
            "currency", "order_id", "url", "referrer", "channel", "utm_source",
            "utm_medium", "utm_campaign", "utm_term", "utm_content", "user_agent",
            "ip", "source", "import_id",
        ]
    ]  # fmt: skip
    assert [(f.name, f.type) for f in table.schema] == expected
    assert table.schema.field("timestamp").type.tz is None


def test_same_seed_same_data_other_seed_other_data(table: pa.Table) -> None:
    assert simulate_shop(5000, seed=7, start=START, weeks=WEEKS).equals(table)
    other = simulate_shop(5000, seed=8, start=START, weeks=WEEKS)
    assert not other.column("event_id").equals(table.column("event_id"))


def test_parquet_in_chunks_holds_the_same_events(tmp_path: Path) -> None:
    path = tmp_path / "shop.parquet"
    rows = write_parquet(path, 12_000, seed=3, weeks=20, chunk_customers=1)
    written = pq.read_table(path)
    assert rows == written.num_rows
    assert written.equals(simulate_shop(12_000, seed=3, weeks=20))
    assert not (tmp_path / "shop.parquet.partial").exists()


def test_event_ids_are_unique_hex(events: pd.DataFrame) -> None:
    assert events.event_id.is_unique
    assert events.event_id.str.fullmatch(r"[0-9a-f]{32}").all()
    assert (events.source == "demo").all()
    assert events.import_id.isna().all()


def test_timestamps_inside_the_period(events: pd.DataFrame) -> None:
    assert events.timestamp.min() >= pd.Timestamp(START)
    assert events.timestamp.max() < pd.Timestamp(END)
    delay = (events.received_at - events.timestamp).dt.total_seconds()
    assert delay.min() > 0 and delay.max() < 2


def test_orders_have_positive_revenue_and_an_id(events: pd.DataFrame) -> None:
    orders = events[events.event == "order_completed"]
    assert len(orders) > 500
    assert (orders.revenue > 0).all()
    assert orders.order_id.notna().all() and orders.order_id.is_unique
    assert (orders.currency == "EUR").all()
    # The properties repeat the order: id, revenue, and items adding up to it.
    for _, row in orders.head(50).iterrows():
        body = json.loads(row.properties)
        assert body["order_id"] == row.order_id
        items = sum(p["price"] * p["quantity"] for p in body["products"])
        assert body["revenue"] == pytest.approx(row.revenue)
        assert items + body["shipping"] == pytest.approx(row.revenue)
    # Only orders and refunds carry money.
    others = events[~events.event.isin(["order_completed", "order_refunded"])]
    assert others.revenue.isna().all() and others.order_id.isna().all()


def test_refunds_reference_an_earlier_order(events: pd.DataFrame) -> None:
    orders = events[events.event == "order_completed"].set_index("order_id")
    refunds = events[events.event == "order_refunded"]
    assert len(refunds) > 20
    assert refunds.order_id.isin(orders.index).all()
    assert refunds.order_id.is_unique
    matched = orders.loc[refunds.order_id]
    assert (refunds.revenue.to_numpy() < 0).all()
    assert (-refunds.revenue.to_numpy() <= matched.revenue.to_numpy() + 1e-9).all()
    assert (refunds.timestamp.to_numpy() > matched.timestamp.to_numpy()).all()
    assert (refunds.user_id.to_numpy() == matched.user_id.to_numpy()).all()


def test_user_id_only_from_sign_up_on(events: pd.DataFrame) -> None:
    signups = events[events.event == "signed_up"]
    assert signups.user_id.notna().all() and signups.user_id.is_unique
    signed_at = signups.set_index("user_id").timestamp
    first_seen = events.dropna(subset=["user_id"]).groupby("user_id").timestamp.min()
    assert first_seen.sort_index().equals(signed_at.sort_index())

    # Before the sign-up a visitor is anonymous; after it, every browser event of
    # that anonymous id carries the user id.
    device = signups.set_index("anonymous_id").timestamp
    known = events[events.anonymous_id.isin(device.index)]
    after = known.timestamp >= known.anonymous_id.map(device)
    assert known[~after].user_id.isna().all()
    assert known[after].user_id.notna().all()


def test_channels_match_referrer_and_utm(events: pd.DataFrame) -> None:
    landing = events[events.session_id.notna()].sort_values("timestamp")
    landing = landing.drop_duplicates("session_id")
    by = landing.groupby("channel")
    assert set(by.groups) == {
        "direct", "organic_search", "paid_search", "social", "email", "referral"
    }  # fmt: skip
    assert by.get_group("direct").referrer.isna().all()
    assert by.get_group("direct").utm_source.isna().all()
    organic = by.get_group("organic_search")
    assert organic.utm_medium.isna().all() and organic.referrer.notna().all()
    assert (by.get_group("paid_search").utm_medium == "cpc").all()
    assert (by.get_group("email").utm_medium == "email").all()
    assert by.get_group("referral").referrer.str.startswith("https://").all()
    assert events.ip.dropna().str.endswith(".0").all()
    pages = events[events.type == "page"]
    assert pages.url.str.startswith("https://shop.example.com/").all()


def _customers(events: pd.DataFrame) -> pd.Series:
    """One id per person: the user id, reached from any of its anonymous ids."""
    both = events.dropna(subset=["anonymous_id", "user_id"])
    anon_to_user = (
        both.drop_duplicates("anonymous_id").set_index("anonymous_id").user_id
    )
    return events.user_id.fillna(events.anonymous_id.map(anon_to_user)).fillna(
        events.anonymous_id
    )


def test_every_stage_of_the_ecommerce_model_is_populated(events: pd.DataFrame) -> None:
    # The ecommerce stage model (PRODUCT.md §4 plus won_back), worked out with
    # pandas as of the end of the period, first match wins.
    df = events.assign(customer=_customers(events))
    as_of = pd.Timestamp(END)
    customers = pd.Index(df.customer.unique())
    orders = df[df.event == "order_completed"].sort_values("timestamp")
    days = (as_of - orders.timestamp).dt.total_seconds() / 86400
    orders_total = orders.groupby("customer").size().reindex(customers, fill_value=0)
    orders_365 = orders[days <= 365].groupby("customer").size()
    orders_365 = orders_365.reindex(customers, fill_value=0)
    since = days.groupby(orders.customer).min().reindex(customers)
    gap = orders.groupby("customer").timestamp.diff().dt.days
    won = orders[(days <= 90) & (gap >= 365)].customer.unique()
    recent = df[(as_of - df.timestamp) <= pd.Timedelta(days=30)]
    sessions_30 = recent.groupby("customer").session_id.nunique()
    sessions_30 = sessions_30.reindex(customers, fill_value=0)
    signed = pd.Series(customers.isin(df[df.event == "signed_up"].customer), customers)

    stage = pd.Series("reach", customers)
    rules = [  # last assignment wins, so listed from the last rule to the first
        ("acquisition", (sessions_30 >= 2) | signed),
        ("conversion", orders_total == 1),
        ("retention", orders_total >= 2),
        ("at_risk", (orders_total >= 1) & (since > 90)),
        ("lapsed", (orders_total >= 1) & (since > 180)),
        ("loyalty", (orders_365 >= 3) & (since <= 90)),
        ("won_back", pd.Series(customers.isin(won), customers)),
    ]
    for name, when in rules:
        stage[when] = name
    counts = stage.value_counts()
    for name in ["reach", "acquisition", "conversion", "retention", "loyalty"]:
        assert counts.get(name, 0) >= 10, (name, counts.to_dict())
    for name in ["at_risk", "lapsed", "won_back"]:
        assert counts.get(name, 0) >= 5, (name, counts.to_dict())
    # Reach means a single visit: most visitors never come back.
    assert counts["reach"] > counts["acquisition"]


def test_size_and_visit_pattern(events: pd.DataFrame) -> None:
    per_customer = len(events) / 5000
    assert 8.5 <= per_customer <= 11.5
    visits = events.dropna(subset=["session_id"]).groupby(_customers(events))
    sessions = visits.session_id.nunique()
    assert len(sessions) == 5000
    assert (sessions <= 2).mean() > 0.6  # most bounce after one or two sessions
    assert sessions.max() >= 10


def test_seasonality_peaks_before_christmas(events: pd.DataFrame) -> None:
    orders = events[events.event == "order_completed"]
    december = orders.timestamp.dt.month == 12
    early = december & (orders.timestamp.dt.day <= 20)
    # 20 December days of two years against the average 20 days of the period.
    expected = len(orders) * 40 / (WEEKS * 7)
    assert early.sum() > 1.2 * expected


def test_bad_arguments_are_refused_with_the_value() -> None:
    with pytest.raises(ConfigError, match="'Mars/Base'"):
        simulate_shop(10, timezone="Mars/Base")
    with pytest.raises(ConfigError, match="customers: -1"):
        simulate_shop(-1)
    with pytest.raises(ConfigError, match="weeks: 0"):
        simulate_shop(10, weeks=0)
    assert simulate_shop(0).num_rows == 0


def test_the_shop_clock_follows_the_time_zone() -> None:
    tokyo = simulate_shop(2000, seed=1, weeks=8, timezone="Asia/Tokyo").to_pandas()
    berlin = simulate_shop(2000, seed=1, weeks=8, timezone="Europe/Berlin").to_pandas()
    # Evening peak at 20-21 h local: 11-12 h UTC in Tokyo, 19-20 h UTC in Berlin.
    assert tokyo.timestamp.dt.hour.isin([11, 12]).mean() > 0.08
    assert berlin.timestamp.dt.hour.isin([19, 20]).mean() > 0.08
    assert np.isclose(len(tokyo), len(berlin), rtol=0.2)


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def start(self, label: str, total: float | None = None) -> None:
        self.calls.append(("start", total))

    def advance(self, amount: float = 1) -> None:
        self.calls.append(("advance", amount))

    def done(self) -> None:
        self.calls.append(("done", None))


def test_progress_counts_customers_chunk_by_chunk(tmp_path: Path) -> None:
    recorder = _Recorder()
    write_parquet(
        tmp_path / "p.parquet", 25_000, weeks=4, chunk_customers=10_000,
        progress=recorder,
    )  # fmt: skip
    assert recorder.calls == [
        ("start", 25_000),
        ("advance", 10_000),
        ("advance", 10_000),
        ("advance", 5_000),
        ("done", None),
    ]
