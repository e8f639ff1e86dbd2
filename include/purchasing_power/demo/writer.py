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


#: Customers generated at once: a larger source is written block by block (bounded memory).
BLOCK_CUSTOMERS = 25_000


def write_demo_source(path: str, *, block_customers: int = BLOCK_CUSTOMERS, **kwargs: Any) -> str:
    """Generate the demo transactions and write them atomically as Parquet to ``path``.

    ``path`` is a local path or an fsspec URI; ``kwargs`` go to :func:`generate_demo_transactions`.
    Up to ``block_customers`` customers the file is one frame. A larger source is generated in
    blocks of ``block_customers`` customers (block b seeded ``seed + b``, with its own customer-id
    range and invoice numbers following the previous block's), each block written as row groups
    of one Parquet file, so memory stays that of one block whatever the size: the file is in
    block order, not time order (the pipeline sorts by day when it stages a source).
    The demo's user texts (reviews, :mod:`purchasing_power.demo.reviews`, seeded with the same
    seed) are written beside it, ``texts.parquet`` (``settings.demo_texts_beside``), first.
    Returns ``path``.
    """
    from purchasing_power.demo.reviews import write_demo_reviews
    from purchasing_power.settings import demo_texts_beside
    from purchasing_power.storage import atomic_write_bytes

    n = int(kwargs.pop("n_customers", 2500))
    if n <= block_customers:
        df = generate_demo_transactions(n_customers=n, **kwargs)
        write_demo_reviews(demo_texts_beside(path), df, int(kwargs.get("seed", 7)))
        atomic_write_bytes(path, to_parquet_bytes(df))
        return path
    _write_blocks(path, n, int(block_customers), kwargs)
    return path


def _write_blocks(path: str, n: int, block: int, kwargs: dict[str, Any]) -> None:
    import os
    import tempfile

    import pyarrow as pa
    import pyarrow.parquet as pq

    from purchasing_power.storage import atomic_write_bytes

    import pandas as pd

    from purchasing_power.demo.reviews import generate_demo_reviews
    from purchasing_power.demo.reviews import to_parquet_bytes as reviews_bytes
    from purchasing_power.settings import demo_texts_beside

    seed = int(kwargs.pop("seed", 7))
    reviews = []
    local = "://" not in path
    folder = os.path.dirname(os.path.abspath(path)) if local else None
    if folder:
        os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".demo-", suffix=".parquet.tmp", dir=folder)
    os.close(fd)
    try:
        invoice, schema = 100_000, _arrow_schema()
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            for b, start in enumerate(range(0, n, block)):
                size = min(block, n - start)
                df = generate_demo_transactions(
                    n_customers=size, seed=seed + b, customer_id_start=10_000 + 3 * start, invoice_start=invoice, **kwargs
                )
                invoice = int(df["InvoiceNo"].str.lstrip("C").astype("int64").max()) + 1
                reviews.append(generate_demo_reviews(df, seed + b))
                writer.write_table(pa.Table.from_pandas(df, schema=schema, preserve_index=False), row_group_size=1 << 20)
                del df
        atomic_write_bytes(demo_texts_beside(path), reviews_bytes(pd.concat(reviews, ignore_index=True)))
        if local:
            os.replace(tmp, path)
        else:
            with open(tmp, "rb") as fh:
                atomic_write_bytes(path, fh.read())
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


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
            from purchasing_power.settings import demo_texts_beside

            texts = demo_texts_beside(out)
            if not filesystem_for(texts).exists(texts):  # a demo written before it had user texts
                from purchasing_power.demo.reviews import write_demo_reviews
                from purchasing_power.extract import read_source

                write_demo_reviews(texts, read_source(out), args.seed)
                print(f"wrote the demo's user texts beside it: {texts}")
            print(f"demo source exists, left as is: {out}")
            return 0
    try:
        write_demo_source(out, n_customers=args.customers, start=args.start, end=args.end, seed=args.seed)
    except ValueError as exc:
        parser.error(str(exc))
    print(f"wrote {_summary(out)} to {out}")
    return 0


def _summary(path: str) -> str:
    """Rows, invoices, customers and date range of a written demo file (read column by column)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from purchasing_power.storage import filesystem_for, strip_conn

    with filesystem_for(path).open(strip_conn(path), "rb") as fh:
        pf = pq.ParquetFile(fh)
        invoices = pc.count_distinct(pf.read(columns=["InvoiceNo"])["InvoiceNo"]).as_py()
        customers = pc.count_distinct(pf.read(columns=["CustomerID"])["CustomerID"], mode="only_valid").as_py()
        dates = pc.min_max(pf.read(columns=["InvoiceDate"])["InvoiceDate"])
        return (f"{pf.metadata.num_rows:,} rows, {invoices:,} invoices, {customers:,} customers, "
                f"{dates['min'].as_py()} .. {dates['max'].as_py()}")

