"""Tests of the BG/NBD and Gamma-Gamma baselines (purchasing_power.btyd).

Simulations are seeded; tolerances were set from the spread over several seeds (about 3-4
standard deviations), so the tests are deterministic but still fail on a wrong formula.
"""

from __future__ import annotations

import logging
from datetime import date

import numpy as np
import pandas as pd
import pytest
from scipy import optimize

from purchasing_power.btyd import (
    BGNBD,
    GammaGamma,
    bgnbd,
    bgnbd_gg_expected_spend,
    bgnbd_log_likelihood,
    expected_order_value,
    expected_purchases,
    fit_and_predict,
    fit_bgnbd,
    fit_gamma_gamma,
    gamma_gamma_log_likelihood,
    p_alive,
    prob_purchase_within,
    rfm_summary,
)

# "Counting your customers" CDNOW estimates were r=0.24, alpha=4.41 (weeks), a=0.79, b=2.43;
# here in days: alpha = 4 weeks = 28 days.
TRUE_BG = BGNBD(r=0.25, alpha=28.0, a=0.8, b=2.5)
TRUE_GG = GammaGamma(p=6.0, q=4.0, v=15.0)


# ------------------------------------------------------------------------------------------------
# simulation helpers (the generative BG/NBD story, independent of the closed forms)
# ------------------------------------------------------------------------------------------------
def _simulate_purchases(rng, lam, p, horizon):
    """Purchases of customers alive at time 0, rate lam, dropout p after each purchase, in
    (0, horizon]. Returns (count, time of last purchase)."""
    n = lam.size
    horizon = np.broadcast_to(horizon, (n,))
    t = np.zeros(n)
    count = np.zeros(n)
    last = np.zeros(n)
    active = np.ones(n, dtype=bool)
    while active.any():
        i = np.flatnonzero(active)
        t[i] += rng.exponential(1.0 / lam[i])
        inside = t[i] <= horizon[i]
        active[i[~inside]] = False
        j = i[inside]
        count[j] += 1
        last[j] = t[j]
        dies = rng.random(j.size) < p[j]
        active[j[dies]] = False
    return count, last


def simulate_bgnbd(m: BGNBD, n: int, seed: int, T_low: float = 200.0, T_high: float = 280.0):
    rng = np.random.default_rng(seed)
    lam = rng.gamma(m.r, 1.0 / m.alpha, n)
    p = rng.beta(m.a, m.b, n)
    T = np.round(rng.uniform(T_low, T_high, n))
    x, tx = _simulate_purchases(rng, lam, p, T)
    return x, tx, T


@pytest.fixture(scope="module")
def bg_data():
    return simulate_bgnbd(TRUE_BG, 5000, seed=0)


@pytest.fixture(scope="module")
def bg_fit(bg_data):
    return fit_bgnbd(*bg_data)


def simulate_gg(m: GammaGamma, n: int, seed: int):
    rng = np.random.default_rng(seed)
    x = (1 + rng.poisson(5, n)).astype(float)
    nu = rng.gamma(m.q, 1.0 / m.v, n)
    # the mean of x Gamma(p, nu) order values is Gamma(p x, x nu)
    mv = rng.gamma(m.p * x, 1.0 / (x * nu))
    return x, mv


# ------------------------------------------------------------------------------------------------
# BG/NBD: fit
# ------------------------------------------------------------------------------------------------
def test_bgnbd_recovers_parameters(bg_fit):
    m = bg_fit
    assert m.r == pytest.approx(TRUE_BG.r, rel=0.15)
    assert m.alpha == pytest.approx(TRUE_BG.alpha, rel=0.25)
    assert m.a == pytest.approx(TRUE_BG.a, rel=0.4)
    assert m.b == pytest.approx(TRUE_BG.b, rel=0.4)


