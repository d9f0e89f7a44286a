"""Profiles: one row per resolved customer, rebuilt from their events after each run.

Traits follow the latest non-null value by event time (then event id), never by arrival
order, so a late event cannot overwrite a newer value. Traits come from identify calls
(Segment keeps them in `traits`, our importers in `properties`) and from
`context.traits` of any event. First and last touch take the first and last event
with a channel (the `channel` column, else `utm_source`) and the campaign
(`utm_campaign`). Orders count `order_completed` events; revenue is their revenue plus
that of `order_refunded` events, which importers store as negative amounts.
Shortcoming: the profile is rebuilt in full each time (seconds for a million
customers); an incremental build would only touch the customers a run changed.
"""

from __future__ import annotations

import logging

from clm.identity.resolve import _db, customer_keys
from clm.receipts import Receipt
from clm.warehouse.engine import Warehouse

log = logging.getLogger("clm.identity")

PROFILE_SQL = """
WITH ev AS NOT MATERIALIZED ({ev}),
trait_rows AS (
  SELECT e.ck, j.key AS trait, j.value AS value, e.timestamp, e.event_id
  FROM ev e, json_each(e.properties) j
  WHERE e.type = 'identify' AND json_valid(e.properties)
    AND json_type(e.properties) = 'OBJECT' AND j.type <> 'NULL'
  UNION ALL
  SELECT e.ck, j.key, j.value, e.timestamp, e.event_id
  FROM ev e, json_each(json_extract(e.context, '$.traits')) j
  WHERE e.context LIKE '%"traits"%' AND json_valid(e.context)
    AND json_type(json_extract(e.context, '$.traits')) = 'OBJECT'
    AND j.type <> 'NULL'
),
latest AS (
  SELECT ck, trait,
    arg_max(value, (timestamp, event_id)) AS value, max(timestamp) AS set_at
  FROM trait_rows GROUP BY ALL
),
traits AS (
  SELECT ck,
    json_group_object(trait, value)::VARCHAR AS traits,
    json_group_object(trait, strftime(set_at, '%Y-%m-%dT%H:%M:%S.%f'))::VARCHAR
      AS trait_times
  FROM latest GROUP BY ck
),
touch AS (
  SELECT ck, min(timestamp) AS first_seen, max(timestamp) AS last_seen,
    arg_min(coalesce(channel, utm_source), (timestamp, event_id))
      FILTER (WHERE coalesce(channel, utm_source) IS NOT NULL) AS first_channel,
    arg_min(utm_campaign, (timestamp, event_id))
      FILTER (WHERE utm_campaign IS NOT NULL) AS first_campaign,
    arg_max(coalesce(channel, utm_source), (timestamp, event_id))
      FILTER (WHERE coalesce(channel, utm_source) IS NOT NULL) AS last_channel,
    arg_max(utm_campaign, (timestamp, event_id))
      FILTER (WHERE utm_campaign IS NOT NULL) AS last_campaign,
    count(*) FILTER (WHERE event = 'order_completed') AS orders,
    coalesce(sum(revenue) FILTER (
      WHERE event IN ('order_completed', 'order_refunded')), 0) AS revenue
  FROM ev GROUP BY ck
),
latest_version AS (
  SELECT model, max(model_version) AS v FROM stage_history GROUP BY model
),
stages AS (
  SELECT h.customer_id, json_group_object(h.model, h.stage)::VARCHAR AS stages
  FROM stage_history h JOIN latest_version l
    ON h.model = l.model AND h.model_version = l.v
  WHERE h.valid_to IS NULL GROUP BY h.customer_id
)
SELECT k.customer_id, coalesce(tr.traits, '{{}}') AS traits,
  coalesce(tr.trait_times, '{{}}') AS trait_times, t.first_seen, t.last_seen,
  t.first_channel, t.first_campaign, t.last_channel, t.last_campaign,
  t.orders, t.revenue, coalesce(s.stages, '{{}}') AS stages,
  now()::TIMESTAMP AS updated_at
FROM touch t JOIN {keys} k ON k.ck = t.ck LEFT JOIN traits tr ON tr.ck = t.ck
LEFT JOIN stages s ON s.customer_id = k.customer_id
"""


def build_profiles(wh: Warehouse) -> Receipt:
    """Rebuild `profiles` from the resolved events and current stages."""
    receipt = Receipt("profiles")
    con = _db(wh)
    # Each CTE reads the events joined to the customer keys (the run's, else made
    # here). `ev` is not materialised: the filters of the trait rows then reach the
    # events scan before the join, and the JSON payloads are never copied.
    with receipt.timed("build"), customer_keys(wh) as made:
        ev = made.events(wh).select(
            "ck", "event_id", "timestamp", "type", "event", "channel", "utm_source",
            "utm_campaign", "revenue", "properties", "context",
        )  # fmt: skip
        sql = PROFILE_SQL.format(ev=wh.con.compile(ev), keys=made.keys.get_name())
        con.execute("DELETE FROM profiles")
        con.execute("INSERT INTO profiles BY NAME " + sql)
    n = con.execute("SELECT count(*) FROM profiles").fetchone()[0]
    receipt.counts["profiles"] = int(n)
    log.info("profiles rebuilt: %s", n)
    return receipt
