"""Score every customer with the bundle deployed at the run's anchor, and assign tiers."""

from __future__ import annotations

import logging
from datetime import date
from typing import TYPE_CHECKING, Any

from purchasing_power.settings import Settings

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import pandas as pd

log = logging.getLogger(__name__)

SCORES_FILE = "predictions.parquet"
TIERS = ("high", "medium", "low")
OUTPUT_COLUMNS = ("customer_id", "as_of", "p_purchase_30d", "expected_spend_90d", "tier", "model_version")


def assign_tiers(spend: np.ndarray, customer_ids: np.ndarray, high_share: float, medium_share: float) -> np.ndarray:
    """Rank customers by expected spend (ties broken by customer id, so it is deterministic):
    the top ``high_share`` are "high", the next ``medium_share`` "medium", the rest "low"."""
    import numpy as np

    n = len(spend)
    order = np.lexsort((customer_ids, -np.asarray(spend, dtype=np.float64)))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    n_high = int(round(high_share * n))
    n_med = int(round((high_share + medium_share) * n)) - n_high
    return np.where(rank < n_high, "high", np.where(rank < n_high + n_med, "medium", "low")).astype(object)


def predictions_frame(features: pd.DataFrame, p: np.ndarray, spend: np.ndarray, day: date, version: str, settings: Settings) -> pd.DataFrame:
    import numpy as np
    import pandas as pd

    ids = features.index.to_numpy(dtype=np.int64)
    out = pd.DataFrame(
        {
            "customer_id": ids,
            "as_of": pd.Series([day] * len(ids), dtype="object"),
            "p_purchase_30d": np.asarray(p, dtype=np.float64),
            "expected_spend_90d": np.asarray(spend, dtype=np.float64),
            "tier": assign_tiers(spend, ids, settings.tier_high_share, settings.tier_medium_share),
            "model_version": version,
        }
    )
    validate_predictions(out)
    return out


def validate_predictions(df: pd.DataFrame) -> None:
    """The output contract; raises ValueError naming the first broken rule."""
    import numpy as np

    if tuple(df.columns) != OUTPUT_COLUMNS:
        raise ValueError(f"predictions columns {list(df.columns)} != {list(OUTPUT_COLUMNS)}")
    if df["customer_id"].dtype != np.int64 or df["customer_id"].duplicated().any():
        raise ValueError("customer_id must be unique int64")
    for col in ("p_purchase_30d", "expected_spend_90d"):
        if not np.issubdtype(df[col].dtype, np.floating):
            raise ValueError(f"{col} must be float64, got {df[col].dtype}")
    p = df["p_purchase_30d"].to_numpy()
    if not (np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()):
        raise ValueError("p_purchase_30d must be finite and within [0, 1]")
    s = df["expected_spend_90d"].to_numpy()
    if not (np.isfinite(s).all() and (s >= 0).all()):
        raise ValueError("expected_spend_90d must be finite and >= 0")
    if not set(df["tier"].unique()) <= set(TIERS):
        raise ValueError(f"tier must be one of {TIERS}")


def score_day(settings: Settings, day: date) -> dict[str, Any]:
    """Stage function: features as of D for every customer, scored with the deployed bundle."""
    from purchasing_power.gate import DECISION_FILE, deployed_bundle, ensure_decision
    from purchasing_power.train import TRAINING_INFO, Context, anchor_for

    ctx = Context.load(settings, day)
    anchor = anchor_for(settings, day)
    decision = ensure_decision(ctx, anchor)
    decision_path = ctx.ws.work.path("models", anchor, DECISION_FILE)
    bundle = deployed_bundle(ctx, decision)
    features = ctx.features(day)  # written by the features stage of this run
    if features.empty:
        raise ValueError(f"no customer has a valid purchase before {day} + 1 day: nothing to score")
    p, spend = bundle.predict(features)
    out = predictions_frame(features, p, spend, day, bundle.version, settings)
    path = ctx.ws.out.path("scores", day, SCORES_FILE)
    ctx.ws.out.write_parquet(out, path)
    return {
        "day": day.isoformat(),
        "anchor": anchor.isoformat(),
        "scores_path": path,
        "customers_scored": int(len(out)),
        "model_version": bundle.version,
        "model_kind": bundle.kind,
        "gate_status": decision["status"],
        "decision_path": decision_path,
        "training_path": ctx.ws.work.path("models", anchor, TRAINING_INFO),
        "tier_counts": {t: int((out["tier"] == t).sum()) for t in TIERS},
        "p_purchase_30d_mean": float(out["p_purchase_30d"].mean()),
        "expected_spend_90d_total": float(out["expected_spend_90d"].sum()),
    }
