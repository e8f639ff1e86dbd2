"""The score stage: every customer's predictions as of the run's day from the bundle the gate
deployed at the day's anchor (purchase probabilities recalibrated on the latest closed windows),
staged in ``scores/ds=D/`` for publish to validate and commit.

With ``feature_shards`` = N > 1 the DAG runs it as ``score_part`` (mapped over the N customer
shards: each scores its shard's rows of the stored features, day and recalibration windows, and
hands on a few columns per customer in ``score_shards/ds=D/``) and ``score`` with ``combine``
(refits the calibration on every shard's window rows, assigns tiers over every customer and
stages the very predictions one task would have staged; the parts are then removed).
"""

from __future__ import annotations

from datetime import date
from typing import Any

from purchasing_power.calendar import anchor_for
from purchasing_power.errors import MissingInput
from purchasing_power.gate import decision_path, deployed_bundle
from purchasing_power.history import RunData
from purchasing_power.model import ModelBundle
from purchasing_power.schemas import TIERS
from purchasing_power.score import finish_scores, shard_scores
from purchasing_power.settings import Settings
from purchasing_power.storage import PREDICTIONS_FILE, TRAINING_INFO, fresh_fs

#: the Parquet frames a score_part task hands on: its customers' scores and recalibration rows
SCORED_PART, WINDOWS_PART = "scored", "windows"


def score_day(settings: Settings, day: date, combine: bool = False) -> dict[str, Any]:
    """Score the day (``combine``: from the parts the score_part tasks stored)."""
    data = RunData.load(settings, day)
    anchor = anchor_for(settings, day)
    path, decision = _decision(data, day)
    bundle = deployed_bundle(decision, data.ws.per_source)
    if combine:
        scored, windows = _parts(data, bundle)
    else:
        one, rows = shard_scores(data, bundle, day)  # every customer: the features written by this run's features stage
        scored, windows = [one], [rows]
    out, bundle, recalibration = finish_scores(data, bundle, day, scored, windows)
    scores = data.ws.root.path("scores", day, PREDICTIONS_FILE)
    data.ws.root.write_parquet(out, scores)
    if combine:  # handed on: the day's scores are staged
        for k in range(int(settings.feature_shards)):
            for part in (SCORED_PART, WINDOWS_PART):
                part_path = data.score_part_path(k, part)
                if data.ws.per_source.exists(part_path):
                    fresh_fs(part_path).rm(part_path)
    return {
        "day": day.isoformat(),
        "anchor": anchor.isoformat(),
        "scores_path": scores,
        "customers_scored": int(len(out)),
        "score_shards": int(settings.feature_shards) if combine else 1,
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


def score_part_day(settings: Settings, day: date, shard: int) -> dict[str, Any]:
    """Customer shard ``shard``'s scores (before the calibration and tiers, which take every
    shard) and recalibration rows, from its rows of the stored features."""
    data = RunData.load(settings, day)
    _, decision = _decision(data, day)
    bundle = deployed_bundle(decision, data.ws.per_source)
    scored, windows = shard_scores(data, bundle, day, shard, int(settings.feature_shards))
    paths = {SCORED_PART: data.score_part_path(shard, SCORED_PART), WINDOWS_PART: data.score_part_path(shard, WINDOWS_PART)}
    data.ws.per_source.write_parquet(scored, paths[SCORED_PART])
    data.ws.per_source.write_parquet(windows, paths[WINDOWS_PART])
    return {"day": day.isoformat(), "shard": shard, "shards": int(settings.feature_shards), "customers": int(len(scored)),
            "window_rows": int(len(windows)), "model_version": bundle.version, "paths": paths}


def _decision(data: RunData, day: date) -> tuple[str, dict[str, Any]]:
    path = decision_path(data.settings, day)
    if not data.ws.per_source.exists(path):
        raise MissingInput(
            f"no gate decision for anchor {anchor_for(data.settings, day)} at {path}: the train, evaluate and gate tasks of the "
            f"first run of that anchor have not completed; run them (or rerun this day)"
        )
    return path, data.ws.per_source.read_json(path)


def _parts(data: RunData, bundle: ModelBundle) -> tuple[list[Any], list[Any]]:
    store, n = data.ws.per_source, int(data.settings.feature_shards)
    missing = [k for k in range(n) if not all(store.exists(data.score_part_path(k, p)) for p in (SCORED_PART, WINDOWS_PART))]
    if missing:
        raise MissingInput(f"no scores of shard(s) {missing} of {n} for {data.day} under {store.path('score_shards', data.day)}: "
                           "clear the day's score_part tasks too")
    scored = [store.read_parquet(data.score_part_path(k, SCORED_PART)) for k in range(n)]
    stale = sorted({str(v) for part in scored for v in part["model_version"].unique()} - {bundle.version})
    if stale:
        raise MissingInput(f"the score parts of {data.day} were made with model {', '.join(stale)}, the deployed one is "
                           f"{bundle.version}: clear the day's score_part tasks too")
    return scored, [store.read_parquet(data.score_part_path(k, WINDOWS_PART)) for k in range(n)]