def test_bgnbd_fit_is_a_likelihood_maximum(bg_data, bg_fit):
    x, tx, T = bg_data
    ll_fit = bgnbd_log_likelihood(bg_fit, x, tx, T)
    # an MLE must beat the true parameters on the sample it was fitted to ...
    assert ll_fit >= bgnbd_log_likelihood(TRUE_BG, x, tx, T) - 1e-6
    # ... and every start value of the optimiser, by a wide margin
    scale = T.mean()
    for start in bgnbd._bgnbd_starts(x, T / scale, np.ones_like(x)):
        r0, alpha0, a0, b0 = np.exp(start)
        ll0 = bgnbd_log_likelihood(BGNBD(r0, alpha0 * scale, a0, b0), x, tx, T)
        assert ll_fit > ll0 + 10.0
    # ... and small perturbations of the optimum
    for k in ("r", "alpha", "a", "b"):
        for f in (0.97, 1.03):
            params = {"r": bg_fit.r, "alpha": bg_fit.alpha, "a": bg_fit.a, "b": bg_fit.b}
            params[k] *= f
            assert ll_fit >= bgnbd_log_likelihood(BGNBD(**params), x, tx, T) - 1e-9


def test_bgnbd_weights_equal_repeated_rows(bg_data):
    x, tx, T = (a[:300] for a in bg_data)
    reps = np.arange(300) % 3 + 1
    m_rep = fit_bgnbd(np.repeat(x, reps), np.repeat(tx, reps), np.repeat(T, reps))
    m_w = fit_bgnbd(x, tx, T, weights=reps)
    for k in ("r", "alpha", "a", "b"):
        assert getattr(m_w, k) == pytest.approx(getattr(m_rep, k), rel=1e-4)


def test_bgnbd_is_unit_invariant(bg_data):
    """Fitting in weeks instead of days scales alpha by 1/7 and leaves r, a, b unchanged."""
    x, tx, T = (a[:2000] for a in bg_data)
    m_days = fit_bgnbd(x, tx, T)
    m_weeks = fit_bgnbd(x, tx / 7.0, T / 7.0)
    assert m_weeks.alpha == pytest.approx(m_days.alpha / 7.0, rel=1e-4)
    for k in ("r", "a", "b"):
        assert getattr(m_weeks, k) == pytest.approx(getattr(m_days, k), rel=1e-4)


def test_bgnbd_penalizer_shrinks_shape_parameters(bg_data):
    x, tx, T = bg_data
    m0 = fit_bgnbd(x, tx, T)
    m1 = fit_bgnbd(x, tx, T, penalizer=1.0)
    # the ridge on ln(r), ln(a), ln(b) pulls them towards 1
    assert abs(np.log(m1.b)) < abs(np.log(m0.b))
    assert abs(np.log(m1.r)) < abs(np.log(m0.r))


def test_bgnbd_analytic_gradient_matches_finite_differences(bg_data):
    x, tx, T = (a[:500] for a in bg_data)
    w = np.ones_like(x)
    args = (x, tx / 200.0, T / 200.0, w, 0.01)
    for z in (np.log([0.3, 0.2, 0.7, 2.0]), np.log([2.0, 1.5, 3.0, 8.0])):
        err = optimize.check_grad(
            lambda v: bgnbd._bgnbd_objective(v, *args)[0], lambda v: bgnbd._bgnbd_objective(v, *args)[1], z
        )
        assert err < 1e-5


def test_bgnbd_log_likelihood_matches_numerical_integration():
    """The closed form (eq. 6) equals the individual-level likelihood integrated numerically over
    the Gamma(r, alpha) x Beta(a, b) heterogeneity (generalised Gauss-Laguerre x Gauss-Jacobi)."""
    from scipy import special

    for m in (BGNBD(r=1.3, alpha=20.0, a=1.5, b=2.5), TRUE_BG):
        u, wu = special.roots_genlaguerre(100, m.r - 1.0)  # weight u^(r-1) e^-u, lambda = u/alpha
        s, ws = special.roots_jacobi(100, m.b - 1.0, m.a - 1.0)  # p = (1+s)/2 ~ Beta(a, b)
        lam, p = np.meshgrid(u / m.alpha, (1 + s) / 2, indexing="ij")
        w = np.outer(wu / wu.sum(), ws / ws.sum())
        for x, t_x, T in ((0, 0.0, 30.0), (1, 12.0, 40.0), (4, 55.0, 90.0)):
            alive = (1 - p) ** x * lam**x * np.exp(-lam * T)  # survived all x purchases
            dead = p * (1 - p) ** (x - 1) * lam**x * np.exp(-lam * t_x) if x > 0 else 0.0
            num = np.sum(w * (alive + dead))
            assert bgnbd_log_likelihood(m, [x], [t_x], [T]) == pytest.approx(np.log(num), abs=1e-8)


