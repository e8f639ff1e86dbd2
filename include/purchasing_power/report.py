"""The page's curves: ROC, precision-recall, cumulative gains/lift and the reliability diagram of
a day, precomputed once by publish into ``metrics/ds=D/report.json`` (:func:`write_report`;
``python -m purchasing_power.report --day D`` for days published before it was wired in).

Curves need one score and one outcome per customer, which no published file holds (D's
predictions have no outcome yet). The report has two windows:

- ``evaluation``: the gate's own purchase window (features as of e = anchor - 30 days, outcomes
  over [e+1, e+31)), with every contender the gate compared (holdout candidate, champion,
  BG/NBD, recency), read from the scores the evaluate stage stored
  (``evaluation/ds=A/evaluation_scores.parquet``). The AUCs, lift, Brier and ECE recomputed from
  them are checked against ``metrics.json`` (``matches_gate``), so the curves and the gate's
  numbers cannot silently disagree.
- ``realised``: when a day D' <= D - 30 of the same source was published, its *published*
  ``p_purchase_30d`` against what those customers actually did in [D'+1, D'+31) (and the
  90-day spend when that horizon has closed too): how the deployed predictions turned out.

``report.json`` holds no timings: a rerun over the same storage writes the same bytes. Its
``evaluation`` window depends only on the data and the settings; its ``realised`` window also on
which earlier days were published when D was (a backfill that publishes D before D - 30 shows an
older realised day, or none, until D is rerun), so unlike ``predictions.parquet`` and
``metrics.json`` it is not part of the byte-identity guarantee across run orders. The page's live summaries are in
:mod:`purchasing_power.ui.page_data`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from purchasing_power.calendar import parse_day
from purchasing_power.errors import MissingInput
from purchasing_power.settings import Settings
from purchasing_power.storage import METRICS_FILE, PREDICTIONS_FILE, Storage, Workspace, published_metrics, report_path

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

log = logging.getLogger(__name__)

REPORT_VERSION = 1

#: Contenders in the order the page lists them.
CONTENDERS = ("candidate", "champion", "bgnbd", "recency", "published")
SPEND_CONTENDERS = ("candidate", "bgnbd_gg", "past_spend", "published")
PURCHASE_METRICS = ("roc_auc", "pr_auc", "lift_at_10pct", "brier", "ece", "base_rate", "n")
SPEND_METRICS = ("normalized_gini", "spearman", "decile_mape", "mean_actual", "mean_predicted", "n")
CALIBRATION_BINS = 10
GAINS_SHARES = tuple(round(0.05 * i, 2) for i in range(1, 21))  # 5 %, 10 %, ..., 100 %
MAX_CURVE_POINTS = 150
#: Relative tolerance when checking recomputed metrics against the gate's.
MATCH_TOLERANCE = 1e-9


# ---------------------------------------------------------------------------------------------
# Curve maths (pure functions over arrays; the same definitions as purchasing_power.metrics)
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
    from purchasing_power.metrics import finite_or_none, purchase_metrics

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
def _evaluation_window(settings: Settings, metrics: dict[str, Any]) -> dict[str, Any] | None:
    """Every contender the gate compared, on the gate's purchase window, from the stored scores."""
    from purchasing_power.gate import read_scores

    ev = metrics.get("evaluation") or {}
    window = ev.get("purchase_window") or {}
    gate_purchase = ev.get("purchase") or {}
    if not ev.get("anchor") or not window.get("as_of") or not gate_purchase:
        return None
    anchor, e = parse_day(ev["anchor"]), parse_day(window["as_of"])
    horizon = int(window.get("horizon_days") or settings.purchase_horizon_days)
    store = Workspace.for_settings(settings).per_source
    stored = read_scores(store, anchor)
    if stored is None:
        raise MissingInput(f"no evaluation scores stored for anchor {anchor} under {store.path('evaluation', anchor)}: rerun its evaluate task")
    frame, versions = stored
    y = frame["purchased"].to_numpy()
    contenders, matches = {}, {}
    for name in gate_purchase:
        if name not in frame.columns:
            continue
        c = contender_curves(y, frame[name].to_numpy(), probabilities=name != "recency")
        c["model_version"] = versions.get(name)
        contenders[name] = c
        gate_m = gate_purchase.get(name) or {}
        matches[name] = all(_close(c["metrics"].get(k), gate_m.get(k)) for k in PURCHASE_METRICS if k in gate_m)
    if not all(matches.values()):
        log.warning("report: curves drawn from the stored scores of %s do not reproduce the gate's metrics: %s", e, matches)
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


def _realised_window(settings: Settings, day: date) -> dict[str, Any] | None:
    """The latest published day D' <= D - horizon of this source, scored against what happened."""
    import pandas as pd

    from purchasing_power.labels import build_labels
    from purchasing_power.history import load_clean_history
    from purchasing_power.metrics import finite_or_none, spend_metrics

    out = Storage.at(settings.storage)
    h_p, h_s = settings.purchase_horizon_days, settings.spend_horizon_days
    for d in reversed(out.list_days("predictions", PREDICTIONS_FILE)):
        if d + timedelta(days=h_p) > day:
            continue
        published = published_metrics(out, d)
        if published is None or published.get("source") != settings.resolved_source:
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
    stored evaluation scores and the clean history after an earlier published day; writes nothing."""
    out = Storage.at(settings.storage)
    mpath = out.path("metrics", day, METRICS_FILE)
    if not out.exists(mpath):
        raise FileNotFoundError(f"no metrics for {day} at {mpath}: run publish first")
    metrics = out.read_json(mpath)
    windows, errors = [], []
    for name, fn in (("evaluation", lambda: _evaluation_window(settings, metrics)), ("realised", lambda: _realised_window(settings, day))):
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
# CLI: write report.json for days published before publish wrote it
# ---------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m purchasing_power.report", description=__doc__.split("\n\n")[0])
    ap.add_argument("--day", action="append", required=True, help="YYYY-MM-DD (repeatable)")
    ap.add_argument("--conf", default="", help="run conf JSON (the Dag's Params: source, column_map, model) the day was run with")
    args = ap.parse_args(argv)
    settings = Settings.from_env().with_conf(json.loads(args.conf) if args.conf else {})
    for d in args.day:
        print(write_report(settings, parse_day(d)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
