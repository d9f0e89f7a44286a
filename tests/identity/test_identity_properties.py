"""Property-based tests of identity resolution (hypothesis).

The expected partition comes from a few lines of union-find written here, not from
the code under test: under the `merge` policy with no cap reached, two events belong to
the same customer exactly when their identifiers are connected.
"""

from __future__ import annotations

import random
from typing import Any

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clm.identity.resolve import customer_events, resolve
from clm.warehouse.engine import Warehouse

ANONS = ["A", "B", "C", "D", "E", "F"]
USERS = [None, None, "U1", "U2", "U3", "null"]

event_rows = st.lists(
    st.tuples(
        st.sampled_from(ANONS),
        st.sampled_from(USERS),
        st.integers(0, 30),  # day
        st.sampled_from([None, None, "A", "C", "E"]),  # alias previousId
    ),
    min_size=1,
    max_size=14,
)


def frame(rows: list[tuple[Any, ...]], batch: str = "b") -> pd.DataFrame:
    out = []
    for i, (anon, user, day, prev) in enumerate(rows):
        out.append(
            {
                "event_id": f"e{i:02d}",
                "type": "alias" if prev else "track",
                "event": "x",
                "anonymous_id": anon,
                "user_id": user,
                "timestamp": pd.Timestamp("2024-01-01") + pd.Timedelta(days=day),
                "properties": f'{{"previousId": "{prev}"}}' if prev else None,
                "import_id": batch,
            }
        )
    return pd.DataFrame(out)


def owners(frames: list[pd.DataFrame], **options: Any) -> dict[str, str]:
    wh = Warehouse.duckdb(None, threads=1)
    try:
        for f in frames:
            wh.append("events", f)
            resolve(wh, salt="s", **options)
        df = customer_events(wh).select("event_id", "customer_id").to_pandas()
        return dict(zip(df.event_id, df.customer_id, strict=True))
    finally:
        wh.close()


def partition(owner: dict[str, str]) -> set[frozenset[str]]:
    groups: dict[str, set[str]] = {}
    for e, c in owner.items():
        groups.setdefault(c, set()).add(e)
    return {frozenset(g) for g in groups.values()}


def expected_partition(rows: list[tuple[Any, ...]]) -> set[frozenset[str]]:
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            x = parent[x]
        return x

    def union(a: str, b: str) -> None:
        parent[find(a)] = find(b)

    keys = []
    for anon, user, _, prev in rows:
        ids = ["anon:" + anon]
        if user and user != "null":
            ids.append("user:" + user)
        if prev:
            ids.append("anon:" + prev)
        for k in ids[1:]:
            union(ids[0], k)
        keys.append(ids[0])
    groups: dict[str, set[str]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(find(k), set()).add(f"e{i:02d}")
    return {frozenset(g) for g in groups.values()}


FAST = settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@FAST
@given(event_rows, st.randoms(use_true_random=False))
def test_arrival_order_does_not_matter(rows, rnd: random.Random) -> None:
    shuffled = frame(rows).sample(frac=1.0, random_state=rnd.randint(0, 10**6))
    for policy in ("block", "merge"):
        assert owners([frame(rows)], conflicts=policy) == owners(
            [shuffled], conflicts=policy
        )


@FAST
@given(event_rows)
def test_merging_is_transitive(rows) -> None:
    got = owners([frame(rows)], conflicts="merge", cap=100)
    assert partition(got) == expected_partition(rows)


@FAST
@given(event_rows, st.integers(0, 14))
def test_batches_give_the_same_customers(rows, cut) -> None:
    whole = frame(rows)
    parts = [whole.iloc[:cut].assign(import_id="b1"), whole.iloc[cut:]]
    parts = [p for p in parts if len(p)]
    got = owners(parts, conflicts="merge", cap=100)
    assert partition(got) == expected_partition(rows)


@FAST
@given(event_rows)
def test_running_twice_changes_nothing(rows) -> None:
    wh = Warehouse.duckdb(None, threads=1)
    try:
        wh.append("events", frame(rows))
        resolve(wh, salt="s")
        tables = ("customers", "identities", "merge_log", "identity_conflicts")
        before = {t: wh.to_pandas(wh.table(t)) for t in tables}
        r = resolve(wh, salt="s")
        assert r.counts["events_scanned"] == 0
        resolve(wh, salt="s", full=True)
        for t in tables:
            cols = [c for c in before[t].columns if c != "logged_at"]
            a = before[t][cols].sort_values(cols).reset_index(drop=True)
            b = wh.to_pandas(wh.table(t))[cols].sort_values(cols)
            pd.testing.assert_frame_equal(a, b.reset_index(drop=True))
    finally:
        wh.close()