# ------------------------------------------------------------------------------------------------
# BG/NBD: conditional predictions
# ------------------------------------------------------------------------------------------------
def _monte_carlo_future(m: BGNBD, x: int, tx: float, T: float, t: float, n: int, seed: int):
    """E[# purchases in (T, T+t]] and P(>= 1 purchase) given (x, t_x, T), by importance sampling
    from the prior with the exact individual-level likelihood and simulating the future."""
    rng = np.random.default_rng(seed)
    lam = rng.gamma(m.r, 1.0 / m.alpha, n)
    p = rng.beta(m.a, m.b, n)
    # individual likelihood of (x, t_x, T): alive at T, or died right after the x-th purchase
    log_alive = x * np.log(lam) - lam * T + x * np.log1p(-p)
    if x > 0:
        log_dead = np.log(p) + (x - 1) * np.log1p(-p) + x * np.log(lam) - lam * tx
    else:
        log_dead = np.full(n, -np.inf)
    shift = max(log_alive.max(), log_dead.max())
    w_alive = np.exp(log_alive - shift)
    w_total = w_alive + np.exp(log_dead - shift)
    # memorylessness: an alive customer's future is a fresh BG/NBD process started at T
    count, _ = _simulate_purchases(rng, lam, p, t)
    results = {}
    for name, y in (("expected", count), ("p_any", (count > 0).astype(float))):
        g = w_alive * y
        mu = g.sum() / w_total.sum()
        se = np.sqrt(np.sum((g - mu * w_total) ** 2)) / w_total.sum()
        results[name] = (mu, se)
    return results


@pytest.mark.parametrize(
    "x, tx, T, t",
    [
        (0, 0.0, 100.0, 60.0),
        (2, 150.0, 250.0, 60.0),
        (2, 30.0, 250.0, 90.0),
        (5, 200.0, 220.0, 30.0),
    ],
)
def test_conditional_predictions_match_monte_carlo(x, tx, T, t):
    mc = _monte_carlo_future(TRUE_BG, x, tx, T, t, n=300_000, seed=11 + x)
    e_closed = expected_purchases(TRUE_BG, t, [x], [tx], [T])[0]
    p_closed = prob_purchase_within(TRUE_BG, t, [x], [tx], [T])[0]
    for closed, (mu, se) in ((e_closed, mc["expected"]), (p_closed, mc["p_any"])):
        assert se < 0.05 * mu  # the Monte Carlo is precise enough to detect a wrong formula
        assert abs(closed - mu) < 4 * se + 1e-4, (closed, mu, se)


def test_expected_purchases_hyp2f1_agrees_with_quadrature():
    x = np.array([0, 1, 3, 10, 40, 150], dtype=float)
    T = np.array([10.0, 100, 200, 300, 365, 365])
    for m in (TRUE_BG, BGNBD(0.7, 65.0, 0.09, 4.5), BGNBD(2.0, 10.0, 3.0, 1.5)):
        for t in (1.0, 30.0, 365.0, 5000.0):
            tt = np.full(x.shape, t)
            hyp = bgnbd._expected_alive(m, tt, x, T)
            quad = bgnbd._expected_alive_quadrature(m, tt, x, T)
            np.testing.assert_allclose(hyp, quad, rtol=1e-7, atol=1e-12)


def test_expected_purchases_is_continuous_at_a_equal_one():
    args = (90.0, [0, 3, 8], [0.0, 50.0, 200.0], [100.0, 200.0, 210.0])
    at_one = expected_purchases(BGNBD(0.5, 20.0, 1.0, 2.0), *args)
    below = expected_purchases(BGNBD(0.5, 20.0, 1.0 - 1e-5, 2.0), *args)
    above = expected_purchases(BGNBD(0.5, 20.0, 1.0 + 1e-5, 2.0), *args)
    np.testing.assert_allclose(at_one, below, rtol=1e-4)
    np.testing.assert_allclose(at_one, above, rtol=1e-4)


