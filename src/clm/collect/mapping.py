"""Which column of a transactions file is the customer, the time, the order, the amount.

Columns are taken from the user's options first, else recognised by common names
(compared without case, spaces, `_` or `-`). The amount may be an arithmetic expression
over columns (`Quantity * UnitPrice`), written in clm's rule language: it is parsed by
`clm.lifecycle.rules.parse` and compiled by `clm.lifecycle.rules.compile.to_ibis`, never
evaluated as Python. Only arithmetic is accepted there (names, numbers, + - * / %,
unary minus, parentheses): an amount is not a condition.

Choices where the issue is silent:

* The customer and the time column are required (a transaction without a buyer column
  is not a customer's history); the order and quantity columns are optional.
* When no amount column is found but a price and a quantity column are, the amount is
  `price * quantity`.
* A stock-code column (StockCode, sku, product_id…) is recognised, never required; it
  links a cancellation to the order it cancels.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import ibis.expr.types as ir

from clm.errors import ImportFormatError, known
from clm.lifecycle.rules import ast

# Common names per role, in order of preference, compared by `_norm`. The German
# names are those of common shop and ERP exports (Kundennummer, Bestelldatum …).
# fmt: off
CANDIDATES: dict[str, tuple[str, ...]] = {
    "customer": (
        "customer_id", "customerid", "customer", "user_id", "userid", "client_id",
        "clientid", "customer_number", "customer_no", "member_id", "account_id",
        "buyer_id", "contact_id", "client", "user", "email",
        "kundennummer", "kundennr", "kunden_id", "kundenid", "kunde", "e-mail",
    ),
    "time": (
        "timestamp", "order_date", "invoicedate", "invoice_date", "purchase_date",
        "transaction_date", "order_time", "created_at", "datetime", "date", "time",
        "event_time", "orderdate",
        "bestelldatum", "bestellzeit", "rechnungsdatum", "kaufdatum", "zeitpunkt",
        "datum",
    ),
    "order": (
        "order_id", "orderid", "invoiceno", "invoice_no", "invoice", "invoice_id",
        "order_number", "order_no", "order", "transaction_id", "receipt_id",
        "bestellnummer", "bestellnr", "auftragsnummer", "rechnungsnummer",
        "belegnummer",
    ),
    "amount": (
        "amount", "revenue", "dollar_value", "total", "order_total", "total_amount",
        "sales", "value", "net_amount", "gross_amount", "line_total", "spend",
        "betrag", "umsatz", "gesamtbetrag", "bruttobetrag", "nettobetrag", "summe",
    ),
    "quantity": (
        "quantity", "qty", "number_of_cds", "units", "items", "count",
        "menge", "anzahl", "stückzahl",
    ),
    "price": (
        "unitprice", "unit_price", "price", "item_price",
        "einzelpreis", "stückpreis", "preis",
    ),
    "stock_code": (
        "stockcode", "stock_code", "sku", "product_id", "item_id", "ean",
        "artikelnummer", "artikelnr",
    ),
}
# fmt: on


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-.]", "", name.strip().lower())


@dataclass(frozen=True)
class Mapping:
    """The columns used for each role, and the amount as text and as a tree."""

    customer: str
    time: str
    amount: str
    order: str | None = None
    quantity: str | None = None
    stock_code: str | None = None
    amount_tree: ast.Node | None = field(default=None, compare=False)
    amount_columns: tuple[str, ...] = ()
    detected: tuple[str, ...] = ()  # roles found by name rather than given

    def as_dict(self) -> dict[str, Any]:
        return {
            "customer": self.customer,
            "time": self.time,
            "order": self.order,
            "amount": self.amount,
            "quantity": self.quantity,
            "stock_code": self.stock_code,
            "detected": list(self.detected),
        }


def _find(columns: list[str], role: str) -> str | None:
    by_norm = {_norm(c): c for c in columns}
    for cand in CANDIDATES[role]:
        if _norm(cand) in by_norm:
            return by_norm[_norm(cand)]
    return None


def _given(columns: list[str], role: str, name: str) -> str:
    """The file's column for a name the user gave; case-insensitive if unambiguous."""
    if name in columns:
        return name
    matches = [c for c in columns if _norm(c) == _norm(name)]
    if len(matches) == 1:
        return matches[0]
    raise ImportFormatError(
        f"--{role} {name!r}: the file has no such column; its columns are: "
        f"{', '.join(columns)}. Give one of them (header-less files have column0, "
        "column1, …)"
    )


