"""The page's live data: cheap summaries of the published files, recomputed on each page load
and cached in memory by file stamp (mtime + size), so a page load after the first costs a few
``stat`` calls:

- ``metrics/ds=D/metrics.json``: the gate verdict, every contender's metrics on the evaluation
  window, row counts, tier counts; all days of the same source up to D give the history chart.
  It is the day's commit marker: a day is shown only when the predictions present are the ones
  it records (``storage.commits``), so new predictions are never shown beside old metrics;
- ``metrics/ds=D/report.json``: the curves precomputed by publish (:mod:`purchasing_power.report`);
- ``predictions/ds=D/predictions.parquet``: tier counts and spend / probability distributions;
- ``quarantine/ds=*/quarantine.parquet`` (``reason`` column only): quarantined rows by reason on
  D and over the ``QUARANTINE_WINDOW_DAYS`` days up to D;
- ``runs/ds=*/embed.json``: the embedding cache hit rate of D's run and of earlier runs.
"""

from __future__ import annotations

import json
import os
import threading
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any, Callable

from purchasing_power.report import PURCHASE_METRICS, SPEND_METRICS
from purchasing_power.schemas import TIERS
from purchasing_power.storage import (
    METRICS_FILE,
    PREDICTIONS_FILE,
    QUARANTINE_FILE,
    TEXTS_QUARANTINE_FILE,
    Storage,
    commits,
    report_path,
    stage_report_path,
)

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

#: Metrics the history chart can show: key -> (block, metric).
HISTORY_METRICS = {
    "roc_auc": ("purchase", "roc_auc"),
    "pr_auc": ("purchase", "pr_auc"),
    "lift_at_10pct": ("purchase", "lift_at_10pct"),
    "brier": ("purchase", "brier"),
    "ece": ("purchase", "ece"),
    "normalized_gini": ("spend", "normalized_gini"),
}
#: Expected-spend histogram edges (GBP); the last bin is open-ended.
SPEND_EDGES = (0.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0)
QUARANTINE_WINDOW_DAYS = 30


# ---------------------------------------------------------------------------------------------
_CACHE: dict[tuple[str, str], tuple[Any, Any]] = {}
_LOCK = threading.Lock()


def _stamp(storage: Storage, path: str) -> Any | None:
    """(mtime, size) of a file, None when it does not exist."""
    if "://" not in path:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size)
    info = storage.info(path)  # fresh: another process may have rewritten it
    if info is None:
        return None
    return (info.get("mtime") or info.get("LastModified") or info.get("ETag"), info.get("size"))


def cached(storage: Storage, path: str, kind: str, load: Callable[[str], Any]) -> Any | None:
    """``load(path)``, recomputed only when the file's stamp changes; None when it is missing."""
    stamp = _stamp(storage, path)
    if stamp is None:
        return None
    key = (kind, path)
    with _LOCK:
        hit = _CACHE.get(key)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    value = load(path)
    with _LOCK:
        _CACHE[key] = (stamp, value)
    return value


def clear_cache() -> None:
    with _LOCK:
        _CACHE.clear()


def _read_json(path: str) -> Any:
    from purchasing_power.storage import filesystem_for

    with filesystem_for(path).open(path, "rb") as fh:
        return json.load(fh)


