"""The extract stage: write one raw partition per invoice day.

A run for day D writes ``raw/ds=D`` (always, so a rerun picks up late corrections of that day)
and every earlier day that has no raw partition yet ("history not yet extracted"). Earlier
partitions that exist are left alone, which keeps a backfill cheap and makes the history a run
sees independent of the order in which runs happen.

Rows whose InvoiceDate cannot be parsed belong to no day: each run D puts them into its own
raw partition so that the clean stage quarantines them, with their reason, in ``quarantine/ds=D``.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta
from typing import Any

from purchasing_power.errors import SourceError
from purchasing_power.extract import read_staged, stage_source
from purchasing_power.schemas import raw_schema
from purchasing_power.settings import Settings
from purchasing_power.storage import RAW_FILE, Workspace, read_parquet

log = logging.getLogger(__name__)


def extract_day(settings: Settings, day: date) -> dict[str, Any]:
    """Extract the run's day and any history not yet extracted. Returns a JSON-able report."""
    import pandas as pd

    ws = Workspace.for_settings(settings)
    source = settings.resolved_source
    index = stage_source(settings, ws)
    counts = {date.fromisoformat(k): v for k, v in index["days"].items()}
    up_to = {d: n for d, n in counts.items() if d <= day}
    if not up_to:
        first = min(counts) if counts else None
        raise SourceError(
            f"source {source} has no dated rows on or before {day} (its first InvoiceDate is {first}): "
            "nothing to predict from; run a later day"
        )
    first_day = min(up_to)
    existing = set(ws.per_source.list_days("raw", RAW_FILE))
    todo = [first_day + timedelta(days=i) for i in range((day - first_day).days + 1)]
    todo = [d for d in todo if d == day or d not in existing]
    rows = read_staged(index, todo[0], day)
    groups = {d.date(): g for d, g in rows.groupby(rows["InvoiceDate"].dt.normalize(), sort=True)}
    undated = read_parquet(index["undated_path"]) if index["undated"] else rows.iloc[0:0]
    schema = raw_schema()
    written: list[str] = []
    for d in todo:
        part = groups.get(d, rows.iloc[0:0])
        if d == day:
            part = pd.concat([part, undated])
        ws.per_source.write_parquet(part.reset_index(drop=True), ws.per_source.path("raw", d, RAW_FILE), schema=schema)
        written.append(d.isoformat())

    report = {
        "day": day.isoformat(),
        "source": source,
        "source_id": settings.source_id,
        "source_version": index["version"],
        "rows_in_source": index["rows"],
        "rows_up_to_day": int(sum(up_to.values())),
        "rows_of_day": int(counts.get(day, 0)),
        "rows_undated": index["undated"],
        "rows_after_day": int(sum(n for d, n in counts.items() if d > day)),
        "partitions_written": len(written),
        "first_day": first_day.isoformat(),
        "raw_path": ws.per_source.path("raw", day, RAW_FILE),
    }
    if report["rows_of_day"] == 0:
        log.warning("source %s has no rows dated %s (empty day); predictions still cover all customers", source, day)
    log.info("extract %s: %s", day, report)
    return report
