"""Randomized differential test: the NumPy grid (`clm.lifecycle.grid_arrays.build`)
against the SQL grid (`clm.lifecycle.standing.grid_query`) on random stage models
and random workspaces.

Each seed (`random.Random(seed)`, deterministic) draws a model: a grain (day, week,
month), one to six features of every kind the NumPy grid covers (count, sum,
count_distinct, min, max, last, first, days_since, days_since_first; no p_alive),
windows in days, weeks, hours (fractional and shorter than a 15-minute bucket
multiple too: 20h, 36h, 1.5d, 0.3h, …) or periods, random filters (event columns,
JSON properties, NULL tests, `in`, `between`, `not`), and stage rules that read every
feature, comparing `days_since…` features with constants (thresholds) and sometimes
putting one into arithmetic (dense grid). The events are placed on the model's own
window and threshold edges (exactly, and a second either side) as seen from period
ends and from the observation end, on local midnights (period boundaries, the DST
change included), after the observation end, with fractional seconds; some seeds
add `random_events` of the snapshot test. Times of one customer are distinct to the
second: `last`/`first` of a tie are arbitrary in both engines.

Both grids are built over the same held events and calendar (as `_grids` of
`test_grid_arrays` does) and must be equal row for row and value for value (floats
to 1e-9).
"""

from __future__ import annotations

import json
import math
import random
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import ibis
import pandas as pd
import pytest
from test_lifecycle_snapshot import random_events

from clm.identity.resolve import build_customer_keys, drop_customer_keys
from clm.lifecycle import grid_arrays, standing
from clm.lifecycle.history import DAY, _end_of_date, plan
from clm.lifecycle.model import load_model_text
from clm.lifecycle.snapshot import customer_events
from clm.warehouse.engine import Warehouse

TZ = ZoneInfo("Europe/Berlin")
SEEDS = list(range(40))
REUSE_SEEDS = [100, 101, 102, 103, 104, 105]
MAX_EVENTS = 12  # per customer

# -- random models -------------------------------------------------------------------

KINDS = [
    "count",
    "sum",
    "count_distinct",
    "min",
    "max",
    "last",
    "first",
    "days_since",
    "days_since_first",
]
FILTERS = [
    "event = 'order_completed'",
    "event = 'signed_up'",
    "type = 'page'",
    "type = 'track'",
    "revenue > 10",
    "revenue <= 20.5",
    "revenue between 5 and 30",
    "revenue is not null",
    "context.clm.bot = 'true'",
    "context.page.locale = 'de'",
    "channel = 'email'",
    "channel is null",
    "properties.plan = 'pro'",
    "event in ('signed_up', 'added_to_cart')",
    "event != 'order_completed'",
    "not (type = 'page')",
    "event is not null",
]
DAY_WINDOWS = [
    "1d",
    "2d",
    "3d",
    "5d",
    "7d",
    "9d",
    "10d",
    "14d",
    "1w",
    "2w",
    "1.5d",
    "0.5d",
    "2.25d",
    "6h",
    "12h",
    "20h",
    "36h",
    "30h",
    "48h",
    "100h",
    "1.5h",
    "7.5h",
    "0.3h",
    "0.1d",
]
PERIOD_WINDOWS = ["1 period", "2 periods", "3 periods", "5 periods"]
COLUMNS = {
    "sum": ["revenue"],
    "min": ["revenue"],
    "max": ["revenue"],
    "count_distinct": [
        "event",
        "type",
        "channel",
        "revenue",
        "properties.plan",
        "context.page.locale",
    ],
    "last": ["event", "type", "channel", "revenue", "properties.plan"],
    "first": ["event", "type", "channel", "revenue", "properties.plan"],
}
WINDOWED = ("count", "sum", "count_distinct", "last")
TIME = ("days_since", "days_since_first")


