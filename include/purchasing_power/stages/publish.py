"""The publish stage: commit the staged predictions to ``predictions/ds=D/``, write
``metrics/ds=D/metrics.json`` and then the UI page's ``metrics/ds=D/report.json``
(:func:`purchasing_power.report.report_day`).

Both files depend only on the data and settings, never on the attempt: a rerun, a backfill or a
fresh deployment writes the same bytes.

The predictions file is copied byte for byte from the scoring stage's staging partition, so
what was validated is exactly what is published; a rerun overwrites both files atomically.
``metrics.json`` is the day's commit marker: written last, it records the sha256 of the
predictions it belongs to (``predictions_sha256``), and readers take the day as published only
when that matches the predictions present (``storage.commits``). A publish killed between the two
writes leaves the day unpublished, never new predictions beside old metrics; its retry commits it.
"""

from __future__ import annotations

import hashlib
import io
import logging
from datetime import date
from typing import Any

from purchasing_power.checks import rows_by_day, volume_check
from purchasing_power.errors import InputError
from purchasing_power.export import asset_extra
from purchasing_power.extract import read_manifest
from purchasing_power.report import report_day
from purchasing_power.score import validate_predictions
from purchasing_power.settings import Settings
from purchasing_power.stages import STAGES
from purchasing_power.storage import (
    PREDICTIONS_FILE,
    PREDICTIONS_SHA256,
    RAW_MANIFEST,
    Storage,
    Workspace,
    fresh_fs,
    metrics_path,
    predictions_path,
    stage_report_path,
)

log = logging.getLogger(__name__)

#: Keys of the embed report that describe the data, not the attempt (timings and cache hits vary
#: between a first run and a rerun; they stay in ``runs/ds=D/embed.json``).
EMBED_STABLE_KEYS = ("model_id", "revision", "rows", "empty", "unique")


def _stable_embedding(report: dict[str, Any] | None) -> dict[str, Any] | None:
    if report is None:
        return None
    return {k: report[k] for k in EMBED_STABLE_KEYS if k in report}


def _read_optional(storage: Storage, path: str | None) -> dict[str, Any]:
    """A JSON record whose path a stage report names ({} when absent); the path must lie under
    the storage root."""
    if not path:
        return {}
    path = storage.resolve_inside(path)
    return storage.read_json(path) if storage.exists(path) else {}


def publish_day(settings: Settings, day: date) -> dict[str, Any]:
    """Stage function: validate and publish the day's predictions and metrics."""
    import pyarrow.parquet as pq

    out = Storage.at(settings.storage)
    staged = out.path("scores", day, PREDICTIONS_FILE)
    if not out.exists(staged):
        raise FileNotFoundError(f"no staged predictions at {staged}: run the score task first")
    with fresh_fs(staged).open(staged, "rb") as fh:
        payload = fh.read()
    try:  # validate the very bytes that are published
        frame = pq.read_table(io.BytesIO(payload)).to_pandas()
    except Exception as exc:
        raise ValueError(f"cannot read Parquet file {staged}: {exc}") from exc
    validate_predictions(frame)
    volume = day_volume(settings, day)
    if volume["fails"]:  # before anything is committed: the day stays unpublished
        raise InputError(f"volume check: {volume['message']} (PURCHASING_POWER_VOLUME_CHECK=fail)")
    if volume["flagged"]:
        log.warning("volume check: %s", volume["message"])
    reports = {}
    for stage in STAGES:
        if stage == "publish":
            continue
        path = stage_report_path(out, day, stage)
        reports[stage] = out.read_json(path) if out.exists(path) else None
    # The gate's decision and the training info belong to the day's anchor (decided by whichever
    # run reached that anchor first): read them there, not from this run's train/gate reports,
    # which are absent on days whose train task was skipped.
    score = reports.get("score") or {}
    gate = _read_optional(out, score.get("decision_path"))
    training = _read_optional(out, score.get("training_path"))
    metrics = {
        "as_of": day.isoformat(),
        "source": settings.resolved_source,
        "model_version": (reports.get("score") or {}).get("model_version"),
        "gate": {
            "anchor": gate.get("anchor"),
            "status": gate.get("status"),
            "promoted": gate.get("promoted"),
            "reasons": gate.get("reasons"),
            "thresholds": gate.get("thresholds"),
            "deployed_version": gate.get("deployed_version"),
            "champion_version": gate.get("champion_version"),
        },
        "evaluation": gate.get("evaluation"),
        "row_counts": {
            "source_rows": (reports.get("extract") or {}).get("rows_in_source"),
            "day": (reports.get("clean") or {}).get("run_day"),
            "texts_day": ((reports.get("clean") or {}).get("texts") or {}).get("run_day"),
            "customers_scored": int(len(frame)),
        },
        "data_checks": {"volume": volume},
        "tier_counts": (reports.get("score") or {}).get("tier_counts"),
        "recalibration": (reports.get("score") or {}).get("recalibration"),
        "embedding": _stable_embedding(reports.get("embed")),
        "training": training or None,
        PREDICTIONS_SHA256: hashlib.sha256(payload).hexdigest(),
    }
    pred_path = out.write_bytes(predictions_path(out, day), payload)
    met_path = out.write_json(metrics, metrics_path(out, day))  # last: commits the day
    log.info("published %s rows to %s", len(frame), pred_path)
    # The page's curves, once the day is published (the report reads what was just written). Not
    # a task of its own: on a whole-year backfill one Airflow task costs more than the report.
    report = report_day(settings, day)
    table = None
    if settings.results:  # the day's rows replaced in one transaction: a rerun never duplicates
        from purchasing_power.warehouse import write_results

        table = write_results(settings.results, frame, day)
        log.info("published %s rows to %s", table["rows"], table["table"])
    out_report = {
        "day": day.isoformat(),
        "predictions_path": pred_path,
        "metrics_path": met_path,
        "rows": int(len(frame)),
        "volume_status": volume["status"],
        "report": report,
        "results_table": table,
    }
    return {**out_report, "asset_extra": asset_extra(out_report)}


def day_volume(settings: Settings, day: date) -> dict[str, Any]:
    """The day's volume check (``checks.volume_check``) from the source's raw manifest."""
    manifest = read_manifest(Workspace.for_settings(settings).per_source, RAW_MANIFEST)
    return volume_check(rows_by_day(manifest), day, min_share=settings.volume_min_share,
                        window_days=settings.volume_window_days, mode=settings.volume_check)
