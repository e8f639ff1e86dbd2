"""Report: everything the Airflow "Purchasing power" page shows, computed from storage.

Two kinds of data feed the page:

* **Live, cheap summaries** (``page_data``), recomputed on each page load from small files and
  cached in memory by file stamp (mtime + size), so a page load after the first costs a few
  ``stat`` calls:

  - ``metrics/ds=D/metrics.json``: the gate verdict, every contender's metrics on the evaluation
    window, row counts, tier counts; all days of the same source up to D give the history chart;
  - ``predictions/ds=D/predictions.parquet``: tier counts and spend / probability distributions;
  - ``quarantine/ds=*/quarantine.parquet`` (``reason`` column only): quarantined rows by reason on
    D and over the ``QUARANTINE_WINDOW_DAYS`` days up to D;
  - ``runs/ds=*/embed.json``: the embedding cache hit rate of D's run and of earlier runs.

* **Curves** (ROC, precision-recall, cumulative gains/lift, reliability diagram) need one score
  and one outcome per customer, which no published file holds: D's predictions have no outcome
  yet. ``build_report`` computes them once per day, after publish, into a small
  ``metrics/ds=D/report.json`` (``write_report``; ``python -m purchasing_power.report --day D``
  for days published before it was wired in). It has two windows:

  - ``evaluation``: the gate's own purchase window (features as of e = anchor - 30 days,
    outcomes over [e+1, e+31)), with every contender the gate compared (holdout candidate,
    champion, BG/NBD, recency) scored exactly as the gate scored them. The AUCs, lift, Brier and
    ECE recomputed from these scores are checked against ``metrics.json`` (``matches_gate``),
    so the curves and the gate's numbers cannot silently disagree.
  - ``realised``: when a day D' <= D - 30 of the same source was published, its *published*
    ``p_purchase_30d`` against what those customers actually did in [D'+1, D'+31) (and the
    90-day spend when that horizon has closed too): how the deployed predictions turned out.

  ``report.json`` depends only on the data and the settings (no timings), so a rerun writes the
  same bytes, like the rest of ``metrics/``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import threading
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any, Callable

from purchasing_power.settings import Settings
from purchasing_power.storage import Storage, parse_day

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import pandas as pd

log = logging.getLogger(__name__)

REPORT_FILE = "report.json"
REPORT_VERSION = 1
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.parquet"
QUARANTINE_FILE = "quarantine.parquet"
EMBED_REPORT = "embed.json"

#: Contenders in the order the page lists them.
CONTENDERS = ("candidate", "champion", "bgnbd", "recency", "published")
SPEND_CONTENDERS = ("candidate", "bgnbd_gg", "past_spend", "published")
PURCHASE_METRICS = ("roc_auc", "pr_auc", "lift_at_10pct", "brier", "ece", "base_rate", "n")
SPEND_METRICS = ("normalized_gini", "spearman", "decile_mape", "mean_actual", "mean_predicted", "n")
#: Metrics the history chart can show: key -> (block, metric).
HISTORY_METRICS = {
    "roc_auc": ("purchase", "roc_auc"),
    "pr_auc": ("purchase", "pr_auc"),
    "lift_at_10pct": ("purchase", "lift_at_10pct"),
    "brier": ("purchase", "brier"),
    "ece": ("purchase", "ece"),
    "normalized_gini": ("spend", "normalized_gini"),
}
TIERS = ("high", "medium", "low")
#: Expected-spend histogram edges (GBP); the last bin is open-ended.
SPEND_EDGES = (0.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0)
QUARANTINE_WINDOW_DAYS = 30
CALIBRATION_BINS = 10
GAINS_SHARES = tuple(round(0.05 * i, 2) for i in range(1, 21))  # 5 %, 10 %, ..., 100 %
MAX_CURVE_POINTS = 150
#: Relative tolerance when checking recomputed metrics against the gate's.
MATCH_TOLERANCE = 1e-9


def report_path(storage: Storage, day: date) -> str:
    return storage.path("metrics", day, REPORT_FILE)


# ---------------------------------------------------------------------------------------------
# Curve maths (pure functions over arrays; the same definitions as purchasing_power.evaluate)
# ---------------------------------------------------------------------------------------------
def _thin(n: int, max_points: int) -> np.ndarray:
    """Indices of at most ``max_points`` points spread over ``n``, first and last kept."""
    import numpy as np

    if n <= max_points:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, max_points)).astype(int))


def _r(values, digits: int = 6) -> list[float]:
    return [round(float(v), digits) for v in values]


def roc_points(y, s, max_points: int = MAX_CURVE_POINTS) -> dict[str, Any]:
    """ROC curve (thinned for drawing) and the AUC of the full curve (= ``roc_auc_score``)."""
    from sklearn.metrics import auc, roc_curve

    fpr, tpr, _ = roc_curve(y, s)
    keep = _thin(len(fpr), max_points)
    return {"auc": float(auc(fpr, tpr)), "fpr": _r(fpr[keep]), "tpr": _r(tpr[keep])}


def pr_points(y, s, max_points: int = MAX_CURVE_POINTS) -> dict[str, Any]:
    """Precision-recall curve (thinned, recall ascending) and average precision (= PR-AUC)."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    precision, recall, _ = precision_recall_curve(y, s)
    precision, recall = precision[::-1], recall[::-1]
    keep = _thin(len(recall), max_points)
    return {
        "ap": float(average_precision_score(y, s)),
        "recall": _r(recall[keep]),
        "precision": _r(precision[keep]),
    }


