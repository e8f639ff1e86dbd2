"""Writing the demo source: Parquet bytes with the real file's Arrow schema, an atomic write, and
the command line::

    python -m purchasing_power.demo --out PATH [--customers N] [--start YYYY-MM-DD]
        [--end YYYY-MM-DD] [--seed S] [--if-missing]

Without ``--out`` the file goes to the demo source under the storage root
(:func:`purchasing_power.settings.default_demo_source`); ``--if-missing`` leaves an existing file
as it is.
"""

from __future__ import annotations

import argparse
import io
from datetime import date
from typing import TYPE_CHECKING, Any

from purchasing_power.demo.generator import DEMO_SCHEMA_DTYPES, generate_demo_transactions

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["to_parquet_bytes", "write_demo_source", "main"]


def _arrow_schema() -> Any:
    """The real file's Arrow schema: :data:`DEMO_SCHEMA_DTYPES` (canonical column order) with
    large strings for the text columns."""
    import pyarrow as pa

    arrow = {"object": pa.large_string(), "int64": pa.int64(), "float64": pa.float64(),
             "datetime64[us]": pa.timestamp("us")}
    return pa.schema([(column, arrow[dtype]) for column, dtype in DEMO_SCHEMA_DTYPES.items()])


def to_parquet_bytes(df: pd.DataFrame) -> bytes:
    """Serialise a canonical frame to Parquet (zstd) with the real file's Arrow schema."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, schema=_arrow_schema(), preserve_index=False)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def write_demo_source(path: str, **kwargs: Any) -> str:
    """Generate the demo transactions and write them atomically as Parquet to ``path``.

    ``path`` is a local path or an fsspec URI; ``kwargs`` go to :func:`generate_demo_transactions`.
    Returns ``path``.
    """
    from purchasing_power.storage import atomic_write_bytes

    data = to_parquet_bytes(generate_demo_transactions(**kwargs))
    atomic_write_bytes(path, data)
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m purchasing_power.demo``: write the demo source; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m purchasing_power.demo",
        description="Write the seeded demo transaction file (UCI Online Retail schema, Parquet).",
    )
    parser.add_argument("--out", default=None,
                        help="target path or fsspec URI (default: the demo source under the storage root)")
    parser.add_argument("--customers", type=int, default=2500, help="number of customers (default 2500)")
    parser.add_argument("--start", type=date.fromisoformat, default=date(2023, 1, 1), help="first day, YYYY-MM-DD")
    parser.add_argument("--end", type=date.fromisoformat, default=date(2024, 12, 31), help="last day, YYYY-MM-DD")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--if-missing", action="store_true", help="do nothing when the file already exists")
    args = parser.parse_args(argv)

    out = args.out
    if not out:
        from purchasing_power.settings import default_demo_source

        out = default_demo_source()
    if args.if_missing:
        from purchasing_power.storage import filesystem_for

        if filesystem_for(out).exists(out):
            print(f"demo source exists, left as is: {out}")
            return 0
    try:
        df = generate_demo_transactions(n_customers=args.customers, start=args.start, end=args.end, seed=args.seed)
    except ValueError as exc:
        parser.error(str(exc))
    from purchasing_power.storage import atomic_write_bytes

    atomic_write_bytes(out, to_parquet_bytes(df))
    print(
        f"wrote {len(df):,} rows, {df['InvoiceNo'].nunique():,} invoices, "
        f"{df['CustomerID'].nunique():,} customers, {df['InvoiceDate'].min()} .. {df['InvoiceDate'].max()} to {out}"
    )
    return 0

