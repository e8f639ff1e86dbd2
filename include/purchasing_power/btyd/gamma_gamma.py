"""Gamma-Gamma order-value model (Fader, Hardie, Lee 2005, "RFM and CLV: Using Iso-Value Curves for
Customer Base Analysis", JMR 42(4); Fader, Hardie 2013, "The Gamma-Gamma Model of Monetary
Value"): maximum-likelihood fit and the conditional expected order value.

``v`` carries the money unit of the inputs, ``p`` and ``q`` are dimensionless.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special

from purchasing_power.btyd.optimise import aggregate_rows, minimize_multistart
from purchasing_power.btyd.validation import ArrayLike, check_positive_params, validate_fm


@dataclass(frozen=True)
class GammaGamma:
    """Gamma-Gamma spend model: a customer's order values are Gamma(shape p, rate nu), with
    nu ~ Gamma(shape q, rate v) across customers [v in money units]. Population mean order value
    E[M] = p v / (q - 1) (finite for q > 1)."""

    p: float
    q: float
    v: float

    def __post_init__(self) -> None:
        check_positive_params(p=self.p, q=self.q, v=self.v)

    @property
    def population_mean(self) -> float:
        return self.p * self.v / (self.q - 1.0) if self.q > 1 else float("inf")


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
    x, mv = validate_fm(frequency, monetary_value)
    keep = (x > 0) & (mv > 0)
    return float(_gg_ll(m.p, m.q, m.v, x[keep], mv[keep]).sum())


def fit_gamma_gamma(frequency: ArrayLike, monetary_value: ArrayLike, *, penalizer: float = 0.0) -> GammaGamma:
    """Maximum-likelihood Gamma-Gamma fit on the customers with frequency > 0 and
    monetary_value > 0 (others carry no information on spend and are ignored).

    ``monetary_value`` is the mean value of the ``frequency`` repeat orders. Objective: mean
    negative log-likelihood + ``penalizer * (ln(p)^2 + ln(q)^2)``; optimised over log-parameters
    with money rescaled by the mean spend. Raises ValueError with fewer than 10 usable customers.
    """
    x, mv = validate_fm(frequency, monetary_value)
    if not (np.isfinite(penalizer) and penalizer >= 0):
        raise ValueError("penalizer must be finite and >= 0")
    keep = (x > 0) & (mv > 0)
    n = int(keep.sum())
    if n < 10:
        raise ValueError(
            f"fit_gamma_gamma: need at least 10 customers with frequency > 0 and monetary_value > 0, got {n}"
        )
    (x, mv), w = aggregate_rows(x[keep], mv[keep], weights=np.ones(n))
    scale = float(np.dot(w, mv) / n)
    mv_s = mv / scale
    starts = []
    for p0, q0 in ((1.0, 3.0), (5.0, 5.0), (0.5, 1.5)):
        v0 = (q0 - 1.0) / p0  # population mean p v/(q-1) = 1 in rescaled money
        starts.append(np.log([p0, q0, v0]))
    best = minimize_multistart(_gg_objective, starts, (x, mv_s, w, float(penalizer)), "fit_gamma_gamma")
    p, q, v_s = np.exp(best)
    return GammaGamma(p=float(p), q=float(q), v=float(v_s * scale))


def expected_order_value(m: GammaGamma, frequency: ArrayLike, monetary_value: ArrayLike) -> np.ndarray:
    """Conditional expected order value E[M | p, q, v, x, m_x] (Fader-Hardie 2013, eq. 5):

        E[M | x, m_x] = p (v + x m_x) / (p x + q - 1)
                      = (q-1)/(px+q-1) * p v/(q-1) + px/(px+q-1) * m_x,

    a weighted average of the population mean and the customer's own mean that shrinks towards
    the population mean for low x. For x = 0 it is the population mean p v/(q-1) (``inf`` if
    q <= 1; customers with x = 0 ignore ``monetary_value``)."""
    x, mv = validate_fm(frequency, monetary_value)
    mv = np.where(x > 0, mv, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        den = m.p * x + m.q - 1.0
        out = m.p * (m.v + x * mv) / den
    return np.where(den > 0, out, np.inf)
