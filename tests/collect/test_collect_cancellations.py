"""Which orders are cancellations: a negative total, or a UCI-style `C` id that is not
positive. A shop whose ordinary order numbers start with C keeps its orders."""

from __future__ import annotations

from clm.collect import import_transactions


def test_c_prefixed_order_numbers_with_positive_totals_are_orders(workspace, tmp_path):
    csv = tmp_path / "orders.csv"
    csv.write_text(
        "order,cust,when,amount\n"
        "C1,21,2024-01-02,10.0\n"
        "C2,21,2024-01-05,5.0\n"
        "C3,22,2024-01-06,5.0\n"
        "C4,22,2024-01-07,-5.0\n",
        encoding="utf-8",
    )
    r = import_transactions(
        workspace.warehouse, csv, customer="cust", time="when", order="order",
        amount="amount",
    )  # fmt: skip
    # C1..C3 are purchases (10 + 5 + 5); only C4, with a negative total, is a refund.
    assert (r.counts["orders"], r.counts["refunds"]) == (3, 1)
    assert r.counts["revenue"] == 20.0
    ev = workspace.warehouse.table("events").to_pandas()
    assert sorted(ev[ev.event == "order_refunded"].revenue) == [-5.0]
