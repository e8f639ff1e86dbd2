"""Reading a transaction source: map it onto the canonical schema, normalise its types, and
stage it once per version so that a day's extract reads only its own rows.

The source file is read and normalised once per *version* (its size and modification time, or
ETag on object storage) into ``staged/`` (``staging.stage_source``, chunk by chunk); an extract of an unchanged source
then reads only the days it writes. A corrected or replaced source file is a new version; the
staged index's per-day row counts and content hashes tell which days' rows it changed. File
sets (staged part by part with the helpers here) and tables are read by
:mod:`purchasing_power.sources`.
``staged/`` also holds the manifests that record what each raw and clean partition was made
from (:data:`RAW_MANIFEST`, :data:`CLEAN_MANIFEST`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

from purchasing_power.errors import SourceError
from purchasing_power.schemas import CANONICAL_COLUMNS, MAX_EXACT_FLOAT_INT, ONLINE_RETAIL_II_MAP
from purchasing_power.storage import CLEAN_MANIFEST, RAW_MANIFEST, STAGED_DATED, STAGED_INDEX, STAGED_UNDATED, Storage, filesystem_for, strip_conn

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

log = logging.getLogger(__name__)


def read_source(source: str, column_map: dict[str, str] | None = None) -> pd.DataFrame:
    """Read a Parquet or CSV transaction file (path or fsspec URI) and return it with the
    canonical column names (file sets and tables: ``sources.read_all``).

    The file's bytes are fetched first: an I/O error (network, timeout, an object store's 5xx)
    propagates as it is, so the task is retried. Only what is wrong with the bytes themselves
    (not Parquet, not CSV, a truncated or ragged CSV row, a missing or clashing column) is a
    :class:`SourceError`, which fails the task at once."""
    fs = _source_fs(source)
    if not fs.exists(source):
        raise FileNotFoundError(f"source file not found: {source}")
    with fs.open(source, "rb") as fh:
        data = fh.read()
    return map_columns(parse_source(data, source), column_map or {}, source=source)


def _source_fs(source: str) -> Any:
    """The source's file system, with what it cached about the file dropped: a long-lived
    process must see the file as it is now (a new version), not a listing from earlier."""
    fs = filesystem_for(source)
    fs.invalidate_cache(source)
    return fs


def parse_source(data: bytes, source: str) -> pd.DataFrame:
    """The table in ``data``, the bytes of ``source`` (CSV by its name, else Parquet); CSV
    values stay text. Any failure is a :class:`SourceError` naming the file."""
    import io

    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    lower = source.lower()
    try:
        if lower.endswith((".csv", ".csv.gz", ".txt")):
            if lower.endswith(".gz"):
                import gzip

                data = gzip.decompress(data)
            check_csv_rows(data, source)
            return pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=True, on_bad_lines="error")
        return pq.read_table(pa.BufferReader(data)).to_pandas()
    except (SourceError, MemoryError):
        raise
    except Exception as exc:
        raise SourceError(f"cannot read source {source}: {type(exc).__name__}: {exc}") from exc


def check_csv_rows(data: bytes, source: str) -> None:
    """Every CSV record has as many fields as the header: a row with fewer (a file cut off
    mid-line, e.g. half uploaded) or more is a :class:`SourceError` naming the file and the line
    (records counted from the header as line 1; a quoted value may span lines). pandas alone
    would fill a short row with missing values and load it silently. Blank lines are skipped,
    as pandas does."""
    import io

    import pyarrow.csv as pacsv

    bad: list[Any] = []

    def on_invalid(row: Any) -> str:
        if not row.text.strip():
            return "skip"
        bad.append(row)
        return "error"

    try:
        pacsv.read_csv(
            io.BytesIO(data),
            read_options=pacsv.ReadOptions(use_threads=False),  # rows keep their numbers
            parse_options=pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=on_invalid),
            convert_options=pacsv.ConvertOptions(include_columns=[]),
        )
    except Exception:
        if not bad:  # not a row-shape problem (empty file, not text): pandas reports it
            return
    if bad:
        row = bad[0]
        text = row.text if len(row.text) <= 200 else row.text[:200] + "..."
        raise SourceError(
            f"source {source}: line {row.number} has {row.actual_columns} of {row.expected_columns} fields; "
            f"the file is truncated or malformed: {text!r}"
        )


def map_columns(df: pd.DataFrame, column_map: dict[str, str], *, source: str = "<frame>") -> pd.DataFrame:
    """Rename source columns onto the canonical schema.

    An explicit ``column_map`` (source name → canonical name) wins. Without one, the column
    names of UCI "Online Retail II" are recognised (for canonical columns the file lacks).
    Extra columns are dropped. A missing canonical column, a map onto a column the file already
    has, or two columns mapped onto one are errors that list what the file has."""
    mapping = dict(column_map)
    if not mapping and not set(CANONICAL_COLUMNS) <= set(df.columns):
        mapping = {k: v for k, v in ONLINE_RETAIL_II_MAP.items() if k in df.columns and v not in df.columns}
    return rename_onto(df, mapping, CANONICAL_COLUMNS, source=source, noun="source", map_name="column_map",
                       example='{"Invoice": "InvoiceNo", "Price": "UnitPrice", "Customer ID": "CustomerID"}')


def rename_onto(df: pd.DataFrame, mapping: dict[str, str], columns: tuple[str, ...], *, source: str, noun: str,
                map_name: str, example: str) -> pd.DataFrame:
    """``df`` with its columns renamed by ``mapping`` onto ``columns`` (only those kept, in that
    order). A map naming a column ``source`` lacks, a map onto a column it already has, two
    columns mapped onto one, a repeated column or a missing one is a :class:`SourceError` that
    lists what it has."""
    unknown = sorted(set(mapping) - set(df.columns))
    if unknown:
        raise SourceError(
            f"{map_name} names columns {unknown} that {source} does not have; it has {list(df.columns)}"
        )
    renamed_away = {k for k, v in mapping.items() if k != v}
    for src, target in sorted(mapping.items()):
        if src != target and target in df.columns and target not in renamed_away:
            raise SourceError(
                f"{map_name} maps {src!r} onto {target!r}, which {source} already has; "
                f"drop one from the file or the map (it has {list(df.columns)})"
            )
    targets: dict[str, list[str]] = {}
    for src, target in mapping.items():
        targets.setdefault(target, []).append(src)
    for target, sources in sorted(targets.items()):
        if len(sources) > 1:
            raise SourceError(f"{map_name} maps {sorted(sources)} onto one column {target!r} of {source}; map one of them")
    df = df.rename(columns=mapping)
    duplicated = sorted({c for c in df.columns if c in columns and list(df.columns).count(c) > 1})
    if duplicated:
        raise SourceError(f"{noun} {source} has column(s) {duplicated} more than once; it has {list(df.columns)}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise SourceError(
            f"{noun} {source} is missing canonical column(s) {missing}; it has {list(df.columns)}. "
            f"Pass {map_name}, e.g. {example}"
        )
    return df.loc[:, list(columns)].copy()


def parse_invoice_dates(values: pd.Series) -> pd.Series:
    """Parse InvoiceDate (timestamps or strings such as '2011-08-31 10:15:00' or '12/1/2010 8:26')
    into naive datetime64[ns]; unparseable values become NaT (quarantined later, never dropped)."""
    import pandas as pd

    if pd.api.types.is_datetime64_any_dtype(values):
        out = values
        if getattr(out.dt, "tz", None) is not None:
            out = out.dt.tz_convert(None)
        return out.astype("datetime64[ns]")
    as_str = values.astype("string")
    out = pd.to_datetime(as_str, errors="coerce", format="ISO8601")
    retry = out.isna() & as_str.notna()
    if retry.any():
        out.loc[retry] = pd.to_datetime(as_str[retry], errors="coerce", format="mixed", dayfirst=False)
    if getattr(out.dt, "tz", None) is not None:
        out = out.dt.tz_convert(None)
    return out.astype("datetime64[ns]")


def normalise_raw_dtypes(df: pd.DataFrame, customer_ids: str | None = None) -> pd.DataFrame:
    """Give raw partitions one stable schema: text columns as strings, numbers as float64
    (unparseable, non-finite and out-of-range numbers keep their original text in ``*_raw`` and
    are quarantined by clean with it), customer ids as the source's id type ``customer_ids``
    (``schemas.CUSTOMER_ID_TYPES``): integer ids as float64 like the other numbers, text ids as
    their text, trimmed (:func:`text_customer_ids`). ``None`` decides the type from ``df``'s ids
    (:func:`source_customer_id_type`), which is right when ``df`` is the whole source; a reader
    of part of a source (a day, a chunk) passes the type decided for the source, so that no part
    flips it."""
    import numpy as np
    import pandas as pd

    from purchasing_power.schemas import CUSTOMER_ID_TYPES

    kind = source_customer_id_type(df["CustomerID"]) if customer_ids is None else customer_ids
    if kind not in CUSTOMER_ID_TYPES:
        raise ValueError(f"customer id type must be one of {CUSTOMER_ID_TYPES}, got {kind!r}")
    out = pd.DataFrame(index=df.index)
    for col in ("InvoiceNo", "StockCode", "Description", "Country"):
        s = df[col]
        if pd.api.types.is_float_dtype(s):  # e.g. StockCode read as numbers: drop the ".0"
            s = s.map(lambda v: None if pd.isna(v) else (str(int(v)) if float(v).is_integer() else str(v)))
        out[col] = s.astype("string").astype(object).where(s.notna(), None)
    for col in ("Quantity", "UnitPrice", "CustomerID"):
        s = df[col]
        if col == "CustomerID" and kind == "string":
            out[col], out[f"{col}_raw"] = text_customer_ids(s)
            continue
        out[col] = pd.to_numeric(s, errors="coerce").astype("float64")
        # keep the original text of what a float64 cannot carry faithfully: unparseable,
        # non-finite, or too large to hold its integer exactly (an id above 2**53)
        exact = np.isfinite(out[col]) & (out[col].abs() < MAX_EXACT_FLOAT_INT)
        bad = ~exact & s.notna() & (s.astype("string").str.strip() != "")
        out[f"{col}_raw"] = s.astype("string").astype(object).where(bad, None)
    out["InvoiceDate"] = parse_invoice_dates(df["InvoiceDate"])
    out["InvoiceDate_raw"] = df["InvoiceDate"].astype("string").astype(object).where(
        out["InvoiceDate"].isna() & df["InvoiceDate"].notna(), None
    )
    return out


#: A number as text: decimal, optionally signed, with a fraction or an exponent, no leading zero
#: before another digit ("007" is a spelling, not a number), or inf / infinity / nan.
_NUMBER_TEXT = r"[+-]?(?:(?:0|[1-9][0-9]*)(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[+-]?(?:inf|infinity|nan)"


def source_customer_id_type(values: pd.Series) -> str:
    """The customer id type of a source (``schemas.CUSTOMER_ID_TYPES``) from all its ids.

    ``int64`` when every non-empty id is a number: a numeric column (integers, or floats as
    pandas makes of an integer column with gaps), numbers in an object column, or text spelling
    a decimal number (a CSV file, a text column of numbers: "17850", "17850.0"; "12.5" or "inf"
    count too, and clean quarantines them as ids). ``string`` otherwise: hashes, UUIDs,
    "C-00123", zero-padded "00123"; every id is then kept as the source spells it, so one text
    id among numbers makes all ids text rather than losing that customer. A source without any
    id is ``int64``."""
    import numbers

    import pandas as pd

    if pd.api.types.is_numeric_dtype(values.dtype):
        return "int64"
    uniques = pd.Series(pd.unique(values.dropna().to_numpy(dtype=object)), dtype=object)
    is_text = uniques.map(lambda v: isinstance(v, str)).astype(bool)
    is_number = uniques.map(lambda v: isinstance(v, numbers.Number) and not isinstance(v, bool)).astype(bool)
    if not (is_text | is_number).all():
        return "string"
    text = uniques[is_text].astype(str).str.strip()
    text = text[text != ""]
    return "int64" if text.str.fullmatch(_NUMBER_TEXT, case=False).all() else "string"


def text_customer_ids(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Text customer ids as the source spells them, trimmed (``None`` for an empty one), and the
    original text of the values that are no id (a non-finite float: quarantined by clean).
    Numbers among text ids are written as integers where whole (17850.0 -> "17850"), bytes are
    decoded as UTF-8, other objects (a driver's UUIDs) are their text."""
    import numpy as np
    import pandas as pd

    codes, uniques = pd.factorize(values.to_numpy(dtype=object))  # missing values: code -1
    spelled = [_id_text(v) for v in uniques] + [(None, None)]  # index -1: missing
    ids = np.array([t for t, _ in spelled], dtype=object)[codes]
    raw = np.array([r for _, r in spelled], dtype=object)[codes]
    return pd.Series(ids, index=values.index, dtype=object), pd.Series(raw, index=values.index, dtype=object)


