"""Evaluate candidates against baselines and the champion on a later window, and gate promotion.

Evaluation for anchor A uses the latest closed windows before A+1:

* purchase: features as of e = A - h_p, outcome = a purchase in [e+1, e+1+h_p);
* spend: features as of A - h_s, outcome = net spend over the next h_s days.

Contenders: the holdout candidate (trained only on snapshots whose labels closed by e), BG/NBD,
recency alone, and the champion when it is out-of-time on that window. The champion is what the
previous anchor deploys when its own candidate is judged against the baselines only (see
``ensure_qualified``), which keeps every decision at most one anchor deep. The candidate is promoted only if it beats BG/NBD on ROC-AUC and
PR-AUC and the champion on both, each by at least ``gate_min_lift``. Otherwise the champion stays
(or the BG/NBD baseline if there is none) and the decision says why. The spend part is judged on
its own (:func:`spend_verdict`): a promoted candidate deploys its spend model only if it beats the
better spend baseline ("past spend", BG/NBD x Gamma-Gamma) on normalized Gini by ``gate_min_lift``,
otherwise that baseline; a baseline bundle deploys the better spend baseline.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta
from typing import Any

from purchasing_power.evaluate import finite_or_none, purchase_metrics, spend_metrics
from purchasing_power.features import build_labels
from purchasing_power.model import BASELINE_P, BASELINE_SPEND, ModelBundle, fit_past_spend
from purchasing_power.settings import Settings
from purchasing_power.train import (
    CANDIDATE_DEPLOY,
    CANDIDATE_HOLDOUT,
    TRAINING_INFO,
    Context,
    anchor_for,
    baseline_bundle,
    fit_candidates,
    load_bundle,
    previous_anchor,
    save_bundle,
)

log = logging.getLogger(__name__)

EVALUATION_FILE = "evaluation.json"
DECISION_FILE = "decision.json"
QUALIFY_EVALUATION_FILE = "evaluation_baselines.json"
QUALIFY_FILE = "qualified.json"


def evaluate_anchor(ctx: Context, anchor: date, *, force: bool = False, with_champion: bool = True) -> dict[str, Any]:
    """Metrics of the anchor's holdout candidate, the baselines and (``with_champion``) the champion."""
    s = ctx.settings
    path = ctx.ws.work.path("evaluation", anchor, EVALUATION_FILE if with_champion else QUALIFY_EVALUATION_FILE)
    if not force and ctx.ws.work.exists(path):
        return ctx.ws.work.read_json(path)
    hist = ctx.history_until(anchor)
    e = anchor - timedelta(days=s.purchase_horizon_days)
    e_s = anchor - timedelta(days=s.spend_horizon_days)
    holdout_path = ctx.ws.work.path("models", anchor, CANDIDATE_HOLDOUT)
    candidate = load_bundle(ctx.ws, holdout_path) if ctx.ws.work.exists(holdout_path) else None
    prev = previous_anchor(s, anchor)
    champion, champion_version = None, None
    if with_champion and prev >= ctx.first_day:
        qualified = ensure_qualified(ctx, prev)
        champion = deployed_bundle(ctx, qualified)
        champion_version = qualified["deployed_version"]
    champion_comparable = champion is not None and prev <= e

    out: dict[str, Any] = {
        "anchor": anchor.isoformat(),
        "purchase_window": {"as_of": e.isoformat(), "horizon_days": s.purchase_horizon_days},
        "spend_window": {"as_of": e_s.isoformat(), "horizon_days": s.spend_horizon_days},
        "champion_version": champion_version,
        "champion_comparable": champion_comparable,
        "purchase": {},
        "spend": {},
    }
    if e >= ctx.first_day:
        fe = ctx.features(e)
        if not fe.empty:
            y = build_labels(hist, e, fe.index, s.purchase_horizon_days, s.spend_horizon_days)["purchased"].to_numpy()
            contenders = {"bgnbd": fe[BASELINE_P].to_numpy(), "recency": -fe["recency_days"].to_numpy()}
            if candidate is not None:
                contenders["candidate"] = candidate.predict(fe)[0]
            if champion_comparable:
                contenders["champion"] = champion.predict(fe)[0]
            for name, p in contenders.items():
                out["purchase"][name] = finite_or_none(purchase_metrics(y, p, probabilities=name != "recency"))
    if e_s >= ctx.first_day:
        fs = ctx.features(e_s)
        if not fs.empty:
            y = build_labels(hist, e_s, fs.index, s.purchase_horizon_days, s.spend_horizon_days)["spend"].to_numpy()
            past = fs["spend_total"].clip(lower=0).to_numpy()
            contenders = {"past_spend": past, "bgnbd_gg": fs[BASELINE_SPEND].to_numpy()}
            out["past_spend_scale"] = fit_past_spend(fs, y).scale  # deployable "past spend" forecast
            if candidate is not None and candidate.spend is not None:
                contenders["candidate"] = candidate.predict(fs)[1]
            for name, pred in contenders.items():
                out["spend"][name] = finite_or_none(spend_metrics(y, pred))
    ctx.ws.work.write_json(out, path)
    return out


