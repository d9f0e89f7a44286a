"""The warehouse tables (PRODUCT.md §3) and the schema version that migrations move.

Column types are Ibis types so that one definition serves DuckDB and Spark. JSON
payloads (`properties`, `context`, `raw`) are stored as text: Spark has no JSON type and
the text survives any engine unchanged. Timestamps are UTC without a zone attached;
the reporting time zone is applied when periods are computed, never on storage.
"""

from __future__ import annotations

import ibis
import ibis.expr.schema as sch

# Bump together with a migration step in `warehouse.migrations.STEPS`.
SCHEMA_VERSION = 4

EVENTS = ibis.schema(
    {
        "event_id": "string",  # client messageId, else a content hash: the dedup key
        "type": "string",  # track, page, screen, identify, alias, group
        "event": "string",  # the event name for track calls, e.g. order_completed
        "anonymous_id": "string",
        "user_id": "string",
        "timestamp": "timestamp",  # UTC, skew-corrected where the client said sentAt
        "received_at": "timestamp",
        "session_id": "string",
        "properties": "string",  # JSON text
        "context": "string",  # JSON text
        "revenue": "float64",
        "currency": "string",
        "order_id": "string",
        "url": "string",
        "referrer": "string",
        "channel": "string",
        "utm_source": "string",
        "utm_medium": "string",
        "utm_campaign": "string",
        "utm_term": "string",
        "utm_content": "string",
        "user_agent": "string",
        "ip": "string",
        "source": "string",  # where it came from: import:<file>, segment, matomo, demo
        "import_id": "string",  # the receipt of the import or load that wrote it
    }
)

STAGE_HISTORY = ibis.schema(
    {
        "customer_id": "string",
        "model": "string",
        "model_version": "int64",
        "stage": "string",
        "valid_from": "timestamp",  # UTC instant of the period start (reporting zone)
        "valid_to": "timestamp",  # exclusive; NULL while the stage still holds
        "run_id": "string",
    }
)

STAGE_TRANSITIONS = ibis.schema(
    {
        "customer_id": "string",
        "model": "string",
        "model_version": "int64",
        "from_stage": "string",  # NULL when the customer enters the model
        "to_stage": "string",
        "at": "timestamp",
        "run_id": "string",
    }
)

METRIC_VALUES = ibis.schema(
    {
        "metric": "string",  # the metric's call, e.g. conversion_rate_to(retention)
        "model": "string",
        "model_version": "int64",
        "stage": "string",
        "period_start": "date",  # in the reporting time zone
        "grain": "string",
        "segment": "string",  # '' for the whole population
        "value": "float64",
        "run_id": "string",
    }
)

REJECTED = ibis.schema(
    {
        "source": "string",  # the file or endpoint
        "row_number": "int64",  # 1-based data row in the file, NULL for HTTP
        "field": "string",  # the column or field at fault
        "value": "string",  # the bad value as text
        "reason": "string",  # what was expected
        "raw": "string",  # the whole row or payload as JSON text
        "rejected_at": "timestamp",
        "import_id": "string",
    }
)

MODELS = ibis.schema(
    {
        "name": "string",
        "version": "int64",
        "definition": "string",  # the YAML text as run
        "saved_at": "timestamp",
    }
)

RECEIPTS = ibis.schema(
    {
        "receipt_id": "string",
        "operation": "string",
        "source": "string",
        "started_at": "string",
        "body": "string",  # the receipt as JSON text
    }
)

META = ibis.schema({"key": "string", "value": "string"})

# -- identity (schema version 2): the single customer view, see docs/identity.md -----

IDENTITIES = ibis.schema(
    {
        "a": "string",  # identifier key `kind:value`, the smaller of the pair
        "b": "string",
        "event_id": "string",  # the earliest event that carried both
        "at": "timestamp",  # that event's time
        "reason": "string",  # identify, alias or event
    }
)

CUSTOMERS = ibis.schema(
    {
        "identifier": "string",  # identifier key `kind:value`
        "kind": "string",  # user, anon, email, phone, custom
        "customer_id": "string",
        "first_seen": "timestamp",
        "last_seen": "timestamp",
        "status": "string",  # linked, quarantined, blocked
    }
)

MERGE_LOG = ibis.schema(
    {
        "merged_id": "string",  # the customer id that stopped existing (or was split)
        "into_id": "string",  # the survivor it now points to
        "reason": "string",  # identify, alias, event, split
        "event_id": "string",  # the event whose link caused it
        "at": "timestamp",  # that event's time
        "logged_at": "timestamp",
        "run_id": "string",
    }
)

