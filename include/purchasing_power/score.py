"""Scoring: predictions of every customer from a deployed bundle, tiers, the output contract, and
the daily recalibration of the purchase probabilities."""

from __future__ import annotations

import logging
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from purchasing_power.labels import build_labels
from purchasing_power.history import RunData
from purchasing_power.schemas import OUTPUT_COLUMNS, TIERS
from purchasing_power.settings import Settings
from purchasing_power.train import MIN_HISTORY_DAYS

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import pandas as pd

    from purchasing_power.model import ModelBundle

log = logging.getLogger(__name__)



def assign_tiers(spend: np.ndarray, customer_ids: np.ndarray, high_share: float, medium_share: float) -> np.ndarray:
    """Rank customers by expected spend (ties broken by customer id, integers by value, text ids
    by their text, so it is deterministic whatever the input order): the top ``high_share`` are
    "high", the next ``medium_share`` "medium", the rest "low"."""
    import numpy as np

    n = len(spend)
    _, id_rank = np.unique(np.asarray(customer_ids), return_inverse=True)  # ids' sort order as integers
    order = np.lexsort((id_rank.reshape(-1), -np.asarray(spend, dtype=np.float64)))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    n_high = int(round(high_share * n))
    n_med = int(round((high_share + medium_share) * n)) - n_high
    return np.where(rank < n_high, "high", np.where(rank < n_high + n_med, "medium", "low")).astype(object)


def predictions_frame(features: pd.DataFrame, p: np.ndarray, spend: np.ndarray, day: date, version: str, settings: Settings) -> pd.DataFrame:
    import numpy as np
    import pandas as pd

    ids = features.index.to_numpy(dtype=np.int64 if pd.api.types.is_numeric_dtype(features.index.dtype) else object)
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
    """The output contract; raises ValueError naming the first broken rule. ``customer_id`` is
    int64 (a source of integer ids) or text (the source's spelling), unique and never null."""
    import numpy as np
    import pandas as pd

    if tuple(df.columns) != OUTPUT_COLUMNS:
        raise ValueError(f"predictions columns {list(df.columns)} != {list(OUTPUT_COLUMNS)}")
    ids = df["customer_id"]
    text = not pd.api.types.is_numeric_dtype(ids.dtype) and pd.api.types.infer_dtype(ids, skipna=False) in ("string", "empty")
    if not (ids.dtype == np.int64 or text) or ids.isna().any() or (text and (ids.str.len() == 0).any()) or ids.duplicated().any():
        raise ValueError("customer_id must be unique int64 or text ids, none of them null")
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


def recalibrated(data: RunData, bundle: ModelBundle, day: date) -> tuple[ModelBundle, dict[str, Any] | None]:
    """The bundle with its purchase calibration refitted on the latest closed windows before
    ``day`` + 1: the customers as of D - h, D - h - step, ... (``recalibration_windows`` of them,
    h = the purchase horizon, step = ``snapshot_step_days``) and whether they bought within h
    days, all known by the end of D. Windows older than the fit's own calibration snapshot are
    not used (their rows may have trained the model). The ranking is unchanged; the
    probabilities follow the latest month's purchase rate rather than the one of the fit,
    which is up to two months older on the last day of an anchor. ``None`` info: not
    applicable (BG/NBD baseline, or switched off)."""
    from dataclasses import replace

    from purchasing_power.model import recalibrate

    s = data.settings
    if bundle.purchase is None or s.recalibration_windows == 0:
        return bundle, None
    fit_snapshot = bundle.purchase.selection.get("calibration_snapshot")
    not_before = date.fromisoformat(fit_snapshot) if fit_snapshot else day
    earliest = max(not_before, data.first_day + timedelta(days=MIN_HISTORY_DAYS))
    days = [day - timedelta(days=s.purchase_horizon_days + k * s.snapshot_step_days) for k in range(s.recalibration_windows)]
    days = [d for d in days if d >= earliest]
    # the outcomes: purchases after the oldest window's as-of day, through the end of D
    later = data.history_since(min(days) + timedelta(days=1)) if days else None
    windows = []
    for as_of in days:
        f = data.features(as_of)
        if f.empty:
            continue
        y = build_labels(later, as_of, f.index, s.purchase_horizon_days, s.spend_horizon_days)["purchased"]
        windows.append((as_of.isoformat(), f, y.to_numpy()))
    if not windows:
        return bundle, {"applied": False, "reason": f"no closed window on or after {earliest} (the fit's calibration snapshot is {fit_snapshot})"}
    purchase, info = recalibrate(bundle.purchase, windows)
    if info["applied"]:
        log.info("%s: purchase calibration refitted on %s (%d rows, purchase rate %.3f)", day, info["snapshots"], info["rows"], info["purchase_rate"])
    return replace(bundle, purchase=purchase), info
