"""BG/NBD and Gamma-Gamma together: expected spend, and :func:`fit_and_predict`, which fits both on
an RFM summary and scores the same customers into the :data:`PREDICTION_COLUMNS` features."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict

import numpy as np
import pandas as pd

from purchasing_power.btyd.bgnbd import BGNBD, expected_purchases, fit_bgnbd, p_alive, prob_purchase_within
from purchasing_power.btyd.gamma_gamma import GammaGamma, expected_order_value, fit_gamma_gamma
from purchasing_power.btyd.validation import ArrayLike, validate_fm, validate_rft

#: Columns of :func:`fit_and_predict`.
PREDICTION_COLUMNS = (
    "bgnbd_p_purchase",
    "bgnbd_expected_purchases",
    "bgnbd_expected_purchases_spend_h",
    "bgnbd_p_alive",
    "bgnbd_gg_spend",
)

logger = logging.getLogger(__name__)


def bgnbd_gg_expected_spend(
    bg: BGNBD,
    gg: GammaGamma,
    t: ArrayLike,
    frequency: ArrayLike,
    recency: ArrayLike,
    T: ArrayLike,
    monetary_value: ArrayLike,
) -> np.ndarray:
    """Expected spend in (T, T+t]: E[purchases in t] * E[order value] (the Gamma-Gamma model
    assumes spend independent of the purchase process)."""
    return expected_purchases(bg, t, frequency, recency, T) * expected_order_value(gg, frequency, monetary_value)



def fit_and_predict(
    summary: pd.DataFrame,
    *,
    purchase_days: int = 30,
    spend_days: int = 90,
    penalizer: float = 0.001,
) -> pd.DataFrame:
    """Fit BG/NBD (+ Gamma-Gamma) on an :func:`rfm_summary` frame and score the same customers.

    Returns a frame with the summary's index and columns

    * ``bgnbd_p_purchase``: P(>= 1 purchase in the next ``purchase_days`` days),
    * ``bgnbd_expected_purchases``: expected purchases in the next ``purchase_days`` days,
    * ``bgnbd_expected_purchases_spend_h``: expected purchases in the next ``spend_days`` days,
    * ``bgnbd_p_alive``: P(alive at the end of the summary day),
    * ``bgnbd_gg_spend``: expected spend in the next ``spend_days`` days
      (= expected purchases x Gamma-Gamma expected order value).

    ``df.attrs`` holds ``bgnbd`` and ``gamma_gamma`` (parameter dicts, the latter ``None`` when
    not fitted), ``order_value_fallback`` (reason string or ``None``), the horizons and
    ``fit_seconds``. If the Gamma-Gamma cannot be fitted (fewer than 10 repeat customers, an
    optimiser failure, or q <= 1 so that the population mean is infinite) the expected order value
    falls back to the customer's own mean repeat order value, and for customers without repeat
    purchases to the mean of those values (0 if there are none); a warning is logged.
    """
    need = ["frequency", "recency", "T", "monetary_value"]
    missing = [c for c in need if c not in summary.columns]
    if missing:
        raise ValueError(f"fit_and_predict: summary lacks column(s) {missing}")
    if int(purchase_days) < 1 or int(spend_days) < 1:
        raise ValueError("purchase_days and spend_days must be >= 1")
    t0 = time.perf_counter()
    x, tx, T_ = validate_rft(summary["frequency"], summary["recency"], summary["T"])
    _, mv = validate_fm(x, summary["monetary_value"])

    bg = fit_bgnbd(x, tx, T_, penalizer=penalizer)
    pa = p_alive(bg, x, tx, T_)
    e_p = expected_purchases(bg, float(purchase_days), x, tx, T_)
    e_s = expected_purchases(bg, float(spend_days), x, tx, T_)
    p_buy = prob_purchase_within(bg, float(purchase_days), x, tx, T_)

    gg: GammaGamma | None = None
    fallback: str | None = None
    try:
        gg = fit_gamma_gamma(x, mv, penalizer=penalizer)
        if not gg.q > 1.0:
            fallback = f"Gamma-Gamma fit has q = {gg.q:.4g} <= 1 (infinite population mean order value)"
            gg = None
    except (ValueError, RuntimeError) as exc:
        fallback = f"Gamma-Gamma could not be fitted: {exc}"
    if gg is not None:
        order_value = expected_order_value(gg, x, mv)
    else:
        rep = (x > 0) & (mv > 0)
        pop = float(mv[rep].mean()) if rep.any() else 0.0
        order_value = np.where(rep, mv, pop)
        logger.warning(
            "%s; falling back to each customer's mean repeat order value (population mean %.4g for "
            "customers without repeat purchases)", fallback, pop,
        )
    spend = e_s * order_value
    elapsed = time.perf_counter() - t0

    out = pd.DataFrame(
        {
            "bgnbd_p_purchase": p_buy,
            "bgnbd_expected_purchases": e_p,
            "bgnbd_expected_purchases_spend_h": e_s,
            "bgnbd_p_alive": pa,
            "bgnbd_gg_spend": spend,
        },
        index=summary.index,
    )
    out.attrs["bgnbd"] = asdict(bg)
    out.attrs["gamma_gamma"] = asdict(gg) if gg is not None else None
    out.attrs["order_value_fallback"] = fallback
    out.attrs["purchase_days"] = int(purchase_days)
    out.attrs["spend_days"] = int(spend_days)
    out.attrs["fit_seconds"] = elapsed
    logger.info(
        "BTYD fit on %d customers in %.3fs: BG/NBD %s, Gamma-Gamma %s",
        len(summary), elapsed, out.attrs["bgnbd"], out.attrs["gamma_gamma"],
    )
    return out
