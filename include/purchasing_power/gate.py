"""The metric gate: evaluate an anchor's candidate against the baselines and the champion on a
later window, decide what is deployed, and record why.

Evaluation for anchor A uses the latest closed windows before A+1:

* purchase: features as of e = A - h_p, outcome = a purchase in [e+1, e+1+h_p);
* spend: features as of A - h_s, outcome = net spend over the next h_s days.

Contenders: the holdout candidate (trained only on snapshots whose labels closed by e), BG/NBD,
recency alone, and the champion when it is out-of-time on that window. The champion of A is what
the previous anchor deploys when its own candidate is judged against the baselines only
(:func:`qualify`), which keeps every decision at most one anchor deep. The candidate is promoted
only if it beats BG/NBD on ROC-AUC and PR-AUC and the champion on both, each by at least
``gate_min_lift``. Otherwise the champion stays (or the BG/NBD baseline if there is none) and the
decision says why. The spend part is judged on its own (:func:`spend_verdict`): a promoted
candidate deploys its spend model only if it beats the better spend baseline ("past spend",
BG/NBD x Gamma-Gamma) on normalized Gini by ``gate_min_lift``, otherwise that baseline; a
baseline bundle deploys the better spend baseline.

The evaluation stores, next to its metrics, every contender's score of every customer of the
purchase window (``evaluation_scores.parquet``): the page's curves are drawn from exactly what
the gate judged.
"""

from __future__ import annotations

import json
import logging
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from purchasing_power.calendar import anchor_for, previous_anchor
from purchasing_power.errors import MissingInput
from purchasing_power.labels import build_labels
from purchasing_power.history import RunData
from purchasing_power.metrics import finite_or_none, purchase_metrics, spend_metrics
from purchasing_power.model import ModelBundle, fit_past_spend, load_bundle, save_bundle
from purchasing_power.schemas import BASELINE_P, BASELINE_SPEND
from purchasing_power.settings import Settings
from purchasing_power.storage import (
    BASELINE_EVALUATION_FILE,
    CANDIDATE_DEPLOY,
    CANDIDATE_HOLDOUT,
    CHAMPION_FILE,
    DECISION_FILE,
    EVALUATION_FILE,
    EVALUATION_SCORES_FILE,
    TRAINING_INFO,
    Storage,
    Workspace,
)
from purchasing_power.train import baseline_bundle

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

log = logging.getLogger(__name__)

RULES = (
    "purchase: candidate >= BG/NBD and champion on ROC-AUC and PR-AUC; spend: candidate's spend model "
    "deployed only if >= the better spend baseline on normalized Gini, otherwise that baseline"
)


def decision_path(settings: Settings, day: date) -> str:
    """Where the decision that scores ``day`` lives (at the day's anchor)."""
    return Workspace.for_settings(settings).per_source.path("models", anchor_for(settings, day), DECISION_FILE)


def decided_model(settings: Settings, day: date) -> str | None:
    """The path of the gate decision this day's run scores with, when its anchor is already
    decided (and ``force_retrain`` is off); ``None`` when the run has to fit and gate it."""
    if settings.force_retrain:
        return None
    path = decision_path(settings, day)
    return path if Workspace.for_settings(settings).per_source.exists(path) else None


def read_stored(data: RunData, anchor: date, name: str, produced_by: str) -> dict[str, Any]:
    """A JSON artefact of ``anchor`` (``models/`` or ``evaluation/``) that an earlier task of the
    run wrote; :class:`MissingInput` naming that task when it is absent."""
    dataset = "evaluation" if name in (EVALUATION_FILE, BASELINE_EVALUATION_FILE) else "models"
    path = data.ws.per_source.path(dataset, anchor, name)
    if not data.ws.per_source.exists(path):
        raise MissingInput(f"no {name} for anchor {anchor} at {path}: the {produced_by} task must run first")
    return data.ws.per_source.read_json(path)


def champion_of(data: RunData, anchor: date) -> dict[str, Any] | None:
    """The champion record ``anchor``'s candidate competes with (see :func:`qualify`), ``None``
    when the previous anchor lies before the history starts."""
    prev = previous_anchor(data.settings, anchor)
    if prev < data.first_day:
        return None
    return read_stored(data, prev, CHAMPION_FILE, "train")


