"""Prediction-quality benchmark: the real pipeline against buy-till-you-die and RFM baselines,
measured out of time on the UCI Online Retail data.

    PYTHONPATH=include .venv/bin/python bench/bench_quality.py [--data ../shared/datasets/online_retail.parquet]
        [--storage /tmp/ppbench-quality] [--days 2011-05-31,2011-08-31,2011-09-30]
        [--bootstrap 500] [--no-ablations] [--out bench/results/quality.json] [--md bench/results/quality.md]

Protocol
--------
For each as-of day D the pipeline's own stage functions run in this process, in the Dag's order
(``extract, clean, embed, features, train, evaluate, gate, score, publish`` via
``purchasing_power.pipeline.run_stage``) with default settings, in a scratch storage root (never
the repository; reused across runs so the embedding cache and the grid snapshots' features are
computed once). The champion's predictions are ``predictions/ds=D/predictions.parquet``.

Every run for D reads clean data up to the end of D only; models are fitted on the anchor day's
closed snapshots (purchase labels closed by the anchor <= D, spend labels too), so no label
window used for training reaches D+1. Nothing is tuned on these windows: the purchase recipe
(features, model family, blend, calibration) was chosen on other windows, as of 2011-04-30,
2011-06-30 and 2011-07-31 (30-day outcomes ending by 2011-08-30): so were the logistic
regression's penalty (C = 0.01) and the daily recalibration on two closed windows 14 days apart
(ECE 0.047 -> 0.028 on those days). The pipeline itself chooses and calibrates only on its
held-out training snapshot and on windows closed by D. (The spend recipe was compared on
the same as-of days; their 90-day outcomes do overlap the later evaluation windows.)

Outcomes (read from the source's full history, cleaned by the same clean stage): a purchase day
(net value > 0) in [D+1, D+31) and net spend in [D+1, D+91) (floored at 0), for every customer
the pipeline scored (a valid sale line before D+1).

Contenders, all on the same customers:

* purchase: the champion (what the gate deployed, as the score stage applies it: with its
  calibration refitted on the latest closed windows before D+1), the same champion with the
  calibration of its fit (what it scored before that daily recalibration), the anchor's
  candidate before the gate,
  BG/NBD P(purchase in 30 days) and expected purchases (maximum likelihood, Fader-Hardie-Lee
  2005, fitted on D's history), RFM + logistic regression and recency alone (a logistic
  regression on log recency), both fitted on the same closed snapshots as the candidate;
* spend: the champion, the candidate's two-part spend model, past net spend ("past spend total",
  scaled to a 90-day amount on the candidate's spend snapshots: the scale changes neither Gini
  nor Spearman) and BG/NBD x Gamma-Gamma.

Metrics: ROC-AUC, PR-AUC (average precision), lift at the top 10 %, Brier and ECE (10
equal-width bins) for probabilities; normalized Gini, Spearman and decile MAPE (ZILN paper) for
spend. 95 % intervals are percentile intervals of a paired bootstrap over customers (the same
resamples for every contender of a day); an average's interval combines the days' resamples.

Ablations refit the anchor's deployable candidate on the same snapshots with: no text features;
SMOTE forced (SMOTE variants only, recalibrated on the held-out snapshot); SMOTE off.

User-text ablation (``user_text_ablation`` in the JSON; the UCI data has no user-written text, so
it runs on the generated demo data, whose reviews carry a *synthetic* signal documented in
``purchasing_power.demo.reviews``: it measures whether the features pick a signal up, not whether real
reviews would help). The demo source (2,500 customers, 2023-01-01..2024-12-31, seed 7) and its
reviews are written under ``--storage``; the pipeline runs for each of ``--user-text-days`` with
the reviews as the ``texts`` source and product-text embeddings off in both arms (they would only
cost embedding time here); the anchor's deployable candidate is refitted on the same snapshots with
and without the user-text columns (counts, recency, mean review embedding) and both are scored on
the day's customers against their real 30-day outcomes (ROC-AUC, PR-AUC, paired bootstrap).
``--user-text-only`` runs just this and merges it into an existing ``--out``.

Writes the JSON to --out and a Markdown summary to --md (default: --out with .md).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "include"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from quality_report import markdown, smote_summary  # noqa: E402
from quality_stats import average, paired_difference, summarise  # noqa: E402
from quality_user_text import DEFAULT_USER_TEXT_DAYS, user_text_ablation, user_text_markdown  # noqa: E402

log = logging.getLogger("bench_quality")

DEFAULT_DAYS = ("2011-05-31", "2011-08-31", "2011-09-30")
DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "online_retail.parquet"
DEFAULT_STORAGE = "/tmp/ppbench-quality"
TARGET_LIFT = 0.02
TARGET_ECE = 0.03
RFM_COLUMNS = ("recency_days", "n_purchase_days", "spend_total")

# ------------------------------------------------------------------------------------------------
# pipeline
# ------------------------------------------------------------------------------------------------
def run_day(day: date, params: dict[str, Any]) -> dict[str, float]:
    """Every stage of the Dag for ``day`` in this process (as the Dag does: a decided anchor
    skips train/evaluate/gate, e.g. on a rerun over the same storage); seconds per stage."""
    from purchasing_power.pipeline import run_all

    timings: dict[str, float] = {}
    run_all(params, day, timings=timings)
    for stage, seconds in timings.items():
        log.info("  %s %s: %.1f s", day, stage, seconds)
    return timings


def source_last_day(settings) -> date:
    from purchasing_power.extract import read_source

    ts = pd.to_datetime(read_source(settings.resolved_source, settings.column_map)["InvoiceDate"], errors="coerce")
    return ts.max().date()


def _logreg(train: pd.DataFrame, cols: list[str], seed: int):
    """Standardised logistic regression on log1p(max(x, 0)) of ``cols`` -> fitted (model, transform)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    def transform(f: pd.DataFrame) -> np.ndarray:
        return np.log1p(np.clip(np.nan_to_num(f[cols].to_numpy(dtype=np.float64)), 0.0, None))

    X = transform(train)
    scaler = StandardScaler().fit(X)
    model = LogisticRegression(C=1.0, max_iter=2000, random_state=seed).fit(scaler.transform(X), train["purchased"].to_numpy())
    return lambda f: model.predict_proba(scaler.transform(transform(f)))[:, 1]


