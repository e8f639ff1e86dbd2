"""The user-text parts of the extract and clean stages (no task of their own: ``extract`` and
``clean`` call them after the transactions, so the Dag's shape is the same with or without a
texts source).

:func:`extract_texts_day` writes ``texts_raw/ds=D`` under the source's namespace (always, so a
rerun picks up late corrections) and every earlier text day whose raw partition is missing or
no longer holds what the texts source has for that day, as the transactions' extract does: the
texts source is read once per version (size and modification time, or ETag; a file set: the
versions of its files; a table: every run) into ``texts_staged/``, with per-day row counts and
content hashes that tell which days a new version changed. A text without a parseable date is
handed, once, to the run day of the first extract that sees it (quarantined there by clean).

:func:`clean_texts_day` cleans ``texts_raw/ds=D`` and every earlier raw text day whose clean
partition is missing or stale (``usertext.clean_texts_frame``) into ``texts_clean/ds=D``; rejected
texts go to ``quarantine/ds=D/texts_quarantine.parquet`` with a reason (the transactions'
``quarantine.parquet`` is left as it is). When clean text history changes, the features, models
and evaluations from the first changed day on are dropped, as for transactions.
"""

from __future__ import annotations

import logging
from datetime import date
from typing import Any, Callable

from purchasing_power.extract import (
    digest,
    partition_fingerprint,
    pending_clean,
    read_manifest,
    row_hashes,
    undated_keys,
    write_day_partitions,
    write_manifest,
)
from purchasing_power.schemas import TEXT_CLEAN_COLUMNS, text_clean_schema, text_quarantine_schema, text_raw_schema
from purchasing_power.settings import Settings
from purchasing_power.storage import (
    TEXTS_CLEAN_FILE,
    TEXTS_CLEAN_MANIFEST,
    TEXTS_QUARANTINE_FILE,
    TEXTS_RAW_FILE,
    TEXTS_RAW_MANIFEST,
    TEXTS_STAGED,
    TEXTS_STAGED_INDEX,
    Storage,
    Workspace,
)
from purchasing_power.usertext import clean_texts_frame, normalise_text_dtypes, texts_source, user_text_on

log = logging.getLogger(__name__)

#: Where the texts source's index and manifests live (as ``staged/`` holds the transactions').
TEXTS_MANIFESTS = "texts_staged"
#: Layout of the staged texts index; an index of another layout is staged again.
TEXTS_STAGED_FORMAT = 1
_PARTITION = "__partition_day"


def read_texts(source: str, column_map: dict[str, str]) -> Any:
    """Every row of the texts source (a file, a file set's files in path order, or a table),
    canonical names, normalised dtypes."""
    import pandas as pd

    from purchasing_power.sources import is_file_set, is_sql_source, list_parts
    from purchasing_power.usertext import read_texts_file, read_texts_table

    if is_sql_source(source):
        frame = read_texts_table(source, column_map)
    elif is_file_set(source):
        frames = [read_texts_file(path, column_map) for path, _ in list_parts(source)]
        frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    else:
        frame = read_texts_file(source, column_map)
    return normalise_text_dtypes(frame)


def _version(source: str) -> str | None:
    """The texts source's version (``None`` for a table: read every run)."""
    from purchasing_power.extract import source_version
    from purchasing_power.sources import file_set_version, is_file_set, is_sql_source, list_parts

    if is_sql_source(source):
        return None
    return file_set_version(list_parts(source)) if is_file_set(source) else source_version(source)


