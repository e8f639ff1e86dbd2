"""The extract stage: write one raw partition per invoice day.

A run for day D writes ``raw/ds=D`` (always, so a rerun picks up late corrections of that day)
and every earlier day whose raw partition is missing or no longer holds what the source has for
that day. What each partition holds is recorded in the raw manifest (a fingerprint of its rows
and the source version that wrote it); when the source is replaced, the days whose rows changed
(per-day row counts and content hashes of the staged index) are extracted again and the others
are left alone. That keeps a backfill cheap and makes the history a run sees independent of the
order in which runs happen.

A file set (folder or glob) is staged part by part: a new or changed file is read, the others
are not (``sources.stage_file_set``). A table (``sql://``) is not staged: the run asks it for
its rows per UTC day (one aggregate query), then reads, with the day filter in the query and in
chunks, only day D and the history days whose raw partition is missing or whose row count
differs from what the manifest recorded (late or deleted rows). A history row edited in place
(same count) is not detected: rerun its day to pick it up.

Rows whose InvoiceDate cannot be parsed (in a table: NULL, infinite, or outside 1678..2261)
belong to no day. Each is handed to one day only: the run day of the first extract that finds it
(the manifest records which), so that the clean stage quarantines it exactly once, in
``quarantine/ds=<that day>``. Reruns of that day hand it to the same day again; later days never
get it; it keeps its day across source versions while the same row is in the source.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from purchasing_power.errors import SourceError
from purchasing_power.extract import digest, normalise_raw_dtypes, partition_fingerprint, read_manifest, row_hashes, undated_keys, write_day_partitions, write_manifest
from purchasing_power.schemas import raw_schema
from purchasing_power.settings import Settings
from purchasing_power.sources import SQL_CHUNK_ROWS, column_origin, day_ranges, is_sql_source, open_table, read_staged, read_undated, stage
from purchasing_power.storage import RAW_FILE, RAW_MANIFEST, Storage, Workspace
if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

log = logging.getLogger(__name__)

#: The raw manifest's ``version`` of partitions read from a table.
SQL_VERSION = "sql"
#: extract writes the raw partitions of at most this many days from one read of the staged copy
WINDOW_DAYS = 31


def extract_day(settings: Settings, day: date) -> dict[str, Any]:
    """Extract the run's day and any history not yet extracted or changed in the source, then
    the same for the user-text source when there is one (``report["texts"]``, see
    :mod:`purchasing_power.stages.texts`). Returns a JSON-able report."""
    from purchasing_power.stages.texts import extract_texts_day

    if is_sql_source(settings.resolved_source):
        report = extract_table_day(settings, day)
    else:
        report = extract_file_day(settings, day)
    texts = extract_texts_day(settings, day)
    if texts is not None:
        report["texts"] = texts
    return report


def extract_file_day(settings: Settings, day: date) -> dict[str, Any]:
    """Extract from a file or a file set (staged once per version)."""
    ws = Workspace.for_settings(settings)
    store = ws.per_source
    source = settings.resolved_source
    index = stage(settings, ws)
    counts = {date.fromisoformat(k): v for k, v in index["days"].items()}
    first_day = _first_day(counts, day, source)
    existing = set(store.list_days("raw", RAW_FILE))
    manifest = read_manifest(store, RAW_MANIFEST)
    entries: dict[str, Any] = dict(manifest.get("days", {}))

    keys: list[str] = index["undated_keys"]
    known = manifest.get("undated", {})
    assigned, handed = _hand_out(keys, known, day)

    span = _span(first_day, day, existing)
    ids = _staged_id_type(index)
    expected = {d: partition_fingerprint(index["day_hashes"].get(d.isoformat(), ""), handed.get(d.isoformat(), []), ids) for d in span}
    todo = [d for d in span if d == day or d not in existing or entries.get(d.isoformat(), {}).get("hash") != expected[d]]
    _forget(store, entries, known, todo)

    schema = raw_schema(ids)  # the staged copy's id type: integer or text
    undated = read_undated(index) if keys else None
    for window in _windows(todo):  # a month of the staged rows in memory at a time, not the history
        rows = read_staged(index, window[0], window[-1])
        groups = {d.date(): g for d, g in rows.groupby(rows["InvoiceDate"].dt.normalize(), sort=True)}
        write_day_partitions(store, "raw", RAW_FILE, window, groups, rows.iloc[0:0], rows.iloc[0:0] if undated is None else undated,
                             handed, assigned, keys, expected, index["version"], schema, entries)
        del rows, groups
    write_manifest(store, RAW_MANIFEST, {"days": entries, "undated": assigned})  # last: commits the partitions
    return _report(settings, day, store, counts, index["version"], index["rows"], index["undated"], handed, todo, existing, first_day)


def _windows(days: list[date]) -> list[list[date]]:
    """``days`` (sorted) in runs whose first and last lie under :data:`WINDOW_DAYS` apart."""
    span_days = WINDOW_DAYS
    out: list[list[date]] = []
    for d in days:
        if out and (d - out[-1][0]).days < span_days:
            out[-1].append(d)
        else:
            out.append([d])
    return out


def _staged_id_type(index: dict[str, Any]) -> str:
    """The customer id type of a staged source, from its staged file's Arrow schema."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from purchasing_power.storage import filesystem_for, strip_conn

    path = index["dated_path"] if "dated_path" in index else index["parts"][0]["dated_path"]
    with filesystem_for(path).open(strip_conn(path), "rb") as fh:
        field = pq.read_schema(fh).field("CustomerID")
    return "string" if pa.types.is_string(field.type) or pa.types.is_large_string(field.type) else "int64"