# ------------------------------------------------------------------------------------------------
# one day
# ------------------------------------------------------------------------------------------------
def evaluate_day(settings, day: date, truth_tx: pd.DataFrame, *, resamples: int, seed: int, ablations: bool) -> dict[str, Any]:
    from purchasing_power.metrics import (
        bootstrap_indices,
        bootstrap_metrics,
        purchase_point_metrics,
        spend_point_metrics,
    )
    from purchasing_power.labels import build_labels
    from purchasing_power.calendar import anchor_for
    from purchasing_power.gate import deployed_bundle
    from purchasing_power.history import RunData
    from purchasing_power.model import fit_past_spend, fit_purchase_model, fit_spend_model, load_bundle
    from purchasing_power.schemas import BASELINE_P, BASELINE_SPEND
    from purchasing_power.storage import CANDIDATE_DEPLOY, DECISION_FILE, METRICS_FILE, PREDICTIONS_FILE, TRAINING_INFO, Storage
    from purchasing_power.train import training_table

    s = settings
    out_store = Storage.at(s.storage)
    pred = out_store.read_parquet(out_store.path("predictions", day, PREDICTIONS_FILE)).set_index("customer_id")
    data = RunData.load(s, day)
    feats = data.features(day)
    if not pred.index.equals(feats.index):
        raise AssertionError(f"{day}: predictions and features cover different customers")
    customers = feats.index
    lab = build_labels(truth_tx, day, customers, s.purchase_horizon_days, s.spend_horizon_days)
    y_p = lab["purchased"].to_numpy()
    y_s = lab["spend"].to_numpy()

    anchor = anchor_for(s, day)
    training = data.ws.per_source.read_json(data.ws.per_source.path("models", anchor, TRAINING_INFO))
    decision = data.ws.per_source.read_json(data.ws.per_source.path("models", anchor, DECISION_FILE))
    deployed = training.get("deployed") or {}
    p_snaps = [date.fromisoformat(d) for d in deployed.get("purchase_snapshots", [])]
    s_snaps = [date.fromisoformat(d) for d in deployed.get("spend_snapshots", [])]
    t0 = time.perf_counter()
    ptab = training_table(data, p_snaps, anchor) if p_snaps else pd.DataFrame()
    stab = training_table(data, s_snaps, anchor) if s_snaps else pd.DataFrame()
    cand_path = data.ws.per_source.path("models", anchor, CANDIDATE_DEPLOY)
    candidate = load_bundle(cand_path) if data.ws.per_source.exists(cand_path) else None

    purchase = {
        "champion": pred["p_purchase_30d"].to_numpy(),
        "bgnbd": np.nan_to_num(feats[BASELINE_P].to_numpy(dtype=np.float64)),
        "bgnbd_expected": np.nan_to_num(feats["bgnbd_expected_purchases"].to_numpy(dtype=np.float64)),
    }
    deployed = deployed_bundle(decision, data.ws.per_source)
    if deployed.purchase is not None:  # what scoring gives without the daily recalibration
        purchase["champion_fit_calibration"] = deployed.predict(feats)[0]
    if candidate is not None:
        purchase["candidate"] = candidate.predict(feats)[0]
    if not ptab.empty:
        purchase["rfm_logreg"] = _logreg(ptab, list(RFM_COLUMNS), s.seed)(feats)
        purchase["recency"] = _logreg(ptab, ["recency_days"], s.seed)(feats)
    spend = {"champion": pred["expected_spend_90d"].to_numpy(), "bgnbd_gg": np.nan_to_num(feats[BASELINE_SPEND].to_numpy(dtype=np.float64))}
    past_model = fit_past_spend(stab, stab["spend"]) if not stab.empty else None
    scale = past_model.scale if past_model is not None else None
    spend["past_spend"] = past_model.predict(feats) if past_model is not None else np.clip(np.nan_to_num(feats["spend_total"].to_numpy()), 0.0, None)
    if candidate is not None and candidate.spend is not None:
        spend["candidate"] = candidate.predict(feats)[1]

    abl: dict[str, np.ndarray] = {}
    abl_info: dict[str, Any] = {}
    if ablations and candidate is not None and not ptab.empty:
        abl["default"] = purchase["candidate"]
        abl_info["default"] = candidate.purchase.selection
        no_text = [c for c in ptab.columns if not c.startswith("txt_")]
        kinds = tuple(s.candidates)
        variants = {
            "no_text": dict(smote=s.use_smote, columns=no_text),
            "smote_forced": dict(smote=True, smote_only=True),
            "no_smote": dict(smote=False),
        }
        for name, kw in variants.items():
            t1 = time.perf_counter()
            m = fit_purchase_model(ptab, seed=s.seed, kinds=kinds, **kw)
            abl[name] = m.predict_proba(feats)
            abl_info[name] = m.selection
            log.info("  %s ablation %s: %.1f s", day, name, time.perf_counter() - t1)
        if not stab.empty and candidate.spend is not None:
            sm = fit_spend_model(stab, seed=s.seed, columns=[c for c in stab.columns if not c.startswith("txt_")])
            spend["candidate_no_text"] = sm.predict(feats)
    fit_seconds = time.perf_counter() - t0

    idx = bootstrap_indices(len(customers), resamples, seed)
    t1 = time.perf_counter()
    boot_p = {
        name: bootstrap_metrics(lambda y, q, pr=name != "bgnbd_expected": purchase_point_metrics(y, q, probabilities=pr), y_p, p, idx)
        for name, p in purchase.items()
    }
    boot_s = {name: bootstrap_metrics(spend_point_metrics, y_s, q, idx) for name, q in spend.items()}
    boot_a = {name: bootstrap_metrics(purchase_point_metrics, y_p, p, idx) for name, p in abl.items()}
    boot_seconds = time.perf_counter() - t1

    metrics_path = out_store.path("metrics", day, METRICS_FILE)
    recalibration = out_store.read_json(metrics_path).get("recalibration")  # as published for D
    return {
        "day": day.isoformat(),
        "anchor": anchor.isoformat(),
        "customers": int(len(customers)),
        "purchase_base_rate": float(y_p.mean()),
        "mean_spend": float(y_s.mean()),
        "outcome_windows": {
            "purchase": [_shift(day, 1), _shift(day, 1 + s.purchase_horizon_days)],
            "spend": [_shift(day, 1), _shift(day, 1 + s.spend_horizon_days)],
        },
        "training": {
            "purchase_snapshots": [d.isoformat() for d in p_snaps],
            "spend_snapshots": [d.isoformat() for d in s_snaps],
            "purchase_rows": int(len(ptab)),
            "spend_rows": int(len(stab)),
            "past_spend_scale": scale,
            "candidate_selection": (candidate.purchase.selection if candidate is not None and candidate.purchase else None),
            "candidate_spend": (getattr(candidate.spend, "info", None) if candidate is not None and candidate.spend is not None else None),
        },
        "gate": {
            "status": decision.get("status"),
            "promoted": decision.get("promoted"),
            "spend": decision.get("spend"),
            "deployed_version": decision.get("deployed_version"),
            "champion_version": decision.get("champion_version"),
            "reasons": decision.get("reasons"),
            "metrics_json": metrics_path,
        },
        "recalibration": recalibration,
        "_boot": {"purchase": boot_p, "spend": boot_s, "ablation": boot_a},
        "ablation_selection": abl_info,
        "seconds": {"fits_and_ablations": round(fit_seconds, 1), "bootstrap": round(boot_seconds, 1)},
    }


