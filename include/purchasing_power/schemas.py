"""Column names, Arrow schemas and fixed vocabularies: the data contracts between stages.

* the canonical *input* schema (UCI Online Retail column names) and the names of UCI "Online
  Retail II" recognised without a column map;
* the schemas of the raw, clean and quarantine partitions;
* the feature-table conventions the models rely on (text-vector prefix, global columns, the
  BG/NBD baseline columns);
* the published *output* contract (prediction columns, tiers).
"""

from __future__ import annotations

from typing import Any

#: Canonical input schema (UCI Online Retail column names).
CANONICAL_COLUMNS = (
    "InvoiceNo",
    "StockCode",
    "Description",
    "Quantity",
    "InvoiceDate",
    "UnitPrice",
    "CustomerID",
    "Country",
)

#: Column names of UCI "Online Retail II"; used when a source has them and no map is given.
ONLINE_RETAIL_II_MAP = {"Invoice": "InvoiceNo", "Price": "UnitPrice", "Customer ID": "CustomerID"}

#: Raw columns that keep the original text of a value extract could not parse.
RAW_TEXT_COLUMNS = ("InvoiceDate_raw", "Quantity_raw", "UnitPrice_raw", "CustomerID_raw")

#: Columns of the clean partitions.
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

#: Quarantine reasons. A row gets the first that applies in the order ``clean_frame`` checks them
#: (its docstring lists that order); reasons added later are appended here.
QUARANTINE_REASONS = (
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
    "missing_stock_code",
    "non_finite_number",
    "customer_out_of_range",
    "quantity_out_of_range",
    "price_out_of_range",
)

#: Integers a float64 holds exactly have ``abs(n) < 2**53``. Raw partitions store Quantity,
#: UnitPrice and CustomerID as float64, so a larger id would silently become another customer:
#: such values keep their original text in ``*_raw`` and are quarantined as out of range.
MAX_EXACT_FLOAT_INT = 2**53

#: Feature tables: columns holding the mean text embedding start with this prefix.
TEXT_PREFIX = "txt_"
#: Feature tables: how much history the source has as of the snapshot (the same for every
#: customer of a snapshot; not a model feature, it scales spend totals to a horizon).
HISTORY_DAYS = "history_days"
#: Feature tables: the BG/NBD baseline's P(purchase within the horizon) and its spend forecast.
BASELINE_P = "bgnbd_p_purchase"
BASELINE_SPEND = "bgnbd_gg_spend"

#: The published output contract.
OUTPUT_COLUMNS = ("customer_id", "as_of", "p_purchase_30d", "expected_spend_90d", "tier", "model_version")
TIERS = ("high", "medium", "low")


def raw_schema() -> Any:
    """Arrow schema of raw partitions (canonical names; *_raw keep unparseable originals)."""
    import pyarrow as pa

    return pa.schema(
        [
            ("InvoiceNo", pa.string()),
            ("StockCode", pa.string()),
            ("Description", pa.string()),
            ("Country", pa.string()),
            ("Quantity", pa.float64()),
            ("Quantity_raw", pa.string()),
            ("UnitPrice", pa.float64()),
            ("UnitPrice_raw", pa.string()),
            ("CustomerID", pa.float64()),
            ("CustomerID_raw", pa.string()),
            ("InvoiceDate", pa.timestamp("ns")),
            ("InvoiceDate_raw", pa.string()),
        ]
    )


def clean_schema() -> Any:
    """Arrow schema of clean partitions (:data:`CLEAN_COLUMNS`)."""
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


def quarantine_schema() -> Any:
    """Arrow schema of quarantine partitions: the raw row plus ``reason`` and ``detail``."""
    import pyarrow as pa

    return pa.schema([("reason", pa.string()), ("detail", pa.string()), *raw_schema()])