def _id_text(value: Any) -> tuple[str | None, str | None]:
    """(the id's text or None, the original text when the value is no id) of one source value."""
    import decimal
    import math
    import numbers

    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, str) or isinstance(value, bool) or not isinstance(value, numbers.Number):
        text = str(value).strip()
        return (text or None), None
    if isinstance(value, numbers.Integral):
        return str(int(value)), None
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            return None, str(value)
        return (str(int(value)) if value == value.to_integral_value() else str(value)), None
    number = float(value)  # type: ignore[arg-type]
    if not math.isfinite(number):
        return None, str(number)
    return (str(int(number)) if number.is_integer() else repr(number)), None


STAGED_ROW_GROUP = 16_384
#: Layout of the staged index; an index of another layout is staged again.
STAGED_FORMAT = 2


def source_version(source: str) -> str:
    """Fingerprint of the source file as it is now (size, modification time / ETag, ...):
    a changed or replaced file gets a new version, so its staged copy is rebuilt."""
    try:
        return _source_fs(source).ukey(source)[:16]
    except FileNotFoundError:
        raise FileNotFoundError(f"source file not found: {source}") from None


def row_hashes(frame: pd.DataFrame) -> Any:
    """A 64-bit hash of each row's values (numpy uint64 array), stable across processes."""
    import pandas as pd

    return pd.util.hash_pandas_object(frame, index=False).to_numpy()


