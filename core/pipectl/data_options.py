"""The data step's option rules that validating a pipeline needs (``pipectl validate`` checks
them without importing :mod:`pipectl.data`, asyncio and the data path); re-exported by
:mod:`pipectl.data`."""

from __future__ import annotations

from typing import Any

BAD_RECORD_MODES = ("fail", "skip", "dead_letter")
DEFAULT_BATCH_SIZE = 10_000
DEFAULT_BUFFER_SIZE = 4


def parse_max_bad_records(value: Any) -> tuple[int | None, float | None]:
    """``max_bad_records`` as (a count, a percentage): ``100`` or ``"5%"``; ``None`` means
    no limit but the one that always holds (a step that rejects every record fails)."""
    if value is None:
        return None, None
    if isinstance(value, bool):
        raise ValueError(
            f"max_bad_records must be a count or a percentage like '5%', got {value!r}"
        )
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"max_bad_records must be 0 or more, got {value}")
        return value, None
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            pct = float(value.strip()[:-1])
        except ValueError:
            pct = -1.0
        if not 0 <= pct <= 100:
            raise ValueError(f"max_bad_records {value!r}: a percentage is between 0% and 100%")
        return None, pct
    raise ValueError(
        f"max_bad_records must be a count (like 100) or a percentage (like '5%'), got {value!r}"
    )
