"""Small builders of hand-made test data."""

from __future__ import annotations

import pandas as pd


def events(
    rows: list[tuple[str, str | None, str]], revenue: float = 10.0
) -> pd.DataFrame:
    """(customer, event name or None for a page view, UTC time) → an events frame.

    Orders get `revenue` each; every row gets its own event id.
    """
    return pd.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(len(rows))],
            "type": ["page" if e is None else "track" for _, e, _ in rows],
            "event": [e for _, e, _ in rows],
            "user_id": [c for c, _, _ in rows],
            "timestamp": pd.to_datetime([t for _, _, t in rows], format="ISO8601"),
            "revenue": [
                revenue if e == "order_completed" else None for _, e, _ in rows
            ],
        }
    )


# A weekly model and the events whose history and metrics the metrics suites count by
# hand (see the docstring of tests/metrics/test_metrics_builtins.py).
WEEKLY_MODEL = """
name: t
version: 1
grain: week
features:
  orders: count(event = 'order_completed')
  orders_28d: count(event = 'order_completed', within = 28d)
  days_since_order: days_since(event = 'order_completed')
stages:
  - {name: lapsed, when: "orders >= 1 and days_since_order > 20", churned: true}
  - {name: active, when: "orders_28d >= 2"}
  - {name: buyer, when: "orders >= 1"}
  - {name: visitor, when: "true"}
metrics:
  buyer: [population, entered, exited, conversion_rate_to(active), orders, revenue,
          average_order_value, repeat_purchase_rate]
  active: [population, churn_rate, median_days_in_stage, revenue, revenue_share]
  lapsed: [population, entered]
"""

WEEKLY_ROWS = [
    ("c1", None, "2024-01-01 08:00"),
    ("c1", "order_completed", "2024-01-03 12:00"),
    ("c1", "order_completed", "2024-01-10 12:00"),
    ("c1", "order_completed", "2024-02-12 09:00"),
    ("c2", None, "2024-03-20 10:00"),
    ("c3", "order_completed", "2024-01-15 00:00:00"),
    ("c4", "order_completed", "2024-01-14 23:59:59"),
]
