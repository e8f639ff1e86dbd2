"""The score stage: every customer's predictions as of the run's day from the bundle the gate
deployed at the day's anchor (purchase probabilities recalibrated on the latest closed windows),
staged in ``scores/ds=D/`` for publish to validate and commit."""

from __future__ import annotations

from datetime import date
from typing import Any

from purchasing_power.calendar import anchor_for
from purchasing_power.errors import MissingInput
from purchasing_power.gate import decision_path, deployed_bundle
from purchasing_power.history import RunData
from purchasing_power.schemas import TIERS
from purchasing_power.score import predictions_frame, recalibrated
from purchasing_power.settings import Settings
from purchasing_power.storage import PREDICTIONS_FILE, TRAINING_INFO


def score_day(settings: Settings, day: date) -> dict[str, Any]:
    data = RunData.load(settings, day)
    anchor = anchor_for(settings, day)
    path = decision_path(settings, day)
    if not data.ws.per_source.exists(path):
        raise MissingInput(
            f"no gate decision for anchor {anchor} at {path}: the train, evaluate and gate tasks of the "
            f"first run of that anchor have not completed; run them (or rerun this day)"
        )
    decision = data.ws.per_source.read_json(path)
    features = data.features(day)  # written by the features stage of this run
    if features.empty:
        raise ValueError(f"no customer has a valid purchase before {day} + 1 day: nothing to score")
    bundle, recalibration = recalibrated(data, deployed_bundle(decision, data.ws.per_source), day)
    p, spend = bundle.predict(features)
    out = predictions_frame(features, p, spend, day, bundle.version, settings)
    scores = data.ws.root.path("scores", day, PREDICTIONS_FILE)
    data.ws.root.write_parquet(out, scores)
    return {
        "day": day.isoformat(),
        "anchor": anchor.isoformat(),
        "scores_path": scores,
        "customers_scored": int(len(out)),
        "model_version": bundle.version,
        "model_kind": bundle.kind,
        "gate_status": decision["status"],
        "decision_path": path,
        "training_path": data.ws.per_source.path("models", anchor, TRAINING_INFO),
        "tier_counts": {t: int((out["tier"] == t).sum()) for t in TIERS},
        "recalibration": recalibration,
        "p_purchase_30d_mean": float(out["p_purchase_30d"].mean()),
        "expected_spend_90d_total": float(out["expected_spend_90d"].sum()),
    }