def stage_texts(settings: Settings, source: str, store: Storage) -> tuple[dict[str, Any], Any]:
    """(index, rows or None): the texts source's index (rows and content hash per day, a key per
    undated row, the customer id type) and, when it was just read, its rows (in day order, the
    source's order within a day, undated rows last). A file or file set is staged once per
    version in ``texts_staged/``; a table is read again."""
    import pandas as pd

    version = _version(source)
    if version is not None:
        index = read_manifest(store, TEXTS_STAGED_INDEX.format(version=version), TEXTS_MANIFESTS)
        if index.get("format") == TEXTS_STAGED_FORMAT:
            return index, None
    rows = read_texts(source, settings.texts_column_map)
    ids = "int64" if pd.api.types.is_numeric_dtype(rows["CustomerID"].dtype) else "string"
    undated = rows["TextDate"].isna()
    dated = rows[~undated]
    dated = dated.iloc[dated["TextDate"].dt.normalize().argsort(kind="stable")]
    rows = pd.concat([dated, rows[undated]], ignore_index=True)
    day_of = dated["TextDate"].dt.strftime("%Y-%m-%d").to_numpy()
    hashes = row_hashes(dated)
    days: dict[str, int] = {}
    day_hashes: dict[str, str] = {}
    for d in sorted(set(day_of)):
        mask = day_of == d
        days[d] = int(mask.sum())
        day_hashes[d] = digest(hashes[mask])
    index = {"format": TEXTS_STAGED_FORMAT, "source": source, "version": version or "sql", "customer_ids": ids, "rows": int(len(rows)),
             "days": days, "day_hashes": day_hashes, "undated_keys": undated_keys(rows[rows["TextDate"].isna()])}
    if version is not None:
        path = store.path(TEXTS_MANIFESTS, None, TEXTS_STAGED.format(version=version))
        store.write_parquet(rows, path, schema=text_raw_schema(ids))
        index["path"] = path
        for old in store.fs.glob(store.path("texts_staged", None, TEXTS_STAGED_INDEX.format(version="*"))):
            prefix = old[: -len(TEXTS_STAGED_INDEX.format(version=""))]
            if prefix.rsplit("/", 1)[-1] == version:  # this version's own (older layout) index: rewritten below
                continue
            for name in (TEXTS_STAGED, TEXTS_STAGED_INDEX):
                stale = prefix + name.format(version="")
                if store.fs.exists(stale):
                    store.fs.rm(stale)
        write_manifest(store, TEXTS_STAGED_INDEX.format(version=version), index, TEXTS_MANIFESTS)  # last: commits the staged copy
        log.info("staged texts %s (version %s): %d rows, %d days", source, version, len(rows), len(days))
    return index, rows


def extract_texts_day(settings: Settings, day: date) -> dict[str, Any] | None:
    """Extract the user texts of ``day`` and any text history not yet extracted or changed;
    ``None`` when there is no texts source (or ``use_user_text`` is off: nothing is read). Returns a
    JSON-able report."""

    source = texts_source(settings) if settings.use_user_text else ""
    if not source:
        return None
    store = Workspace.for_settings(settings).per_source
    index, rows = stage_texts(settings, source, store)
    if rows is None:
        rows = store.read_parquet(store.resolve_inside(index["path"]))
    ids = index["customer_ids"]
    iso_day = day.isoformat()
    existing = set(store.list_days("texts_raw", TEXTS_RAW_FILE))
    manifest = read_manifest(store, TEXTS_RAW_MANIFEST, TEXTS_MANIFESTS)
    entries: dict[str, Any] = dict(manifest.get("days", {}))
    keys: list[str] = index["undated_keys"]
    known = manifest.get("undated", {})
    assigned = {k: known.get(k, iso_day) for k in keys}
    handed: dict[str, list[str]] = {}
    for k in keys:
        handed.setdefault(assigned[k], []).append(k)
    span = sorted({date.fromisoformat(d) for d in [*index["days"], *handed] if d <= iso_day} | {day} | {d for d in existing if d <= day})
    expected = {d: partition_fingerprint(index["day_hashes"].get(d.isoformat(), ""), handed.get(d.isoformat(), []), ids) for d in span}
    todo = [d for d in span if d == day or d not in existing or entries.get(d.isoformat(), {}).get("hash") != expected[d]]
    stale = {d.isoformat() for d in todo} & set(entries)
    if stale:  # forget first: a write cut short is redone next time
        write_manifest(store, TEXTS_RAW_MANIFEST, {"days": {k: v for k, v in entries.items() if k not in stale}, "undated": known}, TEXTS_MANIFESTS)
    undated = rows[rows["TextDate"].isna()]
    dated = rows[rows["TextDate"].notna()]
    groups = {d.date(): g for d, g in dated.groupby(dated["TextDate"].dt.normalize(), sort=False)}
    schema = text_raw_schema(ids)
    write_day_partitions(store, "texts_raw", TEXTS_RAW_FILE, todo, groups, rows.iloc[0:0], undated, handed, assigned, keys,
                         expected, index["version"], schema, entries)
    write_manifest(store, TEXTS_RAW_MANIFEST, {"days": entries, "undated": assigned}, TEXTS_MANIFESTS)  # last: commits the partitions
    report = {
        "source": source,
        "source_version": index["version"],
        "rows_in_source": index["rows"],
        "rows_of_day": int(index["days"].get(iso_day, 0)),
        "rows_undated_of_day": len(handed.get(iso_day, [])),
        "partitions_written": len(todo),
        "history_rewritten": [d.isoformat() for d in todo if d != day and d in existing],
        "raw_path": store.path("texts_raw", day, TEXTS_RAW_FILE),
    }
    log.info("extract texts %s: %s", day, report)
    return report


