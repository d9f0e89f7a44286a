"""A simulated online shop: realistic events for clm's demo and benchmarks.

The shop sells clothes, shoes and bags to visitors who arrive over a period of `weeks`
weeks starting at `start`. Every number is drawn from one seeded numpy generator, all
work is vectorised (no Python loop per event), and the result has exactly the
warehouse `EVENTS` schema (PRODUCT.md §3).

The generative story, per visitor:

1. **Arrival.** Visitors arrive at a rate that grows over the period (the shop is
   growing), follows the clock of the shop's time zone (quiet at night, busiest in the
   evening), the week (Sunday busiest) and the year (a Black Friday week and a
   December peak, then quiet over the Christmas days). All times are drawn in an
   "effective time" in which that rate is constant, then mapped back to the clock, so
   every later visit and order follows the same seasonality.
2. **Channel.** Each session comes from one channel: direct, organic search, paid
   search, social, email or referral, with a matching external `referrer` and
   `utm_source/medium/campaign` (paid search also `utm_term`, social ads
   `utm_content`). A first visit is drawn from the acquisition mix, a returning visit
   from a mix with more direct and email traffic.
3. **Sessions.** Most visitors bounce after one or two sessions: the number of extra
   browsing sessions is geometric (45 % never return to browse), with gaps
   exponential around a visitor's own mean (log-normal, median six days); counting
   order visits, about 40 % of visitors have one session and two thirds at most two.
   A session is a run of page views (`page`, with `url`, `referrer` = the previous
   page or, on the landing page, the external referrer, `user_agent`, and `ip` with
   its last octet zeroed as if anonymised); a third of visits bounce after one page.
   Some browsing sessions add a product to the cart and leave (`product_added`).
4. **Sign-up.** Some visitors sign up (`signed_up`); every buyer signs up in the
   checkout of the first order. From the sign-up event on, the visitor's events carry
   `user_id` as well as `anonymous_id`, like Segment clients; before it only
   `anonymous_id`. A third of signed-up visitors later also use a second device,
   with its own `anonymous_id` and user agent, always logged in.
5. **First order.** The chance to buy depends on the acquisition channel and rises
   with the number of sessions; a third of buyers buy in the first session. An order
   session adds the items to the cart (`product_added`), visits cart and checkout and
   completes the order (`order_completed` with `order_id`, `revenue` in EUR = item
   prices from a log-normal price list plus shipping under 50 EUR, and the items in
   `properties`).
6. **Repeat buying with drop-out**, after the BG/NBD model (Fader, Hardie and Lee,
   "Counting Your Customers the Easy Way", Marketing Science 24(2), 2005): each buyer
   has a Poisson purchase rate lambda ~ Gamma(r, alpha) and, after every purchase
   including the first, drops out for good with probability p ~ Beta(a, b). So the
   repeat purchases are the points of a Poisson process on (first order, end) cut off
   after a Geometric(p) number of purchases.
7. **Win-back.** A share of buyers who dropped out are won back by an email campaign
   (`utm_campaign` = winback) a year or more after their last order, and order once.
8. **Refunds.** About 6 % of orders are refunded 2-30 days later by the shop's backend
   (`order_refunded`, negative `revenue`, same `order_id`, `user_id` only, no
   session): most in full, some in part.

Events fall inside [start, start + weeks) in UTC (storage is UTC, PRODUCT.md §3);
`received_at` follows `timestamp` by under two seconds. On average a visitor yields
about ten events, so one million customers make about ten million events.

Memory: events take about 520 bytes each in Arrow, so about 5.5 kB per customer; a
chunk of 100,000 customers peaks near 0.95 GB in `write_parquet` (measured; one
million customers took 22 s on one core).

Determinism: customers are simulated in fixed blocks of `BLOCK` customers, each with
its own generator seeded from (seed, block number). So the same arguments give the
same events whatever the chunk size, and the first N customers of a larger run are
the same N customers.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from clm.errors import ConfigError
from clm.progress import SILENT, Progress
from clm.warehouse.schema import EVENTS

log = logging.getLogger("clm.demo")

BLOCK = 10_000
"""Customers per generator block: the unit of determinism and of vectorised work."""

SCHEMA: pa.Schema = EVENTS.to_pyarrow()
SHOP_URL = "https://shop.example.com"
_US_PER_HOUR = 3_600_000_000
_US_PER_DAY = 24 * _US_PER_HOUR
# Sessions must start this long before the end so that their last event (at most
# 27 events, at most five minutes apart) still falls inside the period.
_END_MARGIN_HOURS = 3
# Rows per Parquet row group: small enough that the writer's buffers stay a fraction
# of a chunk, large enough for DuckDB (whose own row groups hold 122,880 rows).
_ROW_GROUP = 250_000

# Event kinds, in the order they appear within a session.
PAGE, ADD, SIGNUP, ORDER, REFUND = 0, 1, 2, 3, 4
_EVENT_NAMES = [None, "product_added", "signed_up", "order_completed", "order_refunded"]

CHANNELS = ["direct", "organic_search", "paid_search", "social", "email", "referral"]
# Share of first visits and of returning visits per channel, in CHANNELS order.
_ACQUISITION_MIX = [0.16, 0.30, 0.20, 0.18, 0.02, 0.14]
_RETURNING_MIX = [0.36, 0.20, 0.10, 0.06, 0.22, 0.06]
# Chance that a visitor acquired through a channel ever buys (before the boost for
# extra sessions), in CHANNELS order.
_BUY_CHANCE = [0.14, 0.11, 0.13, 0.06, 0.18, 0.10]

# How each channel shows up in an event: channel | referrer | utm_source |
# utm_medium | utm_campaign | utm_term | utm_content | weight within the channel.
# "-" is empty. The winback variant has weight 0: only win-back orders use it.
_VARIANT_TABLE = """
direct         | -                                         | -         | -      | -                 | -                 | -           | 1.0
organic_search | https://www.google.com/                   | -         | -      | -                 | -                 | -           | 0.85
organic_search | https://www.bing.com/                     | -         | -      | -                 | -                 | -           | 0.08
organic_search | https://duckduckgo.com/                   | -         | -      | -                 | -                 | -           | 0.04
organic_search | https://www.ecosia.org/                   | -         | -      | -                 | -                 | -           | 0.03
paid_search    | https://www.google.com/                   | google    | cpc    | brand             | outfitter shop    | -           | 0.35
paid_search    | https://www.google.com/                   | google    | cpc    | generic_shoes     | sneaker kaufen    | -           | 0.25
paid_search    | https://www.google.com/                   | google    | cpc    | generic_jackets   | regenjacke herren | -           | 0.15
paid_search    | https://www.google.com/                   | google    | cpc    | shopping          | -                 | -           | 0.17
paid_search    | https://www.bing.com/                     | bing      | cpc    | brand             | outfitter         | -           | 0.08
social         | https://l.instagram.com/                  | instagram | social | spring_collection | -                 | reel_a      | 0.25
social         | https://l.instagram.com/                  | instagram | social | xmas_gifts        | -                 | story_b     | 0.15
social         | https://m.facebook.com/                   | facebook  | social | summer_sale       | -                 | carousel    | 0.25
social         | https://www.tiktok.com/                   | tiktok    | social | creator_collab    | -                 | -           | 0.25
social         | https://www.pinterest.com/                | pinterest | social | autumn_looks      | -                 | -           | 0.10
email          | -                                         | newsletter| email  | weekly_newsletter | -                 | hero_banner | 0.75
email          | -                                         | crm       | email  | abandoned_cart    | -                 | -           | 0.25
email          | -                                         | crm       | email  | winback           | -                 | -           | 0.0
referral       | https://www.stylebook.example/sneakers    | -         | -      | -                 | -                 | -           | 0.45
referral       | https://blog.outdoorfans.example/rain-gear| -         | -      | -                 | -                 | -           | 0.30
referral       | https://www.preisvergleich.example/deals  | -         | -      | -                 | -                 | -           | 0.25
"""  # noqa: E501
_VARIANTS = [
    [None if cell.strip() == "-" else cell.strip() for cell in line.split("|")]
    for line in _VARIANT_TABLE.strip().splitlines()
]
_WINBACK_VARIANT = 17
_UTM_FIELDS = ["utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content"]

_CATALOG = {
    "shoes": (["Sneaker", "Loafer", "Boot", "Sandal", "Runner"], 69.0),
    "jackets": (["Parka", "Rain Jacket", "Bomber", "Fleece"], 89.0),
    "shirts": (["T-Shirt", "Polo", "Oxford Shirt", "Henley"], 29.0),
    "trousers": (["Chino", "Jeans", "Jogger", "Cargo Pants"], 49.0),
    "bags": (["Backpack", "Tote", "Weekender", "Crossbody Bag"], 45.0),
    "accessories": (["Cap", "Scarf", "Belt", "Beanie", "Wallet"], 19.0),
}
_COLOURS = ["Black", "Navy", "Olive", "Sand", "Grey", "Red", "White", "Forest"]

_USER_AGENTS = [  # desktop first, then mobile
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like"
    " Gecko) Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15"
    " (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/124.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; Android 13; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/124.0.0.0 Mobile Safari/537.36",
]

# Relative traffic by local hour of day and by weekday (Monday first): a typical
# European web shop, quiet at night, peaking in the evening and on Sundays.
_HOURLY = [0.35, 0.2, 0.12, 0.08, 0.07, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0, 1.05]
_HOURLY += [1.1, 1.05, 1.0, 1.0, 1.05, 1.1, 1.25, 1.45, 1.6, 1.55, 1.2, 0.7]
_WEEKLY = [1.05, 1.0, 0.98, 0.97, 0.92, 0.85, 1.12]


def simulate_shop(
    customers: int = 5000,
    *,
    seed: int = 7,
    start: date = date(2024, 1, 1),
    weeks: int = 104,
    timezone: str = "Europe/Berlin",
) -> pa.Table:
    """Simulate `customers` visitors of a web shop; return their events (EVENTS schema).

    The whole table is held in memory; for millions of customers use `write_parquet`.
    """
    shop = _Shop.build(customers, seed, start, weeks, timezone)
    tables = [shop.block(b) for b in range(shop.blocks)]
    if not tables:
        return SCHEMA.empty_table()
    return pa.concat_tables(tables)


def write_parquet(
    path: str | os.PathLike[str],
    customers: int,
    *,
    seed: int = 7,
    start: date = date(2024, 1, 1),
    weeks: int = 104,
    timezone: str = "Europe/Berlin",
    chunk_customers: int = 100_000,
    progress: Progress = SILENT,
) -> int:
    """Simulate the shop into one Parquet file, `chunk_customers` at a time.

    Memory holds one chunk (rounded up to whole blocks of `BLOCK` customers), never
    the whole data set. Returns the number of events written. The file appears only
    when complete: it is written beside `path` and renamed at the end.
    """
    if chunk_customers < 1:
        raise ConfigError(
            f"chunk_customers: {chunk_customers!r} is not a positive number; "
            f"use a count of customers such as 100000"
        )
    shop = _Shop.build(customers, seed, start, weeks, timezone)
    per_chunk = max(1, -(-chunk_customers // BLOCK))
    target = Path(path)
    partial = target.with_name(target.name + ".partial")

    rows = 0
    progress.start("simulating shop", total=customers)
    try:
        with pq.ParquetWriter(partial, SCHEMA, compression="zstd") as writer:
            for first in range(0, shop.blocks, per_chunk):
                blocks = range(first, min(first + per_chunk, shop.blocks))
                table = pa.concat_tables([shop.block(b) for b in blocks])
                writer.write_table(table, row_group_size=_ROW_GROUP)
                rows += table.num_rows
                progress.advance(min(customers, blocks.stop * BLOCK) - first * BLOCK)
                del table
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
        progress.done()
    log.info("simulated %d customers: %d events in %s", customers, rows, target)
    return rows


@dataclass(frozen=True)
class _Shop:
    """What every block shares: the arguments, the clock, the catalog, vocabularies."""

    customers: int
    seed: int
    start_us: int
    end_us: int
    cum_days: np.ndarray  # effective days elapsed at each UTC hour boundary
    hour_days: np.ndarray  # effective days in each UTC hour
    tau_limit: float  # last effective time a session may start
    price_cents: np.ndarray  # per product
    popularity: np.ndarray  # per product, sums to 1
    pages: pa.Array  # url vocabulary: home, categories, products, fixed pages
    page_props: pa.Array  # `properties` of a page view, per url
    item_props: pa.Array  # per product and quantity (1, 2): a product's JSON
    n_categories: int
    contexts: pa.Array  # desktop, mobile, backend

    @property
    def blocks(self) -> int:
        return -(-self.customers // BLOCK)

    @classmethod
    def build(
        cls, customers: int, seed: int, start: date, weeks: int, timezone: str
    ) -> _Shop:
        _check(customers, seed, start, weeks, timezone)
        start_at = datetime(start.year, start.month, start.day)
        start_us = int((start_at - datetime(1970, 1, 1)) // timedelta(microseconds=1))
        hours = weeks * 168
        hour_days = _traffic(start_at, hours, timezone) / 24.0
        cum_days = np.concatenate([[0.0], np.cumsum(hour_days)])
        rng = np.random.default_rng([seed, 0])
        catalog = _catalog(rng)
        return cls(
            customers=customers,
            seed=seed,
            start_us=start_us,
            end_us=start_us + hours * _US_PER_HOUR,
            cum_days=cum_days,
            hour_days=hour_days,
            tau_limit=float(cum_days[hours - _END_MARGIN_HOURS]),
            n_categories=len(_CATALOG),
            contexts=pa.array(
                [
                    _context("desktop"),
                    _context("mobile"),
                    _context(None),
                ]
            ),
            **catalog._asdict(),
        )

    def clock_us(self, tau: np.ndarray) -> np.ndarray:
        """Map effective time (days) to UTC microseconds since the epoch."""
        hour = np.searchsorted(self.cum_days, tau, side="right") - 1
        hour = np.clip(hour, 0, len(self.hour_days) - 1)
        frac = (tau - self.cum_days[hour]) / self.hour_days[hour]
        return self.start_us + ((hour + frac) * _US_PER_HOUR).astype(np.int64)

    def effective(self, us: np.ndarray) -> np.ndarray:
        """The inverse of `clock_us`: effective days at UTC microseconds."""
        hours = (us - self.start_us) / _US_PER_HOUR
        hour = np.clip(np.floor(hours).astype(np.int64), 0, len(self.hour_days) - 1)
        return self.cum_days[hour] + (hours - hour) * self.hour_days[hour]

    def block(self, number: int) -> pa.Table:
        """The events of customers [number * BLOCK, (number + 1) * BLOCK)."""
        first = number * BLOCK
        n = min(BLOCK, self.customers - first)
        rng = np.random.default_rng([self.seed, 1, number])
        return _simulate_block(self, rng, first, n)


def _check(customers: int, seed: int, start: date, weeks: int, timezone: str) -> None:
    """Refuse arguments that cannot make a shop, saying what would."""
    if not isinstance(customers, int) or customers < 0:
        raise ConfigError(
            f"customers: {customers!r} is not a count; use 0 or more, e.g. 5000"
        )
    if not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed: {seed!r} is not a non-negative integer, e.g. 7")
    if not isinstance(weeks, int) or weeks < 1:
        raise ConfigError(f"weeks: {weeks!r} is not a positive integer, e.g. 104")
    if not isinstance(start, date):
        raise ConfigError(f"start: {start!r} is not a date, e.g. date(2024, 1, 1)")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(
            f"timezone: {timezone!r} is not an IANA time zone name; use one such as "
            f"Europe/Berlin, UTC or America/New_York"
        ) from exc


def _traffic(start_at: datetime, hours: int, timezone: str) -> np.ndarray:
    """Relative traffic in each UTC hour of the period, with mean 1."""
    utc = pd.date_range(start_at, periods=hours, freq="h", tz="UTC")
    local = utc.tz_convert(timezone)
    hourly = np.asarray(_HOURLY)[local.hour.to_numpy()]
    weekly = np.asarray(_WEEKLY)[local.day_of_week.to_numpy()]

    # The year: a Black Friday week (23-29 November), a December run-up peaking around
    # 10 December, quiet Christmas days, a mild summer dip.
    month, day = local.month.to_numpy(), local.day.to_numpy()
    doy = local.day_of_year.to_numpy()
    yearly = 1.0 + 0.6 * np.exp(-(((doy - 344) / 14.0) ** 2))
    yearly = np.where((month == 11) & (day >= 23) & (day <= 29), 1.5, yearly)
    yearly = np.where((month == 12) & (day >= 24) & (day <= 26), 0.55, yearly)
    yearly = np.where((month == 7) | (month == 8), 0.9 * yearly, yearly)

    growth = np.linspace(0.75, 1.25, hours)
    rate = hourly * weekly * yearly * growth
    return rate / rate.mean()


class _Catalog(NamedTuple):
    price_cents: np.ndarray
    popularity: np.ndarray
    pages: pa.Array
    page_props: pa.Array
    item_props: pa.Array


def _catalog(rng: np.random.Generator) -> _Catalog:
    """Products with prices and popularity; the page and item vocabularies."""
    names, categories, slugs, prices = [], [], [], []
    for category, (kinds, median) in _CATALOG.items():
        for kind in kinds:
            for colour in _COLOURS:
                names.append(f"{colour} {kind}")
                categories.append(category)
                slugs.append(f"{colour}-{kind}".lower().replace(" ", "-"))
                # Prices end in .95 like a shop's, log-normal around the median.
                euros = np.floor(median * rng.lognormal(0.0, 0.35))
                prices.append(int(max(euros, 4) * 100 + 95))
    count = len(names)
    zipf = 1.0 / (np.arange(count) + 5.0) ** 1.1
    popularity = zipf[rng.permutation(count)]

    # url vocabulary: home, categories, products, then the fixed pages.
    paths = ["/"] + [f"/c/{c}" for c in _CATALOG] + [f"/p/{s}" for s in slugs]
    paths += ["/cart", "/checkout", "/account/welcome", "/checkout/complete"]
    items = []
    for i in range(count):
        for quantity in (1, 2):
            product = {
                "product_id": f"P{i + 1:04d}",
                "sku": f"SKU-{i + 1:04d}",
                "name": names[i],
                "category": categories[i],
                "price": prices[i] / 100,
                "quantity": quantity,
            }
            items.append(json.dumps(product, separators=(",", ":")))
    return _Catalog(
        price_cents=np.asarray(prices, dtype=np.int64),
        popularity=popularity / popularity.sum(),
        pages=pa.array([SHOP_URL + p for p in paths]),
        page_props=pa.array(
            [json.dumps({"path": p}, separators=(",", ":")) for p in paths]
        ),
        item_props=pa.array(items),
    )


def _context(device: str | None) -> str:
    """The `context` of a browser event, or of the shop's backend (no device)."""
    # Kept short on purpose: it is repeated on every event and weighs on memory.
    if device is None:
        return json.dumps({"library": {"name": "shop-backend"}}, separators=(",", ":"))
    context = {"library": {"name": "clm-demo"}, "device": {"type": device}}
    return json.dumps(context, separators=(",", ":"))


