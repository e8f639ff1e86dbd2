"""Training: stack point-in-time snapshots into training tables and fit candidates per anchor.

Retraining cadence. Models are fitted on *anchor* days, a fixed grid every
``retrain_every_days`` (default 30) from an epoch; a run for day D scores with the model decided
at its anchor A = the latest grid day <= D (or A = D with ``force_retrain``). Everything an anchor
uses is a pure function of the clean data before A+1, so a day's predictions do not depend on
which other days ran before it, or in which order.

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
import pickle
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from purchasing_power.extract import Workspace
from purchasing_power.features import build_features, build_labels, grid_days, grid_floor
from purchasing_power.settings import Settings

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from purchasing_power.model import ModelBundle

log = logging.getLogger(__name__)

MIN_HISTORY_DAYS = 30
CANDIDATE_HOLDOUT = "candidate_holdout.pkl"
CANDIDATE_DEPLOY = "candidate.pkl"
TRAINING_INFO = "training.json"


def anchor_for(settings: Settings, day: date) -> date:
    return day if settings.force_retrain else grid_floor(day, settings.retrain_every_days)


def previous_anchor(settings: Settings, anchor: date) -> date:
    return grid_floor(anchor - timedelta(days=1), settings.retrain_every_days)


@dataclass
class Context:
    """What the training/evaluation/scoring steps of one run share: settings, storage, the clean
    history through the run's day (read on first use: a step that only reads stored features,
    models or decisions never pays for it) and the text-vector lookup."""

    settings: Settings
    day: date
    ws: Workspace
    text_key: str
    vectors: Any = None
    _tx: pd.DataFrame | None = None
    _features: dict[date, pd.DataFrame] = field(default_factory=dict)

    @property
    def tx(self) -> pd.DataFrame:
        """The clean history with invoice day <= the run's day."""
        if self._tx is None:
            from purchasing_power.clean import load_clean_history

            self._tx = load_clean_history(self.settings, self.day)
        return self._tx

    @classmethod
    def load(cls, settings: Settings, day: date, tx: pd.DataFrame | None = None) -> Context:
        ws = Workspace.for_settings(settings)
        if settings.use_text:
            from purchasing_power import embed

            ref = embed.resolve_model(settings.embed_model)
            key = hashlib.sha256(f"{ref.model_id}\0{ref.revision}".encode()).hexdigest()[:10]
            vectors = lambda texts: embed.load_vectors(texts, ws.out, settings)  # noqa: E731
        else:
            key, vectors = "notext", None
        return cls(settings=settings, day=day, ws=ws, text_key=key, vectors=vectors, _tx=tx)

    @property
    def first_day(self) -> date:
        """The first invoice day with a clean row (read from the first non-empty daily partition
        when the history itself has not been loaded)."""
        if self._tx is not None:
            if self._tx.empty:
                raise ValueError(f"no clean transactions up to {self.day}")
            return self._tx["invoice_ts"].min().date()
        from purchasing_power.clean import CLEAN_FILE

        for d in self.ws.work.list_days("clean", CLEAN_FILE):
            if d > self.day:
                break
            ts = self.ws.work.read_parquet(self.ws.work.path("clean", d, CLEAN_FILE), columns=["invoice_ts"])["invoice_ts"]
            if len(ts):
                return ts.min().date()
        raise ValueError(f"no clean transactions up to {self.day}")

    def history_since(self, since: date) -> pd.DataFrame:
        """Clean rows with invoice day in [since, the run's day]: from the loaded history when
        there is one, else read from those daily partitions only (customer, time and value)."""
        import pandas as pd

        if self._tx is not None:
            return self._tx[self._tx["invoice_ts"] >= pd.Timestamp(since)]
        from purchasing_power.clean import load_clean_history

        return load_clean_history(self.settings, self.day, since=since, columns=["customer_id", "invoice_ts", "line_value"])

    def history_until(self, anchor: date) -> pd.DataFrame:
        import pandas as pd

        return self.tx[self.tx["invoice_ts"] < pd.Timestamp(anchor) + pd.Timedelta(days=1)]

    def feature_path(self, as_of: date) -> str:
        return self.ws.work.path("features", as_of, f"features-{self.text_key}.parquet")

    def features(self, as_of: date, *, refresh: bool = False) -> pd.DataFrame:
        """Point-in-time features at ``as_of``, stored once computed (they depend only on data
        before as_of+1). ``refresh`` recomputes them (the run's own day, whose raw data a rerun
        may have re-extracted)."""
        if as_of in self._features and not refresh:
            return self._features[as_of]
        path = self.feature_path(as_of)
        if not refresh and self.ws.work.exists(path):
            f = self.ws.work.read_parquet(path).set_index("customer_id")
        else:
            f = build_features(self.tx, as_of, self.vectors)
            self.ws.work.write_parquet(f.reset_index(), path)
        self._features[as_of] = f
        return f

    def training_table(self, snapshots: list[date], anchor: date) -> pd.DataFrame:
        import pandas as pd

        hist = self.history_until(anchor)
        s = self.settings
        frames = []
        for snap in snapshots:
            f = self.features(snap)
            if f.empty:
                continue
            lab = build_labels(hist, snap, f.index, s.purchase_horizon_days, s.spend_horizon_days)
            frames.append(f.join(lab).assign(snapshot=snap.isoformat()))
        if not frames:
            return pd.DataFrame()
        return pd.concat(frames).reset_index()

    def snapshots(self, anchor: date, label_end: date) -> list[date]:
        """Grid snapshots within the lookback whose features have MIN_HISTORY_DAYS of data
        and that are <= label_end (their horizon closed)."""
        s = self.settings
        start = max(self.first_day + timedelta(days=MIN_HISTORY_DAYS), anchor - timedelta(days=s.training_lookback_days))
        return grid_days(start, label_end, s.snapshot_step_days)