def summarise_predictions(frame: pd.DataFrame) -> dict[str, Any]:
    """Tier counts, per-tier spend statistics, and histograms of expected spend and of the
    purchase probability (stacked by tier)."""
    import numpy as np

    spend = frame["expected_spend_90d"].to_numpy(dtype=np.float64)
    p = frame["p_purchase_30d"].to_numpy(dtype=np.float64)
    tier = frame["tier"].astype(str).to_numpy()
    edges = np.array(SPEND_EDGES)
    s_idx = np.searchsorted(edges, spend, side="right") - 1  # bin i: edges[i] <= x < edges[i+1]; last open
    p_idx = np.minimum((p * 10).astype(int), 9)
    tiers: dict[str, Any] = {}
    spend_hist: dict[str, list[int]] = {}
    p_hist: dict[str, list[int]] = {}
    for t in TIERS:
        m = tier == t
        n = int(m.sum())
        tiers[t] = {
            "n": n,
            "spend_sum": float(spend[m].sum()),
            "spend_min": float(spend[m].min()) if n else None,
            "spend_median": float(np.median(spend[m])) if n else None,
            "spend_max": float(spend[m].max()) if n else None,
            "p_mean": float(p[m].mean()) if n else None,
        }
        spend_hist[t] = np.bincount(s_idx[m], minlength=len(edges)).astype(int).tolist()
        p_hist[t] = np.bincount(p_idx[m], minlength=10).astype(int).tolist()
    versions = frame["model_version"].astype(str).value_counts().sort_index()
    return {
        "n": int(len(frame)),
        "p_mean": float(p.mean()) if len(p) else None,
        "spend_total": float(spend.sum()),
        "model_versions": {str(k): int(v) for k, v in versions.items()},
        "tiers": tiers,
        "spend_hist": {"edges": list(SPEND_EDGES), "counts": spend_hist},
        "p_hist": {"edges": [round(i / 10, 1) for i in range(11)], "counts": p_hist},
    }


def _quarantine_counts(path: str) -> dict[str, int]:
    from purchasing_power.storage import read_parquet

    reasons = read_parquet(path, columns=["reason"])["reason"]
    return {str(k): int(v) for k, v in reasons.value_counts().sort_index().items()}


def quarantine_summary(storage: Storage, day: date, window_days: int = QUARANTINE_WINDOW_DAYS) -> dict[str, Any]:
    """Quarantined rows by reason: on ``day`` and summed over the ``window_days`` days up to it."""
    on_day: dict[str, int] = {}
    window: dict[str, int] = {}
    days_found = 0
    for i in range(window_days):
        d = day - timedelta(days=i)
        counts = cached(storage, storage.path("quarantine", d, QUARANTINE_FILE), "quarantine", _quarantine_counts)
        if counts is None:
            continue
        days_found += 1
        if d == day:
            on_day = dict(counts)
        for k, v in counts.items():
            window[k] = window.get(k, 0) + v
    return {
        "day": on_day,
        "window": dict(sorted(window.items(), key=lambda kv: (-kv[1], kv[0]))),
        "window_days": window_days,
        "window_start": (day - timedelta(days=window_days - 1)).isoformat(),
        "partitions": days_found,
    }


def _embed_summary(report: dict[str, Any] | None) -> dict[str, Any] | None:
    if report is None:
        return None
    unique = int(report.get("unique") or 0)
    new = int(report.get("new") or 0)
    cached_n = int(report.get("cached") if report.get("cached") is not None else unique - new)
    return {
        "unique": unique,
        "cached": cached_n,
        "new": new,
        "rows": report.get("rows"),
        "empty": report.get("empty"),
        "hit_rate": (cached_n / unique) if unique else None,
        "model_id": report.get("model_id"),
        "revision": report.get("revision"),
        "device": report.get("device"),
        "seconds": report.get("seconds"),
        "skipped": report.get("skipped"),
    }


def _history_row(day: date, m: dict[str, Any]) -> dict[str, Any]:
    ev = m.get("evaluation") or {}
    gate = m.get("gate") or {}
    return {
        "day": day.isoformat(),
        "status": gate.get("status"),
        "promoted": gate.get("promoted"),
        "anchor": gate.get("anchor"),
        "model_version": m.get("model_version"),
        "window": (ev.get("purchase_window") or {}).get("as_of"),
        "purchase": {k: {mk: v.get(mk) for mk in PURCHASE_METRICS} for k, v in (ev.get("purchase") or {}).items()},
        "spend": {k: {mk: v.get(mk) for mk in SPEND_METRICS} for k, v in (ev.get("spend") or {}).items()},
    }


