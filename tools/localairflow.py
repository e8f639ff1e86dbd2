"""A private Airflow (scheduler, dag-processor, api-server; LocalExecutor) on the embedded
PostgreSQL, driven from Python: what ``make bench-backfill`` and the backfill integration tests
use to run real backfills of this project's Dag and read back what happened. A development
tool, not part of the runtime package (import it with ``tools/`` on ``sys.path``).

Everything lives under one folder (``home``): ``AIRFLOW_HOME``, the PostgreSQL data directory
``home/pg`` (``metadb.py``), the service logs ``home/services/*.log``, the simple auth manager's
passwords file (0600; ``home`` itself is made 0700). The JWT and API signing secrets are random
per :class:`LocalAirflow` (a restart gets new ones). Each service runs in its own session and is stopped (TERM, then KILL) with its
children by :meth:`LocalAirflow.stop`. Backfills, Dag runs and task instances are created and
read through the api-server's REST API (:class:`airflow_rest.AirflowAPI`, ``LocalAirflow.api``).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Callable, Mapping

from airflow_rest import TERMINAL, AirflowAPI, parse_time

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DAG_ID = "purchasing_power_daily"
EXECUTOR = "purchasing_power.executor.PreloadingLocalExecutor"
SERVICES = ("api-server", "scheduler", "dag-processor")
API_USER = "admin"
#: The task supervisor's select() timeout (Airflow's default 5 s). When a task process closes its
#: sockets before it is reaped, the supervisor notices the exit only at that timeout, holding an
#: executor slot ~5 s after about half of all tasks (measured on Airflow 3.3.2); 1 s bounds it.
MIN_HEARTBEAT_INTERVAL = "1"
#: Per-loop scheduler chatter ("Not executing <TI> since the task concurrency ... has been
#: reached" for every waiting task instance, every loop) and the api-server's access log line
#: per request: CPU on a 2-core machine, no information. Warnings and errors still show.
QUIET_LOGGERS = "airflow.jobs.scheduler_job_runner=WARNING http.access=WARNING"


class AirflowError(RuntimeError):
    """A service died or an ``airflow`` command failed; the message carries its output."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children_by_parent() -> dict[int, list[int]]:
    """Every live process id by its parent's (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    return children


def stop_sessions(procs: list[subprocess.Popen], timeout: float = 30.0) -> None:
    """TERM each process's session (it was started with ``start_new_session``: the process and
    its children), in the given order; KILL what still runs after ``timeout``."""
    for proc in procs:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)


def wait_until(what: str, check: Callable[[], Any], timeout: float, poll: float,
               alive: Callable[[], None], logs: Callable[[], str]) -> Any:
    """Poll ``check`` until it returns something truthy (returned); ``alive`` raises when a
    service died; after ``timeout`` s raise :class:`AirflowError` with ``logs()``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        alive()
        time.sleep(poll)
    raise AirflowError(f"timed out after {timeout:.0f} s waiting for {what}\n{logs()}")


def service_env(home: Path, api_port: int, db_url: str, passwords: Path, executor: str = EXECUTOR,
                extra_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of this private Airflow's services and commands: this process's, less any
    Airflow setting, plus the local configuration. The JWT secret (task tokens) and the API secret
    key (sessions) are new random values on every call: nothing signed by another start is valid."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_")) and k != "AIRFLOW_HOME"}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__EXECUTOR=executor,
        AIRFLOW__CORE__DAGS_FOLDER=str(PROJECT_ROOT / "dags"),
        AIRFLOW__CORE__PLUGINS_FOLDER=str(PROJECT_ROOT / "plugins"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT="120",
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{api_port}/execution/",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=db_url,
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC=db_url,
        AIRFLOW__API__PORT=str(api_port),
        AIRFLOW__API__SECRET_KEY=secrets.token_urlsafe(32),
        AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_urlsafe(32),
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=f"{API_USER}:admin",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(passwords),
        AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5",
        AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL=MIN_HEARTBEAT_INTERVAL,
        AIRFLOW__LOGGING__NAMESPACE_LEVELS=QUIET_LOGGERS,
        AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(free_port()),
        PYTHONPATH=os.pathsep.join(p for p in [str(PROJECT_ROOT / "include"), os.environ.get("PYTHONPATH", "")] if p),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        # each task re-imports the DAG file and plugins: let Python cache their bytecode
        PYTHONDONTWRITEBYTECODE="",
    )
    env.update(extra_env or {})
    return env


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to a new file readable by its owner only (0600 from creation, no window)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


