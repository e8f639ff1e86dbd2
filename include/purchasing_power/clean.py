"""Clean: validate raw rows, normalise text, mark cancellations/returns, quarantine bad rows.

Every raw row ends in exactly one place: ``clean`` or ``quarantine`` (with a ``reason`` and a
human-readable ``detail``), so ``rows read == clean + quarantined`` for every day.

Cancellations and returns (InvoiceNo starting with ``C``, negative quantity) stay in the clean
data with a negative ``line_value``: spend is netted when features aggregate it, and only on the
day the return happened, so a later return never changes what was known earlier.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from datetime import date
from typing import TYPE_CHECKING, Any, Callable

from purchasing_power.extract import RAW_FILE, Workspace
from purchasing_power.settings import Settings

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

log = logging.getLogger(__name__)

CLEAN_FILE = "clean.parquet"
QUARANTINE_FILE = "quarantine.parquet"

#: Lines that are the shop's own fees or accounting entries, not customer spend.
NON_SALE_CODES = frozenset({"AMAZONFEE", "BANK CHARGES", "B", "CRUK", "ADJUST", "ADJUST2"})

CLEAN_COLUMNS = (
    "invoice_no",
    "stock_code",
    "description",
    "quantity",
    "invoice_ts",
    "unit_price",
    "customer_id",
    "country",
    "is_cancellation",
    "line_value",
)

#: Reasons, in the order they are checked; the first that applies is recorded.
REASONS = (
    "unparseable_date",
    "missing_invoice",
    "missing_customer",
    "invalid_customer",
    "invalid_quantity",
    "zero_quantity",
    "invalid_price",
    "non_positive_price",
    "negative_quantity_without_cancellation",
    "cancellation_with_positive_quantity",
    "non_sale_adjustment",
    "duplicate_line",
)

RAW_TEXT_COLUMNS = ("InvoiceDate_raw", "Quantity_raw", "UnitPrice_raw", "CustomerID_raw")

_WS = re.compile(r"\s+")


def normalise_text(value: Any) -> str:
    """Unicode NFKC, control characters dropped, whitespace collapsed, upper case.
    Missing values become the empty string."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    text = unicodedata.normalize("NFKC", str(value))
    text = "".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in text)
    return _WS.sub(" ", text).strip().upper()


def normalise_texts(values: pd.Series) -> pd.Series:
    """``normalise_text`` over a column, computed once per distinct value."""
    uniques = values.dropna().unique()
    mapping = {v: normalise_text(v) for v in uniques}
    return values.map(mapping).fillna("").astype(object)


