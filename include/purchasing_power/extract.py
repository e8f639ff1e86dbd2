"""Reading a transaction source: map it onto the canonical schema, normalise its types, and
stage it once per version so that a day's extract reads only its own rows.

The source file is read and normalised once per *version* (its size and modification time, or
ETag on object storage) into ``staged/`` (``stage_source``); an extract of an unchanged source
then reads only the days it writes. A corrected or replaced source file is a new version.
"""

from __future__ import annotations

import logging
from datetime import date
from typing import TYPE_CHECKING, Any

from purchasing_power.errors import SourceError
from purchasing_power.schemas import CANONICAL_COLUMNS, ONLINE_RETAIL_II_MAP, raw_schema
from purchasing_power.settings import Settings
from purchasing_power.storage import STAGED_DATED, STAGED_INDEX, STAGED_UNDATED, Workspace, filesystem_for, strip_conn

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

log = logging.getLogger(__name__)

def read_source(source: str, column_map: dict[str, str] | None = None) -> pd.DataFrame:
    """Read a Parquet or CSV transaction file (path or fsspec URI) and return it with the
    canonical column names. Raises :class:`SourceError` naming the file and columns on drift."""
    import pandas as pd
    import pyarrow.parquet as pq

    fs = filesystem_for(source)
    if not fs.exists(source):
        raise FileNotFoundError(f"source file not found: {source}")
    lower = source.lower()
    try:
        with fs.open(source, "rb") as fh:
            if lower.endswith((".csv", ".csv.gz", ".txt")):
                df = pd.read_csv(fh, dtype=str, keep_default_na=True, compression="infer" if not lower.endswith(".gz") else "gzip")
            else:
                df = pq.read_table(fh).to_pandas()
    except Exception as exc:
        raise SourceError(f"cannot read source {source}: {type(exc).__name__}: {exc}") from exc
    return map_columns(df, column_map or {}, source=source)


def map_columns(df: pd.DataFrame, column_map: dict[str, str], *, source: str = "<frame>") -> pd.DataFrame:
    """Rename source columns onto the canonical schema.

    An explicit ``column_map`` (source name → canonical name) wins. Without one, the column
    names of UCI "Online Retail II" are recognised. Extra columns are dropped; a missing
    canonical column is an error that lists what the file has."""
    mapping = dict(column_map)
    if not mapping and not set(CANONICAL_COLUMNS) <= set(df.columns):
        mapping = {k: v for k, v in ONLINE_RETAIL_II_MAP.items() if k in df.columns}
    unknown = sorted(set(mapping) - set(df.columns))
    if unknown:
        raise SourceError(
            f"column_map names columns {unknown} that {source} does not have; it has {list(df.columns)}"
        )
    df = df.rename(columns=mapping)
    missing = [c for c in CANONICAL_COLUMNS if c not in df.columns]
    if missing:
        raise SourceError(
            f"source {source} is missing canonical column(s) {missing}; it has {list(df.columns)}. "
            "Pass column_map, e.g. {\"Invoice\": \"InvoiceNo\", \"Price\": \"UnitPrice\", \"Customer ID\": \"CustomerID\"}"
        )
    return df.loc[:, list(CANONICAL_COLUMNS)].copy()


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


def normalise_raw_dtypes(df: pd.DataFrame) -> pd.DataFrame:
    """Give raw partitions one stable schema: text columns as strings, numbers as float64
    (unparseable numbers become NaN and are quarantined by clean with the original text)."""
    import pandas as pd

    out = pd.DataFrame(index=df.index)
    for col in ("InvoiceNo", "StockCode", "Description", "Country"):
        s = df[col]
        if pd.api.types.is_float_dtype(s):  # e.g. StockCode read as numbers: drop the ".0"
            s = s.map(lambda v: None if pd.isna(v) else (str(int(v)) if float(v).is_integer() else str(v)))
        out[col] = s.astype("string").astype(object).where(s.notna(), None)
    for col in ("Quantity", "UnitPrice", "CustomerID"):
        s = df[col]
        out[col] = pd.to_numeric(s, errors="coerce").astype("float64")
        bad = out[col].isna() & s.notna() & (s.astype("string").str.strip() != "")
        out[f"{col}_raw"] = s.astype("string").astype(object).where(bad, None)
    out["InvoiceDate"] = parse_invoice_dates(df["InvoiceDate"])
    out["InvoiceDate_raw"] = df["InvoiceDate"].astype("string").astype(object).where(
        out["InvoiceDate"].isna() & df["InvoiceDate"].notna(), None
    )
    return out


