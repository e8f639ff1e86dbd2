"""BG/NBD purchase-count model (Fader, Hardie, Lee 2005, "Counting Your Customers the Easy Way: An
Alternative to the Pareto/NBD Model", Marketing Science 24(2)): maximum-likelihood fit, P(alive),
P(purchase within t) and expected purchases in t.

Time is in the unit of the inputs (days for an :func:`~purchasing_power.btyd.summary.rfm_summary`
frame); ``alpha`` carries that unit, the other parameters are dimensionless.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special

from purchasing_power.btyd.optimise import aggregate_rows, minimize_multistart
from purchasing_power.btyd.validation import (
    ArrayLike,
    check_positive_params,
    validate_rft,
    validate_t,
    validate_weights,
)

#: Gauss-Jacobi nodes for the quadrature fallback of the conditional expectation.
_QUAD_NODES = 64


@dataclass(frozen=True)
class BGNBD:
    """BG/NBD parameters: purchase rate lambda ~ Gamma(shape r, rate alpha) [alpha in days],
    dropout probability after each purchase p ~ Beta(a, b)."""

    r: float
    alpha: float
    a: float
    b: float

    def __post_init__(self) -> None:
        check_positive_params(r=self.r, alpha=self.alpha, a=self.a, b=self.b)


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
    x, tx, T_ = validate_rft(frequency, recency, T)
    w = np.ones_like(x) if weights is None else validate_weights(weights, x.size)
    ll, *_ = _bgnbd_ll_terms(m.r, m.alpha, m.a, m.b, x, tx, T_)
    return float(np.dot(w, ll))


def _bgnbd_starts(x: np.ndarray, T_s: np.ndarray, w: np.ndarray) -> list[np.ndarray]:
    """Deterministic start values in the rescaled time unit: E[lambda] = r/alpha matches the
    naive pooled purchase rate sum(x)/sum(T)."""
    rate = float(np.dot(w, x) / max(np.dot(w, T_s), 1e-12))
    starts = []
    for r0, a0, b0 in ((1.0, 1.0, 1.0), (0.3, 0.5, 3.0), (3.0, 2.0, 10.0)):
        alpha0 = min(max(r0 / max(rate, 1e-12), 1e-4), 1e4)
        starts.append(np.log([r0, alpha0, a0, b0]))
    return starts


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
    x, tx, T_ = validate_rft(frequency, recency, T)
    if x.size == 0:
        raise ValueError("fit_bgnbd: no customers")
    w = np.ones_like(x) if weights is None else validate_weights(weights, x.size)
    if not (np.isfinite(penalizer) and penalizer >= 0):
        raise ValueError("penalizer must be finite and >= 0")
    if np.dot(w, x) <= 0:
        raise ValueError("fit_bgnbd: no repeat purchases in the data; the BG/NBD is not identified")
    if np.dot(w, T_) <= 0:
        raise ValueError("fit_bgnbd: all T are zero")
    (x, tx, T_), w = aggregate_rows(x, tx, T_, weights=w)
    scale = float(np.dot(w, T_) / w.sum())
    tx_s, T_s = tx / scale, T_ / scale
    best = minimize_multistart(_bgnbd_objective, _bgnbd_starts(x, T_s, w), (x, tx_s, T_s, w, float(penalizer)), "fit_bgnbd")
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
    x, tx, T_ = validate_rft(frequency, recency, T)
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
    x, tx, T_ = validate_rft(frequency, recency, T)
    t_ = validate_t(t)
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
    x, tx, T_ = validate_rft(frequency, recency, T)
    t_ = np.broadcast_to(validate_t(t), x.shape).astype("float64")
    pa = special.expit(-_log_p_alive_odds(m, x, tx, T_))
    out = np.zeros_like(x)
    nz = t_ > 0
    if np.any(nz):
        out[nz] = pa[nz] * _expected_alive(m, t_[nz], x[nz], T_[nz])
    return out