def model_version(settings: Settings, anchor: date, kind: str, text_key: str) -> str:
    keys = ("seed", "snapshot_step_days", "training_lookback_days", "purchase_horizon_days", "spend_horizon_days", "use_text", "use_smote")
    cfg = {k: getattr(settings, k) for k in keys} | {"text": text_key, "source": settings.source_id, "kind": kind}
    digest = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:8]
    prefix = "bgnbd" if kind == "baseline" else "pp"
    return f"{prefix}-{anchor:%Y%m%d}-{digest}"


def fit_bundle(ctx: Context, anchor: date, purchase_end: date, spend_end: date, version: str) -> tuple[ModelBundle | None, dict[str, Any]]:
    """Fit purchase + spend models on snapshots closed by ``purchase_end`` / ``spend_end``.
    Returns (None, info) when there is not enough data (the caller falls back to BG/NBD)."""
    from purchasing_power.model import InsufficientData, ModelBundle, fit_purchase_model, fit_spend_model

    s = ctx.settings
    p_snaps = ctx.snapshots(anchor, purchase_end - timedelta(days=s.purchase_horizon_days))
    s_snaps = ctx.snapshots(anchor, spend_end - timedelta(days=s.spend_horizon_days))
    info: dict[str, Any] = {"purchase_snapshots": [d.isoformat() for d in p_snaps], "spend_snapshots": [d.isoformat() for d in s_snaps]}
    try:
        ptab = ctx.training_table(p_snaps, anchor)
        if ptab.empty:
            raise InsufficientData("no purchase training snapshots")
        purchase = fit_purchase_model(ptab, seed=s.seed, smote=s.use_smote, kinds=tuple(s.candidates))
    except InsufficientData as exc:
        info["purchase_error"] = str(exc)
        log.warning("anchor %s: cannot fit purchase model (%s)", anchor, exc)
        return None, info
    info["purchase_rows"] = int(len(ptab))
    info["purchase_selection"] = purchase.selection
    spend = None
    try:
        stab = ctx.training_table(s_snaps, anchor)
        if stab.empty:
            raise InsufficientData("no spend training snapshots")
        spend = fit_spend_model(stab, seed=s.seed)
        info["spend_rows"] = int(len(stab))
    except InsufficientData as exc:
        info["spend_error"] = f"{exc}; spend falls back to BG/NBD x Gamma-Gamma"
        log.warning("anchor %s: spend model falls back to BG/NBD x Gamma-Gamma (%s)", anchor, exc)
    return ModelBundle(version=version, kind="model", purchase=purchase, spend=spend, info=info), info