def clean_frame(raw: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a raw partition into (clean, quarantine). Pure function over a DataFrame."""
    import numpy as np
    import pandas as pd

    n = len(raw)
    reason = pd.Series([None] * n, index=raw.index, dtype=object)
    detail = pd.Series([None] * n, index=raw.index, dtype=object)

    def flag(mask: pd.Series, name: str, det: Callable[[pd.Series], pd.Series] | str) -> None:
        mask = mask.fillna(False).astype(bool) & reason.isna()
        if mask.any():
            reason[mask] = name
            detail[mask] = det if isinstance(det, str) else det(mask)  # built for flagged rows only

    for col in RAW_TEXT_COLUMNS:  # original text of values extract could not parse
        if col not in raw.columns:
            raw = raw.assign(**{col: None})
    invoice = raw["InvoiceNo"].astype("string").str.strip()
    stock = raw["StockCode"].astype("string").str.strip().str.upper()
    qty = raw["Quantity"].astype("float64")
    price = raw["UnitPrice"].astype("float64")
    cust = raw["CustomerID"].astype("float64")
    is_c = invoice.str.upper().str.startswith("C").fillna(False).astype(bool)

    def shown(col: str, parsed: pd.Series, suffix: bool = False) -> Callable[[pd.Series], pd.Series]:
        def make(mask: pd.Series) -> pd.Series:
            original = raw.loc[mask, f"{col}_raw"].astype("string")
            text = f"{col}=" + original.fillna(parsed[mask].astype("string")).fillna("<null>")
            return text + " on invoice " + invoice[mask].fillna("") if suffix else text

        return make

    flag(raw["InvoiceDate"].isna(), "unparseable_date", shown("InvoiceDate", raw["InvoiceDate"]))
    flag(invoice.isna() | (invoice == ""), "missing_invoice", "InvoiceNo is empty")
    flag(cust.isna() & raw["CustomerID_raw"].isna(), "missing_customer", "CustomerID is empty (guest checkout)")
    flag(cust.isna() | (cust <= 0) | (cust != np.floor(cust)), "invalid_customer", shown("CustomerID", cust))
    flag(qty.isna() | (qty != np.floor(qty)), "invalid_quantity", shown("Quantity", qty))
    flag(qty == 0, "zero_quantity", "Quantity=0")
    flag(price.isna(), "invalid_price", shown("UnitPrice", price))
    flag(price <= 0, "non_positive_price", shown("UnitPrice", price))
    flag((qty < 0) & ~is_c, "negative_quantity_without_cancellation", shown("Quantity", qty, suffix=True))
    flag((qty > 0) & is_c, "cancellation_with_positive_quantity", shown("Quantity", qty, suffix=True))
    flag(stock.isin(NON_SALE_CODES), "non_sale_adjustment", lambda m: "StockCode=" + stock[m].fillna(""))
    canonical = ["InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID", "Country"]
    dup = raw.duplicated(subset=canonical, keep="first") & reason.isna()
    flag(dup, "duplicate_line", lambda m: "exact duplicate of an earlier line on invoice " + invoice[m].fillna(""))

    bad = reason.notna()
    quarantine = raw.loc[bad].copy()
    quarantine.insert(0, "reason", reason[bad].astype(str))
    quarantine.insert(1, "detail", detail[bad].astype(str))
    quarantine = quarantine.reset_index(drop=True)

    ok = raw.loc[~bad]
    clean = pd.DataFrame(
        {
            "invoice_no": invoice[~bad].astype(str).str.upper().values,
            "stock_code": stock[~bad].astype(str).values,
            "description": normalise_texts(ok["Description"]).values,
            "quantity": qty[~bad].astype("int64").values,
            "invoice_ts": ok["InvoiceDate"].astype("datetime64[ns]").values,
            "unit_price": price[~bad].values,
            "customer_id": cust[~bad].astype("int64").values,
            "country": ok["Country"].astype("string").fillna("Unspecified").str.strip().astype(str).values,
            "is_cancellation": is_c[~bad].values,
        }
    )
    clean["line_value"] = clean["quantity"].astype("float64") * clean["unit_price"]
    clean = clean.sort_values(["invoice_ts", "invoice_no", "stock_code", "quantity"], kind="mergesort").reset_index(drop=True)
    return clean.loc[:, list(CLEAN_COLUMNS)], quarantine


def clean_schema():
    import pyarrow as pa

    return pa.schema(
        [
            ("invoice_no", pa.string()),
            ("stock_code", pa.string()),
            ("description", pa.string()),
            ("quantity", pa.int64()),
            ("invoice_ts", pa.timestamp("ns")),
            ("unit_price", pa.float64()),
            ("customer_id", pa.int64()),
            ("country", pa.string()),
            ("is_cancellation", pa.bool_()),
            ("line_value", pa.float64()),
        ]
    )


def quarantine_schema():
    import pyarrow as pa

    from purchasing_power.extract import raw_schema

    return pa.schema([("reason", pa.string()), ("detail", pa.string()), *raw_schema()])


def clean_day(settings: Settings, day: date) -> dict[str, Any]:
    """Clean the run's day and every earlier raw day without a clean partition.
    Returns a report with row counts that reconcile: read = clean + quarantined."""

    ws = Workspace.for_settings(settings)
    raw_days = ws.work.list_days("raw", RAW_FILE)
    if day not in raw_days:
        raise FileNotFoundError(f"no raw partition for {day} at {ws.work.path('raw', day, RAW_FILE)}: run extract first")
    done = set(ws.work.list_days("clean", CLEAN_FILE))
    todo = [d for d in raw_days if d <= day and (d == day or d not in done)]
    # Clean all pending days in one vectorised pass (duplicates can only occur within a day,
    # since the invoice timestamp is part of the row), then write one partition per day.
    raw = ws.work.read_parquet_many([ws.work.path("raw", d, RAW_FILE) for d in todo])
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
        ws.work.write_parquet(c, ws.work.path("clean", d, CLEAN_FILE), schema=c_schema)
        ws.out.write_parquet(q, ws.out.path("quarantine", d, QUARANTINE_FILE), schema=q_schema)
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
        "quarantine_path": ws.out.path("quarantine", day, QUARANTINE_FILE),
    }
    log.info("clean %s: %s", day, report)
    return report


def load_clean_history(
    settings: Settings,
    day: date,
    *,
    through: date | None = None,
    since: date | None = None,
    columns: list[str] | None = None,
) -> pd.DataFrame:
    """All clean rows with ``since`` <= invoice day <= ``through`` (default: from the first day
    through ``day``), concatenated in day order; ``columns``: only these."""
    ws = Workspace.for_settings(settings)
    last = through or day
    days = [d for d in ws.work.list_days("clean", CLEAN_FILE) if d <= last]
    if last not in days:
        raise FileNotFoundError(f"no clean partition for {last} under {ws.work.path('clean')}: run clean first")
    days = [d for d in days if since is None or d >= since]
    return ws.work.read_parquet_many([ws.work.path("clean", d, CLEAN_FILE) for d in days], columns=columns)
