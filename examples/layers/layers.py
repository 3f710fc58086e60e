"""The steps of the bronze -> silver -> gold example."""

from __future__ import annotations

import sqlite3
from decimal import Decimal, InvalidOperation


def clean_order(row: dict) -> dict:
    """A raw (bronze) order line to a clean (silver) one; raises for a line that cannot be
    trusted, which the data step sets aside in the dead-letter file."""
    try:
        quantity = int(row["quantity"])
        price = Decimal(row["unit_price"])
    except (ValueError, InvalidOperation):
        raise ValueError(
            f"unparseable quantity {row['quantity']!r} or price {row['unit_price']!r}"
        ) from None
    return {
        "order_id": row["order_id"].strip(),
        "ordered_at": row["ordered_at"].strip(),
        "customer_email": row["customer_email"].strip().lower(),
        "city": row["city"].strip().title(),
        "sku": row["sku"].strip(),
        "quantity": quantity,
        "amount": float(price * quantity),
        "status": row["status"].strip(),
    }


def revenue_by_city(params: dict) -> dict:
    """Gold: paid revenue per city, from the orders table the previous step loaded."""
    with sqlite3.connect(params["gold_db"]) as db:
        rows = db.execute(
            "SELECT city, round(sum(amount), 2) FROM orders WHERE status = 'paid' "
            "GROUP BY city ORDER BY 2 DESC"
        ).fetchall()
    return dict(rows)