def gains_points(y, s, shares: tuple[float, ...] = GAINS_SHARES) -> dict[str, Any]:
    """Cumulative gains: share of all buyers found in the top ``share`` of customers by score,
    and the lift there (captured / share). Ties are broken by position, as in ``lift_at``."""
    import numpy as np

    y = np.asarray(y, dtype=np.float64)
    s = np.asarray(s, dtype=np.float64)
    order = np.lexsort((np.arange(len(s)), -s))
    cum = np.cumsum(y[order])
    total = cum[-1] if len(cum) else 0.0
    captured, lift = [], []
    for share in shares:
        k = max(1, int(round(share * len(y))))
        got = cum[k - 1] / total if total > 0 else float("nan")
        captured.append(got)
        lift.append(got / (k / len(y)) if total > 0 else float("nan"))
    return {"share": list(shares), "captured": _r(captured), "lift": _r(lift)}


def calibration_bins(y, p, bins: int = CALIBRATION_BINS) -> list[dict[str, Any]]:
    """Reliability diagram: equal-width probability bins (the bins of the ECE), each with its
    size, mean predicted probability and observed purchase rate."""
    import numpy as np

    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    idx = np.minimum((p * bins).astype(int), bins - 1)
    out = []
    for b in range(bins):
        m = idx == b
        n = int(m.sum())
        out.append(
            {
                "lo": round(b / bins, 6),
                "hi": round((b + 1) / bins, 6),
                "n": n,
                "p_mean": round(float(p[m].mean()), 6) if n else None,
                "y_rate": round(float(y[m].mean()), 6) if n else None,
            }
        )
    return out


def contender_curves(y, s, *, probabilities: bool) -> dict[str, Any]:
    """Metrics (``evaluate.purchase_metrics``) and every curve of one contender."""
    from purchasing_power.evaluate import finite_or_none, purchase_metrics

    metrics = finite_or_none(purchase_metrics(y, s, probabilities=probabilities))
    both = 0 < int(sum(y)) < len(y)
    return {
        "metrics": metrics,
        "roc": roc_points(y, s) if both else None,
        "pr": pr_points(y, s) if both else None,
        "gains": gains_points(y, s) if both else None,
        "calibration": calibration_bins(y, s) if probabilities else None,
    }