def extract_table_day(settings: Settings, day: date) -> dict[str, Any]:
    """Extract from a table: the same partitions, manifest and report as from a file, reading
    only day D and the history days that are missing or whose row count changed. The rows
    come in InvoiceDate order, ``SQL_CHUNK_ROWS`` at a time; a day is written as soon as the
    next one starts, so memory holds one day plus one chunk. Within a day rows are ordered by
    time and content (a table has no order of its own), so a rerun writes the same bytes."""
    import pandas as pd

    ws = Workspace.for_settings(settings)
    store = ws.per_source
    source = settings.resolved_source
    chunk_rows = SQL_CHUNK_ROWS
    with open_table(source, lambda columns: column_origin(columns, settings.column_map, source=source)) as table:
        counts, n_undated = table.day_counts()
        if not counts and not n_undated:
            raise SourceError(f"source {source} has no rows")
        first_day = _first_day(counts, day, source)
        existing = set(store.list_days("raw", RAW_FILE))
        manifest = read_manifest(store, RAW_MANIFEST)
        entries: dict[str, Any] = dict(manifest.get("days", {}))
        known = manifest.get("undated", {})
        ids = table.customer_ids
        undated = normalise_raw_dtypes(pd.concat(list(table.read_undated(chunk_rows)), ignore_index=True), ids) if n_undated else None
        keys = undated_keys(undated) if undated is not None else []
        assigned, handed = _hand_out(keys, known, day)

        def current(d: date) -> bool:
            e = entries.get(d.isoformat())
            return (
                d in existing and e is not None and e.get("dated") == counts.get(d, 0)
                and e.get("hash") == partition_fingerprint(e.get("day_hash", ""), handed.get(d.isoformat(), []))
            )

        todo = [d for d in _span(first_day, day, existing) if d == day or not current(d)]
        _forget(store, entries, known, todo)
        ranges = day_ranges((d for d in todo if counts.get(d)), counts)
        log.info("reading %s: days %s", source, ", ".join(f"{a}..{b}" if a != b else str(a) for a, b in ranges) or "none")
        schema = raw_schema(ids)
        empty = schema.empty_table().to_pandas()

        written: set[date] = set()

        def write(d: date, pieces: list[pd.DataFrame]) -> None:
            iso = d.isoformat()
            dated, hashes = _in_time_and_content_order(pd.concat(pieces, ignore_index=True) if pieces else empty)
            day_hash = digest(hashes) if len(dated) else ""
            part = dated
            if iso in handed:
                part = pd.concat([dated, undated[[assigned[k] == iso for k in keys]]], ignore_index=True)
            store.write_parquet(part.reset_index(drop=True), store.path("raw", d, RAW_FILE), schema=schema)
            entries[iso] = {"hash": partition_fingerprint(day_hash, handed.get(iso, [])), "rows": int(len(part)),
                            "version": SQL_VERSION, "day_hash": day_hash, "dated": int(len(dated))}
            written.add(d)

        pending: dict[date, list[pd.DataFrame]] = {}
        stats = {"rows_read": 0, "chunks": 0, "largest_chunk": 0}
        for chunk in table.read_days(ranges, chunk_rows):
            stats["rows_read"] += len(chunk)
            stats["chunks"] += 1
            stats["largest_chunk"] = max(stats["largest_chunk"], len(chunk))
            chunk = normalise_raw_dtypes(chunk, ids)
            days = chunk["InvoiceDate"].dt.normalize()
            for ts, rows in chunk.groupby(days, sort=True):
                pending.setdefault(ts.date(), []).append(rows)
            last = days.iloc[-1].date()
            for d in sorted(d for d in pending if d < last):  # rows come in time order: earlier days are complete
                write(d, pending.pop(d))
        for d in todo:
            if d not in written:
                write(d, pending.pop(d, []))
    write_manifest(store, RAW_MANIFEST, {"days": entries, "undated": assigned})  # last: commits the partitions
    report = _report(settings, day, store, counts, SQL_VERSION, sum(counts.values()) + n_undated, n_undated, handed, todo, existing, first_day)
    report["table_read"] = {"days": [[a.isoformat(), b.isoformat()] for a, b in ranges], "chunk_rows": chunk_rows, **stats}
    return report