def _published_metrics(storage: Storage, day: date) -> dict[str, Any] | None:
    """The day's metrics when it commits the predictions present (hash cached by file stamp)."""
    metrics = cached(storage, storage.path("metrics", day, METRICS_FILE), "json", _read_json)
    if metrics is None:
        return None
    sha = cached(storage, storage.path("predictions", day, PREDICTIONS_FILE), "sha256", storage.sha256)
    return metrics if sha is not None and commits(metrics, sha) else None


def _predictions_entry(path: str) -> dict[str, Any]:
    """The predictions' sha256 and summary, both from one read of the file."""
    import hashlib
    import io

    import pyarrow.parquet as pq

    from purchasing_power.storage import fresh_fs

    with fresh_fs(path).open(path, "rb") as fh:
        data = fh.read()
    columns = ["p_purchase_30d", "expected_spend_90d", "tier", "model_version"]
    frame = pq.read_table(io.BytesIO(data), columns=columns).to_pandas()
    return {"sha256": hashlib.sha256(data).hexdigest(), "summary": summarise_predictions(frame)}


def available_days(storage: Storage) -> list[date]:
    """Published days, ascending: a ``metrics.json`` that commits the predictions present."""
    return [d for d in storage.list_days("metrics", METRICS_FILE) if _published_metrics(storage, d) is not None]


def page_data(root: str, day: date | None = None, *, history_days: int = 120) -> dict[str, Any]:
    """Everything the page shows for ``day`` (default: the latest published day).

    Raises ``LookupError`` when nothing (or not ``day``) has been published under ``root``."""
    storage = Storage.at(root)
    days = available_days(storage)
    if not days:
        raise LookupError(f"nothing published under {storage.root}/metrics yet: run the DAG first")
    if day is None:
        day = days[-1]
    if day not in days:
        raise LookupError(f"no metrics for {day} under {storage.root}/metrics")
    metrics = _published_metrics(storage, day)
    entry = cached(storage, storage.path("predictions", day, PREDICTIONS_FILE), "predictions", _predictions_entry)
    if metrics is None or entry is None or not commits(metrics, entry["sha256"]):
        raise LookupError(f"{day} under {storage.root} is being republished: its metrics and predictions do not match yet")
    preds = entry["summary"]
    report = cached(storage, report_path(storage, day), "json", _read_json)
    source = metrics.get("source")
    history, embed_history = [], []
    for d in [d for d in days if d <= day][-history_days:]:
        m = metrics if d == day else cached(storage, storage.path("metrics", d, METRICS_FILE), "json", _read_json)
        if m is None or m.get("source") != source:
            continue
        history.append(_history_row(d, m))
        e = cached(storage, stage_report_path(storage, d, "embed"), "json", _read_json)
        if e is not None:
            embed_history.append({"day": d.isoformat(), **_embed_summary(e)})
    embed_today = cached(storage, stage_report_path(storage, day, "embed"), "json", _read_json)
    return {
        "as_of": day.isoformat(),
        "days": [d.isoformat() for d in reversed(days)],
        "storage": storage.root,
        "source": source,
        "model_version": metrics.get("model_version"),
        "gate": metrics.get("gate") or {},
        "evaluation": metrics.get("evaluation") or {},
        "row_counts": metrics.get("row_counts") or {},
        "data_checks": metrics.get("data_checks") or {},
        "tier_counts": metrics.get("tier_counts") or {},
        "embedding": {**(metrics.get("embedding") or {}), "run": _embed_summary(embed_today), "history": embed_history},
        "predictions": preds,
        "quarantine": quarantine_summary(storage, day),
        "texts_quarantine": cached(storage, storage.path("quarantine", day, TEXTS_QUARANTINE_FILE), "quarantine", _quarantine_counts),
        "history": history,
        "report": report,
    }


