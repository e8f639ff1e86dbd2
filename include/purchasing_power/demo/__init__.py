"""Seeded generator of a realistic demo transaction file in the UCI "Online Retail" schema.

The demo source lets the whole pipeline run without the real data set: one Parquet file with the
canonical columns and dtypes of UCI Online Retail, the same bytes for the same arguments.

* :mod:`~purchasing_power.demo.generator`: the generative process (customers, orders, baskets,
  prices, noise and anomalies), :func:`generate_demo_transactions`;
* :mod:`~purchasing_power.demo.catalogue` and ``catalogue.json``: the shop's data (product
  families, price points, segment parameters, countries, ...) and its product catalogue;
* :mod:`~purchasing_power.demo.reviews`: the customers' reviews written beside the transactions
  (``texts.parquet``, the demo's user-text source) with a documented *synthetic* signal;
* :mod:`~purchasing_power.demo.writer`: Parquet serialisation, :func:`write_demo_source` and the
  command line ``python -m purchasing_power.demo --out PATH [--if-missing] ...``.
"""

from __future__ import annotations

from purchasing_power.demo.catalogue import build_catalogue
from purchasing_power.demo.generator import DEMO_SCHEMA_DTYPES, generate_demo_transactions
from purchasing_power.demo.writer import main, to_parquet_bytes, write_demo_source

__all__ = [
    "DEMO_SCHEMA_DTYPES",
    "build_catalogue",
    "generate_demo_transactions",
    "main",
    "to_parquet_bytes",
    "write_demo_source",
]
