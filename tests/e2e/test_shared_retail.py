"""The whole DAG on the real UCI Online Retail data (../shared), as of 2011-08-31."""

from __future__ import annotations

import json
from datetime import date

import pytest

from conftest import SHARED_RETAIL, assert_succeeded  # noqa: I001
from test_demo_run import customers_with_purchase

DAY = date(2011, 8, 31)

pytestmark = pytest.mark.skipif(
    not SHARED_RETAIL.exists(), reason=f"the shared UCI Online Retail data set is absent ({SHARED_RETAIL})"
)


def test_real_day_end_to_end(airflow_env, tmp_path):
    import pandas as pd
    from sklearn.metrics import average_precision_score, roc_auc_score

    storage = tmp_path / "data"
    proc = airflow_env.run_day(DAY, storage, {"source": str(SHARED_RETAIL)}, timeout=3000)
    assert_succeeded(proc)

    pred = pd.read_parquet(storage / "predictions" / f"ds={DAY}" / "predictions.parquet")
    raw = pd.read_parquet(SHARED_RETAIL)
    expected = customers_with_purchase(raw, DAY)
    assert len(expected) > 3000
    assert set(pred["customer_id"]) == expected
    assert pred["p_purchase_30d"].between(0, 1).all() and (pred["expected_spend_90d"] >= 0).all()

    # realised: a valid purchase in [D+1, D+31), straight from the source
    ts = pd.to_datetime(raw["InvoiceDate"])
    start = pd.Timestamp(DAY) + pd.Timedelta(days=1)
    window = raw[(ts >= start) & (ts < start + pd.Timedelta(days=30)) & (raw["Quantity"] > 0) & (raw["UnitPrice"] > 0)]
    bought = set(window["CustomerID"].dropna().astype("int64"))
    y = pred["customer_id"].isin(bought).to_numpy()
    roc = roc_auc_score(y, pred["p_purchase_30d"])
    pr = average_precision_score(y, pred["p_purchase_30d"])
    print(f"as of {DAY}: ROC-AUC {roc:.4f} PR-AUC {pr:.4f} base rate {y.mean():.4f} n={len(y)}")
    assert roc > 0.72, roc  # recency alone is ~0.70, BG/NBD ~0.73 on this data
    assert pr > 0.45, pr

    metrics = json.loads((storage / "metrics" / f"ds={DAY}" / "metrics.json").read_text())
    assert metrics["row_counts"]["customers_scored"] == len(pred)
    recal = metrics["recalibration"]  # the purchase calibration follows the latest closed windows
    assert recal["applied"] and recal["snapshots"] == ["2011-08-01", "2011-07-18"], recal
    assert recal["rows"] > 6000 and 0.1 < recal["purchase_rate"] < 0.5
    quarantine = pd.concat(pd.read_parquet(p) for p in (storage / "quarantine").rglob("*.parquet"))
    assert {"missing_customer", "duplicate_line"} <= set(quarantine["reason"])
