"""Buy-till-you-die baselines: BG/NBD for purchase counts and Gamma-Gamma for order value.

Implemented from the papers with numpy/scipy only (no ``lifetimes``/``pymc``):

* P. S. Fader, B. G. S. Hardie, K. L. Lee (2005), "Counting Your Customers the Easy Way: An
  Alternative to the Pareto/NBD Model", Marketing Science 24(2) -- BG/NBD.
* P. S. Fader, B. G. S. Hardie, K. L. Lee (2005), "RFM and CLV: Using Iso-Value Curves for
  Customer Base Analysis", JMR 42(4), and P. S. Fader, B. G. S. Hardie (2013), "The Gamma-Gamma
  Model of Monetary Value" -- Gamma-Gamma spend model.

The modules, each one job (dependencies point down the list):

* :mod:`~purchasing_power.btyd.predict`: :func:`fit_and_predict` (both models fitted on an RFM
  summary and scored into :data:`PREDICTION_COLUMNS`) and :func:`bgnbd_gg_expected_spend`.
* :mod:`~purchasing_power.btyd.summary`: :func:`rfm_summary`, the per-customer ``(x, t_x, T)``
  summary from transactions; its docstring fixes the time convention (days, window ending at the
  end of ``as_of``).
* :mod:`~purchasing_power.btyd.bgnbd`: the BG/NBD fit and its predictions.
* :mod:`~purchasing_power.btyd.gamma_gamma`: the Gamma-Gamma fit and expected order value.
* :mod:`~purchasing_power.btyd.optimise`: the multi-start maximum-likelihood optimiser.
* :mod:`~purchasing_power.btyd.validation`: checks on the customer arrays.

Parameters of the BG/NBD (``alpha``) and of the Gamma-Gamma (``v``) carry units (days, money);
the optimisers work on internally rescaled data (time / mean T, money / mean spend) so that the
fit is well conditioned whatever the unit, and report the parameters back in the original units.
"""

from __future__ import annotations

from purchasing_power.btyd.bgnbd import (
    BGNBD,
    bgnbd_log_likelihood,
    expected_purchases,
    fit_bgnbd,
    p_alive,
    prob_purchase_within,
)
from purchasing_power.btyd.gamma_gamma import (
    GammaGamma,
    expected_order_value,
    fit_gamma_gamma,
    gamma_gamma_log_likelihood,
)
from purchasing_power.btyd.predict import PREDICTION_COLUMNS, bgnbd_gg_expected_spend, fit_and_predict
from purchasing_power.btyd.summary import rfm_summary

__all__ = [
    "BGNBD",
    "PREDICTION_COLUMNS",
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