def _close(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(float(a), float(b), rel_tol=MATCH_TOLERANCE, abs_tol=1e-12)


# ---------------------------------------------------------------------------------------------
# Precomputed report: metrics/ds=D/report.json
# ---------------------------------------------------------------------------------------------
def _evaluation_window(settings: Settings, ctx: Any, metrics: dict[str, Any]) -> dict[str, Any] | None:
    """Every contender the gate compared, rescored on the gate's purchase window."""
    from purchasing_power.features import build_labels
    from purchasing_power.gate import QUALIFY_FILE
    from purchasing_power.model import BASELINE_P
    from purchasing_power.train import CANDIDATE_HOLDOUT, load_bundle, previous_anchor

    ev = metrics.get("evaluation") or {}
    window = ev.get("purchase_window") or {}
    gate_purchase = ev.get("purchase") or {}
    if not ev.get("anchor") or not window.get("as_of") or not gate_purchase:
        return None
    anchor, e = parse_day(ev["anchor"]), parse_day(window["as_of"])
    horizon = int(window.get("horizon_days") or settings.purchase_horizon_days)
    fe = ctx.features(e)
    if fe.empty:
        return None
    y = build_labels(ctx.history_until(anchor), e, fe.index, horizon, settings.spend_horizon_days)["purchased"].to_numpy()
    scores: dict[str, Any] = {}
    versions: dict[str, str | None] = {"bgnbd": "BG/NBD (fitted on the window's history)", "recency": "days since last purchase"}
    for name in gate_purchase:
        if name == "bgnbd":
            scores[name] = fe[BASELINE_P].to_numpy()
        elif name == "recency":
            scores[name] = -fe["recency_days"].to_numpy()
        elif name == "candidate":
            path = ctx.ws.work.path("models", anchor, CANDIDATE_HOLDOUT)
            if ctx.ws.work.exists(path):
                bundle = load_bundle(ctx.ws, path)
                scores[name] = bundle.predict(fe)[0]
                versions[name] = bundle.version
        elif name == "champion":
            qpath = ctx.ws.work.path("models", previous_anchor(settings, anchor), QUALIFY_FILE)
            if ctx.ws.work.exists(qpath):
                qualified = ctx.ws.work.read_json(qpath)
                bundle = load_bundle(ctx.ws, qualified["deployed_path"])
                scores[name] = bundle.predict(fe)[0]
                versions[name] = qualified.get("deployed_version")
    contenders, matches = {}, {}
    for name, s in scores.items():
        c = contender_curves(y, s, probabilities=name != "recency")
        c["model_version"] = versions.get(name)
        contenders[name] = c
        gate_m = gate_purchase.get(name) or {}
        matches[name] = all(_close(c["metrics"].get(k), gate_m.get(k)) for k in PURCHASE_METRICS if k in gate_m)
    if not all(matches.values()):
        log.warning("report: curves recomputed on %s do not reproduce the gate's metrics: %s", e, matches)
    return {
        "id": "evaluation",
        "title": f"Gate evaluation window: customers as of {e}, purchase in the next {horizon} days",
        "as_of": e.isoformat(),
        "horizon_days": horizon,
        "anchor": anchor.isoformat(),
        "n": int(len(y)),
        "base_rate": float(y.mean()) if len(y) else None,
        "contenders": contenders,
        "matches_gate": matches,
    }


def _stored_evaluation_window(settings: Settings, ctx: Any, metrics: dict[str, Any]) -> dict[str, Any] | None:
    """``_evaluation_window`` computed once per gate evaluation: every day of an anchor shows the
    same window, so it is stored next to the evaluation, keyed by a digest of what the gate
    recorded (a forced refit that changes the evaluation gets a new file)."""
    import hashlib

    ev = metrics.get("evaluation") or {}
    if not ev.get("anchor"):
        return _evaluation_window(settings, ctx, metrics)
    digest = hashlib.sha256(json.dumps(ev, sort_keys=True).encode()).hexdigest()[:12]
    path = ctx.ws.work.path("evaluation", parse_day(ev["anchor"]), f"report-window-{digest}.json")
    if ctx.ws.work.exists(path):
        return ctx.ws.work.read_json(path)
    window = _evaluation_window(settings, ctx, metrics)
    ctx.ws.work.write_json(window, path)
    return window


def _realised_window(settings: Settings, ctx: Any, day: date) -> dict[str, Any] | None:
    """The latest published day D' <= D - horizon of this source, scored against what happened."""
    import pandas as pd

    from purchasing_power.evaluate import finite_or_none, spend_metrics
    from purchasing_power.features import build_labels

    from purchasing_power.clean import load_clean_history

    out = Storage.at(settings.storage)
    h_p, h_s = settings.purchase_horizon_days, settings.spend_horizon_days
    for d in reversed(out.list_days("predictions", PREDICTIONS_FILE)):
        if d + timedelta(days=h_p) > day:
            continue
        mpath = out.path("metrics", d, METRICS_FILE)
        if not out.exists(mpath) or out.read_json(mpath).get("source") != settings.resolved_source:
            continue
        pred = out.read_parquet(out.path("predictions", d, PREDICTIONS_FILE))
        if pred.empty:
            continue
        # only the outcome window is needed: [d+1, min(d+h_s, D)]
        outcome = load_clean_history(settings, day, since=d + timedelta(days=1), columns=["customer_id", "invoice_ts", "line_value"])
        labels = build_labels(outcome, d, pd.Index(pred["customer_id"].to_numpy()), h_p, h_s)
        y = labels["purchased"].to_numpy()
        c = contender_curves(y, pred["p_purchase_30d"].to_numpy(), probabilities=True)
        c["model_version"] = ", ".join(sorted(pred["model_version"].astype(str).unique()))
        window = {
            "id": "realised",
            "title": f"Published predictions of {d}: realised purchases in the next {h_p} days",
            "as_of": d.isoformat(),
            "horizon_days": h_p,
            "n": int(len(y)),
            "base_rate": float(y.mean()),
            "contenders": {"published": c},
            "spend": None,
        }
        if d + timedelta(days=h_s) <= day:
            window["spend"] = finite_or_none(spend_metrics(labels["spend"].to_numpy(), pred["expected_spend_90d"].to_numpy()))
            window["spend"]["horizon_days"] = h_s
        return window
    return None


def build_report(settings: Settings, day: date) -> dict[str, Any]:
    """The curves of ``day`` (see the module docstring). Reads the day's ``metrics.json``, the
    clean history, stored features and model artefacts; writes nothing."""
    from purchasing_power.train import Context

    out = Storage.at(settings.storage)
    mpath = out.path("metrics", day, METRICS_FILE)
    if not out.exists(mpath):
        raise FileNotFoundError(f"no metrics for {day} at {mpath}: run publish first")
    metrics = out.read_json(mpath)
    ctx = Context.load(settings, day)
    windows, errors = [], []
    for name, fn in (("evaluation", lambda: _stored_evaluation_window(settings, ctx, metrics)), ("realised", lambda: _realised_window(settings, ctx, day))):
        try:
            w = fn()
        except Exception as exc:  # a report must never fail the run it describes
            log.exception("report: %s window of %s failed", name, day)
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        if w is not None:
            windows.append(w)
    return {
        "report_version": REPORT_VERSION,
        "as_of": day.isoformat(),
        "source": settings.resolved_source,
        "windows": windows,
        "errors": errors,
    }


def write_report(settings: Settings, day: date) -> str:
    """Build the day's report and write it to ``metrics/ds=D/report.json``; returns the path.
    Meant to run at the end of publish (it reads what publish wrote)."""
    out = Storage.at(settings.storage)
    return out.write_json(build_report(settings, day), report_path(out, day))


def report_day(settings: Settings, day: date) -> dict[str, Any]:
    """``write_report`` with a summary of what it wrote; publish calls it last. A window that
    cannot be computed is listed in ``errors`` (the report never fails the run it describes)."""
    out = Storage.at(settings.storage)
    report = build_report(settings, day)
    path = out.write_json(report, report_path(out, day))
    return {
        "day": day.isoformat(),
        "report_path": path,
        "windows": {w["id"]: w["as_of"] for w in report["windows"]},
        "matches_gate": next((w.get("matches_gate") for w in report["windows"] if w["id"] == "evaluation"), None),
        "errors": report["errors"],
    }


# ---------------------------------------------------------------------------------------------
# Live page data (cheap; cached by file stamp)
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
    try:
        info = storage.fs.info(path)
    except FileNotFoundError:
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


def available_days(storage: Storage) -> list[date]:
    """Days with a published ``metrics.json``, ascending."""
    return storage.list_days("metrics", METRICS_FILE)


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
    metrics = cached(storage, storage.path("metrics", day, METRICS_FILE), "json", _read_json)
    report = cached(storage, report_path(storage, day), "json", _read_json)
    preds = cached(
        storage,
        storage.path("predictions", day, PREDICTIONS_FILE),
        "predictions",
        lambda p: summarise_predictions(storage.read_parquet(p, columns=["p_purchase_30d", "expected_spend_90d", "tier", "model_version"])),
    )
    source = metrics.get("source")
    history, embed_history = [], []
    for d in [d for d in days if d <= day][-history_days:]:
        m = metrics if d == day else cached(storage, storage.path("metrics", d, METRICS_FILE), "json", _read_json)
        if m is None or m.get("source") != source:
            continue
        history.append(_history_row(d, m))
        e = cached(storage, storage.path("runs", d, EMBED_REPORT), "json", _read_json)
        if e is not None:
            embed_history.append({"day": d.isoformat(), **_embed_summary(e)})
    embed_today = cached(storage, storage.path("runs", day, EMBED_REPORT), "json", _read_json)
    return {
        "as_of": day.isoformat(),
        "days": [d.isoformat() for d in reversed(days)],
        "storage": storage.root,
        "source": source,
        "model_version": metrics.get("model_version"),
        "gate": metrics.get("gate") or {},
        "evaluation": metrics.get("evaluation") or {},
        "row_counts": metrics.get("row_counts") or {},
        "tier_counts": metrics.get("tier_counts") or {},
        "embedding": {**(metrics.get("embedding") or {}), "run": _embed_summary(embed_today), "history": embed_history},
        "predictions": preds,
        "quarantine": quarantine_summary(storage, day),
        "history": history,
        "report": report,
    }


# ---------------------------------------------------------------------------------------------
# CLI: write report.json for days published before publish wrote it
# ---------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m purchasing_power.report", description=__doc__.split("\n\n")[0])
    ap.add_argument("--day", action="append", required=True, help="YYYY-MM-DD (repeatable)")
    ap.add_argument("--conf", default="", help="run conf JSON (source, column_map, settings) the day was run with")
    args = ap.parse_args(argv)
    settings = Settings.from_env().with_conf(json.loads(args.conf) if args.conf else {})
    for d in args.day:
        print(write_report(settings, parse_day(d)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