def digest(values: Any) -> str:
    """Short hex digest of an array's bytes."""
    import hashlib

    return hashlib.blake2b(values.tobytes(), digest_size=8).hexdigest()


def partition_fingerprint(day_hash: str, undated_keys: list[str], customer_ids: str = "int64") -> str:
    """Fingerprint of a raw partition: its day's dated rows (their hash in the staged index)
    plus the undated rows handed to it, in staged order, and (for text ids) the id type, so
    that a source whose ids turn to text rewrites every partition, empty days included."""
    import hashlib

    parts = [day_hash, *undated_keys] + (["ids=string"] if customer_ids == "string" else [])
    return hashlib.blake2b("\n".join(parts).encode(), digest_size=8).hexdigest()


def undated_keys(frame: pd.DataFrame) -> list[str]:
    """A key per undated row: its content hash plus how many equal rows came before it, so that
    a row keeps its key (and the day it was handed to) across source versions."""
    return hash_keys(row_hashes(frame))


def hash_keys(hashes: Any) -> list[str]:
    """:func:`undated_keys` of rows with these row hashes, in order."""
    seen: dict[str, int] = {}
    keys = []
    for h in hashes:
        k = f"{int(h):016x}"
        seen[k] = seen.get(k, -1) + 1
        keys.append(f"{k}-{seen[k]}")
    return keys


