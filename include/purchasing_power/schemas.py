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

#: Stock codes of UCI Online Retail that are the shop's own fees or accounting entries, not
#: customer spend: the default of the ``non_sale_codes`` setting.
UCI_NON_SALE_CODES = ("AMAZONFEE", "BANK CHARGES", "B", "CRUK", "ADJUST", "ADJUST2")

#: The types a source's customer ids take, decided once per source by extract: ``int64`` when
#: every id of the source is a number (a numeric column, or text spelling numbers, e.g. a CSV),
#: ``string`` otherwise (hashes, UUIDs, ``C-00123``, zero-padded numbers), kept as the source
#: spells them. Raw partitions hold integer ids as float64 (exact below 2**53) and text ids as
#: strings; clean partitions, features and predictions hold them as int64 or strings.
CUSTOMER_ID_TYPES = ("int64", "string")

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
#: (its docstring lists that order); reasons added later are appended here. A negative quantity
#: is a return whatever its invoice number looks like, so it is no reason: clean keeps it as a
#: negative line (quarantine files written before may still name it
#: ``negative_quantity_without_cancellation``).
QUARANTINE_REASONS = (
    "unparseable_date",
    "missing_invoice",
    "missing_customer",
    "invalid_customer",
    "invalid_quantity",
    "zero_quantity",
    "invalid_price",
    "non_positive_price",
    "cancellation_with_positive_quantity",
    "non_sale_adjustment",
    "duplicate_line",
    "missing_stock_code",
    "non_finite_number",
    "customer_out_of_range",
    "quantity_out_of_range",
    "price_out_of_range",
)

#: The optional user-written text source (reviews, comments, support messages): its canonical
#: columns (``Settings.texts_column_map`` maps a source's names onto them; extra columns are
#: dropped), the columns of its clean partitions, and the reasons its rows are quarantined for
#: (in ``quarantine/ds=D/texts_quarantine.parquet``, apart from the transactions' quarantine).
TEXT_COLUMNS = ("CustomerID", "TextDate", "Text")
TEXT_CLEAN_COLUMNS = ("customer_id", "text_ts", "text")
TEXT_QUARANTINE_REASONS = ("unparseable_date", "missing_customer", "invalid_customer", "non_finite_number", "customer_out_of_range", "empty_text")
#: A user text longer than this (characters, after normalisation) is truncated to it by clean.
TEXT_MAX_CHARS = 2000

#: Integers a float64 holds exactly have ``abs(n) < 2**53``. Raw partitions store Quantity,
#: UnitPrice and CustomerID as float64, so a larger id would silently become another customer:
#: such values keep their original text in ``*_raw`` and are quarantined as out of range.
MAX_EXACT_FLOAT_INT = 2**53

#: Feature tables: columns holding the mean text embedding start with this prefix.
TEXT_PREFIX = "txt_"
#: Feature tables: columns holding the mean embedding of a customer's own texts (user text).
USER_TEXT_PREFIX = "utxt_"
#: Feature-table column prefixes of embedding blocks (each reduced on its own by the models).
TEXT_PREFIXES = (TEXT_PREFIX, USER_TEXT_PREFIX)
#: The dtype of embedding-block columns in feature tables: the means are rounded to float32 as
#: they are made (so float32 holds them exactly), half the memory and bytes of float64; every
#: other feature column is float64. Models widen the blocks to float64 before fitting.
EMBEDDING_DTYPE = "float32"
#: Feature tables: how much history the source has as of the snapshot (the same for every
#: customer of a snapshot; not a model feature, it scales spend totals to a horizon).
HISTORY_DAYS = "history_days"
#: Feature tables: the BG/NBD baseline's P(purchase within the horizon) and its spend forecast.
BASELINE_P = "bgnbd_p_purchase"
BASELINE_SPEND = "bgnbd_gg_spend"

#: The published output contract. ``customer_id`` is int64 for a source of integer ids and a
#: string (the source's spelling) for text ids, unique and never null.
OUTPUT_COLUMNS = ("customer_id", "as_of", "p_purchase_30d", "expected_spend_90d", "tier", "model_version")
TIERS = ("high", "medium", "low")


