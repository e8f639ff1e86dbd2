"""The clean stage: split raw partitions into clean rows and quarantined rows with a reason.

A run for day D cleans ``raw/ds=D`` (always) and every earlier raw day whose clean partition is
missing or was made from other raw rows than the raw partition holds now (the clean manifest
records the raw fingerprint each clean partition was made from), so history that extract wrote
again after a source change is cleaned again. A quarantined row lands in the quarantine
partition of the raw partition that held it: an undated row on the day extract handed it to.
"""

from __future__ import annotations

import logging
from datetime import date
from typing import Any

from purchasing_power.clean import clean_frame
from purchasing_power.extract import pending_clean, write_manifest
from purchasing_power.schemas import clean_schema, customer_id_type, quarantine_schema
from purchasing_power.settings import Settings
from purchasing_power.storage import CLEAN_FILE, CLEAN_MANIFEST, QUARANTINE_FILE, RAW_FILE, RAW_MANIFEST, Storage, Workspace

log = logging.getLogger(__name__)

#: Column clean_day adds to the raw rows it cleans: the day of the raw partition each came from.
_PARTITION = "__partition_day"


def clean_day(settings: Settings, day: date) -> dict[str, Any]:
    """Clean the run's day and every earlier raw day without an up-to-date clean partition.
    Returns a report with row counts that reconcile: read = clean + quarantined."""
    ws = Workspace.for_settings(settings)
    store = ws.per_source
    plan = pending_clean(store, day, raw=("raw", RAW_FILE), clean=("clean", CLEAN_FILE), raw_manifest=RAW_MANIFEST,
                         clean_manifest=CLEAN_MANIFEST)
    todo, done, raw_entries, made_from = plan.todo, plan.done, plan.raw_entries, plan.made_from

    # Clean the pending days in batches of whole days (duplicates can only occur within a day,
    # since the invoice timestamp is part of the row), one vectorised pass per batch, then write
    # one partition per day: memory is bounded by the batch, not by the history.
    day_counts: dict[str, Any] = {}
    totals = {"read": 0, "clean": 0, "quarantined": 0}
    for batch in day_batches(todo, raw_entries, CLEAN_BATCH_ROWS):
        counts = _clean_batch(settings, ws, batch, raw_entries, made_from, day)
        for k in totals:
            totals[k] += counts["totals"][k]
        day_counts = counts["run_day"] or day_counts
        write_manifest(store, CLEAN_MANIFEST, {"days": made_from})  # after each batch: commits its partitions
    changed = plan.changed()
    invalidated = invalidate_derived(store, changed[0]) if changed else []
    report = {
        "day": day.isoformat(),
        "partitions_cleaned": len(todo),
        "history_recleaned": [d.isoformat() for d in todo if d != day and d in done],
        "history_changed": [d.isoformat() for d in changed],
        "derived_invalidated": invalidated,
        "totals": totals,
        "run_day": day_counts,
        "quarantine_path": ws.root.path("quarantine", day, QUARANTINE_FILE),
    }
    from purchasing_power.stages.texts import clean_texts_day

    texts = clean_texts_day(settings, day, invalidate_derived)
    if texts is not None:
        report["texts"] = texts
    log.info("clean %s: %s", day, report)
    return report


#: Most raw rows cleaned in one pass (whole days; a larger single day is one batch of its own).
CLEAN_BATCH_ROWS = 2_000_000


def day_batches(days: list[date], entries: dict[str, Any], max_rows: int) -> list[list[date]]:
    """``days`` in order, cut into runs of whole days of at most ``max_rows`` raw rows each (by
    the raw manifest's counts; a day without a count counts as one row)."""
    batches: list[list[date]] = []
    rows = 0
    for d in days:
        n = int(entries.get(d.isoformat(), {}).get("rows") or 1)
        if not batches or rows + n > max_rows:
            batches.append([])
            rows = 0
        batches[-1].append(d)
        rows += n
    return batches