def clean_texts_day(settings: Settings, day: date, invalidate: Callable[[Storage, date], list[str]] | None = None) -> dict[str, Any] | None:
    """Clean the raw user texts of ``day`` and of every earlier raw text day without an
    up-to-date clean partition; ``None`` when there is no texts source. Counts reconcile: read =
    clean + quarantined. ``invalidate(store, since)`` drops what was derived from changed history."""
    import numpy as np

    if not user_text_on(settings):
        return None
    ws = Workspace.for_settings(settings)
    store = ws.per_source
    plan = pending_clean(store, day, raw=("texts_raw", TEXTS_RAW_FILE), clean=("texts_clean", TEXTS_CLEAN_FILE),
                         raw_manifest=TEXTS_RAW_MANIFEST, clean_manifest=TEXTS_CLEAN_MANIFEST, manifests="texts_staged")
    todo, raw_entries, made_from = plan.todo, plan.raw_entries, plan.made_from
    paths = [store.path("texts_raw", d, TEXTS_RAW_FILE) for d in todo]
    raw = store.read_parquet_many(paths)
    sizes = [raw_entries.get(d.isoformat(), {}).get("rows") for d in todo]
    if None in sizes or sum(sizes) != len(raw):
        sizes = [len(store.read_parquet(p, columns=["Text"])) for p in paths]
    raw[_PARTITION] = np.repeat(np.array(todo, dtype=object), sizes)
    clean, quarantine, truncated = clean_texts_frame(raw)
    if len(raw) != len(clean) + len(quarantine):
        raise AssertionError(f"user-text row counts do not reconcile: {len(raw)} != {len(clean)} + {len(quarantine)}")
    q_days = quarantine.pop(_PARTITION)
    ids = "int64" if str(raw["CustomerID"].dtype).startswith("float") else "string"
    clean_by_day = dict(tuple(clean.groupby(clean["text_ts"].dt.date, sort=False)))
    q_by_day = dict(tuple(quarantine.groupby(q_days, sort=False)))
    day_counts: dict[str, Any] = {}
    for d in todo:
        c = clean_by_day.get(d, clean.iloc[0:0]).reset_index(drop=True).loc[:, list(TEXT_CLEAN_COLUMNS)]
        q = q_by_day.get(d, quarantine.iloc[0:0]).reset_index(drop=True)
        store.write_parquet(c, store.path("texts_clean", d, TEXTS_CLEAN_FILE), schema=text_clean_schema(ids))
        ws.root.write_parquet(q, ws.root.path("quarantine", d, TEXTS_QUARANTINE_FILE), schema=text_quarantine_schema(ids))
        made_from[d.isoformat()] = raw_entries.get(d.isoformat(), {}).get("hash")
        if d == day:
            day_counts = {"read": len(c) + len(q), "clean": len(c), "quarantined": len(q),
                          "quarantine_reasons": {str(k): int(v) for k, v in q["reason"].value_counts().sort_index().items()}}
    write_manifest(store, TEXTS_CLEAN_MANIFEST, {"days": made_from}, TEXTS_MANIFESTS)  # last: commits the partitions
    changed = plan.changed()
    invalidated = invalidate(store, changed[0]) if changed and invalidate is not None else []
    report = {
        "partitions_cleaned": len(todo),
        "history_changed": [d.isoformat() for d in changed],
        "derived_invalidated": invalidated,
        "totals": {"read": len(raw), "clean": len(clean), "quarantined": len(quarantine), "truncated": truncated},
        "run_day": day_counts,
        "quarantine_path": ws.root.path("quarantine", day, TEXTS_QUARANTINE_FILE),
    }
    log.info("clean texts %s: %s", day, report)
    return report
