"""The gate stage: promote the anchor's candidate only if its stored evaluation beats the
baselines and the champion; the decision (and why) is stored for score and publish."""

from __future__ import annotations

from datetime import date
from typing import Any

from purchasing_power.calendar import anchor_for
from purchasing_power.gate import champion_of, decide, read_stored
from purchasing_power.history import RunData
from purchasing_power.settings import Settings
from purchasing_power.storage import DECISION_FILE, EVALUATION_FILE


def gate_day(settings: Settings, day: date) -> dict[str, Any]:
    data = RunData.load(settings, day)
    anchor = anchor_for(settings, day)
    store = data.ws.per_source
    path = store.path("models", anchor, DECISION_FILE)
    if not settings.force_retrain and store.exists(path):  # a concurrent run of this anchor decided it
        return {**store.read_json(path), "reused": True}  # (alerts were sent by the run that decided)
    evaluation = read_stored(data, anchor, EVALUATION_FILE, "evaluate")
    return decide(data, anchor, evaluation, champion_of(data, anchor))