def _call(rnd: random.Random, kind: str) -> str:
    args = []
    if kind in COLUMNS:
        args.append(rnd.choice(COLUMNS[kind]))
    for _ in range(rnd.choice([0, 0, 1, 1, 1, 2])):
        args.append(rnd.choice(FILTERS))
    if kind in WINDOWED and rnd.random() < 0.75:
        pool = PERIOD_WINDOWS if rnd.random() < 0.3 else DAY_WINDOWS
        args.append(f"within = {rnd.choice(pool)}")
    return f"{kind}({', '.join(args)})"


def _number(rnd: random.Random, top: int) -> str:
    if rnd.random() < 0.25:
        return str(rnd.randint(0, top * 2) / 2)  # 2.5, 7.0, …
    return str(rnd.randint(0, top))


def _condition(rnd: random.Random, name: str, kind: str) -> str:
    """A rule reading feature `name` (of `kind`)."""
    if kind in ("count", "count_distinct"):
        return rnd.choice(
            [
                f"{name} >= {rnd.randint(1, 3)}",
                f"{name} = 0",
                f"{name} > {rnd.randint(0, 4)}",
                f"{name} between 1 and {rnd.randint(1, 4)}",
            ]
        )
    if kind in ("sum", "min", "max"):
        return rnd.choice(
            [
                f"{name} > {rnd.choice(['0', '10', '20.5', '45'])}",
                f"{name} >= 12.34",
                f"{name} < {rnd.choice(['8', '30'])}",
                f"{name} is null",
            ]
        )
    if kind in ("last", "first"):
        return rnd.choice(
            [
                f"{name} = 'page'",
                f"{name} = 'order_completed'",
                f"{name} is null",
                f"{name} is not null",
                f"{name} in ('track', 'signed_up', 'pro')",
                f"{name} != 'track'",
            ]
        )
    assert kind in TIME
    a, b = sorted(rnd.randint(0, 30) for _ in range(2))
    return rnd.choice(
        [
            f"{name} > {_number(rnd, 30)}",
            f"{name} <= {_number(rnd, 30)}",
            f"{name} between {a} and {b}",
            f"{name} = {rnd.randint(0, 12)}",
            f"{name} in ({a}, {b})",
            f"{_number(rnd, 20)} < {name}",
            f"not ({name} >= {_number(rnd, 20)})",
            f"{name} < 1",
        ]
    )


def random_model(rnd: random.Random) -> str:
    grain = rnd.choice(["day", "week", "month"])
    kinds = [rnd.choice(KINDS) for _ in range(rnd.randint(1, 6))]
    if rnd.random() < 0.5 and not any(k in TIME for k in kinds):
        kinds[-1] = rnd.choice(TIME)  # thresholds in half of the models at least
    features = {f"f{i}": (k, _call(rnd, k)) for i, k in enumerate(kinds)}
    conditions = [_condition(rnd, n, k) for n, (k, _) in features.items()]
    times = [n for n, (k, _) in features.items() if k in TIME]
    if times and rnd.random() < 0.3:
        # A time feature in arithmetic: no thresholds to solve, the grid is dense.
        t = rnd.choice(times)
        conditions.append(
            rnd.choice([f"{t} * 2 > 15", f"{t} + 1 >= 7", f"{t} / 3 < 2.5"])
        )
    if rnd.random() < 0.2:
        # An inline feature call in a rule.
        conditions.append(f"{_call(rnd, rnd.choice(['count', 'last']))} is not null")
    rnd.shuffle(conditions)
    stages = []
    while conditions:
        take = conditions[: rnd.randint(1, 3)]
        conditions = conditions[len(take) :]
        when = f" {rnd.choice(['and', 'or'])} ".join(take)
        stages.append(f'  - {{name: s{len(stages)}, when: "{when}"}}')
    lines = [
        "name: fuzz",
        "version: 1",
        f"grain: {grain}",
        f"progression: {rnd.choice(['dynamic', 'forward_only'])}",
        "features:",
        *[f"  {n}: {call}" for n, (_, call) in features.items()],
        "stages:",
        *stages,
    ]
    return "\n".join(lines) + "\n"


