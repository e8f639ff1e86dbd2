"""Refuse to start the docker-compose stack with placeholder, short or shared secrets.

docker-compose.yaml's ``${VAR:?}`` only checks that a variable is set: ``change-me`` from
.env.example passes it. This script runs first, in the ``secrets-check`` service that PostgreSQL,
Redis and MinIO wait for, and again as the first step of ``airflow-init``; it exits 1, naming every
bad variable and how to fix it, so that nothing starts with a guessable credential. It never prints
a value. Standard library only (it runs before anything else is known to work).

    python deploy/check_secrets.py            # every variable below must be set and sound
    python deploy/check_secrets.py NAME ...   # only these (a service that holds only some)

Rules: no placeholder (``change-me``, ``example``, ...) and no well-known default (``password``,
``admin``, ``minioadmin``, ...); passwords at least 16 characters, the JWT and API signing keys at
least 32; the Fernet key (each of a comma-separated rotation list) decodes to 32 bytes; values that
compose puts into a URL (``user:password@host``) use URL-safe characters only; no two secrets
share a value, and the pipeline's S3 user is not MinIO's root account.
"""

from __future__ import annotations

import base64
import binascii
import os
import sys
from typing import Mapping, Sequence

#: Generators the messages point to (the same as .env.example's).
TOKEN_HINT = 'python -c "import secrets; print(secrets.token_urlsafe(32))"'
FERNET_HINT = 'python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'

#: name -> (kind, minimum length). Kinds: "secret" (a password or key), "url-secret" (a password
#: that compose puts into a connection URL), "fernet", "user" (an account name, not secret).
RULES: dict[str, tuple[str, int]] = {
    "POSTGRES_PASSWORD": ("url-secret", 16),
    "REDIS_PASSWORD": ("url-secret", 16),
    "AIRFLOW_FERNET_KEY": ("fernet", 44),
    "AIRFLOW_JWT_SECRET": ("secret", 32),
    "AIRFLOW_API_SECRET_KEY": ("secret", 32),
    "AIRFLOW_ADMIN_PASSWORD": ("secret", 16),
    "MINIO_ROOT_USER": ("url-user", 3),
    "MINIO_ROOT_PASSWORD": ("url-secret", 16),
    "PP_S3_ACCESS_KEY_ID": ("user", 3),
    "PP_S3_SECRET_ACCESS_KEY": ("secret", 16),
}
#: Substrings that mark a value as a placeholder left from an example file.
PLACEHOLDER_MARKS = ("change-me", "changeme", "change_me", "replace-me", "replaceme", "example", "placeholder")
#: Well-known defaults and guessable words, compared case-insensitively with the whole value.
WEAK_VALUES = frozenset({
    "admin", "administrator", "airflow", "default", "guest", "letmein", "minio", "minioadmin", "pass",
    "passw0rd", "password", "postgres", "qwerty", "redis", "root", "s3cret", "secret", "test", "user",
    "123456", "12345678", "1234567890",
})
#: A secret with fewer distinct characters than this is a repeated pattern, not a random value.
MIN_DISTINCT_CHARS = 8
URL_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _placeholder(value: str) -> str | None:
    """Why ``value`` is a placeholder or a well-known default, or None."""
    low = value.strip().lower()
    if not low:
        return "is empty"
    mark = next((m for m in PLACEHOLDER_MARKS if m in low), None)
    if mark:
        return f"is a placeholder (contains {mark!r})"
    if low in WEAK_VALUES:
        return "is a well-known default or guessable word"
    return None


def _fernet_problem(value: str) -> str | None:
    """Why ``value`` (one key or a comma-separated rotation list) is not a valid Fernet key."""
    for i, key in enumerate(value.split(",")):
        key = key.strip()
        try:
            raw = base64.b64decode(key.encode(), altchars=b"-_", validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 32:
            which = f"key {i + 1} of the list" if "," in value else "it"
            return f"is not a valid Fernet key ({which} must be url-safe base64 of 32 bytes); generate one with {FERNET_HINT}"
        if len(set(raw)) < MIN_DISTINCT_CHARS:
            return f"is a repeated pattern, not a random Fernet key; generate one with {FERNET_HINT}"
    return None


def check_one(name: str, value: str | None) -> str | None:
    """The problem with variable ``name`` holding ``value`` (None: unset), or None when it is sound."""
    kind, minimum = RULES[name]
    if value is None:
        return f"{name} is not set"
    why = _placeholder(value)
    if why:
        hint = FERNET_HINT if kind == "fernet" else ("choose an account name" if kind.endswith("user") else TOKEN_HINT)
        return f"{name} {why}; {hint}"
    if kind == "fernet":
        why = _fernet_problem(value)
        return f"{name} {why}" if why else None
    if len(value) < minimum:
        what = "an account name" if kind.endswith("user") else "a secret"
        return f"{name} is too short for {what} ({len(value)} characters, at least {minimum}); " + (
            "choose a longer name" if kind.endswith("user") else f"generate one with {TOKEN_HINT}")
    if kind.startswith("url-") and not set(value) <= URL_SAFE:
        return (f"{name} has characters that break the connection URL it is put in (allowed: letters, digits, "
                f"'-', '.', '_', '~'); generate one with {TOKEN_HINT}")
    if kind.endswith("secret") and len(set(value)) < MIN_DISTINCT_CHARS:
        return f"{name} is a repeated pattern ({len(set(value))} distinct characters); generate one with {TOKEN_HINT}"
    return None


def problems(env: Mapping[str, str], names: Sequence[str] = tuple(RULES)) -> list[str]:
    """Every problem with the variables ``names`` in ``env``, one sentence each, naming the variable
    (never its value). Empty when all are sound."""
    unknown = [n for n in names if n not in RULES]
    if unknown:
        raise ValueError(f"no rule for {', '.join(unknown)}; known: {', '.join(RULES)}")
    found = {n: p for n in names if (p := check_one(n, env.get(n)))}
    sound = [n for n in names if n not in found]
    out = list(found.values())
    if {"PP_S3_ACCESS_KEY_ID", "MINIO_ROOT_USER"} <= set(sound) and env["PP_S3_ACCESS_KEY_ID"] == env["MINIO_ROOT_USER"]:
        out.append("PP_S3_ACCESS_KEY_ID is MinIO's root account (MINIO_ROOT_USER): the pipeline gets its own user, "
                   "created by minio-init with read/write on its bucket only; choose another name")
    secret_names = [n for n in sound if not RULES[n][0].endswith("user")]
    for i, a in enumerate(secret_names):
        for b in secret_names[i + 1:]:
            if env[a] == env[b]:
                out.append(f"{b} has the same value as {a}: every secret must be generated on its own")
    return out


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] = os.environ) -> int:
    names = list(sys.argv[1:] if argv is None else argv) or list(RULES)
    try:
        found = problems(env, names)
    except ValueError as exc:
        print(f"check_secrets: {exc}", file=sys.stderr)
        return 2
    if found:
        print(f"refusing to start: {len(found)} problem(s) with the secrets in .env "
              "(see .env.example; the values are not shown):", file=sys.stderr)
        for line in found:
            print(f"  - {line}", file=sys.stderr)
        return 1
    print(f"secrets: {len(names)} checked, none is a placeholder, short or shared")
    return 0


if __name__ == "__main__":
    sys.exit(main())
