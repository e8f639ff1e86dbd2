"""The features stage: point-in-time features of every customer as of the end of the run's day."""

from __future__ import annotations

from datetime import date
from typing import Any

from purchasing_power.calendar import anchor_for
from purchasing_power.gate import decided_model
from purchasing_power.history import RunData
from purchasing_power.schemas import TEXT_PREFIX, USER_TEXT_PREFIX
from purchasing_power.settings import Settings


def features_day(settings: Settings, day: date) -> dict[str, Any]:
    """Build (and store) the day's features; say whether the day's anchor still needs a model
    (the DAG maps ``train`` over that answer)."""
    data = RunData.load(settings, day)
    f = data.features(day, refresh=True)
    text_cols = [c for c in f.columns if c.startswith(TEXT_PREFIX)]
    decision = decided_model(settings, day)
    return {
        "day": day.isoformat(),
        "customers": int(len(f)),
        "feature_columns": int(f.shape[1]),
        "text_columns": len(text_cols),
        "user_text_columns": sum(c.startswith(USER_TEXT_PREFIX) for c in f.columns),
        "features_path": data.feature_path(day),
        # the DAG maps train over this: fit only while the day's anchor is undecided
        "anchor": anchor_for(settings, day).isoformat(),
        "needs_training": decision is None,
        "decision_path": decision,
    }
