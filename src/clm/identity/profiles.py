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
import uuid

import ibis

from clm.identity.resolve import _db, customer_events
from clm.receipts import Receipt
from clm.warehouse.engine import Warehouse

log = logging.getLogger("clm.identity")

PROFILE_SQL = """
WITH trait_rows AS (
  SELECT e.customer_id, j.key AS trait, j.value AS value, e.timestamp, e.event_id
  FROM {ev} e, json_each(e.properties) j
  WHERE e.type = 'identify' AND json_valid(e.properties)
    AND json_type(e.properties) = 'OBJECT' AND j.type <> 'NULL'
  UNION ALL
  SELECT e.customer_id, j.key, j.value, e.timestamp, e.event_id
  FROM {ev} e, json_each(json_extract(e.context, '$.traits')) j
  WHERE e.context LIKE '%"traits"%' AND json_valid(e.context)
    AND json_type(json_extract(e.context, '$.traits')) = 'OBJECT'
    AND j.type <> 'NULL'
),
latest AS (
  SELECT customer_id, trait,
    arg_max(value, (timestamp, event_id)) AS value, max(timestamp) AS set_at
  FROM trait_rows GROUP BY ALL
),
traits AS (
  SELECT customer_id,
    json_group_object(trait, value)::VARCHAR AS traits,
    json_group_object(trait, strftime(set_at, '%Y-%m-%dT%H:%M:%S.%f'))::VARCHAR
      AS trait_times
  FROM latest GROUP BY customer_id
),
touch AS (
  SELECT customer_id, min(timestamp) AS first_seen, max(timestamp) AS last_seen,
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
  FROM {ev} GROUP BY customer_id
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
SELECT t.customer_id, coalesce(tr.traits, '{{}}') AS traits,
  coalesce(tr.trait_times, '{{}}') AS trait_times, t.first_seen, t.last_seen,
  t.first_channel, t.first_campaign, t.last_channel, t.last_campaign,
  t.orders, t.revenue, coalesce(s.stages, '{{}}') AS stages,
  now()::TIMESTAMP AS updated_at
FROM touch t LEFT JOIN traits tr USING (customer_id)
LEFT JOIN stages s USING (customer_id)
"""


def build_profiles(wh: Warehouse) -> Receipt:
    """Rebuild `profiles` from the resolved events and current stages."""
    receipt = Receipt("profiles")
    con = _db(wh)
    name = f"_clm_prof_{uuid.uuid4().hex[:8]}"
    with receipt.timed("events"):
        # Copy only what the profile reads: the JSON payloads are most of an event's
        # bytes, and only identify calls and events with traits need them.
        ev = customer_events(wh)
        slim = ev.select(
            "customer_id", "event_id", "timestamp", "type", "event", "channel",
            "utm_source", "utm_campaign", "revenue",
            properties=ibis.ifelse(ev.type == "identify", ev.properties, None),
            context=ibis.ifelse(
                ev.context.contains('"traits"').fill_null(False), ev.context, None
            ),
        )  # fmt: skip
        sql = wh.con.compile(slim)
        con.execute(f"CREATE TEMP TABLE {name} AS {sql}")
    try:
        with receipt.timed("build"):
            con.execute("DELETE FROM profiles")
            con.execute("INSERT INTO profiles BY NAME " + PROFILE_SQL.format(ev=name))
    finally:
        con.execute(f"DROP TABLE IF EXISTS {name}")
    n = con.execute("SELECT count(*) FROM profiles").fetchone()[0]
    receipt.counts["profiles"] = int(n)
    log.info("profiles rebuilt: %s", n)
    return receipt