def test_prediction_orderings():
    x = np.array([0, 1, 4, 4, 20], dtype=float)
    tx = np.array([0, 10, 100, 190, 195], dtype=float)
    T = np.full(5, 200.0)
    pa = p_alive(TRUE_BG, x, tx, T)
    p30 = prob_purchase_within(TRUE_BG, 30, x, tx, T)
    p90 = prob_purchase_within(TRUE_BG, 90, x, tx, T)
    e30 = expected_purchases(TRUE_BG, 30, x, tx, T)
    e90 = expected_purchases(TRUE_BG, 90, x, tx, T)
    assert np.all((0 <= p30) & (p30 <= p90) & (p90 <= pa) & (pa <= 1))
    assert np.all(e30 >= p30)  # E[N] >= P(N >= 1)
    assert np.all(e90 > e30)
    np.testing.assert_array_equal(expected_purchases(TRUE_BG, 0.0, x, tx, T), 0.0)
    np.testing.assert_array_equal(prob_purchase_within(TRUE_BG, 0.0, x, tx, T), 0.0)
    # a recent buyer (t_x close to T) is more valuable than a lapsed one with the same x
    assert e30[3] > e30[2] and pa[3] > pa[2]


def test_p_alive_closed_form_properties():
    m = TRUE_BG
    # dropout only happens right after a purchase: no repeat purchase -> surely alive
    np.testing.assert_array_equal(p_alive(m, [0, 0, 0], [0, 0, 0], [1, 100, 10_000]), 1.0)
    # for x > 0, P(alive) decreases with T (longer silence) and increases with t_x
    T = np.array([100.0, 150, 200, 400, 1000])
    pa_T = p_alive(m, np.full(5, 3.0), np.full(5, 80.0), T)
    assert np.all(np.diff(pa_T) < 0)
    tx = np.array([10.0, 40, 70, 99])
    pa_tx = p_alive(m, np.full(4, 3.0), tx, np.full(4, 100.0))
    assert np.all(np.diff(pa_tx) > 0)
    # hand value: 1 / (1 + a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x))
    x, t_x, T1 = 2.0, 50.0, 120.0
    hand = 1.0 / (1.0 + m.a / (m.b + x - 1) * ((m.alpha + T1) / (m.alpha + t_x)) ** (m.r + x))
    assert p_alive(m, [x], [t_x], [T1])[0] == pytest.approx(hand, rel=1e-12)
    # no overflow for heavy buyers who went silent
    assert p_alive(m, [500.0], [10.0], [1000.0])[0] == pytest.approx(0.0, abs=1e-300)


def test_expected_purchases_hand_value_from_paper_eq10():
    """Eq. 10 written literally (direct 2F1) for moderate inputs where it is well conditioned."""
    from scipy.special import hyp2f1

    m, x, t_x, T, t = TRUE_BG, 3.0, 60.0, 150.0, 45.0
    z = t / (m.alpha + T + t)
    num = (m.a + m.b + x - 1) / (m.a - 1) * (
        1 - ((m.alpha + T) / (m.alpha + T + t)) ** (m.r + x) * hyp2f1(m.r + x, m.b + x, m.a + m.b + x - 1, z)
    )
    den = 1 + m.a / (m.b + x - 1) * ((m.alpha + T) / (m.alpha + t_x)) ** (m.r + x)
    assert expected_purchases(m, t, [x], [t_x], [T])[0] == pytest.approx(num / den, rel=1e-9)


# ------------------------------------------------------------------------------------------------
# Gamma-Gamma
# ------------------------------------------------------------------------------------------------
def test_gamma_gamma_recovers_parameters():
    x, mv = simulate_gg(TRUE_GG, 4000, seed=3)
    g = fit_gamma_gamma(x, mv)
    assert g.q == pytest.approx(TRUE_GG.q, rel=0.08)
    assert g.p == pytest.approx(TRUE_GG.p, rel=0.4)
    assert g.v == pytest.approx(TRUE_GG.v, rel=0.4)
    assert g.population_mean == pytest.approx(TRUE_GG.population_mean, rel=0.05)
    assert gamma_gamma_log_likelihood(g, x, mv) >= gamma_gamma_log_likelihood(TRUE_GG, x, mv) - 1e-6


