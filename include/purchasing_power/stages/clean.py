"""The clean stage: split raw partitions into clean rows and quarantined rows with a reason."""

from __future__ import annotations

import logging
from datetime import date
from typing import Any

from purchasing_power.clean import clean_frame
from purchasing_power.schemas import clean_schema, quarantine_schema
from purchasing_power.settings import Settings
from purchasing_power.storage import CLEAN_FILE, QUARANTINE_FILE, RAW_FILE, Workspace

log = logging.getLogger(__name__)


def clean_day(settings: Settings, day: date) -> dict[str, Any]:
    """Clean the run's day and every earlier raw day without a clean partition.
    Returns a report with row counts that reconcile: read = clean + quarantined."""

    ws = Workspace.for_settings(settings)
    raw_days = ws.per_source.list_days("raw", RAW_FILE)
    if day not in raw_days:
        raise FileNotFoundError(f"no raw partition for {day} at {ws.per_source.path('raw', day, RAW_FILE)}: run extract first")
    done = set(ws.per_source.list_days("clean", CLEAN_FILE))
    todo = [d for d in raw_days if d <= day and (d == day or d not in done)]
    # Clean all pending days in one vectorised pass (duplicates can only occur within a day,
    # since the invoice timestamp is part of the row), then write one partition per day.
    raw = ws.per_source.read_parquet_many([ws.per_source.path("raw", d, RAW_FILE) for d in todo])
    clean, quarantine = clean_frame(raw)
    if len(raw) != len(clean) + len(quarantine):  # invariant: no row is lost
        raise AssertionError(f"row counts do not reconcile: {len(raw)} != {len(clean)} + {len(quarantine)}")
    clean_days = clean["invoice_ts"].dt.date
    q_days = quarantine["InvoiceDate"].dt.date.where(quarantine["InvoiceDate"].notna(), day)
    clean_by_day = dict(tuple(clean.groupby(clean_days, sort=False)))
    q_by_day = dict(tuple(quarantine.groupby(q_days, sort=False)))
    c_schema, q_schema = clean_schema(), quarantine_schema()
    day_counts: dict[str, Any] = {}
    for d in todo:
        c = clean_by_day.get(d, clean.iloc[0:0]).reset_index(drop=True)
        q = q_by_day.get(d, quarantine.iloc[0:0]).reset_index(drop=True)
        ws.per_source.write_parquet(c, ws.per_source.path("clean", d, CLEAN_FILE), schema=c_schema)
        ws.root.write_parquet(q, ws.root.path("quarantine", d, QUARANTINE_FILE), schema=q_schema)
        if d == day:
            day_counts = {
                "read": len(c) + len(q),
                "clean": len(c),
                "quarantined": len(q),
                "quarantine_reasons": {str(k): int(v) for k, v in q["reason"].value_counts().sort_index().items()},
            }
    report = {
        "day": day.isoformat(),
        "partitions_cleaned": len(todo),
        "totals": {"read": len(raw), "clean": len(clean), "quarantined": len(quarantine)},
        "run_day": day_counts,
        "quarantine_path": ws.root.path("quarantine", day, QUARANTINE_FILE),
    }
    log.info("clean %s: %s", day, report)
    return report