def evaluate_anchor(
    data: RunData, anchor: date, champion: dict[str, Any] | None = None, *, baselines_only: bool = False, force: bool = False
) -> dict[str, Any]:
    """Metrics of the anchor's holdout candidate, the baselines and ``champion`` (a champion
    record, see :func:`qualify`; ignored with ``baselines_only``) on the anchor's windows.
    Stored once computed; the full evaluation also stores every contender's scores."""
    s = data.settings
    store = data.ws.per_source
    path = store.path("evaluation", anchor, BASELINE_EVALUATION_FILE if baselines_only else EVALUATION_FILE)
    if not force and store.exists(path):
        return store.read_json(path)
    e = anchor - timedelta(days=s.purchase_horizon_days)
    e_s = anchor - timedelta(days=s.spend_horizon_days)
    # the windows' outcomes: lines after the earlier window's as-of day through the anchor
    hist = data.history_since(min(e, e_s) + timedelta(days=1), anchor)
    holdout_path = store.path("models", anchor, CANDIDATE_HOLDOUT)
    candidate = load_bundle(holdout_path) if store.exists(holdout_path) else None
    prev = previous_anchor(s, anchor)
    champion_bundle, champion_version = None, None
    if champion is not None and not baselines_only:
        champion_bundle = load_bundle(store.resolve_inside(champion["deployed_path"]))
        champion_version = champion["deployed_version"]
    champion_comparable = champion_bundle is not None and prev <= e

    out: dict[str, Any] = {
        "anchor": anchor.isoformat(),
        "purchase_window": {"as_of": e.isoformat(), "horizon_days": s.purchase_horizon_days},
        "spend_window": {"as_of": e_s.isoformat(), "horizon_days": s.spend_horizon_days},
        "champion_version": champion_version,
        "champion_comparable": champion_comparable,
        "purchase": {},
        "spend": {},
    }
    scores: pd.DataFrame | None = None
    if e >= data.first_day:
        fe = data.features(e, keep=False)  # not held for later calls: the stage reads each snapshot once
        if not fe.empty:
            y = build_labels(hist, e, fe.index, s.purchase_horizon_days, s.spend_horizon_days)["purchased"].to_numpy()
            contenders = {"bgnbd": fe[BASELINE_P].to_numpy(), "recency": -fe["recency_days"].to_numpy()}
            versions = {"bgnbd": "BG/NBD (fitted on the window's history)", "recency": "days since last purchase"}
            if candidate is not None:
                contenders["candidate"] = candidate.probabilities(candidate.raw_scores(fe))
                versions["candidate"] = candidate.version
            if champion_comparable:
                contenders["champion"] = champion_bundle.probabilities(champion_bundle.raw_scores(fe))
                versions["champion"] = champion_version
            for name, p in contenders.items():
                out["purchase"][name] = finite_or_none(purchase_metrics(y, p, probabilities=name != "recency"))
            scores = _scores_frame(fe.index, y, contenders)
            scores.attrs["model_versions"] = versions
        del fe  # before the spend window's features are read
    if e_s >= data.first_day:
        fs = data.features(e_s, keep=False)
        if not fs.empty:
            y = build_labels(hist, e_s, fs.index, s.purchase_horizon_days, s.spend_horizon_days)["spend"].to_numpy()
            past = fs["spend_total"].clip(lower=0).to_numpy()
            contenders = {"past_spend": past, "bgnbd_gg": fs[BASELINE_SPEND].to_numpy()}
            out["past_spend_scale"] = fit_past_spend(fs, y).scale  # deployable "past spend" forecast
            if candidate is not None and candidate.spend is not None:
                contenders["candidate"] = candidate.expected_spend(fs)
            for name, pred in contenders.items():
                out["spend"][name] = finite_or_none(spend_metrics(y, pred))
        del fs
    if not baselines_only:
        write_scores(data, anchor, scores)
    store.write_json(out, path)
    return out


def _scores_frame(customers: Any, y: Any, contenders: dict[str, Any]) -> pd.DataFrame:
    import numpy as np
    import pandas as pd

    frame = pd.DataFrame({"customer_id": np.asarray(customers), "purchased": np.asarray(y, dtype=np.int64)})
    for name, values in contenders.items():
        frame[name] = np.asarray(values, dtype=np.float64)
    return frame


