"""Training: stack point-in-time snapshots into training tables and fit an anchor's candidates.

Models are fitted on *anchor* days (:mod:`purchasing_power.calendar`). Everything an anchor uses
is a pure function of the clean data before A+1, so a day's predictions do not depend on which
other days ran before it, or in which order.

For anchor A (purchase horizon h_p, spend horizon h_s; snapshots on the ``snapshot_step_days`` grid):

* holdout candidate (the one the gate judges): purchase model on snapshots s with s + h_p <= e,
  e = A - h_p (the latest closed evaluation window); spend model on s + h_s <= A - h_s;
* deployed candidate (what scores if promoted): the same recipe on every snapshot closed by A.

Within each fit the latest snapshot is kept out to choose between candidates and to calibrate;
SMOTE runs inside the imbalanced-learn pipeline on the remaining rows only.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from purchasing_power.calendar import grid_days
from purchasing_power.labels import build_labels
from purchasing_power.history import RunData, give_back_memory
from purchasing_power.settings import Settings
from purchasing_power.shards import customer_sample  # noqa: F401  (the training sample; tests import it from here)
from purchasing_power.storage import CANDIDATE_DEPLOY, CANDIDATE_HOLDOUT, TRAINING_INFO

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from purchasing_power.model import ModelBundle

log = logging.getLogger(__name__)

#: A snapshot needs this many days of history before it to be used for training.
MIN_HISTORY_DAYS = 30


def snapshots(data: RunData, anchor: date, label_end: date) -> list[date]:
    """Grid snapshots within the lookback whose features have MIN_HISTORY_DAYS of data
    and that are <= label_end (their horizon closed)."""
    s = data.settings
    start = max(data.first_day + timedelta(days=MIN_HISTORY_DAYS), anchor - timedelta(days=s.training_lookback_days))
    return grid_days(start, label_end, s.snapshot_step_days)


def earliest_snapshot(settings: Settings, anchor: date) -> date:
    """No as-of day earlier than this is read by ``anchor``'s fits (:func:`snapshots`) or by its
    evaluation windows (``anchor`` - horizon): a run that fits or qualifies ``anchor`` reads the
    clean history from that day's feature lookback on (``RunData.load(snapshots_from=...)``)."""
    s = settings
    return anchor - timedelta(days=max(int(s.training_lookback_days), int(s.purchase_horizon_days), int(s.spend_horizon_days)))


def sample_level(max_rows: int, bound: int) -> int:
    """How much to sample a training table of at most ``bound`` rows to keep it within
    ``max_rows``: 0 (every row) when it fits or there is no bound (``max_rows`` 0), else the
    smallest k whose share 2**-k does. Shares are powers of two so that a snapshot's stored sample
    serves later anchors too: the customers sampled at 2**-(k+1) are among those at 2**-k
    (:func:`shards.customer_sample`)."""
    if max_rows <= 0 or bound <= max_rows:
        return 0
    k = 0
    while bound * 0.5**k > max_rows:
        k += 1
    return k


def training_table(data: RunData, snaps: list[date], anchor: date, max_rows: int = 0) -> pd.DataFrame:
    """Features of every snapshot joined with their outcomes (known by the end of ``anchor``).

    ``max_rows`` > 0 bounds the table: when the snapshots may hold more rows (bound: the latest
    snapshot's customers times the number of snapshots; customers only accumulate), a seeded
    sample of customers (:func:`shards.customer_sample`, share 2**-k, :func:`sample_level`) is
    kept in every snapshot: ``RunData.sampled_features`` computes (and stores) the features of
    those customers only, unless the snapshot's full features are stored. The table's
    ``attrs["sample_share"]`` says which share (1.0: every row)."""
    import pandas as pd

    s = data.settings
    bound = data.customers_as_of(snaps[-1]) * len(snaps) if max_rows > 0 and snaps else 0
    level = sample_level(max_rows, bound)
    share = 0.5**level
    features = [(snap, data.sampled_features(snap, level)) for snap in snaps]  # level 0: the snapshot's features
    features = [(snap, f) for snap, f in features if not f.empty]
    if not features:
        return pd.DataFrame()
    # the outcomes: lines after the first snapshot through the anchor (read after the features: the
    # feature history serves when they loaded it)
    hist = data.history_since(features[0][0] + timedelta(days=1), anchor)
    frames = []
    while features:  # each snapshot's features freed once joined with its labels
        snap, f = features.pop()
        frames.append(f.join(build_labels(hist, snap, f.index, s.purchase_horizon_days, s.spend_horizon_days)).assign(snapshot=snap.isoformat()))
        del f
    frames.reverse()
    table = pd.concat(frames).reset_index()
    table.attrs["sample_share"] = share
    return table


def model_version(settings: Settings, anchor: date, kind: str, feature_key: str) -> str:
    keys = ("seed", "snapshot_step_days", "training_lookback_days", "purchase_horizon_days", "spend_horizon_days", "use_text", "use_smote", "use_user_text")
    cfg = {k: getattr(settings, k) for k in keys} | {"text": feature_key, "source": settings.source_id, "kind": kind}
    digest = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:8]
    prefix = "bgnbd" if kind == "baseline" else "pp"
    return f"{prefix}-{anchor:%Y%m%d}-{digest}"


