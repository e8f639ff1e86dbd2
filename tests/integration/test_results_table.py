"""Predictions to a database table through an Airflow connection, against the machine's
PostgreSQL (127.0.0.1:5432, trust auth; .ci/run starts it when it is not running)."""

from __future__ import annotations

import uuid
from datetime import date

import numpy as np
import pandas as pd
import pytest

psycopg = pytest.importorskip("psycopg")

PG = "postgresql://postgres@127.0.0.1:5432/postgres"
DAY = date(2024, 12, 31)


@pytest.fixture()
def conn_env(monkeypatch):
    """A fresh schema on the local PostgreSQL, reachable as Airflow connection ``pp_results``."""
    try:
        with psycopg.connect(PG, connect_timeout=5):
            pass
    except psycopg.OperationalError as exc:  # pragma: no cover - a machine without the service
        pytest.fail(f"PostgreSQL on 127.0.0.1:5432 is required for this test: {exc}")
    schema = f"pp_test_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("AIRFLOW_CONN_PP_RESULTS", "postgres://postgres@127.0.0.1:5432/postgres")
    yield f"sql://pp_results/{schema}.predictions"
    with psycopg.connect(PG, autocommit=True) as c:
        c.execute(psycopg.sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(psycopg.sql.Identifier(schema)))


def frame(ids, day=DAY, p=0.5) -> pd.DataFrame:
    n = len(ids)
    return pd.DataFrame({
        "customer_id": ids, "as_of": [day] * n, "p_purchase_30d": np.full(n, p), "expected_spend_90d": np.arange(n, dtype=float),
        "tier": ["high"] + ["low"] * (n - 1), "model_version": "pp-test",
    })


def test_a_rerun_of_a_day_replaces_its_rows_and_keeps_other_days(conn_env):
    from purchasing_power.warehouse import read_results, write_results

    first = write_results(conn_env, frame(np.array([1, 2, 3], dtype=np.int64)), DAY)
    assert first["rows"] == 3 and first["replaced_rows"] == 0
    write_results(conn_env, frame(np.array([1, 2], dtype=np.int64), day=date(2024, 12, 30)), date(2024, 12, 30))
    again = write_results(conn_env, frame(np.array([1, 2, 3], dtype=np.int64), p=0.7), DAY)
    assert again["replaced_rows"] == 3
    got = read_results(conn_env, DAY)
    assert got["customer_id"].tolist() == [1, 2, 3] and (got["p_purchase_30d"] == 0.7).all()
    assert len(read_results(conn_env)) == 5  # one row per (as_of, customer): no duplicates
    with psycopg.connect(PG) as c:  # typed columns
        types = dict(c.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = %s AND table_name = 'predictions'",
            (conn_env.split("/")[-1].split(".")[0],)).fetchall())
    assert types["customer_id"] == "bigint" and types["as_of"] == "date" and types["p_purchase_30d"] == "double precision"


def test_text_ids_make_a_text_column_and_a_failed_write_leaves_the_day_as_it_was(conn_env):
    from purchasing_power.warehouse import read_results, write_results

    ids = np.array(["C-00123", "9f86d081", "a-b"], dtype=object)
    write_results(conn_env, frame(ids), DAY)
    bad = frame(np.array(["C-00123", "C-00123"], dtype=object))  # duplicate key: the transaction rolls back
    with pytest.raises(psycopg.errors.UniqueViolation):
        write_results(conn_env, bad, DAY)
    assert sorted(read_results(conn_env, DAY)["customer_id"]) == sorted(ids.tolist())


def test_table_uris_are_validated_and_identifiers_are_never_spliced():
    from purchasing_power.warehouse import TableRef

    assert TableRef.parse("sql://wh/analytics.pp") == TableRef("wh", "analytics", "pp")
    assert TableRef.parse("sql://wh/pp").schema == "public"
    for bad in ("sql://wh/a.b; DROP TABLE x", "sql://wh/a.b.c", "postgres://wh/a.b", "sql://wh/"):
        with pytest.raises(ValueError, match="not a table URI"):
            TableRef.parse(bad)


def test_publish_writes_the_day_to_the_results_table_once_per_customer(conn_env, tmp_path, monkeypatch):
    """The real pipeline on a small demo source with a results table: every published
    prediction is in the table, and a rerun of the day leaves one row per customer."""
    from purchasing_power.demo import write_demo_source
    from purchasing_power.pipeline import run_all
    from purchasing_power.warehouse import read_results

    source = write_demo_source(str(tmp_path / "src.parquet"), n_customers=120, start=date(2023, 6, 1), end=date(2024, 3, 31), seed=3)
    monkeypatch.setenv("PURCHASING_POWER_STORAGE", str(tmp_path / "data"))
    day = date(2024, 3, 15)
    for _ in range(2):
        run_all({"source": source}, day, overrides={"use_text": False, "results": conn_env})
    published = pd.read_parquet(tmp_path / "data" / "predictions" / f"ds={day}" / "predictions.parquet")
    table = read_results(conn_env, day)
    assert len(table) == len(published) > 50
    assert table["customer_id"].tolist() == sorted(published["customer_id"].tolist())
    merged = table.merge(published, on="customer_id", suffixes=("_db", ""))
    assert np.allclose(merged["p_purchase_30d_db"], merged["p_purchase_30d"]) and (merged["tier_db"] == merged["tier"]).all()

    # the Asset event publish emits names the day, the file and its rows; the export Dag's stage
    # writes that day's high tier to a file and (tier_export) a table, once per customer on a rerun
    import json

    from purchasing_power.pipeline import run_export_tier

    report = json.loads((tmp_path / "data" / "runs" / f"ds={day}" / "publish.json").read_text())
    extra = report["asset_extra"]
    assert extra["day"] == day.isoformat() and extra["rows"] == len(published)
    assert extra["path"] == str(tmp_path / "data" / "predictions" / f"ds={day}" / "predictions.parquet")
    high_table = conn_env.replace(".predictions", ".high_tier")
    for _ in range(2):
        path = run_export_tier(extra, "high", overrides={"tier_export": high_table})
    exported = json.loads(open(path).read())
    high = published[published["tier"] == "high"]
    assert exported["rows"] == len(high) > 0
    files = pd.read_parquet(exported["path"])
    assert sorted(files["customer_id"]) == sorted(high["customer_id"]) and set(files["tier"]) == {"high"}
    in_table = read_results(high_table, day)
    assert sorted(in_table["customer_id"]) == sorted(high["customer_id"])
