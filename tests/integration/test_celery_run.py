"""One real run of ``purchasing_power_daily`` under the CeleryExecutor, the production set-up.

Real servers, no mocks: the PostgreSQL on 127.0.0.1:5432 (metadata DB and Celery result
backend, in a dedicated database ``pp_celery_test`` that the test recreates), the Redis on
127.0.0.1:6379 (Celery broker, database 5, flushed first), and as subprocesses of the test an
``airflow api-server`` (tasks reach Airflow through its execution API), ``scheduler``,
``dag-processor`` and one ``airflow celery worker --queues default,gpu``, as in
docker-compose.yaml. The test triggers one run for a small demo source and waits for it, then
checks from the metadata DB and from Celery's own result table that ``embed`` was sent to the
``gpu`` queue (and the gpu pool) while every other task went to ``default``. The features and
score steps are sharded (``PURCHASING_POWER_FEATURE_SHARDS=2``: feature_stats, feature_part and
score_part mapped over two customer shards, each instance a Celery message of its own), and the
run publishes the very predictions an unsharded run of the same day in one process publishes.

The services are what CI has (and this machine kind starts before a session). When either one
does not answer, the test fails and says so; it never skips. Override the endpoints with
``PP_TEST_PG_HOST``/``PP_TEST_PG_PORT``/``PP_TEST_PG_USER`` and ``PP_TEST_REDIS_URL``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DAG_ID = "purchasing_power_daily"
DAY = date(2024, 6, 30)
RUN_ID = "celery_integration_test"
#: Tasks that every run has (the Dag may have more, e.g. embed_plan before the mapped embed).
TASKS = ["extract", "clean", "embed", "features", "train", "evaluate", "gate", "score", "publish"]

PG_HOST = os.environ.get("PP_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("PP_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("PP_TEST_PG_USER", "postgres")
PG_DB = "pp_celery_test"
REDIS_URL = os.environ.get("PP_TEST_REDIS_URL", "redis://127.0.0.1:6379/5")

RUN_TIMEOUT_S = 900  # the run itself takes about 3-4 minutes on 2 cores
STARTUP_TIMEOUT_S = 240


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _require_tcp(host: str, port: int, what: str) -> None:
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as exc:
        pytest.fail(
            f"{what} is not reachable on {host}:{port} ({exc}). This test needs a real {what} there "
            f"(CI and this machine kind start one before the session); start it, or point "
            f"PP_TEST_PG_HOST/PP_TEST_PG_PORT or PP_TEST_REDIS_URL at one.",
            pytrace=False,
        )


def _pg_connect(dbname: str):
    import psycopg

    try:
        return psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=dbname, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        pytest.fail(f"cannot connect to PostgreSQL {PG_USER}@{PG_HOST}:{PG_PORT}/{dbname}: {exc}", pytrace=False)


def _recreate_database() -> str:
    with _pg_connect("postgres") as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {PG_DB}")
    return f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{PG_DB}"


def _flush_redis() -> None:
    import redis

    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=5)
        client.flushdb()
        client.close()
    except redis.RedisError as exc:
        pytest.fail(f"Redis at {REDIS_URL} does not answer: {exc}", pytrace=False)


class Services:
    """The Airflow processes of this test: started in their own process groups, stopped by pid."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.procs: dict[str, subprocess.Popen] = {}

    def airflow(self, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [str(Path(sys.executable).with_name("airflow")), *args],
            env=self.env, capture_output=True, text=True, timeout=timeout,
        )
        assert proc.returncode == 0, f"airflow {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        return proc

    def start(self, name: str, *args: str) -> None:
        log = open(self.logs / f"{name}.log", "wb")
        self.procs[name] = subprocess.Popen(
            [str(Path(sys.executable).with_name("airflow")), *args],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        log.close()

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                pytest.fail(f"airflow {name} exited with {proc.returncode}:\n{self.tail(name)}", pytrace=False)

    def tail(self, name: str, n: int = 60) -> str:
        path = self.logs / f"{name}.log"
        lines = path.read_text(errors="replace").splitlines() if path.exists() else []
        return "\n".join(lines[-n:])

    def stop(self) -> None:
        from localairflow import stop_sessions

        # The worker first: it is the one that may have task processes running.
        stop_sessions([self.procs[n] for n in sorted(self.procs, key=lambda n: n != "celery-worker")])


def _wait(what: str, check, timeout: float, services: Services, poll: float = 2.0):
    from localairflow import AirflowError, wait_until

    try:
        return wait_until(what, check, timeout, poll, alive=services.check_alive,
                          logs=lambda: "\n".join(f"--- {n} ---\n{services.tail(n, 25)}" for n in services.procs))
    except AirflowError as exc:
        pytest.fail(str(exc), pytrace=False)


def _query(sql: str, *params):
    with _pg_connect(PG_DB) as conn:
        return conn.execute(sql, params).fetchall()


def _api_healthy(port: int) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=3) as resp:
            return resp.status == 200
    except OSError:
        return False


