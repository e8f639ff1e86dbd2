"""Scoring: predictions of every customer from a deployed bundle, tiers, the output contract, and
the daily recalibration of the purchase probabilities."""

from __future__ import annotations

import logging
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any, Callable

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


def predictions_frame(customers: pd.Index, p: np.ndarray, spend: np.ndarray, day: date, version: str, settings: Settings) -> pd.DataFrame:
    import numpy as np
    import pandas as pd

    ids = customers.to_numpy(dtype=np.int64 if pd.api.types.is_numeric_dtype(customers.dtype) else object)
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


def recalibration_days(data: RunData, bundle: ModelBundle, day: date) -> tuple[list[date], str | None]:
    """The as-of days of the closed windows the purchase calibration is refitted on at ``day``
    (D - h, D - h - step, ...: ``recalibration_windows`` of them, h = the purchase horizon, step
    = ``snapshot_step_days``), and why there are none (``None``: there are). Windows older than
    the fit's own calibration snapshot are not used (their rows may have trained the model)."""
    s = data.settings
    if bundle.purchase is None or s.recalibration_windows == 0:
        return [], "not applicable"
    fit_snapshot = bundle.purchase.selection.get("calibration_snapshot")
    not_before = date.fromisoformat(fit_snapshot) if fit_snapshot else day
    earliest = max(not_before, data.first_day + timedelta(days=MIN_HISTORY_DAYS))
    days = [day - timedelta(days=s.purchase_horizon_days + k * s.snapshot_step_days) for k in range(s.recalibration_windows)]
    days = [d for d in days if d >= earliest]
    return days, None if days else f"no closed window on or after {earliest} (the fit's calibration snapshot is {fit_snapshot})"


def recalibrated(data: RunData, bundle: ModelBundle, day: date) -> tuple[ModelBundle, dict[str, Any] | None]:
    """The bundle with its purchase calibration refitted on the latest closed windows before
    ``day`` + 1 (:func:`recalibration_days`): every customer as of D - h, D - h - step, ... and
    whether they bought within h days, all known by the end of D. The ranking is unchanged; the
    probabilities follow the latest month's purchase rate rather than the one of the fit, which
    is up to two months older on the last day of an anchor. ``None`` info: not applicable
    (BG/NBD baseline, or switched off)."""
    return refit_calibration(data, bundle, day, window_rows(data, bundle, day, data.features))


def window_rows(data: RunData, bundle: ModelBundle, day: date, features: Callable[[date], pd.DataFrame]) -> pd.DataFrame:
    """(``as_of``, ``customer_id``, ``raw``, ``purchased``) of the customers of ``features(as_of)``
    for each recalibration window: the purchase model's raw score as of the window and whether
    they bought within the purchase horizon after it (none: not applicable)."""
    import pandas as pd

    from purchasing_power.model import single_threaded

    s = data.settings
    days, _ = recalibration_days(data, bundle, day)
    # the outcomes: purchases after the oldest window's as-of day, through the end of D
    later = data.history_since(min(days) + timedelta(days=1)) if days else None
    rows = [pd.DataFrame({"as_of": pd.Series(dtype=object), "customer_id": pd.Series(dtype="int64"),
                          "raw": pd.Series(dtype="float64"), "purchased": pd.Series(dtype="int64")})]
    for as_of in days:
        f = features(as_of)
        if f.empty:
            continue
        y = build_labels(later, as_of, f.index, s.purchase_horizon_days, s.spend_horizon_days)["purchased"]
        with single_threaded(blas_only=True):
            raw = bundle.purchase.raw_score(f)
        rows.append(pd.DataFrame({"as_of": as_of.isoformat(), "customer_id": f.index.to_numpy(), "raw": raw,
                                  "purchased": y.to_numpy(dtype="int64")}))
    return pd.concat(rows, ignore_index=True) if len(rows) > 1 else rows[0]


def refit_calibration(data: RunData, bundle: ModelBundle, day: date, rows: pd.DataFrame) -> tuple[ModelBundle, dict[str, Any] | None]:
    """:func:`recalibrated` from the windows' :func:`window_rows` (of every customer, in any
    order and from any number of shards: each window's rows are taken in customer order, as one
    pass over every customer gives them)."""
    from dataclasses import replace

    from purchasing_power.model import recalibrate_scored

    days, reason = recalibration_days(data, bundle, day)
    if reason == "not applicable":
        return bundle, None
    if reason is not None:
        return bundle, {"applied": False, "reason": reason}
    windows = []
    for as_of in days:
        w = rows[(rows["as_of"] == as_of.isoformat()).to_numpy()].sort_values("customer_id", kind="stable")
        if len(w):
            windows.append((as_of.isoformat(), w["raw"].to_numpy(), w["purchased"].to_numpy()))
    if not windows:
        return bundle, {"applied": False, "reason": f"no customer in the windows as of {', '.join(d.isoformat() for d in days)}"}
    purchase, info = recalibrate_scored(bundle.purchase, windows)
    if info["applied"]:
        log.info("%s: purchase calibration refitted on %s (%d rows, purchase rate %.3f)", day, info["snapshots"], info["rows"], info["purchase_rate"])
    return replace(bundle, purchase=purchase), info


def shard_scores(data: RunData, bundle: ModelBundle, day: date, shard: int = 0, shards: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One customer shard's part of the day's scores (``shards`` = 1: every customer):
    (``customer_id``, ``raw`` (:meth:`model.ModelBundle.scores`), ``spend``, ``model_version``)
    of the day's customers, and the :func:`window_rows` of the shard's customers. The features
    come from the feature store, only the shard's rows read when ``shards`` > 1."""
    import pandas as pd

    def features(as_of: date) -> pd.DataFrame:
        return data.features(as_of) if shards == 1 else data.stored_features_shard(as_of, shard, shards)

    import numpy as np

    f = features(day)
    raw, spend = bundle.scores(f) if len(f) else (np.empty(0), np.empty(0))  # a shard may hold no customer
    scored = pd.DataFrame({"customer_id": f.index.to_numpy(), "raw": raw, "spend": spend, "model_version": bundle.version})
    return scored, window_rows(data, bundle, day, features)


def finish_scores(data: RunData, bundle: ModelBundle, day: date, scored: list[pd.DataFrame],
                  windows: list[pd.DataFrame]) -> tuple[pd.DataFrame, ModelBundle, dict[str, Any] | None]:
    """The day's predictions from every shard's :func:`shard_scores`: the purchase calibration
    refitted on the windows' rows (:func:`refit_calibration`), probabilities, tiers. Returns
    (predictions in customer order, the recalibrated bundle, the recalibration's info)."""
    import pandas as pd

    day_rows = pd.concat(scored, ignore_index=True).sort_values("customer_id", kind="stable")
    if day_rows.empty:
        raise ValueError(f"no customer has a valid purchase before {day} + 1 day: nothing to score")
    bundle, info = refit_calibration(data, bundle, day, pd.concat(windows, ignore_index=True))
    p = bundle.probabilities(day_rows["raw"].to_numpy())
    ids = pd.Index(day_rows["customer_id"].to_numpy(), name="customer_id")
    return predictions_frame(ids, p, day_rows["spend"].to_numpy(), day, bundle.version, data.settings), bundle, info