def customer_id_type(frame: Any) -> str:
    """The customer id type (:data:`CUSTOMER_ID_TYPES`) of a raw or clean frame, read from its id
    column's dtype (``CustomerID`` in raw frames, ``customer_id`` in clean ones): numbers are
    integer ids, anything else text ids. An empty frame read from a partition keeps its column
    types, so it answers as its source's other partitions do."""
    import pandas as pd

    column = "CustomerID" if "CustomerID" in frame.columns else "customer_id"
    return "int64" if pd.api.types.is_numeric_dtype(frame[column].dtype) else "string"


def _check_id_type(customer_ids: str) -> None:
    if customer_ids not in CUSTOMER_ID_TYPES:
        raise ValueError(f"customer id type must be one of {CUSTOMER_ID_TYPES}, got {customer_ids!r}")


def raw_schema(customer_ids: str = "int64") -> Any:
    """Arrow schema of raw partitions (canonical names; *_raw keep unparseable originals).
    ``CustomerID`` is float64 for a source of integer ids and a string for text ids
    (``customer_ids``, see :data:`CUSTOMER_ID_TYPES`)."""
    import pyarrow as pa

    _check_id_type(customer_ids)
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
            ("CustomerID", pa.float64() if customer_ids == "int64" else pa.string()),
            ("CustomerID_raw", pa.string()),
            ("InvoiceDate", pa.timestamp("ns")),
            ("InvoiceDate_raw", pa.string()),
        ]
    )


def clean_schema(customer_ids: str = "int64") -> Any:
    """Arrow schema of clean partitions (:data:`CLEAN_COLUMNS`); ``customer_id`` is int64 or a
    string (``customer_ids``, the source's id type): every partition of a source has one schema."""
    import pyarrow as pa

    _check_id_type(customer_ids)
    return pa.schema(
        [
            ("invoice_no", pa.string()),
            ("stock_code", pa.string()),
            ("description", pa.string()),
            ("quantity", pa.int64()),
            ("invoice_ts", pa.timestamp("ns")),
            ("unit_price", pa.float64()),
            ("customer_id", pa.int64() if customer_ids == "int64" else pa.string()),
            ("country", pa.string()),
            ("is_cancellation", pa.bool_()),
            ("line_value", pa.float64()),
        ]
    )


def quarantine_schema(customer_ids: str = "int64") -> Any:
    """Arrow schema of quarantine partitions: the raw row plus ``reason`` and ``detail``."""
    import pyarrow as pa

    return pa.schema([("reason", pa.string()), ("detail", pa.string()), *raw_schema(customer_ids)])


def text_raw_schema(customer_ids: str = "int64") -> Any:
    """Arrow schema of raw user-text partitions (canonical names, ``*_raw`` keep unparseable originals)."""
    import pyarrow as pa

    _check_id_type(customer_ids)
    return pa.schema(
        [
            ("CustomerID", pa.float64() if customer_ids == "int64" else pa.string()),
            ("CustomerID_raw", pa.string()),
            ("TextDate", pa.timestamp("ns")),
            ("TextDate_raw", pa.string()),
            ("Text", pa.string()),
        ]
    )


def text_clean_schema(customer_ids: str = "int64") -> Any:
    """Arrow schema of clean user-text partitions (:data:`TEXT_CLEAN_COLUMNS`)."""
    import pyarrow as pa

    _check_id_type(customer_ids)
    return pa.schema(
        [
            ("customer_id", pa.int64() if customer_ids == "int64" else pa.string()),
            ("text_ts", pa.timestamp("ns")),
            ("text", pa.string()),
        ]
    )


def text_quarantine_schema(customer_ids: str = "int64") -> Any:
    """Arrow schema of user-text quarantine files: the raw row plus ``reason`` and ``detail``."""
    import pyarrow as pa

    return pa.schema([("reason", pa.string()), ("detail", pa.string()), *text_raw_schema(customer_ids)])
