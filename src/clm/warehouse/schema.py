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
SCHEMA_VERSION = 1

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

TABLES: dict[str, sch.Schema] = {
    "events": EVENTS,
    "stage_history": STAGE_HISTORY,
    "stage_transitions": STAGE_TRANSITIONS,
    "metric_values": METRIC_VALUES,
    "rejected": REJECTED,
    "models": MODELS,
    "receipts": RECEIPTS,
    "clm_meta": META,
}
