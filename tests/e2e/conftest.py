"""End-to-end fixtures: a private Airflow home (SQLite metadata DB, migrated once per session)
and a helper that runs the real DAG with ``dag.test()`` in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUNNER = Path(__file__).with_name("dag_runner.py")
SHARED_RETAIL = ROOT.parent / "shared" / "datasets" / "online_retail.parquet"


@dataclass
class AirflowEnv:
    home: Path
    env: dict[str, str]

    def run_day(self, day: date, storage: Path, conf: dict | None = None, timeout: int = 1800,
                extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run the DAG for ``day``: logical date ``day`` 00:00 UTC covers that day (the scheduled
        and backfill runs of ``day`` have the same logical date)."""
        env = dict(self.env, PURCHASING_POWER_STORAGE=str(storage), **(extra_env or {}))
        logical = day.isoformat()
        proc = subprocess.run(
            [sys.executable, str(RUNNER), str(ROOT / "dags"), logical, json.dumps(conf or {})],
            env=env, capture_output=True, text=True, timeout=timeout,
        )
        return proc


@pytest.fixture(scope="session")
def airflow_env(tmp_path_factory) -> AirflowEnv:
    home = tmp_path_factory.mktemp("airflow_home")
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith("AIRFLOW__DATABASE__") and k not in {"AIRFLOW_HOME", "PURCHASING_POWER_SOURCE"}
    }
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "dags"),
        AIRFLOW__CORE__UNIT_TEST_MODE="False",
        PYTHONPATH=os.pathsep.join([str(ROOT / "include"), env.get("PYTHONPATH", "")]),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
    )
    airflow = str(Path(sys.executable).with_name("airflow"))
    migrate = subprocess.run([airflow, "db", "migrate"], env=env, capture_output=True, text=True, timeout=600)
    assert migrate.returncode == 0, migrate.stdout[-3000:] + migrate.stderr[-3000:]
    pool = subprocess.run([airflow, "pools", "set", "gpu", "1", "GPU embedding slots"], env=env, capture_output=True, text=True)
    assert pool.returncode == 0, pool.stderr[-2000:]
    return AirflowEnv(home=home, env=env)


def failure_excerpt(text: str, width: int = 40) -> str:
    """The first task error of a run's log, stack frames dropped (else the log's tail)."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if "Task failed with exception" in line:
            body = [ln for ln in lines[i: i + 400] if not ln.strip().startswith(("File ", "^", "~"))]
            body = [ln for ln in body if ln.strip() and not ln.startswith("    ")]
            return "\n".join(body[:width])
    return "\n".join(lines[-width:])


def assert_succeeded(proc: subprocess.CompletedProcess) -> None:
    tail = failure_excerpt(proc.stdout + "\n" + proc.stderr)
    assert proc.returncode == 0 and "STATE success" in proc.stdout, f"DAG run failed:\n{tail}"


def asset_events(proc: subprocess.CompletedProcess) -> list[dict]:
    """The Asset events ``dag_runner.py`` printed for its run."""
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("ASSET_EVENTS ")]
    assert lines, "the runner printed no ASSET_EVENTS line"
    return json.loads(lines[-1].removeprefix("ASSET_EVENTS "))

