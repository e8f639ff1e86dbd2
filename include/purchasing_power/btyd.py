"""Buy-till-you-die baselines: BG/NBD for purchase counts and Gamma-Gamma for order value.

Implemented from the papers with numpy/scipy only (no ``lifetimes``/``pymc``):

* P. S. Fader, B. G. S. Hardie, K. L. Lee (2005), "Counting Your Customers the Easy Way: An
  Alternative to the Pareto/NBD Model", Marketing Science 24(2) -- BG/NBD.
* P. S. Fader, B. G. S. Hardie, K. L. Lee (2005), "RFM and CLV: Using Iso-Value Curves for
  Customer Base Analysis", JMR 42(4), and P. S. Fader, B. G. S. Hardie (2013), "The Gamma-Gamma
  Model of Monetary Value" -- Gamma-Gamma spend model.

Time unit
---------
Everything is in DAYS. :func:`rfm_summary` builds the per-customer ``(x, t_x, T)`` summary with the
following convention (consistent with how ``lifetimes`` counts, shifted by one day at the end):

* every transaction timestamp is floored to its calendar day; the customer's net value per day is
  summed, and a *purchase* is a day whose net value is > 0 (a cancellation that nets a day to
  zero or below removes that day; a negative day on its own is ignored);
* a purchase on day ``d`` happens at time ``d`` (the start of the day); the observation window
  ends at the END of ``as_of``, i.e. at ``as_of + 1 day`` (rows with ``ts >= as_of + 1 day`` are
  dropped);
* ``frequency`` = purchase days - 1 (repeat purchases), ``recency`` = (last day - first day) in
  days, ``T`` = (as_of + 1 day - first day) in days = ``(as_of - first_day).days + 1``.

Hence ``0 <= recency <= T - 1 < T`` always, and a customer whose only purchase was on ``as_of``
has ``T = 1``. Since purchases are aggregated per day, at most one purchase per day is counted.

Parameters of the BG/NBD (``alpha``) and of the Gamma-Gamma (``v``) carry units (days, money);
the optimisers work on internally rescaled data (time / mean T, money / mean spend) so that the
fit is well conditioned whatever the unit, and report the parameters back in the original units.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import asdict, dataclass
from datetime import date
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import optimize, special

#: Columns of :func:`fit_and_predict`.
PREDICTION_COLUMNS = (
    "bgnbd_p_purchase",
    "bgnbd_expected_purchases",
    "bgnbd_expected_purchases_spend_h",
    "bgnbd_p_alive",
    "bgnbd_gg_spend",
)

logger = logging.getLogger(__name__)

__all__ = [
    "BGNBD",
    "GammaGamma",
    "rfm_summary",
    "fit_bgnbd",
    "bgnbd_log_likelihood",
    "expected_purchases",
    "p_alive",
    "prob_purchase_within",
    "fit_gamma_gamma",
    "gamma_gamma_log_likelihood",
    "expected_order_value",
    "bgnbd_gg_expected_spend",
    "fit_and_predict",
]

ArrayLike = Any  # numpy array, pandas Series, list or scalar

#: Bounds of the log-parameters in the (rescaled) optimisation space; exp(+-15) ~ 3e6 / 3e-7.
_LOG_BOUND = 15.0
#: Gauss-Jacobi nodes for the quadrature fallback of the conditional expectation.
_QUAD_NODES = 64


# ================================================================================================
# RFM summary
# ================================================================================================
def rfm_summary(
    tx: pd.DataFrame,
    as_of: date,
    *,
    customer_col: str = "customer_id",
    ts_col: str = "invoice_ts",
    value_col: str = "line_value",
) -> pd.DataFrame:
    """Per-customer BTYD summary as of the END of ``as_of`` (see the module docstring).

    Returns a frame indexed by customer id (int64, name ``customer_id``), sorted, with columns

    * ``frequency`` (float): number of repeat purchase days (purchase days - 1),
    * ``recency`` (float, days): last purchase day - first purchase day,
    * ``T`` (float, days): ``as_of + 1 day - first purchase day`` (>= 1),
    * ``monetary_value`` (float): mean daily net value over the REPEAT purchase days (the first
      purchase day is excluded, as in the Gamma-Gamma usage of Fader & Hardie); 0 when
      ``frequency == 0``,
    * ``n_orders`` (int64): number of purchase days (= frequency + 1), i.e. orders at day
      granularity.

    Rows without a customer id or timestamp, or with ``ts >= as_of + 1 day``, are ignored;
    missing values count as 0. Customers without any positive-net day before the cut-off are
    excluded. ``as_of`` may be a ``date``, a ``datetime``/``Timestamp`` (its date is used) or an
    ISO string. Timezone-aware timestamps are cut and floored to days in their own timezone.
    """
    missing = [c for c in (customer_col, ts_col, value_col) if c not in tx.columns]
    if missing:
        raise ValueError(f"rfm_summary: transactions lack column(s) {missing}")
    as_of_day = pd.Timestamp(as_of).normalize()
    if as_of_day.tzinfo is not None:
        as_of_day = as_of_day.tz_localize(None)

    df = tx[[customer_col, ts_col, value_col]]
    ts = pd.to_datetime(df[ts_col])
    tz = getattr(ts.dt, "tz", None)
    if tz is not None:
        ts = ts.dt.tz_localize(None)  # wall-clock time in its own timezone
    cutoff = as_of_day + pd.Timedelta(days=1)
    keep = df[customer_col].notna().to_numpy() & ts.notna().to_numpy() & (ts < cutoff).to_numpy()

    cust = pd.to_numeric(df[customer_col][keep], errors="raise")
    cust_f = cust.to_numpy(dtype="float64")
    if cust_f.size and not np.all(np.isfinite(cust_f) & (cust_f == np.round(cust_f))):
        raise ValueError(f"rfm_summary: column {customer_col!r} must hold integer customer ids")
    work = pd.DataFrame(
        {
            "customer_id": cust.to_numpy().astype("int64"),
            "day": ts[keep].dt.normalize().to_numpy(),
            "value": pd.to_numeric(df[value_col][keep], errors="raise").fillna(0.0).to_numpy(dtype="float64"),
        }
    )
    daily = work.groupby(["customer_id", "day"], sort=True)["value"].sum()
    daily = daily[daily > 0].reset_index()  # purchase days, sorted by customer then day

    cols = ["frequency", "recency", "T", "monetary_value", "n_orders"]
    if daily.empty:
        out = pd.DataFrame({c: pd.Series(dtype="float64") for c in cols})
        out["n_orders"] = out["n_orders"].astype("int64")
        out.index = pd.Index([], dtype="int64", name="customer_id")
        return out

    g = daily.groupby("customer_id", sort=True)
    agg = g.agg(
        first_day=("day", "min"),
        last_day=("day", "max"),
        n=("day", "size"),
        total=("value", "sum"),
        first_value=("value", "first"),  # rows are sorted by day inside each customer
    )
    one_day = np.timedelta64(1, "D")
    n = agg["n"].to_numpy(dtype="int64")
    freq = (n - 1).astype("float64")
    recency = (agg["last_day"] - agg["first_day"]).to_numpy() / one_day
    T = (as_of_day - agg["first_day"]).to_numpy() / one_day + 1.0
    repeat_total = agg["total"].to_numpy() - agg["first_value"].to_numpy()
    monetary = np.where(n > 1, repeat_total / np.maximum(n - 1, 1), 0.0)
    out = pd.DataFrame(
        {
            "frequency": freq,
            "recency": recency.astype("float64"),
            "T": T.astype("float64"),
            "monetary_value": monetary.astype("float64"),
            "n_orders": n,
        },
        index=pd.Index(agg.index.to_numpy(dtype="int64"), name="customer_id"),
    )
    return out


# ================================================================================================
# Validation helpers
# ================================================================================================
def _as_1d(name: str, values: ArrayLike) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype="float64")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric: {exc}") from exc
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return arr


def _validate_rft(frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate BG/NBD inputs (x, t_x, T) and return float arrays."""
    x = _as_1d("frequency", frequency)
    tx = _as_1d("recency", recency)
    T_ = _as_1d("T", T)
    if not (x.shape == tx.shape == T_.shape):
        raise ValueError(
            f"frequency, recency and T must have the same length, got {x.size}, {tx.size}, {T_.size}"
        )
    for name, arr in (("frequency", x), ("recency", tx), ("T", T_)):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} must be finite (no NaN/inf)")
        if np.any(arr < 0):
            raise ValueError(f"{name} must be non-negative")
    if np.any(x != np.round(x)):
        raise ValueError("frequency must be integer-valued (number of repeat purchases)")
    if np.any(tx > T_):
        raise ValueError("recency must be <= T for every customer")
    if np.any((x > 0) & (tx <= 0)):
        raise ValueError("customers with frequency > 0 must have recency > 0")
    return x, tx, T_