def resolve(
    columns: list[str],
    *,
    customer: str | None = None,
    time: str | None = None,
    order: str | None = None,
    amount: str | None = None,
    quantity: str | None = None,
) -> Mapping:
    """Resolve the mapping from the options given and the file's column names."""
    detected: list[str] = []
    chosen: dict[str, str | None] = {}
    for role, given in (
        ("customer", customer),
        ("time", time),
        ("order", order),
        ("quantity", quantity),
    ):
        if given:
            chosen[role] = _given(columns, role, given)
        else:
            chosen[role] = _find(columns, role)
            if chosen[role]:
                detected.append(role)
    for role in ("customer", "time"):
        if not chosen[role]:
            raise ImportFormatError(
                f"no {role} column among the file's columns ({', '.join(columns)});"
                f" name it with --{role} COLUMN (recognised names: "
                f"{known(CANDIDATES[role], 6)})"
            )

    # The amount: a column, an expression, or price * quantity.
    if amount is None:
        found = _find(columns, "amount")
        price = _find(columns, "price")
        if found:
            amount = found
        elif price and chosen["quantity"]:
            amount = f"{price} * {chosen['quantity']}"
        else:
            raise ImportFormatError(
                f"no amount column among the file's columns ({', '.join(columns)});"
                " name it with --amount COLUMN or an expression such as "
                '"Quantity * UnitPrice"'
            )
        detected.append("amount")
    if amount in columns:
        tree: ast.Node = ast.Name(amount)
    else:
        tree = parse_amount(amount)
    names = tuple(dict.fromkeys(_names(tree, amount)))
    resolved = {n: _given(columns, "amount", n) for n in names}
    tree = _rename(tree, resolved)
    return Mapping(
        customer=str(chosen["customer"]),
        time=str(chosen["time"]),
        amount=amount,
        order=chosen["order"],
        quantity=chosen["quantity"],
        stock_code=_find(columns, "stock_code"),
        amount_tree=tree,
        amount_columns=tuple(resolved.values()),
        detected=tuple(detected),
    )


def parse_amount(text: str) -> ast.Node:
    """Parse an amount expression with the rule language's parser."""
    from clm.errors import RuleSyntaxError
    from clm.lifecycle.rules import parse

    try:
        return parse(text)
    except RuleSyntaxError as exc:
        raise ImportFormatError(
            f"--amount {text!r} is neither a column nor an arithmetic expression over "
            f"columns: {exc}"
        ) from None


def _names(node: ast.Node, text: str) -> list[str]:
    """The column names an amount uses; anything but arithmetic is refused."""
    if isinstance(node, ast.Name):
        return [node.name]
    if isinstance(node, ast.Literal) and isinstance(node.value, int | float):
        return []
    if isinstance(node, ast.Unary) and node.op == "-":
        return _names(node.operand, text)
    if isinstance(node, ast.Binary) and node.op in ast.ARITHMETIC:
        return _names(node.left, text) + _names(node.right, text)
    raise ImportFormatError(
        f"--amount {text!r}: only column names, numbers and + - * / % are allowed "
        f"(found {type(node).__name__} at column {node.pos + 1}); "
        'for example "Quantity * UnitPrice"'
    )


def _rename(node: ast.Node, names: dict[str, str]) -> ast.Node:
    if isinstance(node, ast.Name):
        return ast.Name(names[node.name], pos=node.pos)
    if isinstance(node, ast.Unary):
        return ast.Unary(node.op, _rename(node.operand, names), pos=node.pos)
    if isinstance(node, ast.Binary):
        return ast.Binary(
            node.op, _rename(node.left, names), _rename(node.right, names), pos=node.pos
        )
    return node


def amount_expr(mapping: Mapping, table: ir.Table) -> ir.FloatingValue:
    """The amount as an Ibis expression on `table`, whose amount columns are numeric."""
    assert mapping.amount_tree is not None
    if isinstance(mapping.amount_tree, ast.Name):
        return table[mapping.amount_tree.name].cast("float64")  # type: ignore[no-any-return]
    from clm.lifecycle.rules.compile import to_ibis

    def column(node: ast.Name) -> ir.Value:
        return table[node.name]

    return to_ibis(mapping.amount_tree, column).cast("float64")  # type: ignore[no-any-return]
