"""A small client of Airflow's public REST API (``/api/v2``) for the dev tools, and
:func:`backfill_wait` (``make backfill-wait``, ``tools/metadb.py backfill-wait``).

It reads and drives a running api-server (one runs whenever a backfill runs: ``make ui``,
``make airflow-services``/``make backfill``, :class:`localairflow.LocalAirflow`): Dags, backfills,
Dag runs and task instances. Standard library only (:func:`backfill_check` also reads the
project's ``purchasing_power.calendar``). As a script: ``backfill-check`` (``make backfill``).

Authentication is the simple auth manager's (the one this project's Airflow uses): ``POST
/auth/token`` with a user and its password, by default from the passwords file the api-server
keeps (``AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE``, else
``$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated``; user ``admin`` when present, else
the first), or ``GET /auth/token`` when the server runs with ``simple_auth_manager_all_admins``.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping, TextIO
from urllib.parse import quote, urlencode

TERMINAL = ("success", "failed")
#: Rows per request: the api-server's default ``[api] maximum_page_limit`` (larger limits are cut to it).
PAGE = 100


class ApiError(RuntimeError):
    """The api-server answered with an HTTP error; ``status`` is its code."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def parse_time(value: str | None) -> datetime | None:
    """An API timestamp (ISO 8601, ``Z`` or an offset) as an aware datetime; None stays None."""
    return datetime.fromisoformat(value) if value else None


def passwords_file(env: Mapping[str, str] = os.environ) -> Path:
    """Where the simple auth manager keeps its users' passwords (as the api-server resolves it)."""
    configured = env.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE")
    if configured:
        return Path(configured).expanduser()
    home = Path(env.get("AIRFLOW_HOME") or Path.home() / "airflow").expanduser()
    return home / "simple_auth_manager_passwords.json.generated"


