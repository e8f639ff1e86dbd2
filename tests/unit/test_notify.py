"""Alerts: the webhook notifier posts one JSON message per event to the connection's URL (a real
local HTTP server), says nothing for a promoting gate or a reused decision, and never fails the
task it reports on."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from purchasing_power.notify import CHAMPION_KEPT, TASK_FAILED, WebhookNotifier, webhook_for
from purchasing_power.storage import Storage


def _ti(task_id: str, xcom: str | None = None) -> SimpleNamespace:
    return SimpleNamespace(dag_id="purchasing_power_daily", task_id=task_id, map_index=-1, try_number=2,
                           run_id="scheduled__2024-06-30", xcom_pull=lambda task_ids: xcom)


def _context(ti, **kw):
    return {"ti": ti, "task_instance": ti, "run_id": ti.run_id, "params": {"day": "2024-06-30"}, **kw}


def test_a_task_failing_for_good_posts_one_message(webhook, monkeypatch):
    for k, v in webhook.env().items():
        monkeypatch.setenv(k, v)
    WebhookNotifier(TASK_FAILED)(_context(_ti("extract"), exception=ValueError("source /x/y.csv: no such file")))
    assert len(webhook.received) == 1
    msg = webhook.received[0]
    assert msg["path"] == "/hooks/pp" and msg["auth"] is None
    body = msg["body"]
    assert body["event"] == TASK_FAILED and body["task_id"] == "extract" and body["day"] == "2024-06-30"
    assert body["run_id"] == "scheduled__2024-06-30" and body["try_number"] == 2
    assert "no such file" in body["error"] and "extract" in body["text"] and "failed for good" in body["text"]


def _gate_report(tmp_path, monkeypatch, **decision) -> str:
    monkeypatch.setenv("PURCHASING_POWER_STORAGE", str(tmp_path / "data"))
    store = Storage.at(str(tmp_path / "data"))
    return store.write_json({"anchor": "2024-06-14", "status": "kept_champion", "deployed_version": "v-champ",
                             "champion_version": "v-champ", "reasons": ["roc_auc 0.71 <= champion 0.72"], **decision},
                            store.path("runs", "2024-06-30", "gate.json"))


def test_a_gate_that_keeps_the_champion_posts_its_reasons(webhook, monkeypatch, tmp_path):
    for k, v in webhook.env().items():
        monkeypatch.setenv(k, v)
    path = _gate_report(tmp_path, monkeypatch, promoted=False)
    WebhookNotifier(CHAMPION_KEPT)(_context(_ti("gate", path)))
    [body] = webhook.events(CHAMPION_KEPT)
    assert body["anchor"] == "2024-06-14" and body["deployed_version"] == "v-champ" and body["status"] == "kept_champion"
    assert "roc_auc 0.71 <= champion 0.72" in body["text"] and body["task_id"] == "gate"


@pytest.mark.parametrize("decision", [{"promoted": True, "status": "promoted"}, {"promoted": False, "reused": True}])
def test_a_promoting_gate_or_a_reused_decision_says_nothing(webhook, monkeypatch, tmp_path, decision):
    for k, v in webhook.env().items():
        monkeypatch.setenv(k, v)
    path = _gate_report(tmp_path, monkeypatch, **decision)
    WebhookNotifier(CHAMPION_KEPT)(_context(_ti("gate", path)))
    assert webhook.received == []


def test_a_report_path_outside_the_storage_is_refused(monkeypatch, tmp_path, webhook):
    for k, v in webhook.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("PURCHASING_POWER_STORAGE", str(tmp_path / "data"))
    outside = tmp_path / "elsewhere.json"
    outside.write_text(json.dumps({"promoted": False}))
    with pytest.raises(Exception, match="storage root|outside|escapes"):
        WebhookNotifier(CHAMPION_KEPT)(_context(_ti("gate", str(outside))))
    assert webhook.received == []


def test_no_connection_no_message_and_an_unreachable_webhook_does_not_fail(monkeypatch, caplog):
    monkeypatch.delenv("PURCHASING_POWER_ALERTS_CONN", raising=False)
    WebhookNotifier(TASK_FAILED)(_context(_ti("clean"), exception=RuntimeError("x")))  # nothing to send to
    monkeypatch.setenv("AIRFLOW_CONN_PP_DOWN", "http://127.0.0.1:9/down")  # discard port: refused
    monkeypatch.setenv("PURCHASING_POWER_ALERTS_CONN", "pp_down")
    with caplog.at_level("ERROR", logger="purchasing_power.notify"):
        WebhookNotifier(TASK_FAILED)(_context(_ti("clean"), exception=RuntimeError("x")))
    assert "alert task_failed to connection 'pp_down' failed" in caplog.text


def test_webhook_urls_and_tokens_come_from_the_connection(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_PP_A", "https://hooks.example.com/services/T0")
    assert webhook_for("pp_a").url == "https://hooks.example.com/services/T0"
    monkeypatch.setenv("AIRFLOW_CONN_PP_B", json.dumps({"conn_type": "http", "host": "10.0.0.5", "port": 8080,
                                                        "schema": "alerts", "password": "s3cret-token",
                                                        "extra": {"headers": {"X-Team": "data"}}}))
    hook = webhook_for("pp_b")
    assert hook.url == "http://10.0.0.5:8080/alerts"
    assert hook.headers == {"X-Team": "data", "Authorization": "Bearer s3cret-token"}
    monkeypatch.setenv("AIRFLOW_CONN_PP_C", json.dumps({"conn_type": "http", "extra": {"url": "https://x.example/h"}}))
    assert webhook_for("pp_c").url == "https://x.example/h"
    monkeypatch.setenv("AIRFLOW_CONN_PP_D", json.dumps({"conn_type": "postgres"}))
    with pytest.raises(ValueError, match="no http"):
        webhook_for("pp_d")
    with pytest.raises(ValueError, match="not found"):
        webhook_for("pp_missing_xyz")
    with pytest.raises(ValueError, match="unknown alert event"):
        WebhookNotifier("sometimes")