# Lookup arrays derived from the tables above.
_VARIANT_CHANNEL = np.array([CHANNELS.index(str(v[0])) for v in _VARIANTS])
_VARIANT_WEIGHT = np.array([float(str(v[7])) for v in _VARIANTS])


def _mix(shares: list[float]) -> np.ndarray:
    """Probability of each variant: channel share times weight within the channel."""
    totals = np.bincount(_VARIANT_CHANNEL, weights=_VARIANT_WEIGHT)
    p = (
        np.asarray(shares)[_VARIANT_CHANNEL]
        * _VARIANT_WEIGHT
        / totals[_VARIANT_CHANNEL]
    )
    return p / p.sum()


_ACQUISITION_P = _mix(_ACQUISITION_MIX)
_RETURNING_P = _mix(_RETURNING_MIX)
# Chance that a visitor's landing page is the home page, per channel; otherwise a
# product page (70 %) or a category page.
_HOME_LANDING = np.array([0.6, 0.3, 0.1, 0.1, 0.5, 0.1])
_INT64_MAX = np.iinfo(np.int64).max


def _simulate_block(
    shop: _Shop, rng: np.random.Generator, first: int, n: int
) -> pa.Table:
    """Simulate customers [first, first + n): visitors, orders, sessions, events."""
    v = _visitors(shop, rng, n)
    o = _orders(shop, rng, v)
    s = _sessions(shop, rng, v, o)
    order_ids = _order_ids(o, first)
    e = _events(shop, rng, v, o, s, order_ids)
    return _table(shop, rng, first, v, s, e, order_ids)


