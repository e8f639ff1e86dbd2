"""The warehouse check: a table unlike UCI's, in PostgreSQL, through an Airflow connection, run by
`make run` as a data engineer would, judged against what its customers really did.

    .venv/bin/python bench/judge_sql.py [--data ../shared/datasets/online_retail.parquet]
        [--day 2031-11-08] [--out bench/results/judged_sql.json]

The table is the real UCI Online Retail data made to look like a warehouse export: other column
names and types (text order and customer references, ``timestamptz`` sale times, ``numeric``
prices, ``integer`` units), customer ids as hashed strings (``cust-<10 hex>``), returns marked
only by a negative quantity (the "C" invoice prefix is dropped), two extra columns the pipeline
must ignore, and every date moved 20 years on (2030-12-01 .. 2031-12-09). It is loaded into the
machine's PostgreSQL (127.0.0.1:5432, schema ``pp_judge``) and read through the Airflow connection
``pp_judge`` (``AIRFLOW_CONN_PP_JUDGE``); predictions also go to the results table
``pp_judge.predictions`` (``PURCHASING_POWER_RESULTS``).

Then ``make run DAY=D SOURCE=sql://pp_judge/pp_judge.sales COLUMN_MAP=...`` runs twice (the second
is a rerun of the same day), with its own storage root (``.bench/judge/data``). Judged:

* coverage: customers with a prediction / customers with a valid sale (quantity > 0, price > 0)
  in the table before D+1; target >= 99 %;
* ROC-AUC of ``p_purchase_30d`` for "bought in [D+1, D+31)" (a day with positive net value),
  against BG/NBD's P(purchase in 30 days) fitted on the same history (the features table's
  ``bgnbd_p_purchase``); target >= BG/NBD - 0.02;
* the results table after the rerun holds exactly one row per predicted customer for D.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "include"))

PG = "postgresql://postgres@127.0.0.1:5432/postgres"
SCHEMA, CONN = "pp_judge", "pp_judge"
SHIFT_YEARS = 20
COLUMN_MAP = {"order_ref": "InvoiceNo", "sku": "StockCode", "item_name": "Description", "units": "Quantity",
              "sold_at": "InvoiceDate", "price_gbp": "UnitPrice", "client_ref": "CustomerID", "shop_country": "Country"}


def warehouse_table(uci):
    """UCI as a warehouse export (see the module doc)."""
    import pandas as pd

    df = pd.DataFrame()
    inv = uci["InvoiceNo"].astype(str)
    df["order_ref"] = inv.str.lstrip("Cc").radd("ord-")  # returns are no longer marked by a prefix
    df["sku"] = uci["StockCode"].astype(str)
    df["item_name"] = uci["Description"]
    df["units"] = uci["Quantity"].astype("int64")
    df["sold_at"] = (pd.to_datetime(uci["InvoiceDate"]) + pd.DateOffset(years=SHIFT_YEARS)).dt.tz_localize("UTC")
    df["price_gbp"] = uci["UnitPrice"].round(2)
    ids = uci["CustomerID"]
    df["client_ref"] = [None if pd.isna(v) else "cust-" + hashlib.sha1(str(int(v)).encode()).hexdigest()[:10] for v in ids]
    df["shop_country"] = uci["Country"].astype(str)
    df["channel"] = "web"  # extra columns the pipeline ignores
    df["row_loaded_at"] = pd.Timestamp("2032-01-01", tz="UTC")
    return df


def load(df) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(SCHEMA)))
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(SCHEMA)))
        conn.execute(sql.SQL(
            "CREATE TABLE {}.sales (order_ref text, sku text, item_name text, units integer, sold_at timestamptz, "
            "price_gbp numeric(12,2), client_ref text, shop_country text, channel text, row_loaded_at timestamptz)"
        ).format(sql.Identifier(SCHEMA)))
        cols = list(df.columns)
        with conn.cursor() as cur, cur.copy(sql.SQL("COPY {}.sales ({}) FROM STDIN").format(
                sql.Identifier(SCHEMA), sql.SQL(", ").join(map(sql.Identifier, cols)))) as cp:
            for row in df.itertuples(index=False, name=None):
                cp.write_row([None if (v is None or v != v) else v for v in row])


def outcomes(df, day: date):
    """Per customer: a valid sale before D+1 (the population), and a purchase day in [D+1, D+31)."""
    import pandas as pd

    d = df.dropna(subset=["client_ref"]).copy()
    d["day"] = d["sold_at"].dt.tz_convert("UTC").dt.date
    d["value"] = d["units"] * d["price_gbp"]
    end = pd.Timestamp(day + timedelta(days=1), tz="UTC")
    past = d[(d["sold_at"] < end) & (d["units"] > 0) & (d["price_gbp"] > 0)]
    future = d[(d["day"] > day) & (d["day"] <= day + timedelta(days=30))]
    per_day = future.groupby(["client_ref", "day"])["value"].sum()
    buyers = set(per_day[per_day > 0].index.get_level_values(0))
    return set(past["client_ref"]), buyers


def make_run(day: date, env: dict[str, str]) -> float:
    cmd = ["make", "run", f"DAY={day}", f"SOURCE=sql://{CONN}/{SCHEMA}.sales", f"COLUMN_MAP={json.dumps(COLUMN_MAP)}"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"make run failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return round(time.perf_counter() - t0, 1)


def main(argv: list[str] | None = None) -> int:
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "datasets" / "online_retail.parquet"))
    ap.add_argument("--day", default="2031-11-08")
    ap.add_argument("--storage", default=str(ROOT / ".bench" / "judge" / "data"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "judged_sql.json"))
    args = ap.parse_args(argv)
    day = date.fromisoformat(args.day)

    import shutil

    shutil.rmtree(args.storage, ignore_errors=True)  # a fresh deployment: the first run fits the anchor's models
    table = warehouse_table(pd.read_parquet(args.data))
    t0 = time.perf_counter()
    load(table)
    load_s = round(time.perf_counter() - t0, 1)
    env = dict(os.environ, **{
        f"AIRFLOW_CONN_{CONN.upper()}": PG.replace("postgresql://", "postgres://"),
        "PURCHASING_POWER_STORAGE": args.storage,
        "PURCHASING_POWER_RESULTS": f"sql://{CONN}/{SCHEMA}.predictions",
    })
    os.environ[f"AIRFLOW_CONN_{CONN.upper()}"] = env[f"AIRFLOW_CONN_{CONN.upper()}"]  # for reading the results table here
    first_s = make_run(day, env)
    rerun_s = make_run(day, env)

    from purchasing_power.schemas import BASELINE_P
    from purchasing_power.settings import Settings
    from purchasing_power.storage import Workspace
    from purchasing_power.warehouse import read_results

    settings = Settings.from_env({"PURCHASING_POWER_STORAGE": args.storage}).with_conf(
        {"source": f"sql://{CONN}/{SCHEMA}.sales", "column_map": COLUMN_MAP})
    preds = pd.read_parquet(Path(args.storage) / "predictions" / f"ds={day}" / "predictions.parquet")
    ws = Workspace.for_settings(settings)
    feats = sorted(Path(ws.per_source.path("features", day)).glob("features-*.parquet"))
    if not feats:
        raise SystemExit(f"no features for {day} under {ws.per_source.path('features', day)}")
    bgnbd = pd.read_parquet(feats[0], columns=["customer_id", BASELINE_P])
    population, buyers = outcomes(table, day)
    scored = preds.merge(bgnbd, on="customer_id", how="left")
    y = scored["customer_id"].isin(buyers).to_numpy()
    result_rows = read_results(f"sql://{CONN}/{SCHEMA}.predictions", day)
    res = {
        "day": day.isoformat(),
        "table": {"rows": int(len(table)), "customers": int(table["client_ref"].nunique()), "load_s": load_s,
                  "id_type": "text", "returns": "negative quantity only", "shifted_years": SHIFT_YEARS},
        "make_run_s": {"first": first_s, "rerun": rerun_s},
        "customers_with_a_sale_before_d1": len(population),
        "customers_predicted": int(len(preds)),
        "coverage": round(len(set(preds["customer_id"]) & population) / len(population), 4),
        "predicted_outside_population": int(len(set(preds["customer_id"]) - population)),
        "buyers_in_30d": int(y.sum()),
        "roc_auc": {"pipeline": round(float(roc_auc_score(y, scored["p_purchase_30d"])), 4),
                    "bgnbd": round(float(roc_auc_score(y, scored[BASELINE_P].fillna(0))), 4)},
        "results_table": {"rows": int(len(result_rows)), "distinct_customers": int(result_rows["customer_id"].nunique()),
                          "customer_id_type": str(result_rows["customer_id"].dtype)},
        "model_version": str(preds["model_version"].iat[0]),
    }
    res["checks"] = {
        "coverage_at_least_99pct": res["coverage"] >= 0.99,
        "roc_auc_no_worse_than_bgnbd_minus_0.02": res["roc_auc"]["pipeline"] >= res["roc_auc"]["bgnbd"] - 0.02,
        "one_row_per_customer_after_rerun": res["results_table"]["rows"] == res["results_table"]["distinct_customers"] == len(preds),
    }
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))
    return 0 if all(res["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