def read_manifest(store: Storage, name: str, dataset: str = "staged") -> dict[str, Any]:
    """A manifest in ``staged/`` (or ``dataset``; ``{}`` before the first write)."""
    path = store.path(dataset, None, name)
    return store.read_json(path) if store.exists(path) else {}


def write_manifest(store: Storage, name: str, manifest: dict[str, Any], dataset: str = "staged") -> None:
    store.write_json(manifest, store.path(dataset, None, name))


@dataclass
class PendingClean:
    """The raw partitions a clean run must (re)clean, and what the clean manifest recorded."""

    todo: list[date]  # the run's day and every earlier raw day without an up-to-date clean partition
    done: set[date]  # days with a clean partition
    raw_entries: dict[str, Any]  # the raw manifest's days
    made_from: dict[str, Any]  # clean day -> raw fingerprint it was made from (the clean stage updates it)
    old: dict[str, Any]  # made_from as it was

    def changed(self) -> list[date]:
        """Days whose clean partition was made again from other raw rows than before."""
        return sorted(d for d in self.todo if self.old.get(d.isoformat()) is not None
                      and self.old[d.isoformat()] != self.made_from.get(d.isoformat()))


def pending_clean(store: Storage, day: date, *, raw: tuple[str, str], clean: tuple[str, str], raw_manifest: str,
                  clean_manifest: str, manifests: str = "staged") -> PendingClean:
    """Which raw partitions (dataset, file name ``raw``) a clean of ``day`` must write into
    ``clean``: ``day`` always, and every earlier raw day whose clean partition is missing or was
    made from other raw rows than the raw manifest records now. The stale days are first dropped
    from the clean manifest, so a clean cut short redoes them next time."""
    raw_days = store.list_days(*raw)
    if day not in raw_days:
        raise FileNotFoundError(f"no {raw[0]} partition for {day} at {store.path(raw[0], day, raw[1])}: run extract first")
    done = set(store.list_days(*clean))
    raw_entries: dict[str, Any] = read_manifest(store, raw_manifest, manifests).get("days", {})
    made_from: dict[str, Any] = dict(read_manifest(store, clean_manifest, manifests).get("days", {}))

    def current(d: date) -> bool:
        raw_hash = raw_entries.get(d.isoformat(), {}).get("hash")
        return d in done and raw_hash is not None and made_from.get(d.isoformat()) == raw_hash

    todo = [d for d in raw_days if d <= day and (d == day or not current(d))]
    stale = {d.isoformat() for d in todo} & set(made_from)
    if stale:
        write_manifest(store, clean_manifest, {"days": {k: v for k, v in made_from.items() if k not in stale}}, manifests)
    return PendingClean(todo=todo, done=done, raw_entries=raw_entries, made_from=made_from, old=dict(made_from))