@dataclass
class _Visitors:
    """Per customer of the block."""

    arrival: np.ndarray  # effective days
    acquisition: np.ndarray  # variant of the first visit
    extra: np.ndarray  # browsing sessions after the first
    buyer: np.ndarray
    first_in_first_session: np.ndarray  # bought during the first visit
    mobile: np.ndarray  # primary device is a phone
    second_device: np.ndarray  # uses a second device once signed up


@dataclass
class _Orders:
    """Per order: who, when (effective days), which visit, items and money."""

    customer: np.ndarray
    tau: np.ndarray
    seq: np.ndarray  # 0 for the first order of the customer
    variant: np.ndarray
    item_order: np.ndarray  # per item: its order
    item_rank: np.ndarray  # per item: position in the order
    item_product: np.ndarray
    item_quantity: np.ndarray
    revenue_cents: np.ndarray
    shipping_cents: np.ndarray


@dataclass
class _Sessions:
    """Per session, sorted by customer and time."""

    customer: np.ndarray
    start_us: np.ndarray
    variant: np.ndarray
    order: np.ndarray  # the order completed in it, else -1
    signup: np.ndarray  # the customer signs up in it
    browse_pages: np.ndarray
    adds: np.ndarray
    device: np.ndarray  # 0 primary, 1 second device