# -- random events on the model's edges -----------------------------------------------


def _utc(local: datetime) -> datetime:
    """A Berlin wall-clock time as naive UTC."""
    aware = local.replace(tzinfo=TZ).astimezone(ZoneInfo("UTC"))
    return aware.replace(tzinfo=None)


def _boundaries(grain: str, end: datetime) -> list[datetime]:
    """Local midnights that start a period of `grain` (naive UTC), up to `end`."""
    out, d = [], date(2024, 1, 1)
    while True:
        at = _utc(datetime(d.year, d.month, d.day))
        if at > end:
            return out
        if (
            grain == "day"
            or (grain == "week" and d.weekday() == 0)
            or (grain == "month" and d.day == 1)
        ):
            out.append(at)
        d += timedelta(days=1)


def _edges(model) -> list[int]:
    """Seconds back from an evaluation instant where a value of `model` flips: the
    day windows, the `days_since` thresholds (v days and v days - 1 s), zero."""
    pl = plan(model)
    out = {0}
    for f in model.features.values():
        if f.within_days is not None:
            out.add(round(f.within_days * DAY))
    for days in pl.thresholds.values():
        for v in days:
            if v > 0:
                out |= {v * DAY, v * DAY - 1}
    return sorted(out)


NAMES = [None, None, "order_completed", "signed_up", "added_to_cart", "order_completed"]
CONTEXTS = [
    None,
    None,
    '{"page": {"locale": "de"}}',
    '{"page": {"locale": "fr"}}',
    # Flagged with a space: the bot filter (`"bot":true`) keeps it, JSON reads it.
    '{"clm": {"bot": true}, "page": {"locale": "de"}}',
    '{"clm":{"bot":true}}',  # a bot: left out of the customer events
]


def edge_events(rnd: random.Random, model, day: date) -> pd.DataFrame:
    end = _end_of_date(day, TZ).replace(tzinfo=None)
    bounds = _boundaries(model.grain, end)
    anchors = [*bounds, end]
    edges = _edges(model)
    start = datetime(2024, 1, 1)
    span = int((end - start).total_seconds())
    rows = []
    for c in range(rnd.randint(12, 24)):
        for _ in range(rnd.randint(0, MAX_EVENTS)):
            r = rnd.random()
            if r < 0.4:
                # On a window or threshold edge, seen from a period end.
                anchor = rnd.choice(anchors[-4:] if rnd.random() < 0.4 else anchors)
                t = anchor - timedelta(seconds=rnd.choice(edges))
                t += timedelta(seconds=rnd.choice([-1, 0, 0, 1]))
            elif r < 0.55:
                t = rnd.choice(anchors) + timedelta(seconds=rnd.choice([-1, 0, 0, 1]))
            elif r < 0.6:
                t = end + timedelta(seconds=rnd.randint(0, 3 * DAY))  # the future
            else:
                t = start + timedelta(seconds=rnd.randint(0, span))
            if rnd.random() < 0.2:
                t += timedelta(microseconds=rnd.randint(1, 999_999))
            t = max(t, start)
            name = rnd.choice(NAMES)
            if name == "order_completed" or rnd.random() < 0.1:
                revenue = rnd.choice([float(rnd.randint(1, 40)), 12.34, 0.1, 20.5])
            else:
                revenue = None
            rows.append(
                {
                    "user_id": f"u{c}",
                    "type": "page" if name is None else "track",
                    "event": name,
                    "timestamp": t,
                    "revenue": revenue,
                    "channel": rnd.choice([None, "email", "ads"]),
                    "properties": rnd.choice(
                        [None, json.dumps({"plan": rnd.choice(["pro", "free"])})]
                    ),
                    "context": rnd.choice(CONTEXTS),
                }
            )
    frame = pd.DataFrame(rows)
    frame["timestamp"] = pd.to_datetime(frame["timestamp"])
    frame["event_id"] = [f"x{i}" for i in range(len(frame))]
    return frame