def verdict(evaluation: dict[str, Any], min_lift: float) -> tuple[bool, list[str]]:
    """Apply the purchase gate rules; return (promote, reasons). The spend part is decided on
    its own by :func:`spend_verdict` (a spend model that does not beat the spend baselines
    must not keep a better purchase model from being deployed, nor the other way round)."""
    reasons: list[str] = []
    pur = evaluation.get("purchase", {})
    cand = pur.get("candidate")
    if cand is None:
        return False, ["no candidate could be fitted or evaluated (not enough closed history)"]

    def beats(metric: str, other: str, block: str = "purchase", label: str | None = None) -> bool:
        c = evaluation[block]["candidate"].get(metric)
        o = evaluation[block].get(other, {}).get(metric)
        if c is None or o is None:
            reasons.append(f"{metric} vs {label or other}: not measurable")
            return False
        ok = c >= o + min_lift
        reasons.append(f"{metric} {c:.4f} {'>=' if ok else '<'} {label or other} {o:.4f} + {min_lift}")
        return ok

    ok = beats("roc_auc", "bgnbd", label="BG/NBD") & beats("pr_auc", "bgnbd", label="BG/NBD")
    if "champion" in pur:
        ok &= beats("roc_auc", "champion") & beats("pr_auc", "champion")
    else:
        reasons.append("no out-of-time champion to compare with")
    return bool(ok), reasons


SPEND_BASELINES = ("past_spend", "bgnbd_gg")


def spend_verdict(evaluation: dict[str, Any], min_lift: float, *, candidate_allowed: bool = True) -> tuple[str, list[str]]:
    """Which spend predictor a new bundle of this anchor deploys: ``candidate`` when the
    candidate's spend model beats the better spend baseline on normalized Gini by ``min_lift``
    (and ``candidate_allowed``: the bundle is a promoted candidate), otherwise that baseline
    (``past_spend``: past net spend x the spend window's scale, or ``bgnbd_gg``)."""
    sp = evaluation.get("spend", {})
    gini = {k: (sp.get(k) or {}).get("normalized_gini") for k in SPEND_BASELINES}
    measured = {k: v for k, v in gini.items() if v is not None and (k != "past_spend" or evaluation.get("past_spend_scale"))}
    cand = (sp.get("candidate") or {}).get("normalized_gini") if candidate_allowed else None
    if not measured:
        choice = "candidate" if cand is not None else "bgnbd_gg"
        return choice, [f"spend: no closed spend window to compare on; spend uses {choice}"]
    best = max(measured, key=lambda k: (measured[k], -SPEND_BASELINES.index(k)))
    if cand is None:
        why = "no spend candidate on the spend window" if candidate_allowed else "no promoted candidate"
        return best, [f"spend: {why}; spend uses the better baseline {best} (normalized_gini {measured[best]:.4f})"]
    ok = cand >= measured[best] + min_lift
    verb = ">=" if ok else "<"
    return ("candidate" if ok else best), [
        f"spend normalized_gini {cand:.4f} {verb} {best} {measured[best]:.4f} + {min_lift}: spend uses {'the candidate' if ok else best}"
    ]


def _deploy(
    ctx: Context, anchor: date, promote: bool, fallback: dict[str, Any] | None, spend: str = "candidate", spend_scale: float | None = None
) -> tuple[str, str, str]:
    """(path, version, status) of what an anchor deploys. A promoted candidate deploys its
    purchase model with the spend predictor ``spend`` (see :func:`spend_verdict`); without
    promotion the champion stays as it is, or (no champion) BG/NBD with the spend baseline."""
    if promote:
        training = ctx.ws.work.read_json(ctx.ws.work.path("models", anchor, TRAINING_INFO))
        path = ctx.ws.work.path("models", anchor, CANDIDATE_DEPLOY)
        if spend == "candidate":
            return path, training["version"], "promoted"
        cand = load_bundle(ctx.ws, path)
        bundle = ModelBundle(version=f"{training['version']}-{spend}", kind="model", purchase=cand.purchase,
                             spend=_baseline_spend(spend, spend_scale), info={**cand.info, "spend": spend})
        out = ctx.ws.work.path("models", anchor, f"candidate-{spend}.pkl")
        save_bundle(ctx.ws, bundle, out)
        return out, bundle.version, "promoted"
    if fallback is not None:
        return fallback["deployed_path"], fallback["deployed_version"], "kept_champion"
    bundle = baseline_bundle(ctx.settings, anchor, ctx.text_key)
    name = "baseline.pkl"
    if spend == "past_spend":
        bundle = ModelBundle(version=f"{bundle.version}-{spend}", kind="baseline", spend=_baseline_spend(spend, spend_scale),
                             info={**bundle.info, "spend": spend})
        name = f"baseline-{spend}.pkl"
    path = ctx.ws.work.path("models", anchor, name)
    save_bundle(ctx.ws, bundle, path)
    return path, bundle.version, "baseline"