def test_dag_run_under_celery_sends_embed_to_the_gpu_queue(tmp_path, monkeypatch):
    t_start = time.monotonic()
    _require_tcp(PG_HOST, PG_PORT, "PostgreSQL")
    redis_host, redis_port = REDIS_URL.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)
    _require_tcp(redis_host, int(redis_port), "Redis")
    db_url = _recreate_database()
    _flush_redis()

    from purchasing_power.demo import write_demo_source

    storage = tmp_path / "data"
    source = tmp_path / "source" / "transactions.parquet"
    write_demo_source(str(source), n_customers=200, start=date(2023, 7, 1), end=DAY, seed=5)

    home = tmp_path / "airflow_home"
    logs = tmp_path / "service_logs"
    home.mkdir()
    logs.mkdir()
    api_port = _free_port()
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "PURCHASING_POWER_")) and k != "AIRFLOW_HOME"
    }
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__EXECUTOR="CeleryExecutor",
        AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT="120",
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{api_port}/execution/",
        AIRFLOW__CORE__FERNET_KEY="",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=db_url,
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC=db_url,  # psycopg 3 does async too (no asyncpg)
        AIRFLOW__CELERY__BROKER_URL=REDIS_URL,
        AIRFLOW__CELERY__RESULT_BACKEND=f"db+{db_url}",
        # result_extended: Celery itself records which queue and worker ran each message.
        AIRFLOW__CELERY__EXTRA_CELERY_CONFIG=json.dumps({"result_extended": True}),
        AIRFLOW__CELERY__WORKER_CONCURRENCY="2",
        AIRFLOW__OPERATORS__DEFAULT_QUEUE="default",
        AIRFLOW__API__PORT=str(api_port),
        AIRFLOW__API__SECRET_KEY="pp-celery-test-only",
        AIRFLOW__API_AUTH__JWT_SECRET="pp-celery-test-only-jwt-secret-0123456789",
        # Only the run this test triggers: no cron run for "yesterday" when the Dag is unpaused.
        AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE="False",
        AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5",
        AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(_free_port()),
        PURCHASING_POWER_STORAGE=str(storage),
        PURCHASING_POWER_EMBED_DEVICE="cpu",
        PURCHASING_POWER_FEATURE_SHARDS="2",
        PYTHONPATH=os.pathsep.join(p for p in [str(ROOT / "include"), os.environ.get("PYTHONPATH", "")] if p),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
    )
    services = Services(env, logs)
    services.airflow("db", "migrate", timeout=600)
    services.airflow("pools", "set", "gpu", "1", "GPU embedding slots")
    try:
        services.start("api-server", "api-server", "--host", "127.0.0.1", "--port", str(api_port), "--workers", "1")
        services.start("scheduler", "scheduler")
        services.start("dag-processor", "dag-processor")
        services.start(
            "celery-worker", "celery", "worker", "--queues", "default,gpu", "--concurrency", "2",
            "--celery-hostname", "pp-test@%h", "--skip-serve-logs",
        )
        _wait("the api-server's health endpoint", lambda: _api_healthy(api_port), STARTUP_TIMEOUT_S, services)
        _wait(
            "the dag-processor to serialize the Dag",
            lambda: _query("select 1 from serialized_dag where dag_id = %s", DAG_ID),
            STARTUP_TIMEOUT_S, services,
        )
        t_ready = time.monotonic()
        services.airflow("dags", "unpause", DAG_ID, "-y")
        conf = {"day": DAY.isoformat(), "source": str(source)}
        services.airflow("dags", "trigger", DAG_ID, "--run-id", RUN_ID, "--conf", json.dumps(conf))

        def finished():
            rows = _query("select state from dag_run where dag_id = %s and run_id = %s", DAG_ID, RUN_ID)
            return rows and rows[0][0] in ("success", "failed") and rows[0][0]

        state = _wait("the Dag run to finish", finished, RUN_TIMEOUT_S, services, poll=5)
        t_run = time.monotonic() - t_ready
        rows = _query(
            "select task_id, map_index, state, queue, pool, hostname from task_instance"
            " where dag_id = %s and run_id = %s order by task_id, map_index",
            DAG_ID, RUN_ID,
        )
        if state != "success":
            failed = sorted({r[0] for r in rows if r[2] != "success"})
            task_logs = sorted((home / "logs").rglob("*.log"))
            excerpt = "\n".join(
                f"--- {p.relative_to(home / 'logs')} ---\n" + "\n".join(p.read_text(errors="replace").splitlines()[-30:])
                for p in task_logs if any(f"task_id={t}/" in str(p) for t in failed)
            )
            pytest.fail(f"Dag run {state}; tasks not successful: {failed}\n{excerpt}\n{services.tail('celery-worker')}", pytrace=False)

        # Every task ran and succeeded; embed (mapped: one task instance per shard) on the gpu
        # queue and pool, every other task on the default queue.
        assert set(TASKS) <= {r[0] for r in rows}, rows
        assert all(r[2] == "success" for r in rows), rows
        embeds = [r for r in rows if r[0] == "embed"]
        assert embeds, "no embed task instance ran (the fresh cache must have had texts to embed)"
        assert {(r[3], r[4]) for r in embeds} == {("gpu", "gpu")}, embeds
        assert {r[3] for r in rows if r[0] != "embed"} == {"default"}, rows
        assert all(r[5] for r in rows), "every task instance records the worker host that ran it"

        # Celery's own record (result_extended): one message per embed shard went through the gpu queue,
        # and the worker started for this test ran every message.
        # (the worker stores a message's result just after the task instance's state, so the last
        # message may still read STARTED when the Dag run is already done: wait for it)
        def results_stored():
            rows = _query("select queue, worker, status from celery_taskmeta")
            return rows if all(st not in ("PENDING", "STARTED", "RETRY") for _, _, st in rows) else None

        meta = _wait("Celery to store every message's result", results_stored, 60, services, poll=1)
        assert len(meta) >= len(TASKS), meta
        assert sum(1 for q, _, _ in meta if q == "gpu") == len(embeds), meta
        assert {q for q, _, _ in meta} == {"gpu", "default"}, meta
        assert all(w and w.startswith("pp-test@") for _, w, _ in meta), meta
        assert {s for _, _, s in meta} == {"SUCCESS"}, meta

        # The worker's log of the embed task says where it ran and what the stage did.
        embed_logs = list((home / "logs").glob(f"dag_id={DAG_ID}/run_id={RUN_ID}/task_id=embed/**/attempt=*.log"))
        assert embed_logs, sorted(str(p) for p in (home / "logs").rglob("*.log"))

        pred = storage / "predictions" / f"ds={DAY}" / "predictions.parquet"
        assert pred.exists()
        import pandas as pd

        assert len(pd.read_parquet(pred)) > 0

        # the sharded features step: two instances of each mapped step, and the predictions of
        # an unsharded run of the same day (in this process, on storage of its own)
        for step in ("feature_stats", "feature_part", "score_part"):
            assert sorted((r[1], r[2]) for r in rows if r[0] == step) == [(0, "success"), (1, "success")], rows
        from purchasing_power.pipeline import run_all

        monkeypatch.setenv("PURCHASING_POWER_STORAGE", str(tmp_path / "unsharded"))
        monkeypatch.setenv("PURCHASING_POWER_EMBED_DEVICE", "cpu")
        monkeypatch.delenv("PURCHASING_POWER_FEATURE_SHARDS", raising=False)
        run_all({"source": str(source)}, DAY)
        alone = tmp_path / "unsharded" / "predictions" / f"ds={DAY}" / "predictions.parquet"
        assert alone.read_bytes() == pred.read_bytes(), "sharded (Celery) and unsharded (one process) predictions differ"
        print(f"\nCelery run: services ready in {t_ready - t_start:.0f} s, Dag run {t_run:.0f} s, "
              f"total {time.monotonic() - t_start:.0f} s")
    finally:
        services.stop()
