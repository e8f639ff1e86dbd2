"""Score: tier assignment and the predictions output contract."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from purchasing_power.score import OUTPUT_COLUMNS, assign_tiers, predictions_frame, validate_predictions
from purchasing_power.settings import Settings

D = date(2011, 8, 31)


def _counts(tiers: np.ndarray) -> dict[str, int]:
    return {t: int((tiers == t).sum()) for t in ("high", "medium", "low")}


# -- assign_tiers -------------------------------------------------------------------------------


def test_default_shares_on_ten_customers():
    spend = np.array([5.0, 100.0, 0.0, 50.0, 20.0, 75.0, 1.0, 30.0, 10.0, 40.0])
    ids = np.arange(1, 11, dtype=np.int64)
    tiers = assign_tiers(spend, ids, 0.2, 0.3)
    assert _counts(tiers) == {"high": 2, "medium": 3, "low": 5}
    # by spend: 100 (id 2), 75 (6) high; 50 (4), 40 (10), 30 (8) medium; the rest low
    assert dict(zip(ids.tolist(), tiers.tolist())) == {
        1: "low", 2: "high", 3: "low", 4: "medium", 5: "low",
        6: "high", 7: "low", 8: "medium", 9: "low", 10: "medium",
    }


def test_shares_on_twenty_customers_and_output_order_follows_input():
    rng = np.random.default_rng(0)
    spend = rng.permutation(np.arange(20, dtype=np.float64))
    ids = np.arange(100, 120, dtype=np.int64)
    tiers = assign_tiers(spend, ids, 0.2, 0.3)
    assert _counts(tiers) == {"high": 4, "medium": 6, "low": 10}
    assert set(spend[tiers == "high"]) == {19.0, 18.0, 17.0, 16.0}
    assert set(spend[tiers == "medium"]) == {15.0, 14.0, 13.0, 12.0, 11.0, 10.0}
    assert tiers.dtype == object


def test_ties_are_broken_by_customer_id_whatever_the_input_order():
    ids = np.array([50, 10, 40, 20, 30, 60, 90, 80, 70, 100], dtype=np.int64)
    spend = np.full(10, 7.0)
    tiers = assign_tiers(spend, ids, 0.2, 0.3)
    by_id = dict(zip(ids.tolist(), tiers.tolist()))
    assert [i for i, t in sorted(by_id.items()) if t == "high"] == [10, 20]
    assert [i for i, t in sorted(by_id.items()) if t == "medium"] == [30, 40, 50]
    # the same customers in another order get the same tiers
    perm = np.array([9, 3, 0, 7, 1, 8, 2, 6, 4, 5])
    again = assign_tiers(spend[perm], ids[perm], 0.2, 0.3)
    assert dict(zip(ids[perm].tolist(), again.tolist())) == by_id


def test_tie_at_the_tier_boundary_goes_to_the_lower_id():
    spend = np.array([10.0, 5.0, 5.0, 1.0, 1.0])
    ids = np.array([1, 3, 2, 5, 4], dtype=np.int64)
    tiers = assign_tiers(spend, ids, 0.4, 0.2)  # 2 high, 1 medium, 2 low
    assert dict(zip(ids.tolist(), tiers.tolist())) == {1: "high", 2: "high", 3: "medium", 4: "low", 5: "low"}


def test_custom_shares_and_edge_sizes():
    ids = np.arange(4, dtype=np.int64)
    assert assign_tiers(np.array([4.0, 3.0, 2.0, 1.0]), ids, 0.5, 0.5).tolist() == ["high", "high", "medium", "medium"]
    assert assign_tiers(np.array([1.0]), np.array([7]), 0.2, 0.3).tolist() == ["low"]
    five = assign_tiers(np.array([5.0, 4.0, 3.0, 2.0, 1.0]), np.arange(5), 0.2, 0.3)
    assert five.tolist() == ["high", "medium", "low", "low", "low"]
    assert assign_tiers(np.array([]), np.array([], dtype=np.int64), 0.2, 0.3).tolist() == []


# -- predictions_frame / validate_predictions -------------------------------------------------


@pytest.fixture
def preds() -> pd.DataFrame:
    features = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0, 5.0]}, index=pd.Index([11, 12, 13, 14, 15], name="customer_id"))
    p = np.array([0.1, 0.9, 0.5, 0.0, 1.0])
    spend = np.array([10.0, 200.0, 50.0, 0.0, 120.0])
    return predictions_frame(features.index, p, spend, D, "v-test", Settings(storage="/unused"))


def test_predictions_frame_contract(preds):
    assert tuple(preds.columns) == OUTPUT_COLUMNS
    assert preds["customer_id"].tolist() == [11, 12, 13, 14, 15]
    assert str(preds["customer_id"].dtype) == "int64"
    # 5 customers: round(0.2 * 5) = 1 high, round(0.5 * 5) - 1 = 1 medium (round half to even)
    assert preds["tier"].tolist() == ["low", "high", "low", "low", "medium"]
    assert preds["as_of"].tolist() == [D] * 5
    assert set(preds["model_version"]) == {"v-test"}
    validate_predictions(preds)  # does not raise


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("p_purchase_30d", 1.01, "p_purchase_30d must be finite and within"),
        ("p_purchase_30d", -0.01, "p_purchase_30d must be finite and within"),
        ("p_purchase_30d", np.nan, "p_purchase_30d must be finite and within"),
        ("expected_spend_90d", -1.0, "expected_spend_90d must be finite and >= 0"),
        ("expected_spend_90d", np.inf, "expected_spend_90d must be finite and >= 0"),
        ("tier", "platinum", "tier must be one of"),
    ],
)
def test_validate_rejects_out_of_range_values(preds, column, value, message):
    bad = preds.copy()
    bad.loc[2, column] = value
    with pytest.raises(ValueError, match=message):
        validate_predictions(bad)


def test_validate_rejects_wrong_id_dtype_and_duplicates(preds):
    with pytest.raises(ValueError, match="customer_id must be unique int64"):
        validate_predictions(preds.astype({"customer_id": "int32"}))
    with pytest.raises(ValueError, match="customer_id must be unique int64"):
        validate_predictions(preds.astype({"customer_id": "float64"}))
    dup = preds.copy()
    dup.loc[1, "customer_id"] = 11
    with pytest.raises(ValueError, match="customer_id must be unique int64"):
        validate_predictions(dup)


def test_validate_rejects_wrong_columns(preds):
    with pytest.raises(ValueError, match="predictions columns"):
        validate_predictions(preds.drop(columns=["model_version"]))
    with pytest.raises(ValueError, match="predictions columns"):
        validate_predictions(preds[list(reversed(OUTPUT_COLUMNS))])


@pytest.mark.parametrize("column", ["p_purchase_30d", "expected_spend_90d"])
def test_validate_rejects_non_numeric_scores_with_a_value_error(preds, column):
    """BUG (score.py:64 and :67): a score column of object dtype (e.g. strings or Decimals from a
    mis-typed model output) makes ``np.isfinite`` raise ``TypeError: ufunc 'isfinite' not
    supported``; the contract says it raises ValueError naming the broken rule."""
    bad = preds.astype({column: "object"})
    bad.loc[0, column] = "0.5"
    with pytest.raises(ValueError, match=column):
        validate_predictions(bad)


# -- text customer ids ---------------------------------------------------------------------------


def test_text_ids_are_carried_with_their_spelling_and_validated():
    ids = ["C-00123", "c-00123", "9f86d081884c7d65", "00042", "C-9"]
    features = pd.DataFrame({"x": np.arange(5.0)}, index=pd.Index(ids, name="customer_id", dtype=object))
    preds = predictions_frame(features.index, np.full(5, 0.5), np.array([1.0, 5.0, 3.0, 2.0, 4.0]), D, "v", Settings(storage="/unused"))
    assert preds["customer_id"].tolist() == ids and preds["customer_id"].dtype == object
    assert dict(zip(ids, preds["tier"])) == {"c-00123": "high", "C-9": "medium", "9f86d081884c7d65": "low", "00042": "low", "C-00123": "low"}
    validate_predictions(preds)
    validate_predictions(preds.astype({"customer_id": "string"}))
    for bad_ids in (["C-1", None, "C-3", "C-4", "C-5"], ["C-1", "C-1", "C-3", "C-4", "C-5"], ["C-1", "", "C-3", "C-4", "C-5"], ["C-1", 2, "C-3", "C-4", "C-5"]):
        with pytest.raises(ValueError, match="customer_id must be unique int64 or text"):
            validate_predictions(preds.assign(customer_id=pd.Series(bad_ids, dtype=object)))


def test_text_id_ties_are_broken_by_the_ids_text_whatever_the_input_order():
    ids = np.array(["b", "B", "a10", "a9", "A", "c", "_x", "0", "aa", "z"], dtype=object)
    spend = np.full(10, 7.0)
    by_id = dict(zip(ids.tolist(), assign_tiers(spend, ids, 0.2, 0.3).tolist()))
    ranked = sorted(ids.tolist())  # code point order: "0" < "A" < "B" < "_x" < "a10" < "a9" < ...
    assert [i for i in ranked if by_id[i] == "high"] == ranked[:2]
    assert [i for i in ranked if by_id[i] == "medium"] == ranked[2:5]
    for seed in range(3):
        perm = np.random.default_rng(seed).permutation(10)
        again = assign_tiers(spend[perm], ids[perm], 0.2, 0.3)
        assert dict(zip(ids[perm].tolist(), again.tolist())) == by_id