@dataclass
class LocalAirflow:
    home: Path
    extra_env: Mapping[str, str] = field(default_factory=dict)
    executor: str = EXECUTOR
    api_port: int = 0
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        import metadb

        self.home = Path(self.home).resolve()
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        (self.home / "services").mkdir(mode=0o700, exist_ok=True)
        self.api_port = self.api_port or free_port()
        url = metadb.start(self.home / "pg")
        passwords = self.home / "passwords.json"
        if passwords.exists():
            passwords.chmod(0o600)
        else:
            write_private(passwords, json.dumps({API_USER: secrets.token_urlsafe(16)}))
        env = service_env(self.home, self.api_port, url, passwords, self.executor, self.extra_env)
        self.env = env
        self.url = url
        self.api = AirflowAPI(f"http://127.0.0.1:{self.api_port}", env=env)

    # -- commands ------------------------------------------------------------------------------
    def airflow(self, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [str(Path(sys.executable).with_name("airflow")), *args],
            env=self.env, capture_output=True, text=True, timeout=timeout,
        )
        if proc.returncode != 0:
            raise AirflowError(f"airflow {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return proc

    def migrate(self, gpu_slots: int = 1) -> None:
        """Migrate the metadata DB and create the ``gpu`` pool (one slot per GPU; without a GPU
        the embed tasks run on CPU and more slots just let them overlap)."""
        self.airflow("db", "migrate")
        self.airflow("pools", "set", "gpu", str(gpu_slots), "GPU embedding slots")

    # -- services ------------------------------------------------------------------------------
    def start(self, timeout: float = 300.0) -> None:
        """Start the services and wait until the api-server answers and the Dag is serialized."""
        for name in SERVICES:
            args = ["api-server", "--host", "127.0.0.1", "--port", str(self.api_port), "--workers", "1"] if name == "api-server" else [name]
            with open(self.home / "services" / f"{name}.log", "wb") as log:
                self.procs[name] = subprocess.Popen(
                    [str(Path(sys.executable).with_name("airflow")), *args],
                    env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                )
        self.wait_for("the api-server's health endpoint", self._healthy, timeout)
        self.wait_for("the Dag to be serialized", lambda: self.api.dag_serialized(DAG_ID), timeout)

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.api_port}/api/v2/monitor/health", timeout=3) as resp:
                return resp.status == 200
        except OSError:
            return False

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise AirflowError(f"airflow {name} exited with {proc.returncode}:\n{self.tail(name)}")

    def tail(self, name: str, n: int = 60) -> str:
        path = self.home / "services" / f"{name}.log"
        lines = path.read_text(errors="replace").splitlines() if path.exists() else []
        return "\n".join(lines[-n:])

    def wait_for(self, what: str, check: Callable[[], Any], timeout: float, poll: float = 1.0) -> Any:
        return wait_until(what, check, timeout, poll, alive=self.check_alive,
                          logs=lambda: "\n".join(f"--- {n} ---\n{self.tail(n, 25)}" for n in self.procs))

    def pids(self) -> list[int]:
        """The services and every process below them (executor workers, task processes)."""
        children = children_by_parent()
        out, todo = [], [p.pid for p in self.procs.values() if p.poll() is None]
        while todo:
            pid = todo.pop()
            out.append(pid)
            todo.extend(children.get(pid, []))
        return out

    def stop(self, metadb: bool = True) -> None:
        """Stop the services (TERM, then KILL after 30 s) and, with ``metadb``, the embedded PostgreSQL."""
        stop_sessions(list(self.procs.values()))
        self.procs.clear()
        if metadb:
            import metadb as pg

            pg.stop(self.home / "pg")

    # -- backfills (REST) -------------------------------------------------------------------------
    def backfill(self, start: date, end: date, *, max_active_runs: int = 1, reprocess: str = "completed", conf: dict | None = None) -> int:
        """Create a backfill of logical dates [start, end] (the Dag unpaused first); returns its id."""
        self.api.unpause(DAG_ID)
        created = self.api.create_backfill(DAG_ID, start.isoformat(), end.isoformat(), reprocess_behavior=reprocess,
                                           max_active_runs=max_active_runs, dag_run_conf=conf)
        return int(created["id"])

    def _runs(self, backfill_id: int) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        backfill = self.api.backfill(backfill_id)
        return backfill, (self.api.backfill_runs(backfill)[0] if backfill else [])

    def run_states(self, backfill_id: int) -> dict[str, str]:
        """Logical day (YYYY-MM-DD) -> state of each run of the backfill."""
        return {f"{parse_time(r['logical_date']):%Y-%m-%d}": str(r["state"]) for r in self._runs(backfill_id)[1]}

    def wait_backfill(self, backfill_id: int, n_runs: int, timeout: float, poll: float = 5.0,
                      on_poll: Callable[[dict[str, str]], None] | None = None) -> dict[str, str]:
        """Wait until the backfill's ``n_runs`` runs are all finished and the scheduler has marked
        the backfill completed (only then can the next one be created); returns day -> state."""
        def done() -> dict[str, str] | None:
            backfill, runs = self._runs(backfill_id)
            states = {f"{parse_time(r['logical_date']):%Y-%m-%d}": str(r["state"]) for r in runs}
            if on_poll:
                on_poll(states)
            if len(states) < n_runs or not all(s in TERMINAL for s in states.values()):
                return None
            return states if backfill and backfill["completed_at"] is not None else None

        return self.wait_for(f"backfill {backfill_id} to finish", done, timeout, poll)

    # -- manual runs (REST) ----------------------------------------------------------------------
    def trigger(self, conf: dict | None = None, *, run_id: str | None = None) -> str:
        """Create a manual Dag run with ``conf`` and no logical date (the Dag unpaused first), as
        the trigger form or ``airflow dags trigger`` does; returns its run id."""
        self.api.unpause(DAG_ID)
        return str(self.api.trigger_dag_run(DAG_ID, conf=conf, run_id=run_id)["dag_run_id"])

    def wait_runs(self, run_ids: list[str], timeout: float, poll: float = 2.0) -> dict[str, str]:
        """Wait until the Dag runs ``run_ids`` have all finished; returns run id -> state."""
        def done() -> dict[str, str] | None:
            states = {r: str(self.api.dag_run(DAG_ID, r)["state"]) for r in run_ids}
            return states if all(s in TERMINAL for s in states.values()) else None

        return self.wait_for(f"Dag runs {', '.join(run_ids)} to finish", done, timeout, poll)

    def task_instances(self, backfill_id: int) -> list[dict[str, Any]]:
        """Every task instance of the backfill's runs, ordered by logical date, task and map index."""
        backfill, runs = self._runs(backfill_id)
        if not backfill or not runs:
            return []
        day_of = {r["dag_run_id"]: f"{parse_time(r['logical_date']):%Y-%m-%d}" for r in runs}
        tis = self.api.task_instances(DAG_ID, logical_date_gte=backfill["from_date"], logical_date_lte=backfill["to_date"])
        rows = [
            {"logical_date": day_of[t["dag_run_id"]], "task_id": t["task_id"], "map_index": t["map_index"],
             "state": str(t["state"]), "try_number": t["try_number"], "start": parse_time(t["start_date"]),
             "end": parse_time(t["end_date"]), "duration": t["duration"]}
            for t in tis if t["dag_run_id"] in day_of
        ]
        return sorted(rows, key=lambda r: (r["logical_date"], r["task_id"], r["map_index"]))