IDENTITY_CONFLICTS = ibis.schema(
    {
        "kind": "string",  # two_user_ids or quarantine
        "a": "string",  # identifier keys of the link not made
        "b": "string",
        "customer_a": "string",
        "customer_b": "string",
        "event_id": "string",
        "at": "timestamp",
        "detail": "string",
        "logged_at": "timestamp",
    }
)

IDENTITY_BLOCKS = ibis.schema(
    {
        "kind": "string",  # identifier or edge
        "a": "string",
        "b": "string",  # NULL for an identifier block
        "reason": "string",
        "at": "timestamp",
    }
)

IDENTITY_BATCHES = ibis.schema({"import_id": "string", "events": "int64"})

PROFILES = ibis.schema(
    {
        "customer_id": "string",
        "traits": "string",  # JSON object: trait -> latest non-null value by event time
        "trait_times": "string",  # JSON object: trait -> event time that set it
        "first_seen": "timestamp",
        "last_seen": "timestamp",
        "first_channel": "string",
        "first_campaign": "string",
        "last_channel": "string",
        "last_campaign": "string",
        "orders": "int64",
        "revenue": "float64",
        "stages": "string",  # JSON object: model -> current stage
        "updated_at": "timestamp",
    }
)

ERASURES = ibis.schema(
    {
        "erasure_id": "string",  # random; nothing about the person is kept
        "at": "timestamp",
        "rows": "string",  # JSON object: table -> rows deleted
    }
)

# -- customer value (schema version 3): CLV fits and per-customer predictions -------

CUSTOMER_VALUE = ibis.schema(
    {
        "customer_id": "string",
        "computed_at": "timestamp",
        "observation_period_end": "date",  # last day counted, reporting time zone
        "model": "string",  # purchase model: bgnbd or paretonbd
        "frequency": "float64",  # repeat purchase days
        "recency": "float64",  # first to last purchase day, in weeks
        "T": "float64",  # first purchase day to the observation end, in weeks
        "monetary_value": "float64",  # mean repeat-day spend, 0 without a repeat
        "p_alive": "float64",
        "expected_purchases": "float64",  # over the prediction horizon
        "expected_spend": "float64",  # per purchase (Gamma-Gamma or fallback)
        "predicted_clv": "float64",
        "r": "int64",  # RFM scores 1..5
        "f": "int64",
        "m": "int64",
        "rfm_segment": "string",
    }
)

VALUE_FITS = ibis.schema(
    {
        "fit_id": "string",
        "computed_at": "timestamp",
        "observation_period_end": "date",
        "calibration_period_end": "date",  # NULL unless fitted for a holdout check
        "model": "string",  # bgnbd, paretonbd or gammagamma
        "time_unit": "string",  # W (weeks) or D (days)
        "params": "string",  # JSON object: parameter -> value
        "log_likelihood": "float64",
        "converged": "boolean",
        "iterations": "int64",
        "message": "string",
        "n_customers": "float64",
        "options": "string",  # JSON: horizon, margin, discount rate … as used
    }
)

# -- dashboard (schema version 4): answers of the read views precomputed by clm run --

VIEW_CACHE = ibis.schema(
    {
        "key": "string",  # JSON list: the view and its arguments, e.g. ["series", …]
        "model": "string",  # '' for a view that does not depend on a stage model
        "model_version": "int64",
        "body": "string",  # the view's answer as JSON text
        "stamp": "string",  # the receipts stamp it was computed at (see server.views)
        "computed_at": "timestamp",
    }
)

TABLES: dict[str, sch.Schema] = {
    "events": EVENTS,
    "stage_history": STAGE_HISTORY,
    "stage_transitions": STAGE_TRANSITIONS,
    "metric_values": METRIC_VALUES,
    "rejected": REJECTED,
    "models": MODELS,
    "receipts": RECEIPTS,
    "clm_meta": META,
    "identities": IDENTITIES,
    "customers": CUSTOMERS,
    "merge_log": MERGE_LOG,
    "identity_conflicts": IDENTITY_CONFLICTS,
    "identity_blocks": IDENTITY_BLOCKS,
    "identity_batches": IDENTITY_BATCHES,
    "profiles": PROFILES,
    "erasures": ERASURES,
    "customer_value": CUSTOMER_VALUE,
    "value_fits": VALUE_FITS,
    "view_cache": VIEW_CACHE,
}
IDENTITY_TABLES = (
    "identities",
    "customers",
    "merge_log",
    "identity_conflicts",
    "identity_blocks",
    "identity_batches",
    "profiles",
    "erasures",
)
VALUE_TABLES = ("customer_value", "value_fits")
VIEW_TABLES = ("view_cache",)