def test_gamma_gamma_log_likelihood_is_a_beta_prime_density():
    """Given x orders, x * mean / v ~ BetaPrime(p x, q): an independent check of eq. 3."""
    from scipy import stats

    g = GammaGamma(p=2.5, q=3.3, v=40.0)
    x = np.array([1.0, 2.0, 7.0])
    mv = np.array([12.0, 55.0, 30.0])
    ref = np.sum(stats.betaprime.logpdf(x * mv / g.v, g.p * x, g.q) + np.log(x / g.v))
    assert gamma_gamma_log_likelihood(g, x, mv) == pytest.approx(ref, rel=1e-10)


def test_gamma_gamma_ignores_customers_without_repeat_spend():
    x, mv = simulate_gg(TRUE_GG, 500, seed=4)
    g = fit_gamma_gamma(x, mv)
    g2 = fit_gamma_gamma(np.r_[x, np.zeros(50), [3.0]], np.r_[mv, np.full(50, 99.0), [0.0]])
    assert g2 == g


def test_expected_order_value_shrinks_to_population_mean():
    g = TRUE_GG
    pop = g.p * g.v / (g.q - 1)
    # frequency 0: the population mean, whatever the (meaningless) monetary value
    np.testing.assert_allclose(expected_order_value(g, [0, 0], [0.0, 500.0]), pop)
    high = 3 * pop
    e = expected_order_value(g, [1, 2, 10, 100], np.full(4, high))
    assert np.all((pop < e) & (e < high))
    assert np.all(np.diff(e) > 0)  # more orders -> closer to the customer's own mean
    assert e[-1] == pytest.approx(high, rel=0.01)
    low = expected_order_value(g, [1, 10], [pop / 3, pop / 3])
    assert np.all(low > pop / 3) and low[0] > low[1]
    # the weighted-average form of the conditional expectation
    x, mbar = 4.0, 42.0
    wgt = g.p * x / (g.p * x + g.q - 1)
    assert expected_order_value(g, [x], [mbar])[0] == pytest.approx((1 - wgt) * pop + wgt * mbar)
    assert np.isinf(expected_order_value(GammaGamma(1.0, 0.5, 1.0), [0], [0.0])[0])


def test_expected_spend_is_product():
    f, r, T, mv = [0, 2, 5], [0.0, 40.0, 150.0], [60.0, 100.0, 160.0], [0.0, 20.0, 35.0]
    spend = bgnbd_gg_expected_spend(TRUE_BG, TRUE_GG, 90, f, r, T, mv)
    np.testing.assert_allclose(
        spend, expected_purchases(TRUE_BG, 90, f, r, T) * expected_order_value(TRUE_GG, f, mv)
    )


# ------------------------------------------------------------------------------------------------
# RFM summary
# ------------------------------------------------------------------------------------------------
def test_rfm_summary_hand_computed():
    rows = [
        # customer 1: day 01-01 = 10 + 5; day 01-05 nets to zero (cancellation); day 01-10 = 30;
        # a row exactly at as_of + 1 day 00:00 is outside the window
        (1, "2011-01-01 09:00", 10.0),
        (1, "2011-01-01 17:30", 5.0),
        (1, "2011-01-05 10:00", 20.0),
        (1, "2011-01-05 11:00", -20.0),
        (1, "2011-01-10 12:00", 30.0),
        (1, "2011-02-01 00:00", 1000.0),
        # customer 2: single purchase on as_of, late in the day
        (2, "2011-01-31 23:59", 7.0),
        # customer 3: three purchase days, 01-03 has two rows; a negative-only day is ignored
        (3, "2011-01-03 08:00", 25.0),
        (3, "2011-01-03 08:05", 15.0),
        (3, "2011-01-12 08:00", -5.0),
        (3, "2011-01-20 08:00", 10.0),
        (3, "2011-01-25 08:00", 50.0),
        # customer 4: returns only; customer 5: only after the window; missing customer id
        (4, "2011-01-15 08:00", -12.0),
        (5, "2011-02-01 00:00", 8.0),
        (None, "2011-01-15 08:00", 99.0),
    ]
    tx = pd.DataFrame(rows, columns=["customer_id", "invoice_ts", "line_value"])
    tx["invoice_ts"] = pd.to_datetime(tx["invoice_ts"])
    s = rfm_summary(tx, date(2011, 1, 31))

    expected = pd.DataFrame(
        {
            "frequency": [1.0, 0.0, 2.0],
            "recency": [9.0, 0.0, 22.0],
            "T": [31.0, 1.0, 29.0],
            "monetary_value": [30.0, 0.0, 30.0],
            "n_orders": np.array([2, 1, 3], dtype="int64"),
        },
        index=pd.Index(np.array([1, 2, 3], dtype="int64"), name="customer_id"),
    )
    pd.testing.assert_frame_equal(s, expected)
    assert (s["recency"] < s["T"]).all()

    # the cut-off row counts one day later; as_of may be a Timestamp or a string
    s2 = rfm_summary(tx, pd.Timestamp("2011-02-01 15:00"))
    assert s2.loc[1, "frequency"] == 2 and s2.loc[1, "T"] == 32 and s2.loc[1, "monetary_value"] == 515.0
    assert s2.loc[5].tolist() == [0.0, 0.0, 1.0, 0.0, 1]
    pd.testing.assert_frame_equal(rfm_summary(tx, "2011-01-31"), s)