def fit_candidates(ctx: Context, anchor: date, *, force: bool = False) -> dict[str, Any]:
    """Fit the holdout and deployable candidates of ``anchor`` (skipped when already stored)."""
    s = ctx.settings
    info_path = ctx.ws.work.path("models", anchor, TRAINING_INFO)
    if not force and ctx.ws.work.exists(info_path):
        log.info("anchor %s: candidates already fitted (%s), reusing them", anchor, info_path)
        return ctx.ws.work.read_json(info_path)
    version = model_version(s, anchor, "model", ctx.text_key)
    e = anchor - timedelta(days=s.purchase_horizon_days)
    e_spend = anchor - timedelta(days=s.spend_horizon_days)
    holdout, hinfo = fit_bundle(ctx, anchor, e, e_spend, version + "-holdout")
    deploy, dinfo = fit_bundle(ctx, anchor, anchor, anchor, version) if holdout is not None else (None, {})
    for bundle, name in ((holdout, CANDIDATE_HOLDOUT), (deploy, CANDIDATE_DEPLOY)):
        path = ctx.ws.work.path("models", anchor, name)
        if bundle is not None:
            save_bundle(ctx.ws, bundle, path)
    info = {
        "anchor": anchor.isoformat(),
        "version": version,
        "evaluation_day": e.isoformat(),
        "spend_evaluation_day": e_spend.isoformat(),
        "holdout": hinfo,
        "deployed": dinfo,
        "fitted": holdout is not None,
    }
    ctx.ws.work.write_json(info, info_path)
    return info


def save_bundle(ws: Workspace, bundle: ModelBundle, path: str) -> str:
    return ws.work.write_bytes(path, pickle.dumps(bundle, protocol=5))


def load_bundle(ws: Workspace, path: str) -> ModelBundle:
    from purchasing_power.storage import filesystem_for

    with filesystem_for(path).open(path, "rb") as fh:
        return pickle.load(fh)  # noqa: S301 - artefacts are written by this pipeline only


def baseline_bundle(settings: Settings, anchor: date, text_key: str) -> ModelBundle:
    from purchasing_power.model import ModelBundle

    return ModelBundle(version=model_version(settings, anchor, "baseline", text_key), kind="baseline", info={"reason": "BG/NBD fallback"})


def decided_model(settings: Settings, day: date) -> str | None:
    """The path of the gate decision this day's run scores with, when its anchor is already
    decided (and ``force_retrain`` is off); ``None`` when the run has to fit and gate it."""
    from purchasing_power.gate import DECISION_FILE

    if settings.force_retrain:
        return None
    work = Workspace.for_settings(settings).work
    decision = work.path("models", anchor_for(settings, day), DECISION_FILE)
    return decision if work.exists(decision) else None


def train_day(settings: Settings, day: date) -> dict[str, Any]:
    """Stage function: make sure the champion chain before this run's anchor is decided, then
    fit this anchor's candidates (a no-op when they exist and ``force_retrain`` is off).
    Raises :class:`NothingToDo` when the anchor is already decided (the usual case on all days
    but the first one of an anchor): evaluate and gate are then skipped too."""
    from purchasing_power.errors import NothingToDo
    from purchasing_power.gate import ensure_qualified

    anchor = anchor_for(settings, day)
    decision = decided_model(settings, day)
    if decision is not None:
        # The anchor's candidates were fitted, evaluated and gated by an earlier run (they are a
        # pure function of the data before anchor+1): this run scores with that decision.
        raise NothingToDo(f"the model of anchor {anchor} is already decided ({decision}); this day scores with it (force_retrain refits)")
    ctx = Context.load(settings, day)
    prev = previous_anchor(settings, anchor)
    champion = ensure_qualified(ctx, prev) if prev >= ctx.first_day else None
    reused = not settings.force_retrain and ctx.ws.work.exists(ctx.ws.work.path("models", anchor, TRAINING_INFO))
    info = fit_candidates(ctx, anchor, force=settings.force_retrain)
    return {
        "day": day.isoformat(),
        "anchor": anchor.isoformat(),
        "champion_anchor": prev.isoformat() if champion else None,
        "reused_fitted_candidates": reused,
        "training": info,
    }
