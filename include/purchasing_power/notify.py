"""Alerts through Airflow's notifier mechanism: a webhook configured by an Airflow connection.

Two events send one message each:

* ``task_failed``: a task failed for good (the Dag's ``on_failure_callback``; retries do not
  call it), with the task, the run, the day and the error;
* ``champion_kept``: the gate of an anchor did not promote its candidate (the gate task's
  ``on_success_callback``; on days whose anchor is decided the gate is skipped and says nothing).

The connection is named by ``PURCHASING_POWER_ALERTS_CONN`` (unset: no alerts, logged once per
event). Its URL is the connection's ``extra.url`` when set, else built from its type
(``http``/``https``), host, port and schema (path), e.g.
``AIRFLOW_CONN_PP_ALERTS='https://hooks.example.com/services/T000'``; a password is sent as
``Authorization: Bearer <password>``; ``extra.headers`` adds headers. The body is JSON with a
``text`` line (Slack/Teams/Mattermost incoming webhooks show it) and the event's fields.

A webhook that cannot be reached is logged as an error and does not fail the task: an alert
must not turn a finished task into a failed one.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Mapping

from airflow.sdk import BaseNotifier

log = logging.getLogger(__name__)

#: Events a :class:`WebhookNotifier` sends.
TASK_FAILED, CHAMPION_KEPT = "task_failed", "champion_kept"
TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Webhook:
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float = TIMEOUT_S


def webhook_for(conn_id: str) -> Webhook:
    """The webhook Airflow connection ``conn_id`` describes (see the module doc)."""
    from airflow.sdk import Connection

    try:
        conn = Connection.get(conn_id)
    except Exception as exc:  # noqa: BLE001 - say which connection, whatever the store raised
        raise ValueError(f"alerts connection {conn_id!r} not found: {exc}") from exc
    extra = conn.extra_dejson or {}
    url = str(extra.get("url") or "")
    if not url:
        host = conn.host or ""
        if "://" in host:
            url = host.rstrip("/") + (f"/{conn.schema}" if conn.schema else "")
        elif host:
            scheme = "https" if (conn.conn_type or "").lower() == "https" else "http"
            port = f":{conn.port}" if conn.port else ""
            url = f"{scheme}://{host}{port}/{conn.schema or ''}"
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"alerts connection {conn_id!r} has no http(s) URL (set its host, or extra.url)")
    headers = {str(k): str(v) for k, v in (extra.get("headers") or {}).items()}
    if conn.password:
        headers.setdefault("Authorization", f"Bearer {conn.password}")
    return Webhook(url=url, headers=headers, timeout=float(extra.get("timeout") or TIMEOUT_S))


def post(hook: Webhook, payload: Mapping[str, Any]) -> int:
    """POST ``payload`` as JSON; returns the HTTP status (an error status raises)."""
    body = json.dumps(payload, default=str, sort_keys=True).encode()
    req = urllib.request.Request(hook.url, data=body, method="POST",
                                 headers={"Content-Type": "application/json", **hook.headers})
    with urllib.request.urlopen(req, timeout=hook.timeout) as resp:  # noqa: S310 - the URL comes from a connection
        return int(resp.status)


def _run_fields(context: Mapping[str, Any]) -> dict[str, Any]:
    ti = context.get("ti") or context.get("task_instance")
    params = context.get("params") or {}
    return {
        "dag_id": getattr(ti, "dag_id", None),
        "task_id": getattr(ti, "task_id", None),
        "map_index": getattr(ti, "map_index", None),
        "try_number": getattr(ti, "try_number", None),
        "run_id": context.get("run_id") or getattr(ti, "run_id", None),
        "logical_date": context.get("logical_date"),
        "day": params.get("day") or None,
    }


def failure_message(context: Mapping[str, Any]) -> dict[str, Any]:
    run = _run_fields(context)
    error = context.get("exception")
    text = (f"purchasing-power: task {run['task_id']} of run {run['run_id']} failed for good"
            + (f": {error}" if error else ""))
    return {"event": TASK_FAILED, "text": text, "error": None if error is None else str(error), **run}


def gate_message(context: Mapping[str, Any], decision: Mapping[str, Any]) -> dict[str, Any] | None:
    """The message for a gate ``decision`` (its stage report), or None when it promoted."""
    if decision.get("promoted") is not False or decision.get("reused"):
        return None
    run = _run_fields(context)
    reasons = decision.get("reasons") or []
    kept = decision.get("deployed_version")
    text = (f"purchasing-power: the gate kept {kept} at anchor {decision.get('anchor')} "
            f"(status {decision.get('status')}): " + "; ".join(map(str, reasons)))
    return {"event": CHAMPION_KEPT, "text": text, "anchor": decision.get("anchor"), "status": decision.get("status"),
            "deployed_version": kept, "champion_version": decision.get("champion_version"), "reasons": reasons, **run}


class WebhookNotifier(BaseNotifier):
    """Sends one ``event`` message to the alerts webhook (see the module doc).

    ``conn_id``: the connection (default: ``PURCHASING_POWER_ALERTS_CONN`` when the callback runs,
    so the Dag file reads no setting at parse time)."""

    def __init__(self, event: str, conn_id: str | None = None) -> None:
        super().__init__()
        if event not in (TASK_FAILED, CHAMPION_KEPT):
            raise ValueError(f"unknown alert event {event!r}")
        self.event, self.conn_id = event, conn_id

    def message(self, context: Mapping[str, Any]) -> dict[str, Any] | None:
        if self.event == TASK_FAILED:
            return failure_message(context)
        return gate_message(context, _stage_report(context))

    def notify(self, context: Mapping[str, Any]) -> None:
        from purchasing_power.settings import Settings

        conn_id = self.conn_id or Settings.from_env().alerts_conn
        payload = self.message(context)
        if payload is None:
            return
        if not conn_id:
            log.info("alert not sent (PURCHASING_POWER_ALERTS_CONN is unset): %s", payload["text"])
            return
        try:
            status = post(webhook_for(conn_id), payload)
        except Exception as exc:  # noqa: BLE001 - an alert must never fail the task it reports on
            log.error("alert %s to connection %r failed: %s", self.event, conn_id, exc)
            return
        log.info("alert %s sent to connection %r (HTTP %s)", self.event, conn_id, status)


def _stage_report(context: Mapping[str, Any]) -> dict[str, Any]:
    """The report of the task the callback is for: its XCom return value is the report's path,
    which must lie under the storage root."""
    from purchasing_power.settings import Settings
    from purchasing_power.storage import Storage

    ti = context.get("ti") or context.get("task_instance")
    path = ti.xcom_pull(task_ids=ti.task_id) if ti is not None else None
    if not path:
        return {}
    store = Storage.at(Settings.from_env().storage)
    return store.read_json(store.resolve_inside(str(path)))
