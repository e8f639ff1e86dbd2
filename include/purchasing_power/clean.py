"""Cleaning rules: validate raw rows, normalise text, mark cancellations/returns, quarantine bad rows.

Every raw row ends in exactly one place: ``clean`` or ``quarantine`` (with a ``reason`` and a
human-readable ``detail``), so ``rows read == clean + quarantined``.

Cancellations and returns (a negative quantity, whatever the invoice number looks like; UCI's
``C`` prefix is one convention) stay in the clean data with a negative ``line_value`` and
``is_cancellation`` set: spend is netted when features aggregate it, and only on the day the
return happened, so a later return never changes what was known earlier. Lines whose StockCode
is one of the ``non_sale_codes`` (postage, fees, manual adjustments; a setting, UCI's codes by
default) are not customer spend and are quarantined as ``non_sale_adjustment``.

Customer ids are integers or text, as extract decided for the source (see
``schemas.CUSTOMER_ID_TYPES``): ``customer_id`` is int64 or the id's text, spelled as the source
spells it; only an empty id is ``missing_customer``.
"""

from __future__ import annotations

import math
import re
import unicodedata
from typing import TYPE_CHECKING, Any, Callable, Iterable

from purchasing_power.schemas import (
    CANONICAL_COLUMNS,
    CLEAN_COLUMNS,
    MAX_EXACT_FLOAT_INT,
    QUARANTINE_REASONS,
    RAW_TEXT_COLUMNS,
    UCI_NON_SALE_CODES,
    customer_id_type,
)

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

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


def _is_non_finite_text(value: Any) -> bool:
    """Whether ``value`` is text that reads as a non-finite float ("nan", "inf", "1e400")."""
    try:
        return not math.isfinite(float(str(value).strip()))
    except ValueError:
        return False


def non_finite(values: pd.Series, original: pd.Series) -> pd.Series:
    """Rows whose number (float64) is infinite, or missing while its original text reads as a
    non-finite float ("nan", "inf", "1e400": extract could not keep it as a finite number)."""
    import numpy as np
    import pandas as pd

    numbers = values.to_numpy(dtype="float64")
    mask = np.isinf(numbers)
    unread = np.flatnonzero(np.isnan(numbers) & original.notna().to_numpy())  # few rows: test each text
    mask[unread] = [_is_non_finite_text(text) for text in original.to_numpy()[unread]]
    return pd.Series(mask, index=values.index)


def clean_frame(raw: pd.DataFrame, non_sale_codes: Iterable[str] = UCI_NON_SALE_CODES) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a raw partition into (clean, quarantine). Pure function over a DataFrame.

    A row gets the first reason that applies, checked in this order: unparseable_date,
    missing_invoice, missing_stock_code, non_finite_number (Quantity, UnitPrice, CustomerID),
    missing_customer, invalid_customer, customer_out_of_range, invalid_quantity,
    quantity_out_of_range, zero_quantity, invalid_price, non_positive_price, price_out_of_range,
    cancellation_with_positive_quantity, non_sale_adjustment (StockCode in ``non_sale_codes``,
    compared trimmed and upper case), duplicate_line. Numbers are checked for being finite and
    within float64's exact integers before anything casts them to int64. Integer customer ids
    (a numeric ``CustomerID``) must be whole, positive and exact; text ids (a text
    ``CustomerID``) are kept as they are spelled, only an empty one is missing."""
    import numpy as np
    import pandas as pd

    n = len(raw)
    reason = pd.Series([None] * n, index=raw.index, dtype=object)
    detail = pd.Series([None] * n, index=raw.index, dtype=object)

    def flag(mask: pd.Series, name: str, det: Callable[[pd.Series], pd.Series] | str) -> None:
        assert name in QUARANTINE_REASONS, name  # every reason is documented in schemas
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
    int_ids = customer_id_type(raw) == "int64"
    cust_text = None if int_ids else raw["CustomerID"].astype(object).where(raw["CustomerID"].notna(), None)
    cust = raw["CustomerID"].astype("float64") if int_ids else pd.Series(np.nan, index=raw.index)
    is_c = invoice.str.upper().str.startswith("C").fillna(False).astype(bool)
    codes = {str(c).strip().upper() for c in non_sale_codes}

    def shown(col: str, parsed: pd.Series, suffix: bool = False) -> Callable[[pd.Series], pd.Series]:
        def make(mask: pd.Series) -> pd.Series:
            original = raw.loc[mask, f"{col}_raw"].astype("string")
            text = f"{col}=" + original.fillna(parsed[mask].astype("string")).fillna("<null>")
            return text + " on invoice " + invoice[mask].fillna("") if suffix else text

        return make

    flag(raw["InvoiceDate"].isna(), "unparseable_date", shown("InvoiceDate", raw["InvoiceDate"]))
    flag(invoice.isna() | (invoice == ""), "missing_invoice", "InvoiceNo is empty")
    flag(stock.isna() | (stock == ""), "missing_stock_code", "StockCode is empty")
    for col, values in (("Quantity", qty), ("UnitPrice", price), ("CustomerID", cust)):
        flag(non_finite(values, raw[f"{col}_raw"]), "non_finite_number", shown(col, values))
    empty_id = cust.isna() if cust_text is None else cust_text.isna() | (cust_text.astype("string").str.strip() == "")
    flag(empty_id & raw["CustomerID_raw"].isna(), "missing_customer", "CustomerID is empty (guest checkout)")
    if int_ids:
        flag(cust.isna() | (cust <= 0) | (cust != np.floor(cust)), "invalid_customer", shown("CustomerID", cust))
        flag(cust >= MAX_EXACT_FLOAT_INT, "customer_out_of_range", shown("CustomerID", cust))
    flag(qty.isna() | (qty != np.floor(qty)), "invalid_quantity", shown("Quantity", qty))
    flag(qty.abs() >= MAX_EXACT_FLOAT_INT, "quantity_out_of_range", shown("Quantity", qty))
    flag(qty == 0, "zero_quantity", "Quantity=0")
    flag(price.isna(), "invalid_price", shown("UnitPrice", price))
    flag(price <= 0, "non_positive_price", shown("UnitPrice", price))
    flag(price >= MAX_EXACT_FLOAT_INT, "price_out_of_range", shown("UnitPrice", price))
    flag((qty > 0) & is_c, "cancellation_with_positive_quantity", shown("Quantity", qty, suffix=True))
    flag(stock.isin(codes), "non_sale_adjustment", lambda m: "StockCode=" + stock[m].fillna(""))
    dup = raw.duplicated(subset=list(CANONICAL_COLUMNS), keep="first") & reason.isna()
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
            "customer_id": cust[~bad].astype("int64").values if cust_text is None else cust_text[~bad].astype(object).values,
            "country": ok["Country"].astype("string").fillna("Unspecified").str.strip().astype(str).values,
            "is_cancellation": (is_c | (qty < 0))[~bad].values,  # a return whatever the invoice number looks like
        }
    )
    clean["line_value"] = clean["quantity"].astype("float64") * clean["unit_price"]
    clean = clean.sort_values(["invoice_ts", "invoice_no", "stock_code", "quantity"], kind="mergesort").reset_index(drop=True)
    return clean.loc[:, list(CLEAN_COLUMNS)], quarantine
