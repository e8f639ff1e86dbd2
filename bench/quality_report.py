"""The quality benchmark's Markdown report (bench/results/quality.md) and the labels of its
contenders; bench_quality.py computes what it shows."""

from __future__ import annotations

from typing import Any

from quality_stats import _cell


PURCHASE_LABELS = {
    "champion": "champion (deployed by the gate)",
    "champion_fit_calibration": "champion, calibration of its fit (no daily recalibration)",
    "candidate": "candidate before the gate",
    "bgnbd": "BG/NBD P(purchase in 30 d)",
    "bgnbd_expected": "BG/NBD expected purchases",
    "rfm_logreg": "RFM + logistic regression",
    "recency": "recency alone",
}
SPEND_LABELS = {
    "champion": "champion (deployed by the gate)",
    "candidate": "candidate two-part model",
    "candidate_no_text": "candidate two-part model, no text",
    "past_spend": "past spend total",
    "bgnbd_gg": "BG/NBD x Gamma-Gamma",
}
ABLATION_LABELS = {
    "default": "default (text, SMOTE competing, recalibrated)",
    "no_text": "without text embeddings",
    "smote_forced": "SMOTE forced (recalibrated)",
    "no_smote": "without SMOTE",
}


# ------------------------------------------------------------------------------------------------
# markdown
# ------------------------------------------------------------------------------------------------
def _table(rows: dict[str, dict[str, Any]], labels: dict[str, str], metrics: list[tuple[str, str]]) -> list[str]:
    lines = ["| | " + " | ".join(h for _, h in metrics) + " |", "|---|" + "---|" * len(metrics)]
    for name, label in labels.items():
        if name in rows:
            lines.append(f"| {label} | " + " | ".join(_cell(rows[name].get(k)) for k, _ in metrics) + " |")
    return lines


P_METRICS = [("roc_auc", "ROC-AUC"), ("pr_auc", "PR-AUC"), ("lift_at_10pct", "lift@10%"), ("brier", "Brier"), ("ece", "ECE")]
S_METRICS = [("normalized_gini", "norm. Gini"), ("spearman", "Spearman"), ("decile_mape", "decile MAPE")]


def markdown(result: dict[str, Any]) -> str:
    days = result["days"]
    L = [
        f"Out-of-time quality on UCI Online Retail, as of {', '.join(d['day'] for d in days)} "
        f"(averages over the days; 95 % paired-bootstrap intervals, {result['bootstrap_resamples']} resamples). "
        "Outcomes: a purchase in [D+1, D+31), net spend in [D+1, D+91); every customer with a valid purchase before D+1. "
        f"`make bench-quality` ({result['seconds_total']:.0f} s on {result['machine']['cpus']} CPUs).",
        "",
        "**Purchase in the next 30 days** (`p_purchase_30d`), average of the days",
        "",
        *_table(result["average"]["purchase"], PURCHASE_LABELS, P_METRICS),
        "",
        "**Spend over the next 90 days** (`expected_spend_90d`), average of the days",
        "",
        *_table(result["average"]["spend"], SPEND_LABELS, S_METRICS),
        "",
        "**Targets** (averages over the days)",
        "",
        "| target | measured | met |",
        "|---|---|---|",
    ]
    t = result["targets"]
    for key, label in (("purchase_roc_auc_vs_bgnbd", "ROC-AUC ≥ BG/NBD + 0.02"), ("purchase_pr_auc_vs_bgnbd", "PR-AUC ≥ BG/NBD + 0.02")):
        x = t[key]
        L.append(f"| {label} | {x['champion']:.3f} vs {x['bgnbd']:.3f}: {_signed(x['difference'])} | {'yes' if x['met'] else 'no'} |")
    x = t["spend_gini_vs_best_baseline"]
    extra = f"; candidate two-part {_signed(x['candidate_difference'])}" if "candidate_difference" in x else ""
    L.append(f"| normalized Gini ≥ better spend baseline + 0.02 | {x['champion']:.3f} vs {x['better_baseline']} {x['baseline']:.3f}: "
             f"{_signed(x['difference'])}{extra} | {'yes' if x['met'] else 'no'} |")
    x = t["purchase_ece"]
    per_day = ", ".join(f"{d}: {v:.3f}" for d, v in x["per_day"].items())
    without = x.get("without_daily_recalibration")
    note = f"; without the daily recalibration {without:.3f}" if without is not None else ""
    L.append(f"| ECE ≤ 0.03 | {x['champion']:.3f} ({per_day}){note} | {'yes' if x['met'] else 'no'} |")
    if result["average"].get("ablation"):
        L += ["", "**Ablations** (the anchor's candidate refitted on the same snapshots), average of the days", "",
              *_table(result["average"]["ablation"], ABLATION_LABELS, P_METRICS)]
        smote = result.get("smote_summary")
        if smote:
            L += ["", smote]
    L += ["", "**Per day**", ""]
    for d in days:
        g = d["gate"]
        L += [
            f"*{d['day']}* — anchor {d['anchor']}, {d['customers']} customers, purchase rate {d['purchase_base_rate']:.3f}, "
            f"gate: {g['status']} (spend: {g['spend']}), deployed `{g['deployed_version']}`{_recal_note(d.get('recalibration'))}",
            "",
            *_table(d["purchase"], PURCHASE_LABELS, P_METRICS),
            "",
            *_table(d["spend"], SPEND_LABELS, S_METRICS),
            "",
        ]
    return "\n".join(L).rstrip() + "\n"


def _recal_note(info: dict[str, Any] | None) -> str:
    if not info:
        return ""
    if not info.get("applied"):
        return f"; calibration of the fit kept ({info.get('reason')})"
    return (
        f"; purchase calibration refitted on the windows as of {', '.join(info['snapshots'])} "
        f"(purchase rate {info['purchase_rate']:.3f}; mean p {info['mean_p_before']:.3f} -> {info['mean_p_after']:.3f} there)"
    )


def _signed(m: dict[str, Any]) -> str:
    lo, hi = m["ci95"]
    return f"{m['value']:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def smote_summary(days: list[dict[str, Any]], avg_abl: dict[str, Any]) -> str | None:
    if not all(k in avg_abl for k in ("default", "smote_forced", "no_smote")):
        return None
    won = []
    for d in days:
        sel = d["ablation_selection"].get("default") or {}
        won.append(f"{d['day']}: {sel.get('chosen')}")
    f, n = avg_abl["smote_forced"], avg_abl["no_smote"]
    return (
        "SMOTE: inside the fit only, its variants compete with the plain ones on the held-out (calibration) snapshot "
        f"and are recalibrated there; chosen per anchor: {'; '.join(won)}. Forced SMOTE vs none: ROC-AUC "
        f"{f['roc_auc']['value']:.3f} vs {n['roc_auc']['value']:.3f}, PR-AUC {f['pr_auc']['value']:.3f} vs {n['pr_auc']['value']:.3f}, "
        f"ECE {f['ece']['value']:.3f} vs {n['ece']['value']:.3f}."
    )
