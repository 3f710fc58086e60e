"""The steps of the resilience example: a flaky source, a slow optional service, a clean-up."""

from __future__ import annotations

import time
from pathlib import Path

_calls = {"fetch_rates": 0}


def reserve_batch(params: dict) -> str:
    """Claim today's batch: a marker file other jobs respect. Undone by release_batch."""
    marker = Path(params["out"]) / "batch.reserved"
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("reserved by the resilience example\n")
    return str(marker)


def release_batch(output: str) -> None:
    """The rollback of reserve_batch: it gets the step's output (the marker's path)."""
    Path(output).unlink(missing_ok=True)


def fetch_rates(params: dict) -> dict[str, float]:
    """An exchange-rate API that drops the first connections (retried with backoff)."""
    _calls["fetch_rates"] += 1
    if _calls["fetch_rates"] <= params["flaky_attempts"]:
        raise ConnectionError(f"rates API unreachable (call {_calls['fetch_rates']})")
    return {"EUR": 1.0, "USD": 1.08, "GBP": 0.86}


def slow_enrichment() -> dict:
    """A best-effort service that is too slow today: it times out, and may (allow_failure)."""
    time.sleep(5)
    return {"segments": []}


def convert(fetch_rates: dict[str, float]) -> list[dict]:
    """Prices in every currency; runs once the rates arrived, whatever the enrichment did."""
    prices = [{"sku": "SKU-1001", "eur": 42.0}, {"sku": "SKU-1002", "eur": 4.5}]
    return [
        {**p, **{c.lower(): round(p["eur"] * r, 2) for c, r in fetch_rates.items()}} for p in prices
    ]


def cleanup() -> str:
    """Runs whatever happened upstream (trigger: all_done): temp files, locks, connections."""
    return "cleaned up"
