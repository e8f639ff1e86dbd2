"""Metrics on tiny arrays whose values can be worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from purchasing_power.metrics import (
    bootstrap_indices,
    bootstrap_metrics,
    decile_mape,
    expected_calibration_error,
    interval,
    lift_at,
    normalized_gini,
    purchase_metrics,
    purchase_point_metrics,
    spend_metrics,
)


def test_roc_auc_and_pr_auc_by_hand():
    # pairs (positive, negative): (0.35 > 0.1) yes, (0.35 > 0.4) no, (0.8 > 0.1) yes, (0.8 > 0.4) yes -> 3/4
    # ranked: 0.8 (+), 0.4 (-), 0.35 (+), 0.1 (-): precision at the positives 1/1 and 2/3 -> AP 5/6
    m = purchase_metrics([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    assert m["roc_auc"] == pytest.approx(0.75)
    assert m["pr_auc"] == pytest.approx(5 / 6)
    assert m["base_rate"] == 0.5 and m["n"] == 4
    # Brier: mean of (0.1-0)^2, (0.4-0)^2, (0.35-1)^2, (0.8-1)^2
    assert m["brier"] == pytest.approx((0.01 + 0.16 + 0.4225 + 0.04) / 4)


def test_ties_count_half_in_roc_auc():
    m = purchase_metrics([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9])
    # pairs: (0.5 vs 0.5) tie = 1/2, (0.5 > 0.2) 1, (0.9 > 0.5) 1, (0.9 > 0.2) 1 -> 3.5/4
    assert m["roc_auc"] == pytest.approx(0.875)


def test_scores_that_are_not_probabilities_get_no_brier_or_ece():
    m = purchase_metrics([0, 1, 1], [-30.0, -2.0, -1.0], probabilities=False)
    assert "brier" not in m and "ece" not in m
    assert m["roc_auc"] == 1.0


def test_lift_at_10_percent():
    y = [1, 0, 0, 0, 0, 0, 0, 0, 0, 1]  # base rate 0.2
    p = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0]
    assert lift_at(y, p, 0.1) == pytest.approx(1.0 / 0.2)  # the top 1 of 10 is a buyer
    assert lift_at(y, p[::-1], 0.1) == pytest.approx(1.0 / 0.2)  # the top one is customer 10, also a buyer
    assert lift_at([0, 1, 0, 0, 0, 0, 0, 0, 0, 0], p, 0.1) == 0.0
    assert lift_at(y, p, 0.2) == pytest.approx(0.5 / 0.2)  # top 2: one buyer in two
    assert np.isnan(lift_at([0, 0, 0], [0.1, 0.2, 0.3]))


def test_lift_breaks_ties_by_position():
    # all scores equal: the first 10 % (row 0) is the top
    assert lift_at([1] + [0] * 9, [0.5] * 10, 0.1) == pytest.approx(10.0)
    assert lift_at([0] * 9 + [1], [0.5] * 10, 0.1) == 0.0


def test_expected_calibration_error_by_hand():
    # bin [0.1, 0.2): p 0.1, outcomes 0 and 1 -> |0.5 - 0.1| x 2/4; bin [0.9, 1]: p 0.9, outcomes 1, 1 -> |1 - 0.9| x 2/4
    assert expected_calibration_error([0, 1, 1, 1], [0.1, 0.1, 0.9, 0.9]) == pytest.approx(0.2 + 0.05)
    assert expected_calibration_error([0, 1], [0.5, 0.5]) == pytest.approx(0.0)  # rate 1/2 predicted as 1/2
    assert expected_calibration_error([1, 1], [1.0, 1.0]) == pytest.approx(0.0)  # p = 1 falls into the last bin
    assert expected_calibration_error([0, 0, 0, 0], [0.3, 0.3, 0.3, 0.3]) == pytest.approx(0.3)


def test_normalized_gini_by_hand():
    y = np.array([0.0, 0.0, 1.0, 3.0])
    # perfect order 3, 1, 0, 0: cumulative shares .75, 1, 1, 1 -> 3.75/4 - 5/8 = 0.3125
    assert normalized_gini(y, [0.1, 0.2, 0.3, 0.4]) == pytest.approx(1.0)
    # reversed: cumulative shares 0, 0, .25, 1 -> 1.25/4 - 5/8 = -0.3125
    assert normalized_gini(y, [0.4, 0.3, 0.2, 0.1]) == pytest.approx(-1.0)
    # order 1, 3, 0, 0: cumulative shares .25, 1, 1, 1 -> 3.25/4 - 5/8 = 0.1875 -> 0.1875 / 0.3125
    assert normalized_gini(y, [0.1, 0.2, 0.4, 0.3]) == pytest.approx(0.6)
    # only the ranking matters
    assert normalized_gini(y, [1.0, 2.0, 400.0, 30.0]) == pytest.approx(0.6)
    assert np.isnan(normalized_gini([0.0, 0.0], [1.0, 2.0]))


def test_decile_mape_by_hand():
    y = np.arange(1.0, 11.0)  # ten customers: one per decile
    assert decile_mape(y, y) == pytest.approx(0.0)
    assert decile_mape(y, 1.1 * y) == pytest.approx(0.1)
    assert decile_mape(y, 0.5 * y) == pytest.approx(0.5)
    # deciles by prediction: reversing the prediction pairs actual 1 with predicted 10, ...
    pred = y[::-1].copy()
    expected = np.mean([abs(p - a) / a for a, p in zip(y, pred)])
    assert decile_mape(y, pred) == pytest.approx(expected)
    # 20 customers, 2 per decile; deciles whose actual total is 0 are skipped
    y20 = np.repeat([0.0, 2.0], 10)
    p20 = np.linspace(0.0, 1.0, 20)  # the top deciles by prediction are the 2.0 customers
    assert decile_mape(y20, p20 * 0 + 1.0) == pytest.approx(np.mean([abs(2 - 4) / 4] * 5))


def test_spend_metrics_bundle():
    y = [0.0, 5.0, 1.0, 10.0]
    m = spend_metrics(y, [0.0, 4.0, 2.0, 9.0])
    assert m["spearman"] == pytest.approx(1.0)
    assert m["normalized_gini"] == pytest.approx(1.0)
    assert m["mean_actual"] == pytest.approx(4.0)
    assert np.isnan(spend_metrics(y, [1.0, 1.0, 1.0, 1.0])["spearman"])  # constant prediction


def test_metrics_reject_bad_input():
    with pytest.raises(ValueError):
        purchase_metrics([0, 1], [0.1, float("nan")])
    with pytest.raises(ValueError):
        normalized_gini([0.0, 1.0], [1.0])


def test_bootstrap_is_seeded_and_paired():
    a = bootstrap_indices(50, 20, seed=3)
    assert a.shape == (20, 50)
    assert np.array_equal(a, bootstrap_indices(50, 20, seed=3))
    assert not np.array_equal(a, bootstrap_indices(50, 20, seed=4))
    rng = np.random.default_rng(0)
    y = (rng.random(200) < 0.3).astype(float)
    p = np.clip(0.3 + 0.4 * (y - 0.3) + rng.normal(0, 0.2, 200), 0, 1)
    idx = bootstrap_indices(200, 100, seed=1)
    boot = bootstrap_metrics(purchase_point_metrics, y, p, idx)
    assert set(boot) == {"roc_auc", "pr_auc", "lift_at_10pct", "brier", "ece"}
    assert boot["roc_auc"]["value"] == pytest.approx(purchase_metrics(y, p)["roc_auc"])
    assert boot["roc_auc"]["resamples"].shape == (100,)
    lo, hi = interval(boot["roc_auc"]["resamples"])
    assert lo < boot["roc_auc"]["value"] < hi
    # the same prediction has a zero-width interval of differences: the resamples are paired
    diff = boot["roc_auc"]["resamples"] - bootstrap_metrics(purchase_point_metrics, y, p, idx)["roc_auc"]["resamples"]
    assert np.all(diff == 0)


def test_interval_ignores_nan():
    assert interval([np.nan, 1.0, 2.0, 3.0], level=1.0) == (1.0, 3.0)
    assert all(np.isnan(interval([np.nan])))