def _distinct_seconds(frame: pd.DataFrame) -> pd.DataFrame:
    """One event per customer and second (what `t` sees): ties are arbitrary."""
    second = frame.timestamp.dt.floor("s")
    return frame[~pd.DataFrame({"u": frame.user_id, "s": second}).duplicated()]


def workspace_events(seed: int, rnd: random.Random, model, day: date) -> pd.DataFrame:
    frames = [edge_events(rnd, model, day)]
    if seed % 3 == 0:
        more = random_events(seed, day)
        frames.append(more.assign(user_id="r" + more.user_id))
    frame = pd.concat(frames, ignore_index=True)
    frame["event_id"] = [f"e{i}" for i in range(len(frame))]
    return _distinct_seconds(frame).reset_index(drop=True)


# -- both grids ----------------------------------------------------------------------


class Workspace:
    """Events held once (`grid_arrays.hold`), as the preview holds them, and both
    grids of any model and as-of day over them."""

    def __init__(self, events: pd.DataFrame, columns: set[str]) -> None:
        self.wh = Warehouse.duckdb(None)
        self.wh.append("events", events)
        keys = build_customer_keys(self.wh, tag="t")
        slim = customer_events(self.wh, keys, columns | {"event", "type"})
        self.held = grid_arrays.hold(self.wh.con, "held", slim)
        drop_customer_keys(self.wh, keys)

    def grids(self, text: str, day: date) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(SQL grid, NumPy grid), sorted, over the same events and calendar."""
        model = load_model_text(text)
        first = int(self.held.t.min())
        cal = standing.calendar(model.grain, TZ, first, _end_of_date(day, TZ))
        periods = self.wh.materialize(ibis.memtable(cal.periods_frame()), "gp")
        buckets = self.wh.materialize(ibis.memtable(cal.buckets_frame()), "gb")
        want = standing.grid_query(model, self.held.table, periods, buckets, cal)
        got, _ = grid_arrays.build(model, self.held, cal)
        return _sorted(want.to_pandas()), _sorted(got.table.to_pandas())

    def close(self) -> None:
        self.wh.close()


def grids(text: str, events: pd.DataFrame, day: date) -> tuple[pd.DataFrame, ...]:
    """(SQL grid, NumPy grid) of one model on a fresh workspace."""
    ws = Workspace(events, plan(load_model_text(text)).columns)
    try:
        return ws.grids(text, day)
    finally:
        ws.close()


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame[sorted(frame.columns)]
    return frame.sort_values(["customer_id", "p"]).reset_index(drop=True)


def _equal(a, b) -> bool:
    if pd.isna(a) or pd.isna(b):
        return bool(pd.isna(a) and pd.isna(b))
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, rel_tol=0, abs_tol=1e-9)
    return a == b


def differences(want: pd.DataFrame, got: pd.DataFrame) -> list[str]:
    """What differs, readably: missing/extra rows, then differing values."""
    if list(want.columns) != list(got.columns):
        return [f"columns: sql {list(want.columns)} numpy {list(got.columns)}"]
    out = []
    keys_w = set(zip(want.customer_id, want.p, strict=True))
    keys_g = set(zip(got.customer_id, got.p, strict=True))
    for k in sorted(keys_w - keys_g)[:5]:
        out.append(f"row (customer, p) = {k} only in the SQL grid")
    for k in sorted(keys_g - keys_w)[:5]:
        out.append(f"row (customer, p) = {k} only in the NumPy grid")
    if out:
        return out
    for col in want.columns:
        for i, (a, b) in enumerate(zip(want[col], got[col], strict=True)):
            if not _equal(a, b):
                row = (want.customer_id[i], want.p[i])
                out.append(f"{col} at (customer, p) = {row}: sql {a!r} numpy {b!r}")
                if len(out) >= 10:
                    return out
    return out


def case(seed: int) -> tuple[str, pd.DataFrame, date]:
    rnd = random.Random(seed)
    text = random_model(rnd)
    day = date(2024, 1, 20) + timedelta(days=rnd.randint(0, 80))
    events = workspace_events(seed, rnd, load_model_text(text), day)
    return text, events, day


@pytest.mark.parametrize("seed", SEEDS)
def test_random_models_give_the_same_grid_in_numpy_and_sql(seed) -> None:
    text, events, day = case(seed)
    want, got = grids(text, events, day)
    assert len(want) > 0  # the case is not empty
    diff = differences(want, got)
    assert not diff, f"seed {seed}, as of {day}\n{text}\n" + "\n".join(diff)


def _redrawn(rnd: random.Random, text: str) -> str:
    """The same features with other rules (other thresholds, dense or not) and, at
    times, another grain: a draft edited in the preview."""
    features = text[text.index("features:") : text.index("stages:")]
    other = random_model(rnd)
    head = other[: other.index("features:")]
    if rnd.random() < 0.5:
        head = text[: text.index("features:")]
    named = load_model_text(text).features
    kinds = {n: f.kind for n, f in named.items() if not n.startswith("_inline_")}
    conditions = [_condition(rnd, n, k) for n, k in kinds.items()]
    times = [n for n, k in kinds.items() if k in TIME]
    if times and rnd.random() < 0.4:
        t = times[0]
        conditions.append(f"{t} - 3 > 4")
    rnd.shuffle(conditions)
    stages = "".join(
        f'  - {{name: r{i}, when: "{c}"}}\n' for i, c in enumerate(conditions)
    )
    return head + features + "stages:\n" + stages


@pytest.mark.parametrize("seed", REUSE_SEEDS)
def test_drafts_over_the_same_held_events_give_the_sql_grid(seed) -> None:
    """The preview's use: one held workspace, several drafts sharing features (whose
    parts `build` keeps per calendar) and several as-of days."""
    rnd = random.Random(seed)
    text = random_model(rnd)
    day = date(2024, 2, 20) + timedelta(days=rnd.randint(0, 50))
    events = workspace_events(seed, rnd, load_model_text(text), day)
    texts = [text] + [_redrawn(rnd, text) for _ in range(2)]
    columns = set().union(*(plan(load_model_text(t)).columns for t in texts))
    ws = Workspace(events, columns)
    try:
        for when in (day, day - timedelta(days=rnd.randint(1, 20)), day):
            for draft in texts:
                want, got = ws.grids(draft, when)
                diff = differences(want, got)
                assert not diff, f"seed {seed}, as of {when}\n{draft}\n" + "\n".join(
                    diff
                )
    finally:
        ws.close()


def test_the_seeds_cover_every_kind_and_option() -> None:
    """The fixed seeds exercise what they claim: every kind, day and period windows,
    sub-day windows, thresholds, dense grids, every grain."""
    kinds, grains, seen = set(), set(), set()
    for seed in SEEDS:
        rnd = random.Random(seed)
        model = load_model_text(random_model(rnd))
        pl = plan(model)
        grains.add(model.grain)
        seen.add("dense" if pl.dense else "sparse")
        if any(v for v in pl.thresholds.values()):
            seen.add("thresholds")
        for f in model.features.values():
            kinds.add(f.kind)
            if f.within_periods is not None:
                seen.add("periods")
            if f.within_days is not None:
                seen.add("days")
                if f.within_days < 1 or f.within_days % 1:
                    seen.add("fractional days")
            if f.filter is not None:
                seen.add("filter")
            elif f.kind == "count":
                seen.add("count()")  # every event: the literal `true` as condition
    assert kinds == set(KINDS)
    assert grains == {"day", "week", "month"}
    want = {"dense", "sparse", "thresholds", "periods", "days", "fractional days"}
    assert seen >= want | {"filter", "count()"}