def _baseline_spend(choice: str, scale: float | None) -> Any:
    from purchasing_power.model import PastSpendModel

    return PastSpendModel(scale=float(scale)) if choice == "past_spend" and scale else None


def ensure_qualified(ctx: Context, anchor: date) -> dict[str, Any]:
    """What ``anchor`` deploys when its candidate is judged against the baselines only.

    This is the champion the *next* anchor's candidate must beat. Defining it without a
    champion of its own keeps the chain one step deep: deciding any anchor needs at most two
    anchors' fits, so a day run alone on a fresh deployment stays cheap and deterministic."""
    path = ctx.ws.work.path("models", anchor, QUALIFY_FILE)
    if ctx.ws.work.exists(path):
        return ctx.ws.work.read_json(path)
    fit_candidates(ctx, anchor)
    evaluation = evaluate_anchor(ctx, anchor, with_champion=False)
    promote, reasons = verdict(evaluation, ctx.settings.gate_min_lift)
    spend, spend_reasons = spend_verdict(evaluation, ctx.settings.gate_min_lift, candidate_allowed=promote)
    deployed_path, version, status = _deploy(ctx, anchor, promote, None, spend, evaluation.get("past_spend_scale"))
    out = {"anchor": anchor.isoformat(), "status": status, "promoted": promote, "reasons": reasons + spend_reasons,
           "spend": spend, "deployed_version": version, "deployed_path": deployed_path}
    ctx.ws.work.write_json(out, path)
    return out


def decide(ctx: Context, anchor: date, *, force: bool = False) -> dict[str, Any]:
    """Gate ``anchor``'s candidate and record which bundle is deployed from this anchor on."""
    s = ctx.settings
    path = ctx.ws.work.path("models", anchor, DECISION_FILE)
    if not force and ctx.ws.work.exists(path):
        return ctx.ws.work.read_json(path)
    evaluation = evaluate_anchor(ctx, anchor, force=force)
    promote, reasons = verdict(evaluation, s.gate_min_lift)
    spend, spend_reasons = spend_verdict(evaluation, s.gate_min_lift, candidate_allowed=promote)
    prev = previous_anchor(s, anchor)
    champion = ensure_qualified(ctx, prev) if prev >= ctx.first_day else None
    deployed_path, deployed_version, status = _deploy(ctx, anchor, promote, champion, spend, evaluation.get("past_spend_scale"))
    if status == "kept_champion":
        spend = champion.get("spend", "candidate")
        spend_reasons = [f"spend: kept with the champion ({spend})"]
    decision = {
        "anchor": anchor.isoformat(),
        "status": status,
        "promoted": promote,
        "reasons": reasons + spend_reasons,
        "spend": spend,
        "deployed_version": deployed_version,
        "deployed_path": deployed_path,
        "champion_version": champion["deployed_version"] if champion else None,
        "thresholds": {"min_lift": s.gate_min_lift, "rules": "purchase: candidate >= BG/NBD and champion on ROC-AUC and PR-AUC; spend: candidate's spend model deployed only if >= the better spend baseline on normalized Gini, otherwise that baseline"},
        "evaluation": evaluation,
    }
    ctx.ws.work.write_json(decision, path)
    log.info("gate %s: %s (%s)", anchor, status, "; ".join(reasons))
    return decision


def ensure_decision(ctx: Context, anchor: date) -> dict[str, Any]:
    """The decision of ``anchor``, computing it if missing."""
    path = ctx.ws.work.path("models", anchor, DECISION_FILE)
    if ctx.ws.work.exists(path):
        return ctx.ws.work.read_json(path)
    fit_candidates(ctx, anchor)
    return decide(ctx, anchor)


def deployed_bundle(ctx: Context, decision: dict[str, Any]) -> ModelBundle:
    return load_bundle(ctx.ws, decision["deployed_path"])


def evaluate_day(settings: Settings, day: date) -> dict[str, Any]:
    """Stage function: evaluate this run's anchor candidate against baselines and champion."""
    ctx = Context.load(settings, day)
    return evaluate_anchor(ctx, anchor_for(settings, day), force=settings.force_retrain)


def gate_day(settings: Settings, day: date) -> dict[str, Any]:
    """Stage function: apply the metric gate for this run's anchor; returns the decision."""
    ctx = Context.load(settings, day)
    return decide(ctx, anchor_for(settings, day), force=settings.force_retrain)
