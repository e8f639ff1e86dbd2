"""The evaluate stage: score the anchor's holdout candidate, the baselines and the champion on
the latest closed windows (metrics and per-customer scores are stored for the gate and the page)."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from purchasing_power.calendar import anchor_for
from purchasing_power.gate import champion_of, evaluate_anchor, read_stored
from purchasing_power.history import RunData
from purchasing_power.settings import Settings
from purchasing_power.storage import TRAINING_INFO


def evaluate_day(settings: Settings, day: date) -> dict[str, Any]:
    anchor = anchor_for(settings, day)
    windows = anchor - timedelta(days=max(settings.purchase_horizon_days, settings.spend_horizon_days))
    data = RunData.load(settings, day, snapshots_from=windows)  # the windows' features: their lookback's partitions
    read_stored(data, anchor, TRAINING_INFO, "train")
    return evaluate_anchor(data, anchor, champion_of(data, anchor), force=settings.force_retrain)
