"""The quick start's transforms: plain functions, testable without pipectl."""

from __future__ import annotations

import sqlite3
from decimal import Decimal, InvalidOperation
from typing import Any


def clean_order(row: dict[str, str]) -> dict | None:
    """One raw CSV row to a clean order, or None when the row cannot be trusted."""
    try:
        quantity = int(row["quantity"])
        unit_price = Decimal(row["unit_price"])
    except (ValueError, InvalidOperation):
        return None
    return {
        "order_id": row["order_id"].strip(),
        "ordered_at": row["ordered_at"].strip(),
        "customer_email": row["customer_email"].strip().lower(),
        "city": row["city"].strip().title(),
        "sku": row["sku"].strip(),
        "product": row["product"].strip(),
        "quantity": quantity,
        "unit_price": float(unit_price),
        "amount": float(unit_price * quantity),
        "status": row["status"].strip(),
    }


def clean_orders(rows: list[dict[str, str]]) -> tuple[list[dict], list[dict], int]:
    """Clean every row and drop repeated order lines.

    Returns (orders, rejected rows, number of duplicates dropped).
    """
    seen: set[str] = set()
    orders, rejected, duplicates = [], [], 0
    for row in rows:
        order = clean_order(row)
        if order is None:
            rejected.append(row)
        elif order["order_id"] in seen:
            duplicates += 1
        else:
            seen.add(order["order_id"])
            orders.append(order)
    return orders, rejected, duplicates


# -- used by pipeline.yaml: per-record transforms of a streaming data step --------------------


def parse_order(row: dict[str, str]) -> dict:
    """One raw CSV row to a clean order; raises for a row that cannot be trusted, which the
    data step sets aside (``on_bad_record: dead_letter``) with the reason."""
    order = clean_order(row)
    if order is None:
        raise ValueError(
            f"unparseable quantity {row['quantity']!r} or unit price {row['unit_price']!r}"
        )
    return order


def drop_repeats(order: dict, ctx: Any) -> dict | None:
    """Keep the first line of each order_id. ``ctx.state`` lives as long as the step's
    attempt, across batches, and starts empty on a retry."""
    seen = ctx.state.setdefault("order_ids", set())
    if order["order_id"] in seen:
        return None
    seen.add(order["order_id"])
    return order


def revenue_by_city(params: dict) -> dict[str, float]:
    """Paid revenue per city, read back from the SQLite table the data step loaded."""
    with sqlite3.connect(params["database"]) as db:
        rows = db.execute(
            "SELECT city, round(sum(amount), 2) FROM orders WHERE status = 'paid' "
            "GROUP BY city ORDER BY 2 DESC"
        ).fetchall()
    return dict(rows)
