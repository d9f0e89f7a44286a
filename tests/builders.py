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