def credentials(env: Mapping[str, str] = os.environ) -> tuple[str, str] | None:
    """(user, password) from the passwords file: ``admin`` when present, else the first user;
    None when there is no readable file."""
    try:
        passwords = json.loads(passwords_file(env).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(passwords, dict) or not passwords:
        return None
    user = "admin" if "admin" in passwords else next(iter(passwords))
    return user, str(passwords[user])


@dataclass
class AirflowAPI:
    """``base_url`` is the api-server's root (``http://127.0.0.1:8080``). Without ``username``
    the first request logs in with :func:`credentials` of ``env``."""

    base_url: str
    username: str | None = None
    password: str | None = None
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    timeout: float = 30.0
    _token: str | None = field(default=None, repr=False)

    # -- transport ---------------------------------------------------------------------------------
    def _send(self, method: str, url: str, body: Any = None, token: str | None = None) -> Any:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if token:
            headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:2000]
            raise ApiError(exc.code, f"{method} {url}: HTTP {exc.code}: {detail}") from None
        return json.loads(raw) if raw else None

    def login(self) -> str:
        """A fresh access token (kept for the following requests)."""
        user, password = self.username, self.password
        if user is None:
            found = credentials(self.env)
            if found:
                user, password = found
        if user is not None:
            reply = self._send("POST", f"{self.base_url.rstrip('/')}/auth/token",
                               {"username": user, "password": password or ""})
        else:
            try:
                reply = self._send("GET", f"{self.base_url.rstrip('/')}/auth/token")
            except ApiError as exc:
                raise ApiError(exc.status, f"no credentials for {self.base_url}: no passwords file at "
                               f"{passwords_file(self.env)} and the server wants a login ({exc})") from None
        self._token = reply["access_token"]
        return self._token

    def request(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        """One API call (``path`` from the root, e.g. ``/api/v2/backfills``); JSON in and out.
        Logs in first, and again once when the token was refused (it expired)."""
        query = {k: v for k, v in params.items() if v is not None}
        url = f"{self.base_url.rstrip('/')}{path}" + (f"?{urlencode(query, doseq=True)}" if query else "")
        token = self._token or self.login()
        try:
            return self._send(method, url, body, token)
        except ApiError as exc:
            if exc.status != 401:
                raise
        return self._send(method, url, body, self.login())

    def pages(self, path: str, key: str, **params: Any) -> list[dict[str, Any]]:
        """Every row of a paginated collection (``key``: its list's name), ``PAGE`` at a time."""
        rows: list[dict[str, Any]] = []
        while True:
            reply = self.request("GET", path, limit=PAGE, offset=len(rows), **params)
            page = list(reply[key])
            rows.extend(page)
            total = reply.get("total_entries")
            if not page or (total is not None and len(rows) >= total):
                return rows

    # -- Dags ----------------------------------------------------------------------------------------
    def dag_serialized(self, dag_id: str) -> bool:
        """True once the dag-processor has stored the Dag (its details come from the serialized Dag)."""
        try:
            self.request("GET", f"/api/v2/dags/{quote(dag_id, safe='')}/details")
            return True
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise

    def unpause(self, dag_id: str) -> None:
        self.request("PATCH", f"/api/v2/dags/{quote(dag_id, safe='')}", {"is_paused": False})

    def param_defaults(self, dag_id: str) -> dict[str, Any]:
        """The Dag's Params and their default values (what a run without that conf key gets)."""
        params = self.request("GET", f"/api/v2/dags/{quote(dag_id, safe='')}/details").get("params") or {}
        return {k: (v.get("value") if isinstance(v, dict) else v) for k, v in params.items()}

    # -- Dag runs ------------------------------------------------------------------------------------
    def dag_runs(self, dag_id: str, from_date: str, to_date: str) -> list[dict[str, Any]]:
        """The Dag's runs with a logical date in [from_date, to_date] (ISO dates, UTC), conf included."""
        return self.pages(f"/api/v2/dags/{quote(dag_id, safe='')}/dagRuns", "dag_runs",
                          logical_date_gte=f"{from_date}T00:00:00Z", logical_date_lte=f"{to_date}T00:00:00Z",
                          order_by="logical_date")

    def trigger_dag_run(self, dag_id: str, *, conf: Mapping[str, Any] | None = None, logical_date: str | None = None,
                        run_id: str | None = None) -> dict[str, Any]:
        """Create a manual Dag run (``POST /api/v2/dags/{dag_id}/dagRuns``) with ``conf``; without
        ``logical_date`` (ISO timestamp, UTC) it has none, so several can exist side by side.
        ``run_id``: its id (default: Airflow's). Returns the run."""
        body: dict[str, Any] = {"logical_date": logical_date, "conf": dict(conf or {})}
        if run_id is not None:
            body["dag_run_id"] = run_id
        return self.request("POST", f"/api/v2/dags/{quote(dag_id, safe='')}/dagRuns", body)

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        """One Dag run (state, conf, dates)."""
        return self.request("GET", f"/api/v2/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id, safe='')}")

    def delete_dag_run(self, dag_id: str, run_id: str) -> None:
        """Delete a Dag run and its task instances (``DELETE /api/v2/dags/{dag_id}/dagRuns/{run_id}``)."""
        self.request("DELETE", f"/api/v2/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id, safe='')}")

    # -- backfills -----------------------------------------------------------------------------------
    def create_backfill(self, dag_id: str, from_date: str, to_date: str, *, reprocess_behavior: str = "none",
                        max_active_runs: int = 10, dag_run_conf: dict | None = None) -> dict[str, Any]:
        """Create a backfill of logical dates [from_date, to_date] (ISO dates, UTC); returns it."""
        body = {"dag_id": dag_id, "from_date": f"{from_date}T00:00:00Z", "to_date": f"{to_date}T00:00:00Z",
                "reprocess_behavior": reprocess_behavior, "max_active_runs": max_active_runs}
        if dag_run_conf is not None:
            body["dag_run_conf"] = dag_run_conf
        return self.request("POST", "/api/v2/backfills", body)

    def backfill(self, backfill_id: int) -> dict[str, Any] | None:
        try:
            return self.request("GET", f"/api/v2/backfills/{int(backfill_id)}")
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def newest_backfill(self, dag_id: str) -> dict[str, Any] | None:
        reply = self.request("GET", "/api/v2/backfills", dag_id=dag_id, order_by="-id", limit=1)
        found = list(reply["backfills"])
        return found[0] if found else None

    def backfill_runs(self, backfill: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(the backfill's Dag runs, the runs in its date range it left alone), by logical date.

        The API does not expose a run's ``backfill_id``; a backfill's runs are those it created or
        reprocessed, and both kinds are of run type ``backfill`` and queued no earlier than the
        backfill was created (creating a queued run and clearing one both set ``queued_at``).
        Other runs with a logical date in its range are runs it skipped (reprocess behaviour), or
        a later backfill's.
        """
        runs = self.pages(
            f"/api/v2/dags/{quote(backfill['dag_id'], safe='')}/dagRuns", "dag_runs",
            logical_date_gte=backfill["from_date"], logical_date_lte=backfill["to_date"], order_by="id",
        )
        created = parse_time(backfill["created_at"])
        own, left = [], []
        for run in sorted(runs, key=lambda r: r["logical_date"] or ""):
            queued = parse_time(run.get("queued_at"))
            mine = run.get("run_type") == "backfill" and queued is not None and created is not None and queued >= created
            (own if mine else left).append(run)
        return own, left

    # -- task instances ------------------------------------------------------------------------------
    def task_instances(self, dag_id: str, run_id: str = "~", **filters: Any) -> list[dict[str, Any]]:
        """Task instances of one run (``~``: all runs), filtered as the API allows (``task_id``,
        ``state``, ``logical_date_gte``, ...)."""
        path = f"/api/v2/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id, safe='~')}/taskInstances"
        return self.pages(path, "task_instances", order_by="id", **filters)


def backfill_wait(api: AirflowAPI, dag_id: str, backfill_id: int | None = None, poll: float = 10.0,
                  timeout: float = 0.0, out: TextIO = sys.stdout) -> int:
    """Poll the api-server until backfill ``backfill_id`` (default: the Dag's newest) has no
    unfinished runs; print progress and a per-state summary. Returns 0 if every run succeeded,
    1 if any failed, 2 if there is no such backfill, 124 on timeout."""
    bf = api.newest_backfill(dag_id) if backfill_id is None else api.backfill(backfill_id)
    if bf is None or bf["dag_id"] != dag_id:
        print(f"no backfill found for {dag_id}", file=out)
        return 2
    backfill_id = int(bf["id"])
    print(f"backfill {backfill_id} of {dag_id}: {parse_time(bf['from_date']):%Y-%m-%d} .. "
          f"{parse_time(bf['to_date']):%Y-%m-%d}", file=out, flush=True)
    if bf["is_paused"]:
        print("  note: this backfill is paused; unpause it to let its runs start", file=out, flush=True)
    started, last = time.monotonic(), None
    while True:
        try:
            bf = api.backfill(backfill_id) or bf
            runs, left = api.backfill_runs(bf)
        except OSError as exc:  # the api-server restarting: try again at the next poll
            runs, left, line = None, [], f"api-server not answering ({exc})"
        if runs is not None:
            counts: dict[str, int] = {}
            for r in runs:
                counts[str(r["state"])] = counts.get(str(r["state"]), 0) + 1
            line = ", ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "no runs yet"
        if line != last:
            print(f"  [{time.monotonic() - started:6.0f} s] {line}", file=out, flush=True)
            last = line
        if runs is not None and all(str(r["state"]) in TERMINAL for r in runs) and (runs or bf["completed_at"]):
            break
        if timeout and time.monotonic() - started > timeout:
            print(f"timed out after {timeout:.0f} s; the backfill goes on in the scheduler", file=out, flush=True)
            return 124
        time.sleep(poll)
    print(f"backfill {backfill_id} finished in {time.monotonic() - started:.0f} s:", file=out)
    for r in runs:
        failed = []
        if r["state"] == "failed":
            tis = api.task_instances(dag_id, r["dag_run_id"], state="failed")
            failed = [t["task_id"] for t in sorted(tis, key=lambda t: t["start_date"] or "")]
        note = f"  failed task(s): {', '.join(failed)}" if failed else ""
        print(f"  {parse_time(r['logical_date']):%Y-%m-%d}  {str(r['state']):<8} {r['dag_run_id']}{note}", file=out)
    for r in left:
        reason = "already exists" if r["state"] in TERMINAL else "in flight"
        print(f"  {parse_time(r['logical_date']):%Y-%m-%d}  skipped  ({reason}) {r['dag_run_id']}", file=out)
    print("summary: " + (", ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "no runs"), file=out)
    return 1 if counts.get("failed") else 0


def backfill_check(api: AirflowAPI, dag_id: str, from_date: str, to_date: str, conf: Mapping[str, Any] | None,
                   reprocess: str, *, replace_stale: bool = False, out: TextIO = sys.stdout) -> int:
    """Before a backfill of logical dates [from_date, to_date] with ``conf`` is created: the runs
    it would rerun with a conf other than its own (``calendar.stale_runs``; Airflow reruns an
    existing run with the conf it was created with). None: 0. Some: list them with their conf and
    return 1, or with ``replace_stale`` delete them (the backfill then creates them anew with its
    conf) and return 0."""
    from purchasing_power.calendar import stale_runs

    runs = api.dag_runs(dag_id, from_date, to_date)
    stale = stale_runs(runs, conf or {}, reprocess, api.param_defaults(dag_id))
    if not stale:
        return 0
    print(f"{len(stale)} existing run(s) of {dag_id} in {from_date} .. {to_date} would be rerun (reprocess "
          f"{reprocess}) with their own conf, not the backfill's {json.dumps(dict(conf or {}), sort_keys=True)}:", file=out)
    for run in stale:
        print(f"  {str(run['logical_date'])[:10]}  {str(run['state']):<8} {run['dag_run_id']}  conf="
              f"{json.dumps(run.get('conf') or {}, sort_keys=True)}", file=out)
    if not replace_stale:
        print("refusing to create the backfill. Either REPLACE_STALE=1 (delete those runs, so that the backfill "
              "creates them anew with its own conf), or REPROCESS=none (leave those days as they are).", file=out)
        return 1
    for run in stale:
        api.delete_dag_run(dag_id, run["dag_run_id"])
        print(f"  deleted {run['dag_run_id']}", file=out)
    return 0


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="tools/airflow_rest.py")
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("backfill-check", help="refuse (exit 1) when a backfill would rerun runs with another conf")
    c.add_argument("--dag-id", required=True)
    c.add_argument("--api-url", required=True)
    c.add_argument("--from-date", required=True)
    c.add_argument("--to-date", required=True)
    c.add_argument("--reprocess", default="completed", choices=["none", "failed", "completed"])
    c.add_argument("--conf", default="{}", help="the backfill's conf (JSON)")
    c.add_argument("--replace-stale", action="store_true", help="delete the stale runs instead of refusing")
    args = ap.parse_args(argv)
    return backfill_check(AirflowAPI(args.api_url), args.dag_id, args.from_date, args.to_date, json.loads(args.conf),
                          args.reprocess, replace_stale=args.replace_stale)


if __name__ == "__main__":
    sys.exit(main())
