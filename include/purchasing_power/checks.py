"""Freshness and volume of a day's input: flag a day with no rows, or with fewer rows than a set
share of the trailing median, before its predictions are published.

The counts are the raw rows extracted per invoice day (the raw manifest of the source), so the
check costs no data read. A day without a raw entry inside the source's span had no rows.
"""

from __future__ import annotations

import statistics
from datetime import date, timedelta
from typing import Any, Mapping

#: Statuses of :func:`volume_check`; every one but ``ok`` and ``off`` is flagged.
OK, NO_ROWS, LOW_VOLUME, OFF = "ok", "no_rows", "low_volume", "off"


def volume_check(
    rows_by_day: Mapping[date, int],
    day: date,
    *,
    min_share: float,
    window_days: int,
    mode: str = "warn",
) -> dict[str, Any]:
    """The day's volume against the median of the ``window_days`` days before it (days of the
    source's span only: before its first day there is no history to compare with).

    ``status``: ``no_rows`` (nothing on ``day``), ``low_volume`` (rows < ``min_share`` × the
    trailing median), else ``ok``; ``off`` when ``mode`` is off. ``flagged`` says whether the day
    needs a look, ``fails`` whether the run must fail for it (``mode == "fail"``)."""
    rows = int(rows_by_day.get(day, 0))
    dated = [d for d, n in rows_by_day.items() if n > 0]
    first = min(dated) if dated else day
    window = [day - timedelta(days=i) for i in range(1, window_days + 1)]
    trailing = [int(rows_by_day.get(d, 0)) for d in window if d >= first]
    median = float(statistics.median(trailing)) if trailing else None
    share = (rows / median) if median else None
    if mode == "off":
        status = OFF
    elif rows == 0:
        status = NO_ROWS
    elif share is not None and share < min_share:
        status = LOW_VOLUME
    else:
        status = OK
    flagged = status in (NO_ROWS, LOW_VOLUME)
    return {
        "status": status,
        "flagged": flagged,
        "fails": flagged and mode == "fail",
        "mode": mode,
        "rows": rows,
        "trailing_days": len(trailing),
        "trailing_median": median,
        "share": None if share is None else round(share, 4),
        "min_share": float(min_share),
        "message": describe(status, day, rows, median, min_share),
    }


def describe(status: str, day: date, rows: int, median: float | None, min_share: float) -> str:
    if status == NO_ROWS:
        return f"no rows for {day} in the source" + (f" (trailing median {median:g} rows a day)" if median else "")
    if status == LOW_VOLUME:
        return (f"{rows} rows for {day}: {rows / median:.0%} of the trailing median of {median:g} rows a day "
                f"(at least {min_share:.0%} expected)")
    if status == OFF:
        return "volume check off"
    return f"{rows} rows for {day}" + (f" ({rows / median:.0%} of the trailing median)" if median else "")


def rows_by_day(raw_manifest: Mapping[str, Any]) -> dict[date, int]:
    """Rows per day from the raw manifest (``{"days": {"YYYY-MM-DD": {"rows": n, ...}}}``)."""
    out: dict[date, int] = {}
    for key, entry in (raw_manifest.get("days") or {}).items():
        rows = (entry or {}).get("rows")
        if rows is not None:
            out[date.fromisoformat(key)] = int(rows)
    return out