def write_scores(data: RunData, anchor: date, scores: pd.DataFrame | None) -> None:
    """Store the purchase window's per-customer contender scores (with the contenders' model
    versions in the file's metadata); no window (too little history): no file."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    store = data.ws.per_source
    path = store.path("evaluation", anchor, EVALUATION_SCORES_FILE)
    if scores is None:
        if store.exists(path):
            store.fs.rm(path)
        return
    table = pa.Table.from_pandas(scores, preserve_index=False)
    meta = {b"model_versions": json.dumps(scores.attrs.get("model_versions", {}), sort_keys=True).encode()}
    table = table.replace_schema_metadata(meta)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    store.write_bytes(path, buf.getvalue())


def read_scores(store: Any, anchor: date) -> tuple[pd.DataFrame, dict[str, str]] | None:
    """The scores :func:`evaluate_anchor` stored for ``anchor`` and the contenders' model
    versions; ``None`` when there are none."""
    import pyarrow.parquet as pq

    path = store.path("evaluation", anchor, EVALUATION_SCORES_FILE)
    if not store.exists(path):
        return None
    with store.fs.open(path, "rb") as fh:
        table = pq.read_table(fh)
    meta = table.schema.metadata or {}
    return table.to_pandas(), json.loads(meta.get(b"model_versions", b"{}"))


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
    data: RunData, anchor: date, promote: bool, fallback: dict[str, Any] | None, spend: str = "candidate", spend_scale: float | None = None
) -> tuple[str, str, str]:
    """(path, version, status) of what an anchor deploys. A promoted candidate deploys its
    purchase model with the spend predictor ``spend`` (see :func:`spend_verdict`); without
    promotion the champion stays as it is, or (no champion) BG/NBD with the spend baseline."""
    store = data.ws.per_source
    if promote:
        training = read_stored(data, anchor, TRAINING_INFO, "train")
        path = store.path("models", anchor, CANDIDATE_DEPLOY)
        if spend == "candidate":
            return path, training["version"], "promoted"
        cand = load_bundle(path)
        bundle = ModelBundle(version=f"{training['version']}-{spend}", kind="model", purchase=cand.purchase,
                             spend=_baseline_spend(spend, spend_scale), info={**cand.info, "spend": spend})
        out = store.path("models", anchor, f"candidate-{spend}.pkl")
        save_bundle(store, bundle, out)
        return out, bundle.version, "promoted"
    if fallback is not None:
        return store.resolve_inside(fallback["deployed_path"]), fallback["deployed_version"], "kept_champion"
    bundle = baseline_bundle(data.settings, anchor, data.feature_key)
    name = "baseline.pkl"
    if spend == "past_spend":
        bundle = ModelBundle(version=f"{bundle.version}-{spend}", kind="baseline", spend=_baseline_spend(spend, spend_scale),
                             info={**bundle.info, "spend": spend})
        name = f"baseline-{spend}.pkl"
    path = store.path("models", anchor, name)
    save_bundle(store, bundle, path)
    return path, bundle.version, "baseline"


def _baseline_spend(choice: str, scale: float | None) -> Any:
    from purchasing_power.model import PastSpendModel

    return PastSpendModel(scale=float(scale)) if choice == "past_spend" and scale else None


def qualify(data: RunData, anchor: date) -> dict[str, Any]:
    """What ``anchor`` deploys when its candidate (already fitted) is judged against the
    baselines only: the champion record the *next* anchor's candidate must beat.

    Defining it without a champion of its own keeps the chain one step deep: deciding any
    anchor needs at most two anchors' fits, so a day run alone on a fresh deployment stays
    cheap and deterministic. Stored once computed."""
    store = data.ws.per_source
    path = store.path("models", anchor, CHAMPION_FILE)
    if store.exists(path):
        return store.read_json(path)
    read_stored(data, anchor, TRAINING_INFO, "train")  # the candidates must have been fitted
    evaluation = evaluate_anchor(data, anchor, baselines_only=True)
    promote, reasons = verdict(evaluation, data.settings.gate_min_lift)
    spend, spend_reasons = spend_verdict(evaluation, data.settings.gate_min_lift, candidate_allowed=promote)
    deployed_path, version, status = _deploy(data, anchor, promote, None, spend, evaluation.get("past_spend_scale"))
    out = {"anchor": anchor.isoformat(), "status": status, "promoted": promote, "reasons": reasons + spend_reasons,
           "spend": spend, "deployed_version": version, "deployed_path": deployed_path}
    store.write_json(out, path)
    return out


def decide(data: RunData, anchor: date, evaluation: dict[str, Any], champion: dict[str, Any] | None) -> dict[str, Any]:
    """Gate ``anchor``'s candidate on its ``evaluation`` (from :func:`evaluate_anchor` with
    ``champion``) and record which bundle is deployed from this anchor on."""
    s = data.settings
    promote, reasons = verdict(evaluation, s.gate_min_lift)
    spend, spend_reasons = spend_verdict(evaluation, s.gate_min_lift, candidate_allowed=promote)
    deployed_path, deployed_version, status = _deploy(data, anchor, promote, champion, spend, evaluation.get("past_spend_scale"))
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
        "thresholds": {"min_lift": s.gate_min_lift, "rules": RULES},
        "evaluation": evaluation,
    }
    data.ws.per_source.write_json(decision, data.ws.per_source.path("models", anchor, DECISION_FILE))
    log.info("gate %s: %s (%s)", anchor, status, "; ".join(reasons))
    return decision


def deployed_bundle(decision: dict[str, Any], store: Storage) -> ModelBundle:
    """The bundle a decision (or champion record) read from ``store`` deploys: its
    ``deployed_path`` must lie under ``store``'s root (``Storage.resolve_inside``) and the file
    must match its recorded hash (``load_bundle``)."""
    return load_bundle(store.resolve_inside(decision["deployed_path"]))