def _in_time_and_content_order(frame: pd.DataFrame) -> tuple[pd.DataFrame, Any]:
    """A day's rows ordered by InvoiceDate, then by content; and their row hashes in that order."""
    import numpy as np

    hashes = row_hashes(frame)
    order = np.lexsort((hashes, frame["InvoiceDate"].to_numpy().view("i8")))
    return frame.iloc[order].reset_index(drop=True), hashes[order]


def _first_day(counts: dict[date, int], day: date, source: str) -> date:
    """The source's first day with rows; an error when it has none on or before ``day``."""
    up_to = [d for d, n in counts.items() if d <= day and n]
    if not up_to:
        first = min(counts) if counts else None
        raise SourceError(
            f"source {source} has no dated rows on or before {day} (its first InvoiceDate is {first}): "
            "nothing to predict from; run a later day"
        )
    return min(up_to)


def _span(first_day: date, day: date, existing: set[date]) -> list[date]:
    """The days a run is responsible for: the source's first day to ``day``, plus raw
    partitions before the first day (emptied when the source no longer has their rows)."""
    return sorted({first_day + timedelta(days=i) for i in range((day - first_day).days + 1)} | {d for d in existing if d < first_day})


def _hand_out(keys: list[str], known: dict[str, str], day: date) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Undated rows keep the day each was handed to; a row seen for the first time goes to
    ``day``. Returns key -> day and day -> keys."""
    assigned = {k: known.get(k, day.isoformat()) for k in keys}
    handed: dict[str, list[str]] = {}
    for k in keys:
        handed.setdefault(assigned[k], []).append(k)
    return assigned, handed


def _forget(store: Storage, entries: dict[str, Any], known: dict[str, str], todo: list[date]) -> None:
    """Before rewriting partitions, drop their manifest entries: a write cut short is redone
    next time."""
    stale = [d.isoformat() for d in todo if d.isoformat() in entries]
    if stale:
        write_manifest(store, RAW_MANIFEST, {"days": {k: v for k, v in entries.items() if k not in stale}, "undated": known})


def _report(settings: Settings, day: date, store: Storage, counts: dict[date, int], version: str, rows: int, undated: int,
            handed: dict[str, list[str]], todo: list[date], existing: set[date], first_day: date) -> dict[str, Any]:
    source = settings.resolved_source
    rewritten = [d.isoformat() for d in todo if d != day and d in existing]
    report = {
        "day": day.isoformat(),
        "source": source,
        "source_id": settings.source_id,
        "source_version": version,
        "rows_in_source": int(rows),
        "rows_up_to_day": int(sum(n for d, n in counts.items() if d <= day)),
        "rows_of_day": int(counts.get(day, 0)),
        "rows_undated": int(undated),
        "rows_undated_of_day": len(handed.get(day.isoformat(), [])),
        "rows_after_day": int(sum(n for d, n in counts.items() if d > day)),
        "partitions_written": len(todo),
        "history_rewritten": rewritten,
        "first_day": first_day.isoformat(),
        "raw_path": store.path("raw", day, RAW_FILE),
    }
    if rewritten:
        log.warning("source %s (version %s) changed the rows of %d earlier day(s), extracted again: %s",
                    source, version, len(rewritten), ", ".join(rewritten))
    if report["rows_of_day"] == 0:
        log.warning("source %s has no rows dated %s (empty day); predictions still cover all customers", source, day)
    log.info("extract %s: %s", day, report)
    return report
