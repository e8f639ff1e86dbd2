"""deploy/check_secrets.py: the docker-compose stack refuses placeholder, short and shared secrets,
naming each bad variable and never printing a value."""

from __future__ import annotations

import base64
import importlib.util
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "check_secrets.py"


def _load():
    spec = importlib.util.spec_from_file_location("check_secrets", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cs = _load()


def _fernet() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def good_env() -> dict[str, str]:
    """A sound set: what an operator gets with the generators .env.example names."""
    env = {name: secrets.token_urlsafe(32) for name in cs.RULES}
    env.update(AIRFLOW_FERNET_KEY=_fernet(), MINIO_ROOT_USER="pp-root", PP_S3_ACCESS_KEY_ID="purchasing-power")
    return env


def _run(env: dict[str, str], *names: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in cs.RULES}
    return subprocess.run([sys.executable, str(SCRIPT), *names], env={**base, **env}, capture_output=True, text=True, timeout=60)


def test_a_sound_set_passes():
    env = good_env()
    assert cs.problems(env) == []
    assert cs.main([], env) == 0
    out = _run(env)
    assert out.returncode == 0, out.stderr
    assert "10 checked" in out.stdout


SECRET_NAMES = [n for n, (kind, _) in cs.RULES.items() if kind in ("secret", "url-secret")]
BAD_SECRETS = ["change-me", "change-me-at-least-8-chars", "CHANGEME", "changeme-please-0123456789abcdef",
               "example", "an-example-secret-0123456789abcdef", "password", "admin", "minioadmin", "", "   ",
               "Sh0rt-but-rand", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"]


@pytest.mark.parametrize("name", SECRET_NAMES)
@pytest.mark.parametrize("value", BAD_SECRETS)
def test_each_bad_secret_is_refused_naming_its_variable(name, value):
    env = good_env()
    env[name] = value
    found = cs.problems(env)
    assert len(found) == 1 and found[0].startswith(f"{name} "), found


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_a_value_is_never_echoed(name):
    env = good_env()
    env[name] = value = secrets.token_urlsafe(8)  # short: refused
    found = cs.problems(env)
    assert found and value not in " ".join(found)
    out = _run(env)
    assert out.returncode == 1 and value not in out.stderr + out.stdout


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_minimum_lengths(name):
    env = good_env()
    minimum = cs.RULES[name][1]
    env[name] = secrets.token_urlsafe(64)[: minimum - 1]
    assert cs.problems(env)[0].startswith(f"{name} is too short"), name
    env[name] = secrets.token_urlsafe(64)[:minimum]
    assert cs.problems(env) == []
    assert cs.RULES["AIRFLOW_JWT_SECRET"][1] >= 32 and minimum >= 16


@pytest.mark.parametrize("value, why", [
    ("change-me", "placeholder"),
    ("", "empty"),
    ("not-base64-at-all!!", "not a valid Fernet key"),
    (base64.urlsafe_b64encode(os.urandom(16)).decode(), "not a valid Fernet key"),  # decodes to 16 bytes
    (base64.urlsafe_b64encode(os.urandom(48)).decode(), "not a valid Fernet key"),
    (base64.urlsafe_b64encode(bytes(32)).decode(), "repeated pattern"),  # 32 zero bytes
    (f"{base64.urlsafe_b64encode(os.urandom(32)).decode()},{base64.urlsafe_b64encode(os.urandom(31)).decode()}", "key 2 of the list"),
])
def test_the_fernet_key_must_decode_to_32_bytes(value, why):
    env = good_env()
    env["AIRFLOW_FERNET_KEY"] = value
    found = cs.problems(env)
    assert len(found) == 1 and found[0].startswith("AIRFLOW_FERNET_KEY ") and why in found[0], found


def test_a_fernet_rotation_list_of_valid_keys_passes():
    env = good_env()
    env["AIRFLOW_FERNET_KEY"] = f"{_fernet()},{_fernet()}"
    assert cs.problems(env) == []


@pytest.mark.parametrize("name", ["MINIO_ROOT_USER", "PP_S3_ACCESS_KEY_ID"])
@pytest.mark.parametrize("value", ["change-me", "admin", "minioadmin", "", "ab"])
def test_placeholder_account_names_are_refused(name, value):
    env = good_env()
    env[name] = value
    found = cs.problems(env)
    assert len(found) == 1 and found[0].startswith(f"{name} "), found


@pytest.mark.parametrize("name", ["POSTGRES_PASSWORD", "REDIS_PASSWORD", "MINIO_ROOT_PASSWORD"])
def test_passwords_put_into_urls_must_be_url_safe(name):
    env = good_env()
    env[name] = secrets.token_urlsafe(24) + "@/:"
    found = cs.problems(env)
    assert len(found) == 1 and found[0].startswith(f"{name} has characters that break"), found


def test_the_pipeline_is_not_minio_root_and_secrets_are_not_shared():
    env = good_env()
    env["PP_S3_ACCESS_KEY_ID"] = env["MINIO_ROOT_USER"]
    found = cs.problems(env)
    assert len(found) == 1 and found[0].startswith("PP_S3_ACCESS_KEY_ID is MinIO's root account"), found

    env = good_env()
    env["AIRFLOW_API_SECRET_KEY"] = env["AIRFLOW_JWT_SECRET"]
    found = cs.problems(env)
    assert found == ["AIRFLOW_API_SECRET_KEY has the same value as AIRFLOW_JWT_SECRET: every secret must be generated on its own"]


def test_a_missing_variable_is_named():
    env = good_env()
    del env["REDIS_PASSWORD"]
    assert cs.problems(env) == ["REDIS_PASSWORD is not set"]


def test_only_the_named_variables_are_checked_and_unknown_names_are_an_error():
    env = good_env()
    env["MINIO_ROOT_PASSWORD"] = "change-me"
    assert cs.problems(env, ["AIRFLOW_JWT_SECRET", "PP_S3_SECRET_ACCESS_KEY"]) == []
    with pytest.raises(ValueError, match="no rule for NOT_A_SECRET"):
        cs.problems(env, ["NOT_A_SECRET"])
    assert _run(env, "NOT_A_SECRET").returncode == 2


def test_the_cli_refuses_env_example_naming_every_variable_and_no_value():
    """.env.example as shipped (every secret a ``change-me``) must not start anything."""
    example = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            example[key] = value
    out = _run({k: v for k, v in example.items() if k in cs.RULES})
    assert out.returncode == 1 and out.stdout == ""
    assert "refusing to start" in out.stderr
    for name in cs.RULES:  # every secret, and MinIO's root account name; the pipeline's user name is a real one
        assert (f"  - {name} " in out.stderr) == (name != "PP_S3_ACCESS_KEY_ID"), name
    assert "change-me-at-least-8-chars" not in out.stderr
