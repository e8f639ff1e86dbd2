"""The user-text ablation of the quality benchmark, on the generated demo data (its reviews carry
a *synthetic* signal, ``purchasing_power.demo.reviews``: this shows the features pick a signal up,
not that real reviews would help). Run by bench_quality.py (see its docstring)."""

from __future__ import annotations

import logging
import time
from datetime import date
from pathlib import Path
from typing import Any

from quality_stats import _cell, average, paired_difference, summarise

log = logging.getLogger("bench_quality")


DEFAULT_USER_TEXT_DAYS = ("2024-06-30", "2024-09-30")


def user_text_ablation(storage: str, days: list[date], *, resamples: int, seed: int) -> dict[str, Any]:
    """The with/without user-text ablation on the demo data (see the module docstring)."""
    from purchasing_power.demo import write_demo_source
    from purchasing_power.calendar import anchor_for
    from purchasing_power.labels import build_labels
    from purchasing_power.history import RunData, load_clean_history
    from purchasing_power.metrics import bootstrap_indices, bootstrap_metrics, purchase_point_metrics
    from purchasing_power.model import fit_purchase_model
    from purchasing_power.pipeline import run_all, run_stage
    from purchasing_power.schemas import USER_TEXT_PREFIX
    from purchasing_power.settings import Settings
    from purchasing_power.storage import TRAINING_INFO
    from purchasing_power.train import training_table

    t_start = time.perf_counter()
    folder = Path(storage) / "user-text-demo"
    source = folder / "transactions.parquet"
    texts = folder / "texts.parquet"
    if not (source.exists() and texts.exists()):
        write_demo_source(str(source), n_customers=2500, start=date(2023, 1, 1), end=date(2024, 12, 31), seed=7)
    params = {"source": str(source), "texts": str(texts)}
    code = {"use_text": False}
    settings = Settings.from_env().with_conf(params).with_overrides(**code)
    last = date(2024, 12, 31)
    for stage in ("extract", "clean"):
        run_stage(stage, {**params, "day": last.isoformat()}, overrides=code)
    truth = load_clean_history(settings, last)
    per_day, boots = [], []
    for day in days:
        run_all(params, day, overrides=code)
        data = RunData.load(settings, day)
        feats = data.features(day)
        anchor = anchor_for(settings, day)
        info = data.ws.per_source.read_json(data.ws.per_source.path("models", anchor, TRAINING_INFO))
        snaps = [date.fromisoformat(d) for d in (info.get("deployed") or {}).get("purchase_snapshots", [])]
        ptab = training_table(data, snaps, anchor)
        user_cols = [c for c in ptab.columns if c.startswith(USER_TEXT_PREFIX) or c.startswith("user_text")]
        arms = {"with_user_text": None, "without_user_text": [c for c in ptab.columns if c not in user_cols]}
        y = build_labels(truth, day, feats.index, settings.purchase_horizon_days, settings.spend_horizon_days)["purchased"].to_numpy()
        idx = bootstrap_indices(len(feats), resamples, seed)
        boot = {}
        for name, cols in arms.items():
            model = fit_purchase_model(ptab, seed=settings.seed, smote=settings.use_smote, kinds=tuple(settings.candidates), columns=cols)
            boot[name] = bootstrap_metrics(purchase_point_metrics, y, model.predict_proba(feats), idx)
        boots.append({"_boot": {"user_text": boot}})
        summary = summarise(boot)
        per_day.append({
            "day": day.isoformat(), "anchor": anchor.isoformat(), "customers": int(len(feats)), "purchase_base_rate": float(y.mean()),
            "customers_with_text": int((feats["user_texts_n"] > 0).sum()), "user_text_columns": len(user_cols),
            "training_rows": int(len(ptab)),
            **{name: {k: summary[name][k] for k in ("roc_auc", "pr_auc")} for name in arms},
        })
        log.info("user-text ablation %s: %s", day, {n: per_day[-1][n] for n in arms})
    avg = average(boots, "user_text")
    return {
        "data": "generated demo data with synthetic reviews (purchasing_power.demo.reviews): no real-world lift is claimed",
        "source": str(source), "texts": str(texts), "settings": {"use_text": False, "use_user_text": "with vs without"},
        "average": {name: {k: avg[name][k] for k in ("roc_auc", "pr_auc")} for name in avg},
        "difference": {m: paired_difference(boots, "user_text", "with_user_text", "without_user_text", m) for m in ("roc_auc", "pr_auc")},
        "days": per_day,
        "seconds": round(time.perf_counter() - t_start, 1),
    }


def user_text_markdown(res: dict[str, Any]) -> str:
    lines = ["", "## User-text ablation (demo data, synthetic review signal)", "",
             "Product-text embeddings off in both arms; the candidate refitted on the same snapshots. "
             "The demo's review signal is synthetic: this measures whether the features pick it up, and claims no real-world lift.", "",
             "| | ROC-AUC | PR-AUC |", "|---|---|---|"]
    for name, m in res["average"].items():
        lines.append(f"| {name.replace('_', ' ')} | {_cell(m['roc_auc'])} | {_cell(m['pr_auc'])} |")
    d = res["difference"]
    lines.append(f"| difference (with - without) | {_cell(d['roc_auc'])} | {_cell(d['pr_auc'])} |")
    return "\n".join(lines) + "\n"
