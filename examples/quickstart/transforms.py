"""The quick start's transforms: plain functions, testable without pipectl."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation


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
