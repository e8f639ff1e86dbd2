"""The whole DAG on a small demo source with dag.test(): output contract, the check `make run`
makes that the run really published its day, then a rerun that must leave byte-identical outputs
and no duplicate partitions."""

from __future__ import annotations

import hashlib
from datetime import date
from pathlib import Path

import pytest

from conftest import asset_events, assert_succeeded  # noqa: I001  (tests/e2e/conftest.py)

DAY = date(2024, 6, 30)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def demo_run(airflow_env, tmp_path_factory):
    from purchasing_power.demo import write_demo_source

    root = tmp_path_factory.mktemp("demo")
    source = root / "source" / "transactions.parquet"
    write_demo_source(str(source), n_customers=500, start=date(2023, 1, 1), end=DAY, seed=11)
    storage = root / "data"
    conf = {"source": str(source)}
    from webhook_server import Webhook

    hook = Webhook()  # the alerts webhook: the run's alerts land here
    try:
        first = airflow_env.run_day(DAY, storage, conf, extra_env=hook.env())
    finally:
        hook.close()
    assert_succeeded(first)
    return airflow_env, storage, conf, source, first.stdout + "\n" + first.stderr, first, hook


def customers_with_purchase(raw, day: date) -> set[int]:
    """Customers with a valid sale line before day+1, straight from the source (not via clean)."""
    import pandas as pd

    ts = pd.to_datetime(raw["InvoiceDate"], errors="coerce")
    cust = pd.to_numeric(raw["CustomerID"], errors="coerce")
    ok = (
        (ts < pd.Timestamp(day) + pd.Timedelta(days=1))
        & cust.notna()
        & (pd.to_numeric(raw["Quantity"], errors="coerce") > 0)
        & (pd.to_numeric(raw["UnitPrice"], errors="coerce") > 0)
        & ~raw["InvoiceNo"].astype(str).str.upper().str.startswith(("C", "A"))
        # fees and charges are not purchases (the README's contract lists them)
        & ~raw["StockCode"].astype(str).str.upper().isin({"AMAZONFEE", "BANK CHARGES", "B", "CRUK", "ADJUST", "ADJUST2"})
    )
    return set(cust[ok].astype("int64"))


def test_output_contract(demo_run):
    import pandas as pd

    from purchasing_power.extract import read_source

    _, storage, _, source, *_ = demo_run
    pred_file = storage / "predictions" / f"ds={DAY}" / "predictions.parquet"
    df = pd.read_parquet(pred_file)
    assert list(df.columns) == ["customer_id", "as_of", "p_purchase_30d", "expected_spend_90d", "tier", "model_version"]
    assert str(df["customer_id"].dtype) == "int64"
    assert df["customer_id"].is_unique
    assert (df["as_of"] == DAY).all()
    assert df["p_purchase_30d"].between(0, 1).all()
    assert (df["expected_spend_90d"] >= 0).all()
    assert set(df["tier"]) == {"high", "medium", "low"}
    assert df["model_version"].str.len().gt(0).all()

    # one row per customer with at least one valid purchase before D+1, computed independently
    expected = customers_with_purchase(read_source(str(source), {}), DAY)
    assert len(expected) > 100
    assert set(df["customer_id"]) == expected

    import json

    metrics = json.loads((storage / "metrics" / f"ds={DAY}" / "metrics.json").read_text())
    assert metrics["as_of"] == str(DAY)
    assert metrics["gate"]["status"] in {"promoted", "kept_champion", "baseline"}
    assert metrics["row_counts"]["customers_scored"] == len(df)
    assert metrics["model_version"] == df["model_version"].iat[0]
    assert "bgnbd" in metrics["evaluation"]["purchase"]
    q = list((storage / "quarantine").glob("ds=*/*.parquet"))
    assert q, "the demo source has malformed rows: quarantine must not be empty"
    qdf = pd.concat(pd.read_parquet(p) for p in q)
    assert qdf["reason"].notna().all() and qdf["reason"].nunique() >= 3


def test_rerun_is_byte_identical(demo_run):
    airflow_env, storage, conf, *_ = demo_run
    files = sorted(p for d in ("predictions", "metrics") for p in (storage / d).rglob("*") if p.is_file())
    before = {p: _digest(p) for p in files}
    again = airflow_env.run_day(DAY, storage, conf)
    assert_succeeded(again)
    after_files = sorted(p for d in ("predictions", "metrics") for p in (storage / d).rglob("*") if p.is_file())
    assert after_files == files, "a rerun must overwrite, not add files"
    assert {p: _digest(p) for p in after_files} == before


def test_make_runs_check_accepts_only_a_run_that_published_its_day(demo_run, monkeypatch):
    """`make run` checks the run's log and the day's outputs: a run "successful" without a task
    (what a logical date before the Dag's start date used to give) fails the check."""
    from datetime import timedelta

    from purchasing_power.cli import run_problems

    _, storage, _, _, log_text, *_ = demo_run
    monkeypatch.setenv("PURCHASING_POWER_STORAGE", str(storage))
    assert "logical_date=2024-06-30 00:00:00+00:00" in log_text  # logical date D covers day D
    assert run_problems(DAY, log_text) == []
    assert not (storage / "runs" / f"ds={DAY}" / "lease.json").exists(), "publish releases the day"

    nothing_ran = "\n".join(line for line in log_text.splitlines() if "[DAG TEST]" not in line and "task_id=" not in line)
    assert any("never started the publish task" in p for p in run_problems(DAY, nothing_ran))
    other = DAY - timedelta(days=1)
    problems = run_problems(other, log_text)
    assert f"the publish task of this run did not succeed for {other}" in problems
    assert any(f"predictions/ds={other}" in p for p in problems)


def test_the_asset_event_names_the_day_and_alerts_match_the_gate(demo_run):
    """publish's Asset event carries the day, the file and its rows (what the export Dag reads);
    the run sent no failure alert, and one gate alert exactly when its gate kept the champion."""
    import json

    import pandas as pd

    _, storage, _, _, _, proc, hook = demo_run
    [event] = [e for e in asset_events(proc) if e["asset"] == "purchasing_power_predictions"]
    pred_file = storage / "predictions" / f"ds={DAY}" / "predictions.parquet"
    assert event["task_id"] == "publish"
    assert event["extra"]["day"] == DAY.isoformat() and event["extra"]["path"] == str(pred_file)
    assert event["extra"]["rows"] == len(pd.read_parquet(pred_file))
    assert hook.events("task_failed") == []
    gate = json.loads((storage / "runs" / f"ds={DAY}" / "gate.json").read_text())
    kept = hook.events("champion_kept")
    assert len(kept) == (0 if gate["promoted"] else 1), (gate["status"], kept)
    for msg in kept:
        assert msg["anchor"] == gate["anchor"] and msg["task_id"] == "gate"


def test_a_task_that_fails_for_good_sends_one_alert(airflow_env, tmp_path, webhook):
    """extract on a missing source fails without retry: one alert, naming the task and the file."""
    missing = tmp_path / "nowhere" / "transactions.parquet"
    proc = airflow_env.run_day(DAY, tmp_path / "data", {"source": str(missing)}, extra_env=webhook.env())
    assert "STATE failed" in proc.stdout, proc.stdout[-2000:]
    [msg] = webhook.events("task_failed")
    assert msg["task_id"] == "extract" and str(missing) in msg["error"], msg
    assert len(webhook.received) == 1
