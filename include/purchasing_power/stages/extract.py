"""The extract stage: write one raw partition per invoice day.

A run for day D writes ``raw/ds=D`` (always, so a rerun picks up late corrections of that day)
and every earlier day whose raw partition is missing or no longer holds what the source has for
that day. What each partition holds is recorded in the raw manifest (a fingerprint of its rows
and the source version that wrote it); when the source is replaced, the days whose rows changed
(per-day row counts and content hashes of the staged index) are extracted again and the others
are left alone. That keeps a backfill cheap and makes the history a run sees independent of the
order in which runs happen.

Rows whose InvoiceDate cannot be parsed belong to no day. Each is handed to one day only: the
run day of the first extract that finds it (the manifest records which), so that the clean stage
quarantines it exactly once, in ``quarantine/ds=<that day>``. Reruns of that day hand it to the
same day again; later days never get it; it keeps its day across source versions while the same
row is in the source.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta
from typing import Any

from purchasing_power.errors import SourceError
from purchasing_power.extract import partition_fingerprint, read_manifest, read_staged, stage_source, write_manifest
from purchasing_power.schemas import raw_schema
from purchasing_power.settings import Settings
from purchasing_power.storage import RAW_FILE, RAW_MANIFEST, Workspace, read_parquet

log = logging.getLogger(__name__)


def extract_day(settings: Settings, day: date) -> dict[str, Any]:
    """Extract the run's day and any history not yet extracted or changed in the source.
    Returns a JSON-able report."""
    import pandas as pd

    ws = Workspace.for_settings(settings)
    store = ws.per_source
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
    existing = set(store.list_days("raw", RAW_FILE))
    manifest = read_manifest(store, RAW_MANIFEST)
    entries: dict[str, Any] = dict(manifest.get("days", {}))

    # undated rows: keep the day each was handed to; a row seen for the first time goes to this day
    keys: list[str] = index["undated_keys"]
    known = manifest.get("undated", {})
    assigned = {k: known.get(k, day.isoformat()) for k in keys}
    handed: dict[str, list[str]] = {}
    for k in keys:
        handed.setdefault(assigned[k], []).append(k)

    span = sorted({first_day + timedelta(days=i) for i in range((day - first_day).days + 1)} | {d for d in existing if d < first_day})
    expected = {d: partition_fingerprint(index["day_hashes"].get(d.isoformat(), ""), handed.get(d.isoformat(), [])) for d in span}
    todo = [d for d in span if d == day or d not in existing or entries.get(d.isoformat(), {}).get("hash") != expected[d]]
    rewritten = [d.isoformat() for d in todo if d != day and d in existing]
    stale = [d.isoformat() for d in todo if d.isoformat() in entries]
    if stale:  # first forget what these partitions held: a write cut short is redone next time
        write_manifest(store, RAW_MANIFEST, {"days": {k: v for k, v in entries.items() if k not in stale}, "undated": known})

    rows = read_staged(index, todo[0], day)
    groups = {d.date(): g for d, g in rows.groupby(rows["InvoiceDate"].dt.normalize(), sort=True)}
    undated = read_parquet(index["undated_path"]) if keys else rows.iloc[0:0]
    schema = raw_schema()
    written: list[str] = []
    for d in todo:
        iso = d.isoformat()
        part = groups.get(d, rows.iloc[0:0])
        if iso in handed:
            part = pd.concat([part, undated[[assigned[k] == iso for k in keys]]])
        store.write_parquet(part.reset_index(drop=True), store.path("raw", d, RAW_FILE), schema=schema)
        entries[iso] = {"hash": expected[d], "rows": int(len(part)), "version": index["version"]}
        written.append(iso)
    write_manifest(store, RAW_MANIFEST, {"days": entries, "undated": assigned})  # last: commits the partitions

    report = {
        "day": day.isoformat(),
        "source": source,
        "source_id": settings.source_id,
        "source_version": index["version"],
        "rows_in_source": index["rows"],
        "rows_up_to_day": int(sum(up_to.values())),
        "rows_of_day": int(counts.get(day, 0)),
        "rows_undated": index["undated"],
        "rows_undated_of_day": len(handed.get(day.isoformat(), [])),
        "rows_after_day": int(sum(n for d, n in counts.items() if d > day)),
        "partitions_written": len(written),
        "history_rewritten": rewritten,
        "first_day": first_day.isoformat(),
        "raw_path": store.path("raw", day, RAW_FILE),
    }
    if rewritten:
        log.warning("source %s (version %s) changed the rows of %d earlier day(s), extracted again: %s",
                    source, index["version"], len(rewritten), ", ".join(rewritten))
    if report["rows_of_day"] == 0:
        log.warning("source %s has no rows dated %s (empty day); predictions still cover all customers", source, day)
    log.info("extract %s: %s", day, report)
    return report
