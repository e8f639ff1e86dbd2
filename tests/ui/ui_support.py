"""Fixtures for the UI tests: a storage filled by the real pipeline on a small demo source, a real
``airflow api-server`` with this project's plugins folder, and headless Chromium (Playwright).

Nothing is installed here. The browser is the Debian ``chromium`` package (``apt-get install -y
chromium``; ``PURCHASING_POWER_CHROMIUM`` overrides the path); without it the browser tests are
skipped locally and fail under CI (``CI`` set), so a CI image that lost it does not pass silently.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = ROOT / "plugins"
DOCS = ROOT / "docs"

#: The published days: D_PREV's 30-day horizon closes on DAY, so DAY's report has a realised window.
DAY = date(2024, 6, 30)
D_PREV = date(2024, 5, 31)
#: Small but real: 400 customers over 13 months; training cadence and lookback shortened so that
#: both days share one anchor (one fit) and the whole build takes about a minute. The settings in
#: OVERRIDES are not run conf (conf may carry only the DAG's Params): the build sets them from code.
DEMO = {"n_customers": 400, "start": date(2023, 6, 1), "end": DAY, "seed": 11}
OVERRIDES = {"retrain_every_days": 90, "training_lookback_days": 150, "snapshot_step_days": 28}
BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
USER, PASSWORD = "admin", "ui-test-" + secrets.token_hex(4)
#: A signed-in Airflow user who may not read the Dag: a simple-auth-manager user without a role
#: (every role, viewer included, reads every Dag; a user without one is refused all of them).
OUTSIDER, OUTSIDER_PASSWORD = "outsider", "ui-test-" + secrets.token_hex(4)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chromium_path() -> str:
    path = os.environ.get("PURCHASING_POWER_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.exists(path):
        msg = "headless Chromium not found (Debian: apt-get install -y chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(msg + "; CI must install it")
        pytest.skip(msg)
    return path


@dataclass
class Demo:
    storage: Path
    source: Path
    overrides: dict
    days: tuple[date, ...]
    build_seconds: float
    log: str

    def settings(self):
        from purchasing_power.settings import Settings

        return Settings(storage=str(self.storage), source=str(self.source)).with_overrides(**self.overrides)

    def metrics(self, day: date) -> dict:
        return json.loads((self.storage / "metrics" / f"ds={day}" / "metrics.json").read_text())


# The pipeline runs in a child process: single-threaded BLAS/OpenMP (on a small, busy machine
# oversubscribed threads make the fits several times slower; results do not depend on it).
BUILD = textwrap.dedent(
    """
    import json, sys
    from datetime import date
    from purchasing_power.demo import write_demo_source
    from purchasing_power.pipeline import run_all
    from purchasing_power.report import write_report
    from purchasing_power.storage import Storage, report_path
    from purchasing_power.settings import Settings
    spec = json.loads(sys.argv[1])
    demo = spec["demo"]
    write_demo_source(spec["source"], n_customers=demo["n_customers"], start=date.fromisoformat(demo["start"]),
                      end=date.fromisoformat(demo["end"]), seed=demo["seed"])
    params = {"source": spec["source"]}  # run conf: the DAG's Params only
    overrides = {"storage": spec["storage"], **spec["overrides"]}
    for day in spec["days"]:
        timings = {}  # as in the DAG: a decided anchor skips train/evaluate/gate
        run_all(params, date.fromisoformat(day), overrides=overrides, timings=timings)
        for stage, seconds in timings.items():
            print(f"{day} {stage} {seconds:.1f}s", flush=True)
        path = report_path(Storage.at(spec["storage"]), date.fromisoformat(day))  # publish wrote it
    # a rerun writes the same bytes
    first = open(path, "rb").read()
    write_report(Settings().with_conf(params).with_overrides(**overrides), date.fromisoformat(spec["days"][-1]))
    print("REPORT_RERUN_IDENTICAL", open(path, "rb").read() == first, flush=True)
    """
)


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__") and k not in {"AIRFLOW_HOME", "PURCHASING_POWER_SOURCE"}}
    env.update(
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT / "include"), env.get("PYTHONPATH", "")) if p),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
    )
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory) -> tuple[Path, dict[str, str], subprocess.Popen]:
    """A private AIRFLOW_HOME (SQLite) whose ``airflow db migrate`` runs in the background."""
    home = tmp_path_factory.mktemp("ui_airflow_home")
    (home / "dags").mkdir()
    (home / "passwords.json").write_text(json.dumps({USER: PASSWORD, OUTSIDER: OUTSIDER_PASSWORD}))
    env = child_env(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__UNIT_TEST_MODE="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(home / "dags"),
        AIRFLOW__CORE__PLUGINS_FOLDER=str(PLUGINS),
        AIRFLOW__CORE__AUTH_MANAGER="airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=f"{USER}:admin,{OUTSIDER}:",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(home / "passwords.json"),
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="False",
        AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_hex(32),
        AIRFLOW__API__EXPOSE_CONFIG="False",
    )
    airflow = str(Path(sys.executable).with_name("airflow"))
    migrate = subprocess.Popen([airflow, "db", "migrate"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return home, env, migrate


@pytest.fixture(scope="session")
def demo(tmp_path_factory, airflow_home) -> Demo:
    """Run every pipeline stage for D_PREV and DAY on a 400-customer demo source, then write each
    day's report.json (as publish does). The Airflow DB migrates meanwhile."""
    root = tmp_path_factory.mktemp("ui_demo")
    storage, source = root / "data", root / "source" / "transactions.parquet"
    days = (D_PREV, DAY)
    spec = {
        "source": str(source),
        "storage": str(storage),
        "overrides": OVERRIDES,
        "days": [d.isoformat() for d in days],
        "demo": {k: (v.isoformat() if isinstance(v, date) else v) for k, v in DEMO.items()},
    }
    env = child_env(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", PURCHASING_POWER_EMBED_DEVICE="cpu")
    t = time.time()
    proc = subprocess.run([sys.executable, "-c", BUILD, json.dumps(spec)], env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, f"pipeline failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return Demo(storage=storage, source=source, overrides=OVERRIDES, days=days, build_seconds=time.time() - t, log=proc.stdout)


@dataclass
class ApiServer:
    url: str
    proc: subprocess.Popen
    log: Path

    def token(self, username: str = USER, password: str = PASSWORD) -> str:
        req = urllib.request.Request(
            f"{self.url}/auth/token",
            data=json.dumps({"username": username, "password": password}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.load(resp)["access_token"]


@pytest.fixture(scope="session")
def api_server(airflow_home, demo) -> ApiServer:
    """``airflow api-server`` on 127.0.0.1 with this project's plugins folder and the demo storage."""
    home, env, migrate = airflow_home
    out, _ = migrate.communicate(timeout=600)
    assert migrate.returncode == 0, f"airflow db migrate failed:\n{out[-3000:]}"
    port = free_port()
    log = home / "api-server.log"
    airflow = str(Path(sys.executable).with_name("airflow"))
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [airflow, "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            env=dict(env, PURCHASING_POWER_STORAGE=str(demo.storage)),
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, f"api-server exited with {proc.returncode}:\n{log.read_text()[-4000:]}"
            assert time.time() < deadline, f"api-server not healthy after 180 s:\n{log.read_text()[-4000:]}"
            time.sleep(0.5)
        yield ApiServer(url=url, proc=proc, log=log)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture(scope="session")
def browser():
    path = chromium_path()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=path, args=BROWSER_ARGS)
        try:
            yield b
        finally:
            b.close()