def test_rfm_summary_custom_columns_and_tz_aware():
    tx = pd.DataFrame(
        {
            "cid": [7.0, 7.0, 7.0],
            "ts": pd.to_datetime(["2020-03-01 23:30", "2020-03-03 00:10", "2020-03-06 00:00"]).tz_localize(
                "Europe/London"
            ),
            "v": [3.0, 4.0, 5.0],
        }
    )
    s = rfm_summary(tx, date(2020, 3, 5), customer_col="cid", ts_col="ts", value_col="v")
    assert s.index.dtype == "int64" and s.index.tolist() == [7]
    assert s.loc[7].tolist() == [1.0, 2.0, 5.0, 4.0, 2]


def test_rfm_summary_empty_and_errors():
    tx = pd.DataFrame({"customer_id": [1], "invoice_ts": pd.to_datetime(["2021-01-02"]), "line_value": [5.0]})
    empty = rfm_summary(tx, date(2021, 1, 1))
    assert empty.empty and list(empty.columns) == ["frequency", "recency", "T", "monetary_value", "n_orders"]
    with pytest.raises(ValueError, match="lack column"):
        rfm_summary(tx.drop(columns="line_value"), date(2021, 1, 5))
    with pytest.raises(ValueError, match="integer customer ids"):
        rfm_summary(tx.assign(customer_id=[1.5]), date(2021, 1, 5))


# ------------------------------------------------------------------------------------------------
# validation
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args, match",
    [
        (([1, 2], [1.0], [5.0, 6.0]), "same length"),
        (([1, 2], [1.0, np.nan], [5.0, 6.0]), "finite"),
        (([1, -1], [1.0, 1.0], [5.0, 6.0]), "non-negative"),
        (([1, 2], [1.0, 7.0], [5.0, 6.0]), "recency must be <= T"),
        (([1.5, 2], [1.0, 2.0], [5.0, 6.0]), "integer-valued"),
        (([1, 2], [0.0, 2.0], [5.0, 6.0]), "recency > 0"),
        (([0, 0], [0.0, 0.0], [5.0, 6.0]), "no repeat purchases"),
        (([], [], []), "no customers"),
        ((["a", 1], [1.0, 1.0], [5.0, 6.0]), "numeric"),
    ],
)
def test_fit_bgnbd_validation(args, match):
    with pytest.raises(ValueError, match=match):
        fit_bgnbd(*args)