def fit_bundle(data: RunData, anchor: date, purchase_end: date, spend_end: date, version: str) -> tuple[ModelBundle | None, dict[str, Any]]:
    """Fit purchase + spend models on snapshots closed by ``purchase_end`` / ``spend_end`` (the
    spend model in a thread beside the purchase candidates': each fit is single-threaded, so
    the models are the same as one after the other). Returns (None, info) when there is not
    enough data (the caller falls back to BG/NBD)."""
    from concurrent.futures import ThreadPoolExecutor

    from purchasing_power.model import InsufficientData, ModelBundle, fit_purchase_model, fit_spend_model, single_threaded
    from purchasing_power.pipelines import import_estimators

    s = data.settings
    p_snaps = snapshots(data, anchor, purchase_end - timedelta(days=s.purchase_horizon_days))
    s_snaps = snapshots(data, anchor, spend_end - timedelta(days=s.spend_horizon_days))
    info: dict[str, Any] = {"purchase_snapshots": [d.isoformat() for d in p_snaps], "spend_snapshots": [d.isoformat() for d in s_snaps]}
    ptab = training_table(data, p_snaps, anchor, s.training_max_rows)
    if ptab.empty:
        return None, _no_purchase_model(info, anchor, InsufficientData("no purchase training snapshots"))
    stab = training_table(data, s_snaps, anchor, s.training_max_rows)
    data.release_histories()  # the fits need only the tables

    def fit_spend() -> Any:
        if stab.empty:
            raise InsufficientData("no spend training snapshots")
        return fit_spend_model(stab, seed=s.seed)

    import_estimators()  # before the threads
    # BLAS held to one thread for both fits (its thread count is process-wide)
    with single_threaded(), ThreadPoolExecutor(max_workers=1) as side:
        spend_fit = side.submit(fit_spend)
        try:
            purchase = fit_purchase_model(ptab, seed=s.seed, smote=s.use_smote, kinds=tuple(s.candidates))
        except InsufficientData as exc:
            spend_fit.cancel()
            return None, _no_purchase_model(info, anchor, exc)
        spend = None
        try:
            spend = spend_fit.result()
        except InsufficientData as exc:
            info["spend_error"] = f"{exc}; spend falls back to BG/NBD x Gamma-Gamma"
            log.warning("anchor %s: spend model falls back to BG/NBD x Gamma-Gamma (%s)", anchor, exc)
    info["purchase_rows"] = int(len(ptab))
    if ptab.attrs["sample_share"] < 1.0:  # recorded only when the bound applies
        info["purchase_sample_share"] = round(ptab.attrs["sample_share"], 6)
    info["purchase_selection"] = purchase.selection
    if spend is not None:
        info["spend_rows"] = int(len(stab))
        if stab.attrs["sample_share"] < 1.0:
            info["spend_sample_share"] = round(stab.attrs["sample_share"], 6)
    return ModelBundle(version=version, kind="model", purchase=purchase, spend=spend, info=info), info


def _no_purchase_model(info: dict[str, Any], anchor: date, exc: Exception) -> dict[str, Any]:
    info["purchase_error"] = str(exc)
    log.warning("anchor %s: cannot fit purchase model (%s)", anchor, exc)
    return info


def fit_candidates(data: RunData, anchor: date, *, force: bool = False) -> dict[str, Any]:
    """Fit the holdout and deployable candidates of ``anchor`` (skipped when already stored)."""
    from purchasing_power.model import save_bundle

    s = data.settings
    info_path = data.ws.per_source.path("models", anchor, TRAINING_INFO)
    if not force and data.ws.per_source.exists(info_path):
        log.info("anchor %s: candidates already fitted (%s), reusing them", anchor, info_path)
        return data.ws.per_source.read_json(info_path)
    version = model_version(s, anchor, "model", data.feature_key)
    e = anchor - timedelta(days=s.purchase_horizon_days)
    e_spend = anchor - timedelta(days=s.spend_horizon_days)
    holdout, hinfo = fit_bundle(data, anchor, e, e_spend, version + "-holdout")
    give_back_memory()  # the holdout fit's tables and copies, before the deployed candidate's
    deploy, dinfo = fit_bundle(data, anchor, anchor, anchor, version) if holdout is not None else (None, {})
    for bundle, name in ((holdout, CANDIDATE_HOLDOUT), (deploy, CANDIDATE_DEPLOY)):
        path = data.ws.per_source.path("models", anchor, name)
        if bundle is not None:
            save_bundle(data.ws.per_source, bundle, path)
    info = {
        "anchor": anchor.isoformat(),
        "version": version,
        "evaluation_day": e.isoformat(),
        "spend_evaluation_day": e_spend.isoformat(),
        "holdout": hinfo,
        "deployed": dinfo,
        "fitted": holdout is not None,
    }
    data.ws.per_source.write_json(info, info_path)
    return info


def baseline_bundle(settings: Settings, anchor: date, feature_key: str) -> ModelBundle:
    from purchasing_power.model import ModelBundle

    return ModelBundle(version=model_version(settings, anchor, "baseline", feature_key), kind="baseline", info={"reason": "BG/NBD fallback"})