@dataclass
class _Events:
    """Per event, sorted by time."""

    kind: np.ndarray
    customer: np.ndarray
    session: np.ndarray  # -1 for backend events
    time_us: np.ndarray
    url: np.ndarray  # index into the page vocabulary, -1 for none
    referrer: np.ndarray  # index into pages + variant referrers, -1 for none
    properties: np.ndarray  # index into the properties pool
    order: np.ndarray  # -1 unless an order or refund
    revenue_cents: np.ndarray  # 0 unless an order or refund
    properties_pool: pa.Array
    signup_us: np.ndarray  # per customer: time of the sign-up event, else max


def _groups(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lay groups of `counts` rows end to end: each row's group and rank in it."""
    group = np.repeat(np.arange(len(counts)), counts)
    starts = np.cumsum(counts) - counts
    return group, np.arange(len(group)) - starts[group]


def _visitors(shop: _Shop, rng: np.random.Generator, n: int) -> _Visitors:
    arrival = rng.uniform(0.0, shop.tau_limit, n)
    acquisition = rng.choice(len(_VARIANTS), n, p=_ACQUISITION_P)
    # Extra sessions are geometric: 45 % never come back, 70 % at most once.
    extra = np.minimum(rng.geometric(0.45, n) - 1, 30)

    # The chance to buy rises with engagement; a third buy during the first visit,
    # the others a couple of weeks later.
    chance = np.asarray(_BUY_CHANCE)[_VARIANT_CHANNEL[acquisition]]
    buyer = rng.random(n) < np.minimum(chance * (1.0 + 0.25 * extra), 0.6)
    first_in_first = rng.random(n) < 0.3
    return _Visitors(
        arrival=arrival,
        acquisition=acquisition,
        extra=extra,
        buyer=buyer,
        first_in_first_session=first_in_first,
        mobile=rng.random(n) < 0.6,
        second_device=rng.random(n) < 0.33,
    )


def _orders(shop: _Shop, rng: np.random.Generator, v: _Visitors) -> _Orders:
    n = len(v.arrival)
    first_tau = v.arrival + np.where(
        v.first_in_first_session, 0.0, rng.exponential(12.0, n)
    )
    buyer = v.buyer & (first_tau < shop.tau_limit)

    # BG/NBD (Fader, Hardie & Lee 2005, section 2): purchases per year
    # lambda ~ Gamma(r=1.1, alpha=0.4), so a mean of 2.75, and after each purchase
    # drop-out with p ~ Beta(a=1.3, b=4.0), a mean of 0.25. A buyer makes
    # Geometric(p) - 1 repeat purchases before dropping out; within the window the
    # purchases are a Poisson process, i.e. Poisson-many uniform points in order.
    rate = np.minimum(rng.gamma(1.1, 1.0 / 0.4, n), 52.0)
    dropout = rng.beta(1.3, 4.0, n)
    repeats_alive = rng.geometric(dropout) - 1
    window = np.where(buyer, shop.tau_limit - first_tau, 0.0)
    potential = rng.poisson(rate * window / 365.25)
    made = np.minimum(potential, repeats_alive)
    r_cust, r_rank = _groups(potential)
    u = rng.random(len(r_cust))
    u = u[np.argsort(r_cust + u, kind="stable")]  # sorted within each customer
    keep = r_rank < made[r_cust]
    r_cust, r_rank, u = r_cust[keep], r_rank[keep], u[keep]
    r_tau = first_tau[r_cust] + u * window[r_cust]

    # Win-back: a buyer who dropped out inside the window may answer a win-back
    # email a year or more (on the clock, not in effective time) after the last order.
    last_tau = first_tau.copy()
    np.maximum.at(last_tau, r_cust, r_tau)
    pause = (365.0 + rng.exponential(90.0, n)) * _US_PER_DAY
    w_tau = shop.effective(shop.clock_us(last_tau) + pause.astype(np.int64) + 1)
    won = buyer & (repeats_alive < potential) & (rng.random(n) < 0.3)
    won &= w_tau < shop.tau_limit

    buyers, winners = np.flatnonzero(buyer), np.flatnonzero(won)
    first_variant = np.where(
        v.first_in_first_session,
        v.acquisition,
        rng.choice(len(_VARIANTS), n, p=_RETURNING_P),
    )
    customer = np.concatenate([buyers, r_cust, winners])
    count = len(customer)
    variant = np.concatenate(
        [
            first_variant[buyers],
            rng.choice(len(_VARIANTS), len(r_cust), p=_RETURNING_P),
            np.full(len(winners), _WINBACK_VARIANT),
        ]
    )

    # Items: one to three, mostly one of each, chosen by popularity.
    item_order, item_rank = _groups(1 + rng.binomial(2, 0.3, count))
    product = rng.choice(len(shop.price_cents), len(item_order), p=shop.popularity)
    quantity = 1 + (rng.random(len(item_order)) < 0.1)
    value = shop.price_cents[product] * quantity
    subtotal = np.bincount(item_order, weights=value, minlength=count).astype(np.int64)
    shipping = np.where(subtotal < 5000, 495, 0)
    return _Orders(
        customer=customer,
        tau=np.concatenate([first_tau[buyers], r_tau, w_tau[winners]]),
        seq=np.concatenate(
            [np.zeros(len(buyers), np.int64), r_rank + 1, made[winners] + 1]
        ),
        variant=variant,
        item_order=item_order,
        item_rank=item_rank,
        item_product=product,
        item_quantity=quantity,
        revenue_cents=subtotal + shipping,
        shipping_cents=shipping,
    )


def _sessions(
    shop: _Shop, rng: np.random.Generator, v: _Visitors, o: _Orders
) -> _Sessions:
    n = len(v.arrival)
    has_order = np.bincount(o.customer, minlength=n) > 0

    # Browsing visits: the first at arrival, then gaps exponential around each
    # visitor's own mean (log-normal, median six days). A first order in the first
    # visit replaces that visit by the order session.
    b_cust, b_rank = _groups(v.extra + 1)
    mean_gap = rng.lognormal(np.log(6.0), 0.8, n)
    gaps = np.where(
        b_rank == 0, 0.0, rng.exponential(1.0, len(b_cust)) * mean_gap[b_cust]
    )
    total = np.cumsum(gaps)
    b_tau = (
        v.arrival[b_cust]
        + total
        - total[(np.cumsum(v.extra + 1) - v.extra - 1)][b_cust]
    )
    b_variant = np.where(
        b_rank == 0,
        v.acquisition[b_cust],
        rng.choice(len(_VARIANTS), len(b_cust), p=_RETURNING_P),
    )
    replaced = (b_rank == 0) & has_order[b_cust] & v.first_in_first_session[b_cust]
    keep = (b_tau < shop.tau_limit) & ~replaced
    b_cust, b_tau, b_variant = b_cust[keep], b_tau[keep], b_variant[keep]

    # Sign-up: buyers in the checkout of their first order; of the others a quarter
    # of those who came back and 8 % of one-time visitors, in one of their visits.
    visits = np.bincount(b_cust, minlength=n)
    chance = np.where(visits >= 2, 0.25, 0.08)
    joins = ~has_order & (visits > 0) & (rng.random(n) < chance)
    which = np.floor(rng.random(n) * visits).astype(np.int64)
    _, k_rank = _groups(visits)
    b_signup = joins[b_cust] & (k_rank == which[b_cust])

    customer = np.concatenate([b_cust, o.customer])
    tau = np.concatenate([b_tau, o.tau])
    order = np.concatenate([np.full(len(b_cust), -1), np.arange(len(o.customer))])
    signup = np.concatenate([b_signup, o.seq == 0])
    variant = np.concatenate([b_variant, o.variant])
    sort = np.lexsort((tau, customer))
    customer, tau, order = customer[sort], tau[sort], order[sort]
    signup, variant = signup[sort], variant[sort]

    # Pages: a third of visits bounce after one page, the rest view 1 + Geometric
    # (mean 3.7) more; an order visit browses a little, then cart and checkout.
    count = len(customer)
    is_order = order >= 0
    bounce = rng.random(count) < 0.33
    more = rng.geometric(np.where(is_order, 0.4, 0.27), count)
    pages = np.minimum(np.where(bounce & ~is_order, 1, 1 + more), 20)
    item_count = np.bincount(o.item_order, minlength=len(o.customer))
    abandoned = (pages >= 2) & (rng.random(count) < 0.15)
    adds = np.where(is_order, item_count[np.maximum(order, 0)], abandoned)
    return _Sessions(
        customer=customer,
        start_us=shop.clock_us(tau),
        variant=variant,
        order=order,
        signup=signup,
        browse_pages=pages,
        adds=adds,
        device=np.zeros(count, np.int64),  # set once sign-up times are known
    )


def _events(
    shop: _Shop,
    rng: np.random.Generator,
    v: _Visitors,
    o: _Orders,
    s: _Sessions,
    order_ids: pa.Array,
) -> _Events:
    n_pages = len(shop.pages)
    n_products = len(shop.price_cents)
    home, cart = 0, n_pages - 4
    welcome, complete = n_pages - 2, n_pages - 1
    first_product = 1 + shop.n_categories
    is_order = s.order >= 0

    # Each session's events in order: browsing pages, cart adds, cart and checkout
    # pages (orders), sign-up, order.
    checkout = np.where(is_order, 2, 0)
    count = s.browse_pages + s.adds + checkout + s.signup + is_order
    sess, rank = _groups(count)
    t1 = s.browse_pages[sess]
    t2 = t1 + s.adds[sess]
    t3 = t2 + checkout[sess]
    t4 = t3 + s.signup[sess]
    kind = np.select(
        [rank < t1, rank < t2, rank < t3, rank < t4], [PAGE, ADD, PAGE, SIGNUP], ORDER
    )
    size = len(kind)

    # Products: by popularity, except that an order's adds are its items.
    product = rng.choice(n_products, size, p=shop.popularity)
    quantity = np.ones(size, np.int64)
    order = np.where(kind >= ORDER, s.order[sess], -1)
    order_add = (kind == ADD) & is_order[sess]
    item_start = np.cumsum(np.bincount(o.item_order, minlength=len(o.customer)))
    item_start -= np.bincount(o.item_order, minlength=len(o.customer))
    item = item_start[s.order[sess][order_add]] + (rank - t1)[order_add]
    product[order_add] = o.item_product[item]
    quantity[order_add] = o.item_quantity[item]

    # Which page: a landing page depends on the channel; later pages are mostly
    # products, some categories, a few returns to the home page.
    channel = _VARIANT_CHANNEL[s.variant[sess]]
    u = rng.random(size)
    home_share = np.where(rank == 0, _HOME_LANDING[channel], 0.08)
    category = 1 + rng.integers(0, shop.n_categories, size)
    browsed = np.where(
        u < home_share,
        home,
        np.where(
            u < home_share + (1 - home_share) * 0.3, category, first_product + product
        ),
    )
    url = np.select(
        [kind == ADD, (kind == PAGE) & (rank >= t2), kind == SIGNUP, kind == ORDER],
        [first_product + product, cart + (rank - t2), welcome, complete],
        browsed,
    )
    # The referrer is the previous page of the visit; on the landing page it is
    # the channel's external referrer (pages first, then the variants' referrers).
    referrer = np.where(rank == 0, n_pages + s.variant[sess], np.roll(url, 1))

    # Clock: events 5 s + Exp(40 s) apart (at most 5 min) from the session start.
    gap = np.minimum(5.0 + rng.exponential(40.0, size), 300.0)
    gap = np.where(rank == 0, 0, (gap * 1e6).astype(np.int64))
    elapsed = np.cumsum(gap)
    elapsed -= elapsed[(np.cumsum(count) - count)][sess]
    time_us = s.start_us[sess] + elapsed
    customer = s.customer[sess]

    # From the sign-up on, a third of members also visit from a second device.
    n = len(v.arrival)
    signup_us = np.full(n, _INT64_MAX, np.int64)
    signup_us[customer[kind == SIGNUP]] = time_us[kind == SIGNUP]
    later = s.start_us > signup_us[s.customer]
    s.device = (
        v.second_device[s.customer] & later & (rng.random(len(later)) < 0.5)
    ).astype(np.int64)

    # Refunds: 6 % of orders, 2 to 30 days later, a quarter of them partial.
    order_us = np.zeros(len(o.customer), np.int64)
    order_us[order[kind == ORDER]] = time_us[kind == ORDER]
    delay = np.minimum(2.0 + rng.exponential(8.0, len(order_us)), 30.0) * _US_PER_DAY
    refund_us = order_us + delay.astype(np.int64)
    partial = rng.random(len(order_us)) < 0.25
    share = np.where(partial, rng.uniform(0.2, 0.8, len(order_us)), 1.0)
    refund_cents = np.round(o.revenue_cents * share).astype(np.int64)
    refunded = np.flatnonzero(
        (rng.random(len(order_us)) < 0.06) & (refund_us < shop.end_us - 60_000_000)
    )

    # The properties pool: page views, cart items, sign-up, orders, refunds.
    n_items = len(shop.item_props)
    order_base = n_pages + n_items + 1
    properties = np.select(
        [kind == PAGE, kind == ADD, kind == SIGNUP],
        [url, n_pages + product * 2 + quantity - 1, n_pages + n_items],
        order_base + order,
    )
    pool = pa.concat_arrays(
        [
            shop.page_props,
            shop.item_props,
            pa.array(['{"method":"email"}']),
            _order_properties(shop, o, order_ids),
            _refund_properties(order_ids.take(refunded), refund_cents[refunded]),
        ]
    )

    # Session events and backend refunds together, in time order.
    r = len(refunded)
    none = np.full(r, -1)
    revenue = np.where(kind == ORDER, o.revenue_cents[np.maximum(order, 0)], 0)
    columns = {
        "kind": (kind, np.full(r, REFUND)),
        "customer": (customer, o.customer[refunded]),
        "session": (sess, none),
        "time_us": (time_us, refund_us[refunded]),
        "url": (url, none),
        "referrer": (referrer, none),
        "properties": (properties, order_base + len(o.customer) + np.arange(r)),
        "order": (order, refunded),
        "revenue_cents": (revenue, -refund_cents[refunded]),
    }
    joined = {name: np.concatenate(parts) for name, parts in columns.items()}
    by_time = np.argsort(joined["time_us"], kind="stable")
    return _Events(
        **{name: values[by_time] for name, values in joined.items()},
        properties_pool=pool,
        signup_us=signup_us,
    )


_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def _text(n: int, parts: list[bytes | np.ndarray]) -> pa.Array:
    """Fixed-width strings from byte constants and (n, width) uint8 character codes.

    Building the Arrow buffers directly keeps millions of ids out of Python objects.
    """
    columns = [
        np.broadcast_to(np.frombuffer(p, np.uint8), (n, len(p)))
        if isinstance(p, bytes)
        else p
        for p in parts
    ]
    data = np.ascontiguousarray(np.concatenate(columns, axis=1), dtype=np.uint8)
    width = data.shape[1]
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
    buffers = [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    return pa.Array.from_buffers(pa.string(), n, buffers)


def _hex(rng: np.random.Generator, n: int, nbytes: int) -> np.ndarray:
    """Random lowercase hex digits, (n, 2 * nbytes) character codes."""
    raw = rng.integers(0, 256, (n, nbytes), dtype=np.uint8)
    out = np.empty((n, 2 * nbytes), np.uint8)
    out[:, 0::2] = _HEX[raw >> 4]
    out[:, 1::2] = _HEX[raw & 15]
    return out


def _digits(values: np.ndarray, width: int) -> np.ndarray:
    """Zero-padded decimal digits, (n, width) character codes."""
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    return (48 + (values[:, None] // powers) % 10).astype(np.uint8)


def _uuid4(rng: np.random.Generator, n: int) -> pa.Array:
    """Random version-4 UUIDs as text (RFC 9562 section 5.4 layout)."""
    h = _hex(rng, n, 16)
    h[:, 12] = ord("4")
    h[:, 16] = _HEX[8 + (rng.integers(0, 4, n))]
    dash = b"-"
    return _text(n, [h[:, :8], dash, h[:, 8:12], dash, h[:, 12:16], dash, h[:, 16:20],
                     dash, h[:, 20:]])  # fmt: skip


def _pick(vocabulary: pa.Array, index: np.ndarray) -> pa.Array:
    """vocabulary[index] with -1 meaning null."""
    missing = index < 0
    if missing.any():
        vocabulary = pa.concat_arrays([vocabulary, pa.nulls(1, vocabulary.type)])
        index = np.where(missing, len(vocabulary) - 1, index)
    return vocabulary.take(pa.array(index, pa.int64()))


def _money(cents: np.ndarray) -> pa.Array:
    """Exact decimal text of non-negative cents: 1295 -> "12.95"."""
    euros = pc.cast(pa.array(cents // 100), pa.string())
    rest = pc.utf8_lpad(
        pc.cast(pa.array(cents % 100), pa.string()), width=2, padding="0"
    )
    return pc.binary_join_element_wise(euros, ".", rest, "")


def _order_ids(o: _Orders, first: int) -> pa.Array:
    """ORD-<customer number>-<order number>: unique by construction."""
    count = len(o.customer)
    return _text(count, [b"ORD-", _digits(first + o.customer + 1, 9), b"-",
                         _digits(o.seq + 1, 3)])  # fmt: skip


def _order_properties(shop: _Shop, o: _Orders, ids: pa.Array) -> pa.Array:
    """Segment's Order Completed properties, with the items as `products`."""
    count = len(o.customer)
    slots = []
    for position in range(3):
        index = np.full(count, -1)
        here = o.item_rank == position
        index[o.item_order[here]] = o.item_product[here] * 2 + o.item_quantity[here] - 1
        slots.append(_pick(shop.item_props, index))
    products = pc.binary_join_element_wise(*slots, ",", null_handling="skip")
    return pc.binary_join_element_wise(
        '{"order_id":"', ids, '","revenue":', _money(o.revenue_cents),
        ',"shipping":', _money(o.shipping_cents), ',"currency":"EUR","products":[',
        products, "]}", "",
    )  # fmt: skip


def _refund_properties(ids: pa.Array, cents: np.ndarray) -> pa.Array:
    return pc.binary_join_element_wise(
        '{"order_id":"', ids, '","revenue":-', _money(cents), ',"currency":"EUR"}', ""
    )


def _table(
    shop: _Shop,
    rng: np.random.Generator,
    first: int,
    v: _Visitors,
    s: _Sessions,
    e: _Events,
    order_ids: pa.Array,
) -> pa.Table:
    """Turn the event arrays into the EVENTS table."""
    n, size = len(v.arrival), len(e.kind)
    backend = e.kind == REFUND
    money = e.kind >= ORDER

    # Identifiers per customer and device (key = 2 * customer + device): a UUID as
    # anonymous id, a phone or desktop browser, an IPv4 address with the last octet
    # zeroed (the anonymisation the collector applies).
    device = np.where(backend, 0, s.device[np.maximum(e.session, 0)])
    key = np.where(backend, -1, 2 * e.customer + device)
    phone = np.stack([v.mobile, ~v.mobile], axis=1).reshape(-1)
    agent = np.where(phone, 3, 0) + rng.integers(0, 3, 2 * n)
    octets = [
        pc.cast(pa.array(rng.integers(low, high, 2 * n)), pa.string())
        for low, high in ((2, 224), (0, 256), (0, 256))
    ]
    ips = pc.binary_join_element_wise(*octets, "0", ".")
    users = _text(n, [b"user-", _digits(first + np.arange(n) + 1, 9)])
    with_user = e.time_us >= e.signup_us[e.customer]

    variant = np.where(backend, -1, s.variant[np.maximum(e.session, 0)])
    referrers = pa.array([x[1] for x in _VARIANTS], pa.string())
    delay = 50_000 + np.minimum(rng.exponential(300_000.0, size), 1_400_000)
    revenue = pa.array(e.revenue_cents / 100.0, pa.float64(), mask=~money)
    timestamp = pa.timestamp("us")
    columns: dict[str, pa.Array] = {
        "event_id": _text(size, [_hex(rng, size, 16)]),
        "type": _pick(pa.array(["page", "track"]), (e.kind != PAGE).astype(np.int64)),
        "event": _pick(pa.array(_EVENT_NAMES, pa.string()), e.kind),
        "anonymous_id": _pick(_uuid4(rng, 2 * n), key),
        "user_id": _pick(users, np.where(with_user, e.customer, -1)),
        "timestamp": pa.array(e.time_us, timestamp),
        "received_at": pa.array(e.time_us + delay.astype(np.int64), timestamp),
        "session_id": _pick(
            _text(len(s.customer), [_hex(rng, len(s.customer), 8)]), e.session
        ),
        "properties": e.properties_pool.take(pa.array(e.properties, pa.int64())),
        "context": _pick(
            shop.contexts, np.where(backend, 2, phone[np.maximum(key, 0)])
        ),
        "revenue": revenue,
        "currency": _pick(pa.array(["EUR"]), np.where(money, 0, -1)),
        "order_id": _pick(order_ids, e.order),
        "url": _pick(shop.pages, e.url),
        "referrer": _pick(pa.concat_arrays([shop.pages, referrers]), e.referrer),
    }
    channel = np.where(variant < 0, -1, _VARIANT_CHANNEL[variant])
    columns["channel"] = _pick(pa.array(CHANNELS), channel)
    for field, name in enumerate(_UTM_FIELDS, start=2):
        values = pa.array([x[field] for x in _VARIANTS], pa.string())
        columns[name] = _pick(values, variant)
    columns["user_agent"] = _pick(
        pa.array(_USER_AGENTS), np.where(backend, -1, agent[key])
    )
    columns["ip"] = _pick(ips, key)
    columns["source"] = pa.repeat("demo", size)
    columns["import_id"] = pa.nulls(size, pa.string())
    return pa.Table.from_arrays([columns[f.name] for f in SCHEMA], schema=SCHEMA)