def test_other_validation_errors():
    with pytest.raises(ValueError, match="weights"):
        fit_bgnbd([1, 2], [1.0, 2.0], [5.0, 6.0], weights=[1.0])
    with pytest.raises(ValueError, match="weights"):
        fit_bgnbd([1, 2], [1.0, 2.0], [5.0, 6.0], weights=[1.0, -1.0])
    with pytest.raises(ValueError, match="penalizer"):
        fit_bgnbd([1, 2], [1.0, 2.0], [5.0, 6.0], penalizer=-1)
    with pytest.raises(ValueError, match="t \\(the prediction horizon\\)"):
        expected_purchases(TRUE_BG, -1.0, [1], [1.0], [2.0])
    with pytest.raises(ValueError, match="recency must be <= T"):
        p_alive(TRUE_BG, [1], [3.0], [2.0])
    with pytest.raises(ValueError, match="positive finite"):
        BGNBD(r=0.0, alpha=1.0, a=1.0, b=1.0)
    with pytest.raises(ValueError, match="positive finite"):
        GammaGamma(p=1.0, q=float("nan"), v=1.0)
    with pytest.raises(ValueError, match="at least 10 customers"):
        fit_gamma_gamma([1, 2, 3, 0, 0] * 2, [5.0, 6.0, 7.0, 0.0, 0.0] * 2)
    with pytest.raises(ValueError, match="same length"):
        fit_gamma_gamma([1, 2], [5.0])
    with pytest.raises(ValueError, match="non-negative"):
        expected_order_value(TRUE_GG, [1], [-5.0])
    with pytest.raises(ValueError, match="lacks column"):
        fit_and_predict(pd.DataFrame({"frequency": [1.0]}))


# ------------------------------------------------------------------------------------------------
# pipeline convenience
# ------------------------------------------------------------------------------------------------
def _summary_frame(n: int = 3000, seed: int = 5) -> pd.DataFrame:
    x, tx, T = simulate_bgnbd(TRUE_BG, n, seed=seed)
    rng = np.random.default_rng(seed)
    nu = rng.gamma(TRUE_GG.q, 1.0 / TRUE_GG.v, n)
    mv = np.where(x > 0, rng.gamma(TRUE_GG.p * np.maximum(x, 1), 1.0 / (np.maximum(x, 1) * nu)), 0.0)
    idx = pd.Index(np.arange(1000, 1000 + n, dtype="int64"), name="customer_id")
    return pd.DataFrame({"frequency": x, "recency": tx, "T": T, "monetary_value": mv, "n_orders": x + 1}, index=idx)


def test_fit_and_predict_outputs():
    s = _summary_frame()
    out = fit_and_predict(s, purchase_days=30, spend_days=90)
    assert out.index.equals(s.index)
    assert list(out.columns) == [
        "bgnbd_p_purchase",
        "bgnbd_expected_purchases",
        "bgnbd_expected_purchases_spend_h",
        "bgnbd_p_alive",
        "bgnbd_gg_spend",
    ]
    assert np.isfinite(out.to_numpy()).all()
    assert ((out["bgnbd_p_purchase"] >= 0) & (out["bgnbd_p_purchase"] <= out["bgnbd_p_alive"])).all()
    assert (out["bgnbd_expected_purchases_spend_h"] >= out["bgnbd_expected_purchases"]).all()
    assert (out["bgnbd_gg_spend"] >= 0).all()
    bg = BGNBD(**out.attrs["bgnbd"])
    gg = GammaGamma(**out.attrs["gamma_gamma"])
    assert out.attrs["order_value_fallback"] is None
    assert bg.r == pytest.approx(TRUE_BG.r, rel=0.25)
    np.testing.assert_allclose(
        out["bgnbd_gg_spend"],
        bgnbd_gg_expected_spend(bg, gg, 90, s["frequency"], s["recency"], s["T"], s["monetary_value"]),
        rtol=1e-12,
    )


def test_fit_and_predict_falls_back_loudly_without_gamma_gamma(caplog):
    s = _summary_frame(400, seed=6)
    # keep only 5 customers with repeat spend
    repeaters = s.index[s["frequency"] > 0]
    s.loc[repeaters[5:], "monetary_value"] = 0.0
    with caplog.at_level(logging.WARNING, logger="purchasing_power.btyd"):
        out = fit_and_predict(s)
    assert out.attrs["gamma_gamma"] is None
    assert "could not be fitted" in out.attrs["order_value_fallback"]
    assert any("falling back" in r.getMessage() for r in caplog.records)
    own = s.loc[repeaters[:5]]
    pop = own["monetary_value"].mean()
    order_value = np.where(
        (s["frequency"] > 0) & (s["monetary_value"] > 0), s["monetary_value"], pop
    )
    np.testing.assert_allclose(out["bgnbd_gg_spend"], out["bgnbd_expected_purchases_spend_h"] * order_value)