STAGED_ROW_GROUP = 16_384


def source_version(source: str) -> str:
    """Fingerprint of the source file as it is now (size, modification time / ETag, ...):
    a changed or replaced file gets a new version, so its staged copy is rebuilt."""
    try:
        return filesystem_for(source).ukey(source)[:16]
    except FileNotFoundError:
        raise FileNotFoundError(f"source file not found: {source}") from None


def stage_source(settings: Settings, ws: Workspace) -> dict[str, Any]:
    """The source read and normalised once per source version: ``staged/<version>-dated.parquet``
    (rows with an InvoiceDate, in day order, the source's order within a day, small row groups
    so that a day range reads only its own) plus ``<version>-undated.parquet`` and an index
    with the rows per day. Every later extract of an unchanged source reads only the days it
    writes instead of the whole file. Returns the index."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    source = settings.resolved_source
    version = source_version(source)
    store = ws.per_source
    index_path = store.path("staged", None, STAGED_INDEX.format(version=version))
    if store.exists(index_path):
        return store.read_json(index_path)
    df = normalise_raw_dtypes(read_source(source, settings.column_map))
    if len(df) == 0:
        raise SourceError(f"source {source} has no rows")
    undated = df["InvoiceDate"].isna()
    dated = df[~undated]
    days = dated["InvoiceDate"].dt.normalize()
    dated = dated.iloc[days.argsort(kind="stable")]
    schema = raw_schema()
    paths = {
        "dated_path": store.path("staged", None, STAGED_DATED.format(version=version)),
        "undated_path": store.path("staged", None, STAGED_UNDATED.format(version=version)),
    }
    for name, part in (("dated_path", dated), ("undated_path", df[undated])):
        table = pa.Table.from_pandas(part.reset_index(drop=True), preserve_index=False, schema=schema).replace_schema_metadata(None)
        buf = pa.BufferOutputStream()
        pq.write_table(table, buf, compression="zstd", row_group_size=STAGED_ROW_GROUP, write_statistics=True)
        store.write_bytes(paths[name], buf.getvalue().to_pybytes())
    counts = days.dt.date.value_counts().sort_index()
    index = {
        "source": source,
        "version": version,
        "rows": int(len(df)),
        "undated": int(undated.sum()),
        "days": {d.isoformat(): int(n) for d, n in counts.items()},
        **paths,
    }
    current = STAGED_INDEX.format(version=version)
    for old in store.fs.glob(store.path("staged", None, STAGED_INDEX.format(version="*"))):  # earlier versions
        if not old.endswith(current):
            prefix = old[: -len(STAGED_INDEX.format(version=""))]
            for name in (STAGED_DATED, STAGED_UNDATED, STAGED_INDEX):
                path = prefix + name.format(version="")
                store.fs.rm(path) if store.fs.exists(path) else None
    store.write_json(index, index_path)  # last: the index commits the staged copy
    log.info("staged %s (version %s): %d rows, %d days", source, version, len(df), len(counts))
    return index


def read_staged(index: dict[str, Any], first: date, last: date) -> pd.DataFrame:
    """Staged rows with first <= invoice day <= last (only the row groups of those days are read)."""
    import pandas as pd
    import pyarrow.parquet as pq

    lo, hi = pd.Timestamp(first), pd.Timestamp(last) + pd.Timedelta(days=1)
    path = index["dated_path"]
    filters = [("InvoiceDate", ">=", lo), ("InvoiceDate", "<", hi)]
    if "://" not in path:
        return pq.read_table(path, filters=filters).to_pandas()
    with filesystem_for(path).open(strip_conn(path), "rb") as fh:
        return pq.read_table(fh, filters=filters).to_pandas()
