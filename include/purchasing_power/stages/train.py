"""The train stage: fit the anchor's candidates, after making sure its champion exists.

The champion chain starts here and only here: the champion of anchor A is what the previous
anchor P deploys when judged against the baselines alone (:func:`purchasing_power.gate.qualify`),
so this stage fits P's candidates when they are missing, qualifies P, then fits A's candidates.
The evaluate and gate tasks that follow only read what it stored.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from purchasing_power.calendar import anchor_for, previous_anchor
from purchasing_power.errors import NothingToDo
from purchasing_power.gate import decided_model, qualify
from purchasing_power.history import RunData
from purchasing_power.settings import Settings
from purchasing_power.storage import TRAINING_INFO
from purchasing_power.train import earliest_snapshot, fit_candidates


def train_day(settings: Settings, day: date) -> dict[str, Any]:
    """Fit this anchor's candidates (a no-op when they exist and ``force_retrain`` is off).
    Raises :class:`NothingToDo` when the anchor is already decided (the usual case on all days
    but the first one of an anchor): evaluate and gate are then skipped too."""
    anchor = anchor_for(settings, day)
    decision = decided_model(settings, day)
    if decision is not None:
        # The anchor's candidates were fitted, evaluated and gated by an earlier run (they are a
        # pure function of the data before anchor+1): this run scores with that decision.
        raise NothingToDo(f"the model of anchor {anchor} is already decided ({decision}); this day scores with it (force_retrain refits)")
    prev = previous_anchor(settings, anchor)
    data = RunData.load(settings, day, snapshots_from=earliest_snapshot(settings, prev))  # reads from its lookback on
    champion = None
    if prev >= data.first_day:
        fit_candidates(data, prev)
        champion = qualify(data, prev)
    reused = not settings.force_retrain and data.ws.per_source.exists(data.ws.per_source.path("models", anchor, TRAINING_INFO))
    info = fit_candidates(data, anchor, force=settings.force_retrain)
    return {
        "day": day.isoformat(),
        "anchor": anchor.isoformat(),
        "champion_anchor": prev.isoformat() if champion else None,
        "reused_fitted_candidates": reused,
        "training": info,
    }
