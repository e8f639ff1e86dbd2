"""History work in pandas (the stages' path today) against DuckDB and Polars, on the same files.

Reads the daily clean partitions a bench-scale run left (``--storage``, e.g.
``.bench/scale/storage-250000``) and computes, in each engine, each in a fresh process (seconds
and peak RSS, as bench_scale measures a task):

* ``daily``: the net value of every (customer, calendar day) of the whole history, what the
  purchase-day features start from (``labels.purchase_days``);
* ``customers``: per customer, lines, net value and the first and last invoice time;
* ``daily_365``: ``daily`` over the last 365 days only (the partitions of those days: predicate
  pushdown on the day).

pandas reads the columns with pyarrow (as ``Storage.read_parquet_many``) and groups in pandas;
DuckDB and Polars read the same files' columns and aggregate in their engines. Every engine's
result is checked against pandas' (same keys, values within 1e-6). Results go to
``bench/results/engines.json``::

    .venv/bin/python bench/bench_engines.py --storage .bench/scale/storage-250000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MEASURE = """
import json, resource, sys, time
files = json.loads(open(sys.argv[1]).read()); out = sys.argv[2]; op = sys.argv[3]
t0 = time.perf_counter()
{body}
res.to_parquet(out, index=False)
print("@@" + json.dumps({{"seconds": round(time.perf_counter() - t0, 2), "rows": int(len(res)),
                          "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}}))
"""
PANDAS = """
import pyarrow.dataset as ds
cols = ["customer_id", "invoice_ts", "line_value"]
tx = ds.dataset(files, format="parquet").to_table(columns=cols).to_pandas()
if op == "customers":
    g = tx.groupby("customer_id", sort=True)
    res = g.agg(lines=("line_value", "size"), value=("line_value", "sum"), first=("invoice_ts", "min"),
                last=("invoice_ts", "max")).reset_index()
else:
    day = tx["invoice_ts"].dt.normalize().rename("day")
    res = tx["line_value"].groupby([tx["customer_id"], day], sort=True).sum().rename("value").reset_index()
"""
DUCKDB = """
import duckdb
con = duckdb.connect()
src = "read_parquet(" + repr(files) + ")"
if op == "customers":
    q = ("SELECT customer_id, count(*) AS lines, sum(line_value) AS value, min(invoice_ts) AS first, "
         "max(invoice_ts) AS last FROM " + src + " GROUP BY customer_id ORDER BY customer_id")
else:
    q = ("SELECT customer_id, date_trunc('day', invoice_ts) AS day, sum(line_value) AS value FROM " + src
         + " GROUP BY ALL ORDER BY customer_id, day")
res = con.execute(q).df()
"""
POLARS = """
import polars as pl
lf = pl.scan_parquet(files).select(["customer_id", "invoice_ts", "line_value"])
if op == "customers":
    lf = lf.group_by("customer_id").agg(pl.len().alias("lines"), pl.col("line_value").sum().alias("value"),
                                        pl.col("invoice_ts").min().alias("first"), pl.col("invoice_ts").max().alias("last"))
    lf = lf.sort("customer_id")
else:
    lf = lf.group_by(["customer_id", pl.col("invoice_ts").dt.truncate("1d").alias("day")]).agg(
        pl.col("line_value").sum().alias("value")).sort(["customer_id", "day"])
res = lf.collect().to_pandas()
"""
ENGINES = {"pandas": PANDAS, "duckdb": DUCKDB, "polars": POLARS}


def run(engine: str, op: str, files: list[str], folder: Path, env: dict[str, str]) -> dict[str, object]:
    listing = folder / f"{op}-files.json"
    listing.write_text(json.dumps(files))
    out = folder / f"{op}-{engine}.parquet"
    proc = subprocess.run([sys.executable, "-c", MEASURE.format(body=ENGINES[engine]), str(listing), str(out), op],
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{engine} {op} failed: {proc.stderr[-2000:]}")
    line = next(ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith("@@"))
    return json.loads(line[2:])


def same(a_path: Path, b_path: Path) -> bool:
    """The same keys in the same order and values within 1e-6 (sums in another order)."""
    import numpy as np
    import pandas as pd

    a, b = pd.read_parquet(a_path), pd.read_parquet(b_path)
    if list(a.columns) != list(b.columns) or len(a) != len(b):
        return False
    for c in a.columns:
        x, y = a[c], b[c]
        if pd.api.types.is_datetime64_any_dtype(x):
            if not (x.astype("datetime64[us]").to_numpy() == y.astype("datetime64[us]").to_numpy()).all():
                return False
        elif pd.api.types.is_float_dtype(x) or pd.api.types.is_float_dtype(y):
            if not np.allclose(x.to_numpy(dtype=float), y.to_numpy(dtype=float), rtol=1e-9, atol=1e-6):
                return False
        elif not (x.to_numpy() == y.to_numpy()).all():
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--storage", required=True, help="a bench-scale storage folder (its sources/*/clean/ds=*/clean.parquet)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "engines.json"))
    args = ap.parse_args(argv)
    files = sorted(str(p) for p in Path(args.storage).resolve().glob("sources/*/clean/ds=*/clean.parquet"))
    if not files:
        raise SystemExit(f"no clean partitions under {args.storage}: run make bench-scale first")
    import pyarrow.parquet as pq

    lines = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    env = dict(os.environ)
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for op in ("daily", "customers", "daily_365"):
            chosen = files[-365:] if op == "daily_365" else files
            name = "daily" if op == "daily_365" else op
            results[op] = {"files": len(chosen)}
            (folder / op).mkdir()
            for engine in ENGINES:
                print(f"{op}: {engine} ...", flush=True)
                results[op][engine] = run(engine, name, chosen, folder / op, env)
                results[op][engine]["same_as_pandas"] = same(folder / op / f"{name}-pandas.parquet",
                                                             folder / op / f"{name}-{engine}.parquet")
                print(f"  {results[op][engine]}", flush=True)
            base = results[op]["pandas"]["seconds"]
            for engine in ("duckdb", "polars"):
                results[op][engine]["speedup_vs_pandas"] = round(base / results[op][engine]["seconds"], 2)
    Path(args.out).write_text(json.dumps({"machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                                          "measured_at": time.strftime("%Y-%m-%d %H:%M"), "storage": args.storage,
                                          "partitions": len(files), "lines": lines, "results": results}, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