def staged_index(store: Storage, version: str) -> dict[str, Any] | None:
    """The committed index of a staged version, ``None`` when there is none (or of another layout)."""
    path = store.path("staged", None, STAGED_INDEX.format(version=version))
    if store.exists(path):
        index = store.read_json(path)
        if index.get("format") == STAGED_FORMAT:
            return index
    return None


def remove_versions_but(store: Storage, keep: set[str]) -> None:
    """Remove the staged files of every version not in ``keep`` (earlier versions, dropped parts)."""
    suffix = STAGED_INDEX.format(version="")
    for old in store.fs.glob(store.path("staged", None, STAGED_INDEX.format(version="*"))):
        if old.rsplit("/", 1)[-1][: -len(suffix)] not in keep:
            prefix = old[: -len(suffix)]
            for name in (STAGED_DATED, STAGED_UNDATED, STAGED_INDEX):
                path = prefix + name.format(version="")
                store.fs.rm(path) if store.fs.exists(path) else None


def read_staged(index: dict[str, Any], first: date, last: date) -> pd.DataFrame:
    """Staged rows with first <= invoice day <= last (only the row groups of those days are
    read). A file set's index: ``sources.read_staged``."""
    import pandas as pd
    import pyarrow.parquet as pq

    lo, hi = pd.Timestamp(first), pd.Timestamp(last) + pd.Timedelta(days=1)
    path = index["dated_path"]
    filters = [("InvoiceDate", ">=", lo), ("InvoiceDate", "<", hi)]
    if "://" not in path:
        return pq.read_table(path, filters=filters).to_pandas()
    with filesystem_for(path).open(strip_conn(path), "rb") as fh:
        return pq.read_table(fh, filters=filters).to_pandas()


def write_day_partitions(store: Storage, dataset: str, name: str, days: list[date], groups: dict[date, pd.DataFrame],
                         empty: pd.DataFrame, undated: pd.DataFrame, handed: dict[str, list[str]], assigned: dict[str, str],
                         keys: list[str], expected: dict[date, str], version: str, schema: Any,
                         entries: dict[str, Any]) -> None:
    """Write each of ``days``' raw partition (``dataset``/ds=D/``name``): the day's dated rows
    (``groups``) plus the undated rows ``assigned`` to it (``undated`` in ``keys`` order), and
    record its fingerprint, rows and source ``version`` in the manifest's ``entries``."""
    import pandas as pd

    for d in days:
        iso = d.isoformat()
        part = groups.get(d, empty)
        if iso in handed:
            part = pd.concat([part, undated[[assigned[k] == iso for k in keys]]])
        store.write_parquet(part.reset_index(drop=True), store.path(dataset, d, name), schema=schema)
        entries[iso] = {"hash": expected[d], "rows": int(len(part)), "version": version}