def _shift(day: date, days: int) -> str:
    from datetime import timedelta

    return (day + timedelta(days=days)).isoformat()


def targets(days: list[dict[str, Any]]) -> dict[str, Any]:
    avg_p = average(days, "purchase")
    avg_s = average(days, "spend")
    out: dict[str, Any] = {}
    for metric in ("roc_auc", "pr_auc"):
        diff = paired_difference(days, "purchase", "champion", "bgnbd", metric)
        out[f"purchase_{metric}_vs_bgnbd"] = {
            "target": f"champion - BG/NBD >= {TARGET_LIFT}",
            "champion": avg_p["champion"][metric]["value"],
            "bgnbd": avg_p["bgnbd"][metric]["value"],
            "difference": diff,
            "met": diff["value"] is not None and diff["value"] >= TARGET_LIFT,
        }
    g_past = avg_s["past_spend"]["normalized_gini"]["value"]
    g_gg = avg_s["bgnbd_gg"]["normalized_gini"]["value"]
    better = "past_spend" if g_past >= g_gg else "bgnbd_gg"
    diff = paired_difference(days, "spend", "champion", better, "normalized_gini")
    out["spend_gini_vs_best_baseline"] = {
        "target": f"champion - better of (past spend, BG/NBD x GG) >= {TARGET_LIFT}",
        "champion": avg_s["champion"]["normalized_gini"]["value"],
        "better_baseline": better,
        "baseline": max(g_past, g_gg),
        "difference": diff,
        "met": diff["value"] is not None and diff["value"] >= TARGET_LIFT,
    }
    cand = avg_s.get("candidate", {}).get("normalized_gini")
    if cand is not None:
        out["spend_gini_vs_best_baseline"]["candidate_two_part"] = cand["value"]
        out["spend_gini_vs_best_baseline"]["candidate_difference"] = paired_difference(days, "spend", "candidate", better, "normalized_gini")
    ece = avg_p["champion"]["ece"]["value"]
    out["purchase_ece"] = {
        "target": f"champion ECE <= {TARGET_ECE}",
        "champion": ece,
        "per_day": {d["day"]: d["_boot"]["purchase"]["champion"]["ece"]["value"] for d in days},
        "met": ece is not None and ece <= TARGET_ECE,
    }
    if "champion_fit_calibration" in avg_p:
        out["purchase_ece"]["without_daily_recalibration"] = avg_p["champion_fit_calibration"]["ece"]["value"]
        out["purchase_ece"]["without_daily_recalibration_per_day"] = {
            d["day"]: d["_boot"]["purchase"]["champion_fit_calibration"]["ece"]["value"] for d in days if "champion_fit_calibration" in d["_boot"]["purchase"]
        }
    if all("smote_forced" in d["_boot"]["ablation"] for d in days):
        ece_s = average(days, "ablation")["smote_forced"]["ece"]["value"]
        out["purchase_ece"]["smote_forced_recalibrated"] = ece_s
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--storage", default=os.environ.get("PURCHASING_POWER_BENCH_STORAGE", DEFAULT_STORAGE))
    ap.add_argument("--days", default=",".join(DEFAULT_DAYS))
    ap.add_argument("--bootstrap", type=int, default=500)
    ap.add_argument("--seed", type=int, default=20240101)
    ap.add_argument("--no-ablations", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "quality.json"))
    ap.add_argument("--md", default=None)
    ap.add_argument("--user-text-days", default=",".join(DEFAULT_USER_TEXT_DAYS))
    ap.add_argument("--user-text-only", action="store_true", help="run only the demo user-text ablation and merge it into --out")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("purchasing_power", "httpx", "urllib3", "transformers", "sentence_transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    storage = str(Path(args.storage).resolve())
    if storage == str(ROOT) or storage.startswith(str(ROOT) + os.sep):
        print(f"--storage must lie outside the repository, got {storage}", file=sys.stderr)
        return 2
    os.environ["PURCHASING_POWER_STORAGE"] = storage
    ut_days = [date.fromisoformat(d.strip()) for d in args.user_text_days.split(",") if d.strip()]
    if args.user_text_only:
        out = Path(args.out)
        result = json.loads(out.read_text()) if out.exists() else {"benchmark": "prediction quality, out of time"}
        result["user_text_ablation"] = user_text_ablation(storage, ut_days, resamples=args.bootstrap, seed=args.seed)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, sort_keys=False) + "\n")
        md = Path(args.md) if args.md else out.with_suffix(".md")
        text = md.read_text() if md.exists() else ""
        marker = "\n## User-text ablation"
        md.write_text((text.split(marker)[0].rstrip("\n") + "\n" if text else "") + user_text_markdown(result["user_text_ablation"]))
        print(user_text_markdown(result["user_text_ablation"]))
        return 0
    if not Path(args.data).exists():
        print(f"data set not found: {args.data}", file=sys.stderr)
        return 2
    from purchasing_power.history import load_clean_history
    from purchasing_power.pipeline import run_stage
    from purchasing_power.settings import Settings

    t_start = time.perf_counter()
    params = {"source": str(Path(args.data).resolve())}
    settings = Settings.from_env().with_conf(params)
    days = [date.fromisoformat(d.strip()) for d in args.days.split(",") if d.strip()]

    # outcomes: the source's whole history through its last day, cleaned by the pipeline's clean
    # stage (the runs below still read only clean partitions <= their own day)
    last = source_last_day(settings)
    t0 = time.perf_counter()
    for stage in ("extract", "clean"):
        run_stage(stage, {**params, "day": last.isoformat()})
    truth_tx = load_clean_history(settings, last)
    prep_seconds = time.perf_counter() - t0
    log.info("outcomes: clean history through %s (%d rows) in %.1f s", last, len(truth_tx), prep_seconds)

    per_day, timings = [], {}
    for day in days:
        log.info("pipeline for %s", day)
        timings[day.isoformat()] = run_day(day, params)
        res = evaluate_day(settings, day, truth_tx, resamples=args.bootstrap, seed=args.seed, ablations=not args.no_ablations)
        res["stage_seconds"] = timings[day.isoformat()]
        per_day.append(res)
        log.info("%s done (%s)", day, res["seconds"])

    avg = {"purchase": average(per_day, "purchase"), "spend": average(per_day, "spend")}
    if all(d["_boot"]["ablation"] for d in per_day):
        avg["ablation"] = average(per_day, "ablation")
    result: dict[str, Any] = {
        "benchmark": "prediction quality, out of time",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "data": params["source"],
        "storage": storage,
        "source_last_day": last.isoformat(),
        "settings": {k: v for k, v in settings.as_dict().items() if k not in ("storage", "source", "column_map")},
        "bootstrap_resamples": args.bootstrap,
        "bootstrap_seed": args.seed,
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()},
        "average": avg,
        "targets": targets(per_day),
        "days": [],
    }
    if "ablation" in avg:
        result["smote_summary"] = smote_summary(per_day, avg["ablation"])
    for d in per_day:
        boot = d.pop("_boot")
        d["purchase"] = summarise(boot["purchase"])
        d["spend"] = summarise(boot["spend"])
        d["ablation"] = summarise(boot["ablation"])
        result["days"].append(d)
    if not args.no_ablations:
        result["user_text_ablation"] = user_text_ablation(storage, ut_days, resamples=args.bootstrap, seed=args.seed)
    result["seconds_total"] = round(time.perf_counter() - t_start, 1)
    result["seconds"] = {"outcomes": round(prep_seconds, 1), "stages": timings}

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, sort_keys=False) + "\n")
    md = Path(args.md) if args.md else out.with_suffix(".md")
    md.write_text(markdown(result) + (user_text_markdown(result["user_text_ablation"]) if "user_text_ablation" in result else ""))
    print(md.read_text())
    print(f"wrote {out} and {md} in {result['seconds_total']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