def _clean_batch(settings: Settings, ws: Workspace, days: list[date], raw_entries: dict[str, Any],
                 made_from: dict[str, Any], run_day: date) -> dict[str, Any]:
    """Clean the raw partitions of ``days`` in one pass and write their clean and quarantine
    partitions; records each day's raw fingerprint in ``made_from``. Returns the batch's counts
    (and the run day's, when it is in the batch)."""
    import numpy as np

    store = ws.per_source
    raw = store.read_parquet_many([store.path("raw", d, RAW_FILE) for d in days])
    sizes = _partition_sizes(store, days, raw_entries, len(raw))
    raw[_PARTITION] = np.repeat(np.array(days, dtype=object), sizes)
    clean, quarantine = clean_frame(raw, settings.non_sale_codes)
    if len(raw) != len(clean) + len(quarantine):  # invariant: no row is lost
        raise AssertionError(f"row counts do not reconcile: {len(raw)} != {len(clean)} + {len(quarantine)}")
    q_days = quarantine.pop(_PARTITION)
    clean_by_day = dict(tuple(clean.groupby(clean["invoice_ts"].dt.date, sort=False)))
    q_by_day = dict(tuple(quarantine.groupby(q_days, sort=False)))
    ids = customer_id_type(raw)
    c_schema, q_schema = clean_schema(ids), quarantine_schema(ids)
    day_counts: dict[str, Any] = {}
    for d in days:
        c = clean_by_day.get(d, clean.iloc[0:0]).reset_index(drop=True)
        q = q_by_day.get(d, quarantine.iloc[0:0]).reset_index(drop=True)
        store.write_parquet(c, store.path("clean", d, CLEAN_FILE), schema=c_schema)
        ws.root.write_parquet(q, ws.root.path("quarantine", d, QUARANTINE_FILE), schema=q_schema)
        made_from[d.isoformat()] = raw_entries.get(d.isoformat(), {}).get("hash")
        if d == run_day:
            day_counts = {
                "read": len(c) + len(q),
                "clean": len(c),
                "quarantined": len(q),
                "quarantine_reasons": {str(k): int(v) for k, v in q["reason"].value_counts().sort_index().items()},
            }
    return {"totals": {"read": len(raw), "clean": len(clean), "quarantined": len(quarantine)}, "run_day": day_counts}


def _partition_sizes(store: Storage, days: list[date], entries: dict[str, Any], total: int) -> list[int]:
    """Rows of each day's raw partition, in ``days`` order: from the raw manifest, or counted
    from the files when it does not account for all ``total`` rows read."""
    sizes = [entries.get(d.isoformat(), {}).get("rows") for d in days]
    if None in sizes or sum(sizes) != total:
        sizes = [len(store.read_parquet(store.path("raw", d, RAW_FILE), columns=["InvoiceNo"])) for d in days]
    return sizes


#: What is computed from the clean history, per day (features) or per anchor (models, evaluations).
DERIVED = ("features", "models", "evaluation")


def invalidate_derived(store: Storage, since: date) -> list[str]:
    """Remove the stored features, models and evaluations of days >= ``since``: they were
    computed from clean history that has changed (a replaced source), so the next run of an
    affected day computes them again instead of reusing stale ones. Returns the removed folders."""
    removed = []
    for dataset in DERIVED:
        base = store.path(dataset)
        if not store.fs.exists(base):
            continue
        for entry in sorted(store.fs.ls(base, detail=False)):
            leaf = entry.rstrip("/").rsplit("/", 1)[-1]
            if leaf.startswith("ds=") and leaf[3:] >= since.isoformat():
                store.fs.rm(entry, recursive=True)
                removed.append(f"{dataset}/{leaf}")
    if removed:
        log.warning("clean history changed from %s on: removed %d derived partitions (%s ...)", since, len(removed), removed[0])
    return removed

