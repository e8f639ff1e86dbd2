"""User-written text (reviews, comments, support messages): reading the optional texts source,
cleaning its rows, and turning them into point-in-time customer features.

The texts source has three canonical columns (``schemas.TEXT_COLUMNS``): ``CustomerID``,
``TextDate`` (a timestamp, UTC) and ``Text``; ``Settings.texts_column_map`` maps other names onto
them and extra columns are dropped. It takes the forms a transaction source takes
(:mod:`purchasing_power.sources`): one Parquet/CSV file (path or fsspec URI), a file set (folder
or glob), or a PostgreSQL table ``sql://<conn_id>/<schema>.<table>`` (read whole, one query per
run: a texts table is small next to the transactions).

Customer ids follow the transactions' rules (:func:`extract.source_customer_id_type`): integer
ids when every id is a number, else text kept as spelled. Features join the texts to the
transactions' customers through the transactions' id type (a text id that spells no integer
matches no customer of an integer source).

Cleaning (:func:`clean_texts_frame`) is language-agnostic: Unicode NFKC, control characters
replaced by spaces, whitespace collapsed and trimmed; case and script are kept. A text longer
than ``schemas.TEXT_MAX_CHARS`` characters is truncated to it (counted in the clean report).
Quarantined (``schemas.TEXT_QUARANTINE_REASONS``, first that applies): an unparseable or missing
TextDate, a non-finite id, a missing, invalid or out-of-range customer id, a text empty after
normalisation.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date
from typing import TYPE_CHECKING, Any, Callable

from purchasing_power.errors import SourceError
from purchasing_power.extract import rename_onto
from purchasing_power.schemas import EMBEDDING_DTYPE, MAX_EXACT_FLOAT_INT, TEXT_CLEAN_COLUMNS, TEXT_COLUMNS, TEXT_MAX_CHARS, TEXT_QUARANTINE_REASONS, USER_TEXT_PREFIX

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import pandas as pd

#: Days-since-last-text of a customer who has written nothing before the as-of day (the defined
#: fill; the count is 0 and the mean embedding all zeros).
NO_TEXT_DAYS = 3650.0
COUNT = "user_texts_n"
COUNT_RECENT = "user_texts_30d"
#: The mean embedding is of the customer's texts of the last this many days (as of the end of the
#: day): what a customer wrote lately says more about the coming weeks than an average over years.
RECENT_DAYS = 30
DAYS_SINCE_LAST = "user_text_days_since_last"

_WS = re.compile(r"\s+")


# -- reading -------------------------------------------------------------------------------------
def map_text_columns(df: pd.DataFrame, column_map: dict[str, str], *, source: str) -> pd.DataFrame:
    """Rename a texts source's columns onto :data:`TEXT_COLUMNS` and keep only those; a missing
    column or a map naming a column the source lacks is a :class:`SourceError` listing what it has."""
    return rename_onto(df, dict(column_map), TEXT_COLUMNS, source=source, noun="texts source", map_name="texts_column_map",
                       example='{"customer": "CustomerID", "created_at": "TextDate", "body": "Text"}')


def read_texts_file(path: str, column_map: dict[str, str]) -> pd.DataFrame:
    """One Parquet/CSV texts file with the canonical text columns (values as the file has them)."""
    from purchasing_power.extract import parse_source
    from purchasing_power.storage import filesystem_for

    fs = filesystem_for(path)
    fs.invalidate_cache(path)
    if not fs.exists(path):
        raise FileNotFoundError(f"texts source file not found: {path}")
    with fs.open(path, "rb") as fh:
        data = fh.read()
    return map_text_columns(parse_source(data, path), column_map, source=path)


def read_texts_table(uri: str, column_map: dict[str, str]) -> pd.DataFrame:
    """A texts table (``sql://``), whole, in one read-only transaction: ids as the column holds
    them, the date as text in UTC (parsed like a file's), the text as text."""
    import pandas as pd
    from psycopg import sql

    from purchasing_power.warehouse import TableRef, connect

    ref = TableRef.parse(uri)
    with connect(ref) as conn:
        conn.read_only = True
        conn.execute("SET TIME ZONE 'UTC'")
        rows = conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
            (ref.schema, ref.table),
        ).fetchall()
        columns = [r[0] for r in rows]
        if not columns:
            raise SourceError(f"texts source {uri}: table {ref.schema}.{ref.table} not found through connection {ref.conn_id!r}")
        origin = map_text_columns(pd.DataFrame([columns], columns=columns), column_map, source=uri).iloc[0].to_dict()
        query = sql.SQL("SELECT {c} AS \"CustomerID\", {d}::text AS \"TextDate\", {t}::text AS \"Text\" FROM {tab} ORDER BY 2, 1, 3").format(
            c=sql.Identifier(origin["CustomerID"]), d=sql.Identifier(origin["TextDate"]), t=sql.Identifier(origin["Text"]),
            tab=sql.Identifier(ref.schema, ref.table),
        )
        records = conn.execute(query).fetchall()
    return pd.DataFrame.from_records(records, columns=list(TEXT_COLUMNS)) if records else pd.DataFrame({c: pd.Series(dtype=object) for c in TEXT_COLUMNS})


def normalise_text_dtypes(df: pd.DataFrame) -> pd.DataFrame:
    """One stable schema (``schemas.text_raw_schema``) for the texts source's rows: ids as the
    transactions' rules make them (float64 integer ids or trimmed text ids, ``*_raw`` keeping
    what is no id), TextDate parsed as naive UTC (unparseable: NaT, its text in ``TextDate_raw``),
    Text as text."""
    import numpy as np
    import pandas as pd

    from purchasing_power.extract import source_customer_id_type, text_customer_ids

    out = pd.DataFrame(index=df.index)
    ids = df["CustomerID"]
    if source_customer_id_type(ids) == "string":
        out["CustomerID"], out["CustomerID_raw"] = text_customer_ids(ids)
    else:
        out["CustomerID"] = pd.to_numeric(ids, errors="coerce").astype("float64")
        exact = np.isfinite(out["CustomerID"]) & (out["CustomerID"].abs() < MAX_EXACT_FLOAT_INT)
        bad = ~exact & ids.notna() & (ids.astype("string").str.strip() != "")
        out["CustomerID_raw"] = ids.astype("string").astype(object).where(bad, None)
    out["TextDate"] = parse_text_dates(df["TextDate"])
    out["TextDate_raw"] = df["TextDate"].astype("string").astype(object).where(out["TextDate"].isna() & df["TextDate"].notna(), None)
    text = df["Text"]
    out["Text"] = text.astype("string").astype(object).where(text.notna(), None)
    return out.reset_index(drop=True)


def parse_text_dates(values: pd.Series) -> pd.Series:
    """TextDate as naive UTC datetime64[ns]: timestamps (aware ones converted to UTC), or text
    in ISO 8601 (with or without an offset; none means UTC) or another common spelling
    (``3/5/2024 14:07``); unparseable -> NaT (quarantined by clean)."""
    import pandas as pd

    from purchasing_power.extract import parse_invoice_dates

    if pd.api.types.is_datetime64_any_dtype(values):
        return parse_invoice_dates(values)
    as_str = values.astype("string")
    out = pd.to_datetime(as_str, errors="coerce", format="ISO8601", utc=True)
    retry = out.isna() & as_str.notna()
    if retry.any():
        out.loc[retry] = pd.to_datetime(as_str[retry], errors="coerce", format="mixed", utc=True)
    return out.dt.tz_convert(None).astype("datetime64[ns]")


# -- cleaning ------------------------------------------------------------------------------------
def normalise_user_text(value: Any) -> str:
    """Unicode NFKC, control characters replaced by spaces, whitespace collapsed and trimmed;
    case and script kept (language-agnostic). Missing values become the empty string."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    text = unicodedata.normalize("NFKC", str(value))
    text = "".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in text)
    return _WS.sub(" ", text).strip()


def clean_texts_frame(raw: pd.DataFrame, max_chars: int = TEXT_MAX_CHARS) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """Split raw user texts into (clean, quarantine, number truncated). Every row ends in one
    of the two; quarantined rows carry ``reason`` and ``detail``. Clean rows are sorted by
    time, customer and text."""
    import numpy as np
    import pandas as pd

    n = len(raw)
    reason = pd.Series([None] * n, index=raw.index, dtype=object)
    detail = pd.Series([None] * n, index=raw.index, dtype=object)

    def flag(mask: Any, name: str, det: Callable[[pd.Series], pd.Series] | str) -> None:
        assert name in TEXT_QUARANTINE_REASONS, name
        mask = pd.Series(mask, index=raw.index).fillna(False).astype(bool) & reason.isna()
        if mask.any():
            reason[mask] = name
            detail[mask] = det if isinstance(det, str) else det(mask)

    int_ids = pd.api.types.is_numeric_dtype(raw["CustomerID"].dtype)
    cust = raw["CustomerID"].astype("float64") if int_ids else pd.Series(np.nan, index=raw.index)
    cust_text = None if int_ids else raw["CustomerID"].astype(object).where(raw["CustomerID"].notna(), None)
    id_raw = raw["CustomerID_raw"]

    def shown(col: str) -> Callable[[pd.Series], pd.Series]:
        return lambda m: f"{col}=" + raw.loc[m, f"{col}_raw"].astype("string").fillna(raw.loc[m, col].astype("string")).fillna("<null>")

    flag(raw["TextDate"].isna(), "unparseable_date", shown("TextDate"))
    flag(id_raw.notna() & (cust.isna() if int_ids else cust_text.isna()), "non_finite_number", shown("CustomerID"))
    empty_id = cust.isna() if int_ids else cust_text.isna() | (cust_text.astype("string").str.strip() == "")
    flag(empty_id & id_raw.isna(), "missing_customer", "CustomerID is empty")
    if int_ids:
        flag((cust <= 0) | (cust != np.floor(cust)), "invalid_customer", shown("CustomerID"))
        flag(cust >= MAX_EXACT_FLOAT_INT, "customer_out_of_range", shown("CustomerID"))
    uniques = raw["Text"].dropna().unique()
    text = raw["Text"].map({v: normalise_user_text(v) for v in uniques}).fillna("").astype(object)
    flag(text == "", "empty_text", "Text is empty after normalisation")

    bad = reason.notna()
    quarantine = raw.loc[bad].copy()
    quarantine.insert(0, "reason", reason[bad].astype(str))
    quarantine.insert(1, "detail", detail[bad].astype(str))
    kept = text[~bad]
    long = kept.str.len() > max_chars
    clean = pd.DataFrame(
        {
            "customer_id": cust[~bad].astype("int64").values if int_ids else cust_text[~bad].astype(object).values,
            "text_ts": raw.loc[~bad, "TextDate"].astype("datetime64[ns]").values,
            "text": kept.where(~long, kept.str.slice(0, max_chars)).values,
        }
    )
    clean = clean.sort_values(["text_ts", "customer_id", "text"], kind="mergesort").reset_index(drop=True)
    return clean.loc[:, list(TEXT_CLEAN_COLUMNS)], quarantine.reset_index(drop=True), int(long.sum())


# -- features ------------------------------------------------------------------------------------
def align_ids(texts: pd.DataFrame, id_dtype: str) -> pd.DataFrame:
    """User texts with their ids in the transactions' id type (``int64`` or ``object``): integer
    ids as their text for a text-id source; text ids that spell an integer as that integer for an
    integer-id source (others match no customer and are dropped)."""
    import numpy as np
    import pandas as pd

    ids = texts["customer_id"]
    numeric = pd.api.types.is_numeric_dtype(ids.dtype)
    if id_dtype == "int64" and not numeric:
        values = pd.to_numeric(ids, errors="coerce")
        keep = values.notna() & (values == np.floor(values))
        return texts[keep.to_numpy()].assign(customer_id=values[keep].astype("int64").to_numpy())
    if id_dtype != "int64" and numeric:
        return texts.assign(customer_id=ids.astype("int64").astype(str).astype(object))
    return texts


def user_text_features(texts: pd.DataFrame, as_of: date, customers: pd.Index, vectors: Callable[[list[str]], np.ndarray] | None, id_dtype: str) -> pd.DataFrame:
    """Per customer, from the texts dated before the end of ``as_of`` only: the number of texts
    (all, and within :data:`RECENT_DAYS`), days since the last one, and (with ``vectors``) the
    mean embedding of the texts of the last :data:`RECENT_DAYS` days (columns ``utxt_NNN``).
    Customers without a text: count 0, days :data:`NO_TEXT_DAYS`, zero embedding (also without
    a recent one)."""
    import numpy as np
    import pandas as pd
    from scipy import sparse

    end = pd.Timestamp(as_of) + pd.Timedelta(days=1)
    t = align_ids(texts, id_dtype)
    t = t[(t["text_ts"] < end) & t["customer_id"].isin(customers) & (t["text"].fillna("") != "")]
    g = t.groupby("customer_id")
    age = (end - t["text_ts"]).dt.total_seconds() / 86400.0
    out = pd.DataFrame(index=customers)
    out[COUNT] = g.size().reindex(customers, fill_value=0).astype("float64")
    out[COUNT_RECENT] = (age <= RECENT_DAYS).groupby(t["customer_id"]).sum().reindex(customers, fill_value=0).astype("float64")
    out[DAYS_SINCE_LAST] = ((end - g["text_ts"].max()).dt.total_seconds() / 86400.0).reindex(customers).fillna(NO_TEXT_DAYS)
    if vectors is None:
        return out
    t = t[(age <= RECENT_DAYS).to_numpy()]
    text_codes, text_index = pd.factorize(t["text"], sort=True)
    pos = customers.get_indexer(t["customer_id"])
    mat = np.asarray(vectors(list(text_index)), dtype=np.float64)  # [0, dim] when there is no text
    counts = sparse.csr_matrix((np.ones(len(t)), (pos, text_codes)), shape=(len(customers), len(text_index)))
    totals = np.asarray(counts.sum(axis=1)).ravel()
    mean = (counts @ mat) / np.clip(totals, 1.0, None)[:, None]
    dim = mat.shape[1]
    cols = [f"{USER_TEXT_PREFIX}{i:03d}" for i in range(dim)]
    return out.join(pd.DataFrame(mean.astype(EMBEDDING_DTYPE), index=customers, columns=cols))


def texts_source(settings: Any) -> str:
    """The texts source to read, or ``""`` for none: ``Settings.resolved_texts``, except that
    the demo's implicit texts file (``texts`` and ``source`` both empty) counts only when it
    exists (a demo written before user texts had none)."""
    uri = settings.resolved_texts
    if not uri or settings.texts:
        return uri
    from purchasing_power.storage import filesystem_for

    fs = filesystem_for(uri)
    fs.invalidate_cache(uri)
    return uri if fs.exists(uri) else ""


def user_text_on(settings: Any) -> bool:
    """Whether features include user text: ``use_user_text`` and a texts source."""
    return bool(settings.use_user_text) and bool(texts_source(settings))
