"""A private Airflow (scheduler, dag-processor, api-server; LocalExecutor) on the embedded
PostgreSQL, driven from Python: what ``make bench-backfill`` and the backfill integration tests
use to run real backfills of this project's Dag and read back what happened.

Everything lives under one folder (``home``): ``AIRFLOW_HOME``, the PostgreSQL data directory
``home/pg``, the service logs ``home/services/*.log``. Each service runs in its own session and
is stopped (TERM, then KILL) with its children by :meth:`LocalAirflow.stop`.
"""

from __future__ import annotations

import json
import os
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

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DAG_ID = "purchasing_power_daily"
EXECUTOR = "purchasing_power.executor.PreloadingLocalExecutor"
SERVICES = ("api-server", "scheduler", "dag-processor")
TERMINAL = ("success", "failed")
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


@dataclass
class LocalAirflow:
    home: Path
    extra_env: Mapping[str, str] = field(default_factory=dict)
    executor: str = EXECUTOR
    api_port: int = 0
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from purchasing_power import metadb

        self.home = Path(self.home).resolve()
        (self.home / "services").mkdir(parents=True, exist_ok=True)
        self.api_port = self.api_port or free_port()
        url = metadb.start(self.home / "pg")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_")) and k != "AIRFLOW_HOME"}
        env.update(
            AIRFLOW_HOME=str(self.home),
            AIRFLOW__CORE__EXECUTOR=self.executor,
            AIRFLOW__CORE__DAGS_FOLDER=str(PROJECT_ROOT / "dags"),
            AIRFLOW__CORE__PLUGINS_FOLDER=str(PROJECT_ROOT / "plugins"),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT="120",
            AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{self.api_port}/execution/",
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=url,
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC=url,
            AIRFLOW__API__PORT=str(self.api_port),
            AIRFLOW__API__SECRET_KEY="purchasing-power-local-only",
            AIRFLOW__API_AUTH__JWT_SECRET="purchasing-power-local-only-jwt-secret-0123456789",
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
        env.update(self.extra_env)
        self.env = env
        self.url = url

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
        self.wait_for("the Dag to be serialized", lambda: self.query("select 1 from serialized_dag where dag_id = :d", d=DAG_ID), timeout)

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
        if getattr(self, "_engine", None) is not None:
            self._engine.dispose()
            self._engine = None
        if metadb:
            from purchasing_power import metadb as pg

            pg.stop(self.home / "pg")

    # -- metadata DB ---------------------------------------------------------------------------
    def query(self, sql: str, **params: Any) -> list[Any]:
        from sqlalchemy import create_engine, text
        from sqlalchemy.pool import NullPool

        engine = getattr(self, "_engine", None)
        if engine is None:
            engine = self._engine = create_engine(self.url, poolclass=NullPool)
        with engine.connect() as conn:
            return list(conn.execute(text(sql), params).all())

    # -- backfills -----------------------------------------------------------------------------
    def backfill(self, start: date, end: date, *, max_active_runs: int = 1, reprocess: str = "completed", conf: dict | None = None) -> int:
        """Create a backfill of logical dates [start, end] (the Dag unpaused first); returns its id."""
        self.airflow("dags", "unpause", DAG_ID, "-y")
        args = ["backfill", "create", "--dag-id", DAG_ID, "--from-date", start.isoformat(), "--to-date", end.isoformat(),
                "--reprocess-behavior", reprocess, "--max-active-runs", str(max_active_runs)]
        if conf:
            args += ["--dag-run-conf", json.dumps(conf)]
        self.airflow(*args)
        rows = self.query("select max(id) from backfill where dag_id = :d", d=DAG_ID)
        return int(rows[0][0])

    def run_states(self, backfill_id: int) -> dict[str, str]:
        rows = self.query("select logical_date, state from dag_run where backfill_id = :i order by logical_date", i=backfill_id)
        return {f"{r[0]:%Y-%m-%d}": str(r[1]) for r in rows}

    def wait_backfill(self, backfill_id: int, n_runs: int, timeout: float, poll: float = 5.0,
                      on_poll: Callable[[dict[str, str]], None] | None = None) -> dict[str, str]:
        """Wait until the backfill's ``n_runs`` runs are all finished and the scheduler has marked
        the backfill completed (only then can the next one be created); returns day -> state."""
        def done() -> dict[str, str] | None:
            states = self.run_states(backfill_id)
            if on_poll:
                on_poll(states)
            if len(states) < n_runs or not all(s in TERMINAL for s in states.values()):
                return None
            completed = self.query("select completed_at from backfill where id = :i", i=backfill_id)
            return states if completed and completed[0][0] is not None else None

        return self.wait_for(f"backfill {backfill_id} to finish", done, timeout, poll)

    def task_instances(self, backfill_id: int) -> list[dict[str, Any]]:
        rows = self.query(
            "select dr.logical_date, ti.task_id, ti.map_index, ti.state, ti.try_number, ti.start_date, ti.end_date, "
            "ti.duration from task_instance ti join dag_run dr on dr.dag_id = ti.dag_id and dr.run_id = ti.run_id "
            "where dr.backfill_id = :i order by dr.logical_date, ti.task_id, ti.map_index",
            i=backfill_id,
        )
        return [
            {"logical_date": f"{r[0]:%Y-%m-%d}", "task_id": r[1], "map_index": r[2], "state": str(r[3]), "try_number": r[4],
             "start": r[5], "end": r[6], "duration": r[7]}
            for r in rows
        ]