def _validate_t(t: ArrayLike) -> np.ndarray:
    arr = np.asarray(t, dtype="float64")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError("t (the prediction horizon) must be finite and >= 0")
    return arr


def _check_positive_params(**params: float) -> None:
    for k, v in params.items():
        if not (np.isfinite(v) and v > 0):
            raise ValueError(f"model parameter {k} must be a positive finite number, got {v!r}")


# ================================================================================================
# BG/NBD
# ================================================================================================
@dataclass(frozen=True)
class BGNBD:
    """BG/NBD parameters: purchase rate lambda ~ Gamma(shape r, rate alpha) [alpha in days],
    dropout probability after each purchase p ~ Beta(a, b)."""

    r: float
    alpha: float
    a: float
    b: float

    def __post_init__(self) -> None:
        _check_positive_params(r=self.r, alpha=self.alpha, a=self.a, b=self.b)


def _bgnbd_ll_terms(
    r: float, alpha: float, a: float, b: float, x: np.ndarray, tx: np.ndarray, T: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-customer log-likelihood (FHL 2005, eq. 6) and the weights of its two terms.

    L = B(a, b+x)/B(a, b) * G(r+x) a^r / (G(r) (alpha+T)^(r+x))
        + [x > 0] B(a+1, b+x-1)/B(a, b) * G(r+x) alpha^r / (G(r) (alpha+t_x)^(r+x))

    ln L = A1 + A2 + ln(exp(A3) + [x>0] exp(A4)) with
    A1 = lnG(r+x) - lnG(r) + r ln alpha, A2 = ln B(a, b+x) - ln B(a, b),
    A3 = -(r+x) ln(alpha+T),   A4 = ln a - ln(b+x-1) - (r+x) ln(alpha+t_x).
    The last sum is computed with log-sum-exp.
    """
    pos = x > 0
    rx = r + x
    A1 = special.gammaln(rx) - special.gammaln(r) + r * np.log(alpha)
    A2 = special.betaln(a, b + x) - special.betaln(a, b)
    A3 = -rx * np.log(alpha + T)
    A4 = np.full_like(A3, -np.inf)
    A4[pos] = np.log(a) - np.log(b + x[pos] - 1.0) - rx[pos] * np.log(alpha + tx[pos])
    lse = np.logaddexp(A3, A4)
    w3 = np.exp(A3 - lse)
    w4 = np.exp(A4 - lse)
    return A1 + A2 + lse, w3, w4, pos


def _bgnbd_objective(
    log_params: np.ndarray,
    x: np.ndarray,
    tx: np.ndarray,
    T: np.ndarray,
    w: np.ndarray,
    penalizer: float,
) -> tuple[float, np.ndarray]:
    """Penalised mean negative log-likelihood and its analytic gradient w.r.t. log-parameters."""
    r, alpha, a, b = np.exp(log_params)
    with np.errstate(all="ignore"):
        ll, w3, w4, pos = _bgnbd_ll_terms(r, alpha, a, b, x, tx, T)
        rx = r + x
        dr = special.digamma(rx) - special.digamma(r) + np.log(alpha) - w3 * np.log(alpha + T)
        dalpha = r / alpha - w3 * rx / (alpha + T)
        db = special.digamma(a + b) + special.digamma(b + x) - special.digamma(b) - special.digamma(a + b + x)
        da = special.digamma(a + b) - special.digamma(a + b + x)
        if np.any(pos):
            dr[pos] -= w4[pos] * np.log(alpha + tx[pos])
            dalpha[pos] -= w4[pos] * rx[pos] / (alpha + tx[pos])
            da[pos] += w4[pos] / a
            db[pos] -= w4[pos] / (b + x[pos] - 1.0)
        wsum = w.sum()
        value = -float(np.dot(w, ll)) / wsum
        grad = -np.array([np.dot(w, dr) * r, np.dot(w, dalpha) * alpha, np.dot(w, da) * a, np.dot(w, db) * b]) / wsum
    # L2 penalty on the log of the dimensionless shape parameters (alpha, a time scale, is not
    # penalised so that the result does not depend on the time unit).
    pen_idx = [0, 2, 3]
    value += penalizer * float(np.sum(log_params[pen_idx] ** 2))
    grad[pen_idx] += 2.0 * penalizer * log_params[pen_idx]
    if not np.isfinite(value):
        return 1e300, np.zeros(4)
    grad = np.where(np.isfinite(grad), grad, 0.0)
    return value, grad


def bgnbd_log_likelihood(
    m: BGNBD, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike, *, weights: ArrayLike | None = None
) -> float:
    """Total (weighted) log-likelihood of the data under ``m`` (no penalty)."""
    x, tx, T_ = _validate_rft(frequency, recency, T)
    w = np.ones_like(x) if weights is None else _validate_weights(weights, x.size)
    ll, *_ = _bgnbd_ll_terms(m.r, m.alpha, m.a, m.b, x, tx, T_)
    return float(np.dot(w, ll))


def _validate_weights(weights: ArrayLike, n: int) -> np.ndarray:
    w = _as_1d("weights", weights)
    if w.size != n:
        raise ValueError(f"weights must have the same length as the data ({n}), got {w.size}")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("weights must be finite and non-negative")
    if w.sum() <= 0:
        raise ValueError("weights must not all be zero")
    return w


def _aggregate_rows(*cols: np.ndarray, weights: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Collapse identical rows, summing their weights (a pure speed-up: the likelihood is a sum)."""
    stacked = np.column_stack(cols)
    uniq, inverse = np.unique(stacked, axis=0, return_inverse=True)
    w = np.bincount(inverse.ravel(), weights=weights, minlength=uniq.shape[0])
    keep = w > 0
    return [uniq[keep, i] for i in range(uniq.shape[1])], w[keep]


def _bgnbd_starts(x: np.ndarray, T_s: np.ndarray, w: np.ndarray) -> list[np.ndarray]:
    """Deterministic start values in the rescaled time unit: E[lambda] = r/alpha matches the
    naive pooled purchase rate sum(x)/sum(T)."""
    rate = float(np.dot(w, x) / max(np.dot(w, T_s), 1e-12))
    starts = []
    for r0, a0, b0 in ((1.0, 1.0, 1.0), (0.3, 0.5, 3.0), (3.0, 2.0, 10.0)):
        alpha0 = min(max(r0 / max(rate, 1e-12), 1e-4), 1e4)
        starts.append(np.log([r0, alpha0, a0, b0]))
    return starts


def _single_threaded_blas() -> contextlib.AbstractContextManager:
    """Limit BLAS to one thread while optimising: L-BFGS-B works on 3-4 parameters, and a
    multi-threaded OpenBLAS on a busy machine made it ~7x slower in measurements (0.4 s vs
    0.06 s). ``threadpoolctl`` (a scikit-learn dependency) is optional."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _minimize(fun, starts: Sequence[np.ndarray], args: tuple, what: str) -> np.ndarray:
    """Deterministic multi-start L-BFGS-B (analytic gradient), falling back to Nelder-Mead.

    Returns the best finite optimum found; raises RuntimeError only if nothing finite was found.
    """
    with _single_threaded_blas():
        return _minimize_impl(fun, starts, args, what)


def _minimize_impl(fun, starts: Sequence[np.ndarray], args: tuple, what: str) -> np.ndarray:
    k = len(starts[0])
    bounds = [(-_LOG_BOUND, _LOG_BOUND)] * k
    best_x, best_f, any_ok = None, np.inf, False
    for x0 in starts:
        try:
            res = optimize.minimize(
                fun, x0, args=args, jac=True, method="L-BFGS-B", bounds=bounds,
                options={"maxiter": 1000, "ftol": 1e-13, "gtol": 1e-8},
            )
        except (ValueError, FloatingPointError, ArithmeticError) as exc:  # pragma: no cover
            logger.debug("%s: L-BFGS-B failed from %s: %s", what, x0, exc)
            continue
        if np.isfinite(res.fun) and res.fun < best_f:
            best_x, best_f = res.x, float(res.fun)
            any_ok = any_ok or bool(res.success)
    if best_x is None or not any_ok:
        # Nelder-Mead does not use the gradient: robust to a bad/inaccurate gradient.
        x0 = best_x if best_x is not None else starts[0]
        res = optimize.minimize(
            lambda z: fun(np.clip(z, -_LOG_BOUND, _LOG_BOUND), *args)[0], x0, method="Nelder-Mead",
            options={"maxiter": 4000, "xatol": 1e-8, "fatol": 1e-12},
        )
        if np.isfinite(res.fun) and res.fun < best_f:
            best_x, best_f = np.clip(res.x, -_LOG_BOUND, _LOG_BOUND), float(res.fun)
        if best_x is None or best_f >= 1e299:
            raise RuntimeError(f"{what}: the optimiser found no finite likelihood")
        if not res.success:
            logger.warning("%s: optimiser did not report convergence; using the best point found", what)
    if np.any(np.abs(best_x) > _LOG_BOUND - 1e-3):
        logger.warning(
            "%s: a parameter reached its bound (log-params %s); the model may be degenerate for this data",
            what, np.round(best_x, 3).tolist(),
        )
    return best_x


def fit_bgnbd(
    frequency: ArrayLike,
    recency: ArrayLike,
    T: ArrayLike,
    *,
    penalizer: float = 0.0,
    weights: ArrayLike | None = None,
) -> BGNBD:
    """Maximum-likelihood BG/NBD fit (FHL 2005, eq. 6).

    ``frequency`` = repeat purchases x, ``recency`` = t_x and ``T`` in the same time unit.
    ``weights`` are optional counts of identical ``(x, t_x, T)`` rows; identical rows are collapsed
    automatically anyway. The objective is the weighted mean negative log-likelihood plus
    ``penalizer * (ln(r)^2 + ln(a)^2 + ln(b)^2)`` (a ridge on the log of the dimensionless shape
    parameters that keeps a, b from running off to infinity on data with little dropout
    information; ``alpha`` carries the time unit and is not penalised). Optimised over
    log-parameters with time rescaled by mean(T), by multi-start L-BFGS-B with the analytic
    gradient, falling back to Nelder-Mead.
    """
    x, tx, T_ = _validate_rft(frequency, recency, T)
    if x.size == 0:
        raise ValueError("fit_bgnbd: no customers")
    w = np.ones_like(x) if weights is None else _validate_weights(weights, x.size)
    if not (np.isfinite(penalizer) and penalizer >= 0):
        raise ValueError("penalizer must be finite and >= 0")
    if np.dot(w, x) <= 0:
        raise ValueError("fit_bgnbd: no repeat purchases in the data; the BG/NBD is not identified")
    if np.dot(w, T_) <= 0:
        raise ValueError("fit_bgnbd: all T are zero")
    (x, tx, T_), w = _aggregate_rows(x, tx, T_, weights=w)
    scale = float(np.dot(w, T_) / w.sum())
    tx_s, T_s = tx / scale, T_ / scale
    best = _minimize(_bgnbd_objective, _bgnbd_starts(x, T_s, w), (x, tx_s, T_s, w, float(penalizer)), "fit_bgnbd")
    r, alpha_s, a, b = np.exp(best)
    return BGNBD(r=float(r), alpha=float(alpha_s * scale), a=float(a), b=float(b))


def _log_p_alive_odds(m: BGNBD, x: np.ndarray, tx: np.ndarray, T: np.ndarray) -> np.ndarray:
    """ln of the odds P(dead | data) / P(alive | data) = ln[a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x)]
    for x > 0 and -inf for x = 0."""
    out = np.full_like(x, -np.inf, dtype="float64")
    pos = x > 0
    xp = x[pos]
    out[pos] = (
        np.log(m.a) - np.log(m.b + xp - 1.0)
        + (m.r + xp) * (np.log(m.alpha + T[pos]) - np.log(m.alpha + tx[pos]))
    )
    return out


def p_alive(m: BGNBD, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> np.ndarray:
    """P(customer still alive at T | x, t_x, T) (FHL 2005; Fader-Hardie-Lee note "Computing
    P(alive) using the BG/NBD model"):

        P(alive) = 1 / (1 + [x > 0] a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x)).

    In the BG/NBD a customer can only drop out right after a purchase, so a customer with no repeat
    purchase (x = 0) is alive with probability 1. Computed in log space (no overflow)."""
    x, tx, T_ = _validate_rft(frequency, recency, T)
    return special.expit(-_log_p_alive_odds(m, x, tx, T_))


def prob_purchase_within(m: BGNBD, t: ArrayLike, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> np.ndarray:
    """P(at least one purchase in (T, T+t] | x, t_x, T).

    Derivation: in the BG/NBD a customer drops out only immediately after a purchase, so a customer
    alive at T makes his next purchase after an Exp(lambda) waiting time (memoryless) and cannot
    die before it. Given alive, the posterior of lambda is Gamma(r+x, alpha+T) (the alive part of
    the likelihood is lambda^x e^(-lambda T) (1-p)^x, which also makes lambda and p independent),
    so P(no purchase in t | alive) = E[e^(-lambda t)] = ((alpha+T)/(alpha+T+t))^(r+x). A dead
    customer never buys. Hence

        P = P(alive | data) * (1 - ((alpha+T)/(alpha+T+t))^(r+x)).

    ``t`` is a scalar or broadcasts against the customers."""
    x, tx, T_ = _validate_rft(frequency, recency, T)
    t_ = _validate_t(t)
    pa = special.expit(-_log_p_alive_odds(m, x, tx, T_))
    p_any = -np.expm1(-(m.r + x) * np.log1p(t_ / (m.alpha + T_)))
    return pa * p_any


def _expected_alive_quadrature(m: BGNBD, t: np.ndarray, x: np.ndarray, T: np.ndarray) -> np.ndarray:
    """E[Y(t) | alive, data] by Gauss-Jacobi quadrature of the 1-D representation

        E[Y(t) | alive] = E_{p ~ Beta(a, b+x)}[ (1 - ((alpha+T)/(alpha+T+p t))^(r+x)) / p ]

    (given alive, lambda ~ Gamma(r+x, alpha+T) and p ~ Beta(a, b+x) independently, and a customer
    alive with (lambda, p) makes (1 - e^(-lambda p t))/p expected purchases in t; FHL eq. 7).
    The integrand is bounded and analytic in p, so the quadrature is accurate for any a != or = 1.
    """
    out = np.empty_like(x, dtype="float64")
    for xv in np.unique(x):
        idx = np.flatnonzero(x == xv)
        # weight (1-u)^(b+x-1) (1+u)^(a-1) on u in (-1,1), p = (1+u)/2
        u, wq = special.roots_jacobi(_QUAD_NODES, m.b + xv - 1.0, m.a - 1.0)
        wq = wq / wq.sum()
        p = (1.0 + u) / 2.0  # (nodes,)
        rx = m.r + xv
        ratio = (t[idx, None] * p[None, :]) / (m.alpha + T[idx, None])
        vals = -np.expm1(-rx * np.log1p(ratio)) / p[None, :]
        out[idx] = vals @ wq
    return out


def _expected_alive(m: BGNBD, t: np.ndarray, x: np.ndarray, T: np.ndarray) -> np.ndarray:
    """E[Y(t) | alive, data]: the bracket of FHL 2005 eq. 10 via scipy's hyp2f1, guarded.

    Eq. 10's numerator is (a+b+x-1)/(a-1) [1 - ((alpha+T)/(alpha+T+t))^(r+x)
    2F1(r+x, b+x; a+b+x-1; z)], z = t/(alpha+T+t). We evaluate the Euler-transformed, equivalent
    form (1-z)^(a-1) 2F1(a+b-1-r, a-1; a+b+x-1; z): the original 2F1 grows like
    (1-z)^-(r+x-a+1) for large x (overflow, then cancellation), the transformed one does not.
    scipy's hyp2f1 is not accurate everywhere (|z| -> 1, large parameters) and the formula
    cancels when a -> 1, so results that are non-finite or violate the bounds
    0 <= E[Y|alive] <= E[lambda | alive] t = (r+x) t/(alpha+T), and all customers when
    |a - 1| < 1e-6, are recomputed by quadrature (:func:`_expected_alive_quadrature`).
    """
    z = t / (m.alpha + T + t)
    c = m.a + m.b + x - 1.0
    with np.errstate(all="ignore"):
        f = special.hyp2f1(m.a + m.b - 1.0 - m.r, m.a - 1.0, c, z)
        val = c / (m.a - 1.0) * (-np.expm1((m.a - 1.0) * np.log1p(-z)) - np.exp((m.a - 1.0) * np.log1p(-z)) * (f - 1.0))
    upper = (m.r + x) * t / (m.alpha + T)
    bad = ~np.isfinite(val) | (val < -1e-9 * (1 + upper)) | (val > upper * (1 + 1e-7) + 1e-12)
    if abs(m.a - 1.0) < 1e-6:
        bad[:] = True
    if np.any(bad):
        val = val.copy()
        val[bad] = _expected_alive_quadrature(m, t[bad], x[bad], T[bad])
    return np.clip(val, 0.0, upper)


def expected_purchases(m: BGNBD, t: ArrayLike, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> np.ndarray:
    """Conditional expected number of purchases in (T, T+t] (FHL 2005, eq. 10):

        E[Y(t) | x, t_x, T] = (a+b+x-1)/(a-1) [1 - ((alpha+T)/(alpha+T+t))^(r+x)
                               2F1(r+x, b+x; a+b+x-1; t/(alpha+T+t))]
                              / (1 + [x > 0] a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x))
                            = P(alive | data) * E[Y(t) | alive, data].

    See :func:`_expected_alive` for how the hypergeometric function is evaluated and guarded.
    ``t`` is a scalar or broadcasts against the customers."""
    x, tx, T_ = _validate_rft(frequency, recency, T)
    t_ = np.broadcast_to(_validate_t(t), x.shape).astype("float64")
    pa = special.expit(-_log_p_alive_odds(m, x, tx, T_))
    out = np.zeros_like(x)
    nz = t_ > 0
    if np.any(nz):
        out[nz] = pa[nz] * _expected_alive(m, t_[nz], x[nz], T_[nz])
    return out


# ================================================================================================
# Gamma-Gamma
# ================================================================================================
@dataclass(frozen=True)
class GammaGamma:
    """Gamma-Gamma spend model: a customer's order values are Gamma(shape p, rate nu), with
    nu ~ Gamma(shape q, rate v) across customers [v in money units]. Population mean order value
    E[M] = p v / (q - 1) (finite for q > 1)."""

    p: float
    q: float
    v: float

    def __post_init__(self) -> None:
        _check_positive_params(p=self.p, q=self.q, v=self.v)

    @property
    def population_mean(self) -> float:
        return self.p * self.v / (self.q - 1.0) if self.q > 1 else float("inf")


def _validate_fm(frequency: ArrayLike, monetary_value: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    x = _as_1d("frequency", frequency)
    mv = _as_1d("monetary_value", monetary_value)
    if x.shape != mv.shape:
        raise ValueError(f"frequency and monetary_value must have the same length, got {x.size}, {mv.size}")
    for name, arr in (("frequency", x), ("monetary_value", mv)):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} must be finite (no NaN/inf)")
        if np.any(arr < 0):
            raise ValueError(f"{name} must be non-negative")
    if np.any(x != np.round(x)):
        raise ValueError("frequency must be integer-valued (number of repeat purchases)")
    return x, mv


def _gg_ll(p: float, q: float, v: float, x: np.ndarray, mv: np.ndarray) -> np.ndarray:
    """Per-customer log-density of the mean order value m over x orders (Fader-Hardie 2013, eq. 3):

    f(m | p, q, v, x) = G(px+q) / (G(px) G(q)) * v^q m^(px-1) x^(px) / (v + m x)^(px+q).
    """
    px = p * x
    return (
        special.gammaln(px + q) - special.gammaln(px) - special.gammaln(q)
        + q * np.log(v) + (px - 1.0) * np.log(mv) + px * np.log(x) - (px + q) * np.log(v + x * mv)
    )


def _gg_objective(
    log_params: np.ndarray, x: np.ndarray, mv: np.ndarray, w: np.ndarray, penalizer: float
) -> tuple[float, np.ndarray]:
    p, q, v = np.exp(log_params)
    with np.errstate(all="ignore"):
        ll = _gg_ll(p, q, v, x, mv)
        px = p * x
        dg = special.digamma(px + q)
        lvxm = np.log(v + x * mv)
        dp = x * (dg - special.digamma(px) + np.log(mv) + np.log(x) - lvxm)
        dq = dg - special.digamma(q) + np.log(v) - lvxm
        dv = q / v - (px + q) / (v + x * mv)
        n = w.sum()
        value = -float(np.dot(w, ll)) / n
        grad = -np.array([np.dot(w, dp) * p, np.dot(w, dq) * q, np.dot(w, dv) * v]) / n
    # ridge on ln p, ln q (dimensionless); v carries the money unit and is not penalised
    value += penalizer * float(log_params[0] ** 2 + log_params[1] ** 2)
    grad[:2] += 2.0 * penalizer * log_params[:2]
    if not np.isfinite(value):
        return 1e300, np.zeros(3)
    return value, np.where(np.isfinite(grad), grad, 0.0)


def gamma_gamma_log_likelihood(m: GammaGamma, frequency: ArrayLike, monetary_value: ArrayLike) -> float:
    """Total log-likelihood of the customers with frequency > 0 and monetary_value > 0."""
    x, mv = _validate_fm(frequency, monetary_value)
    keep = (x > 0) & (mv > 0)
    return float(_gg_ll(m.p, m.q, m.v, x[keep], mv[keep]).sum())


def fit_gamma_gamma(frequency: ArrayLike, monetary_value: ArrayLike, *, penalizer: float = 0.0) -> GammaGamma:
    """Maximum-likelihood Gamma-Gamma fit on the customers with frequency > 0 and
    monetary_value > 0 (others carry no information on spend and are ignored).

    ``monetary_value`` is the mean value of the ``frequency`` repeat orders. Objective: mean
    negative log-likelihood + ``penalizer * (ln(p)^2 + ln(q)^2)``; optimised over log-parameters
    with money rescaled by the mean spend. Raises ValueError with fewer than 10 usable customers.
    """
    x, mv = _validate_fm(frequency, monetary_value)
    if not (np.isfinite(penalizer) and penalizer >= 0):
        raise ValueError("penalizer must be finite and >= 0")
    keep = (x > 0) & (mv > 0)
    n = int(keep.sum())
    if n < 10:
        raise ValueError(
            f"fit_gamma_gamma: need at least 10 customers with frequency > 0 and monetary_value > 0, got {n}"
        )
    (x, mv), w = _aggregate_rows(x[keep], mv[keep], weights=np.ones(n))
    scale = float(np.dot(w, mv) / n)
    mv_s = mv / scale
    starts = []
    for p0, q0 in ((1.0, 3.0), (5.0, 5.0), (0.5, 1.5)):
        v0 = (q0 - 1.0) / p0  # population mean p v/(q-1) = 1 in rescaled money
        starts.append(np.log([p0, q0, v0]))
    best = _minimize(_gg_objective, starts, (x, mv_s, w, float(penalizer)), "fit_gamma_gamma")
    p, q, v_s = np.exp(best)
    return GammaGamma(p=float(p), q=float(q), v=float(v_s * scale))


def expected_order_value(m: GammaGamma, frequency: ArrayLike, monetary_value: ArrayLike) -> np.ndarray:
    """Conditional expected order value E[M | p, q, v, x, m_x] (Fader-Hardie 2013, eq. 5):

        E[M | x, m_x] = p (v + x m_x) / (p x + q - 1)
                      = (q-1)/(px+q-1) * p v/(q-1) + px/(px+q-1) * m_x,

    a weighted average of the population mean and the customer's own mean that shrinks towards
    the population mean for low x. For x = 0 it is the population mean p v/(q-1) (``inf`` if
    q <= 1; customers with x = 0 ignore ``monetary_value``)."""
    x, mv = _validate_fm(frequency, monetary_value)
    mv = np.where(x > 0, mv, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        den = m.p * x + m.q - 1.0
        out = m.p * (m.v + x * mv) / den
    return np.where(den > 0, out, np.inf)


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


# ================================================================================================
# Pipeline convenience
# ================================================================================================
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
    x, tx, T_ = _validate_rft(summary["frequency"], summary["recency"], summary["T"])
    _, mv = _validate_fm(x, summary["monetary_value"])

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
