"""Features and labels are point in time: nothing at or after D+1 00:00 reaches features of D,
and labels cover exactly [D+1, D+1+horizon)."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from purchasing_power.clean import clean_frame
from purchasing_power.features import build_features
from purchasing_power.labels import build_labels

D = date(2011, 8, 31)


def _line(inv: str, ts: str, cust: int, qty: int = 2, price: float = 5.0, stock: str = "85123A") -> tuple:
    return (inv, stock, f"ITEM {stock}", qty, ts, price, float(cust), "United Kingdom")


@pytest.fixture
def clean_of(make_raw, as_raw_partition):
    def run(rows: list[tuple]) -> pd.DataFrame:
        clean, quarantine = clean_frame(as_raw_partition(make_raw(rows)))
        assert quarantine.empty, quarantine[["reason", "detail"]]
        return clean

    return run


HISTORY = [
    _line("100", "2011-06-01 09:00:00", 101),
    _line("101", "2011-07-01 10:00:00", 101, qty=3),
    _line("102", "2011-08-15 11:00:00", 101, stock="22423", price=12.75),
    _line("103", "2011-06-20 12:00:00", 102),
    _line("104", "2011-08-31 23:59:59", 102, qty=1),  # the last second of D: known at D
    _line("105", "2011-07-10 08:00:00", 103, qty=10, price=1.25),
    _line("C106", "2011-07-12 08:00:00", 103, qty=-4, price=1.25),
    _line("107", "2011-08-01 14:00:00", 103),
    _line("108", "2011-05-05 15:00:00", 104, qty=1, price=30.0),
]


def test_row_at_exactly_d_plus_1_midnight_does_not_change_features(clean_of):
    tx = clean_of(HISTORY)
    leaky = clean_of(
        HISTORY
        + [
            _line("200", "2011-09-01 00:00:00", 101, qty=100, price=99.0),  # existing customer
            _line("201", "2011-09-01 00:00:00", 999, qty=1),  # a customer first seen at D+1
            _line("C202", "2011-09-01 00:00:00", 102, qty=-1),  # a return at D+1
        ]
    )
    assert len(leaky) == len(tx) + 3

    f = build_features(tx, D)
    f_leaky = build_features(leaky, D)
    pd.testing.assert_frame_equal(f_leaky, f)
    assert f.index.tolist() == [101, 102, 103, 104]
    assert f.index.dtype == "int64"


def test_features_see_the_last_second_of_d(clean_of):
    """The cut is at D+1 00:00, not earlier: a row at D 23:59:59 counts."""
    without = build_features(clean_of(HISTORY[:4] + HISTORY[5:]), D)
    with_last = build_features(clean_of(HISTORY), D)
    assert without.loc[102, "n_purchase_days"] == 1.0
    assert with_last.loc[102, "n_purchase_days"] == 2.0
    assert with_last.loc[102, "spend_total"] == pytest.approx(15.0)
    assert with_last.loc[102, "recency_days"] == pytest.approx(1.0 / 86400.0)


def test_feature_values_on_a_tiny_history(clean_of):
    f = build_features(clean_of(HISTORY), D)
    # customer 101: purchase days 06-01, 07-01, 08-15 (as of end of 08-31)
    assert f.loc[101, "n_purchase_days"] == 3.0
    assert f.loc[101, "tenure_days"] == 92.0  # 2011-09-01 - 2011-06-01
    assert f.loc[101, "ipt_mean"] == pytest.approx((30 + 45) / 2)
    assert f.loc[101, "spend_total"] == pytest.approx(10.0 + 15.0 + 25.5)
    assert f.loc[101, "spend_30d"] == pytest.approx(25.5)
    # customer 103: a return netted into spend, but not an order
    assert f.loc[103, "spend_total"] == pytest.approx(12.5 - 5.0 + 10.0)
    assert f.loc[103, "n_orders"] == 2.0
    assert f.loc[103, "return_line_share"] == pytest.approx(1 / 3)


def test_features_as_of_an_earlier_day_ignore_everything_after_it(clean_of):
    tx = clean_of(HISTORY)
    f = build_features(tx, date(2011, 7, 5))
    assert f.index.tolist() == [101, 102, 104]  # 103 first buys on 07-10
    assert f.loc[101, "n_purchase_days"] == 2.0
    assert f.loc[101, "spend_total"] == pytest.approx(10.0 + 15.0)
    assert f.loc[102, "n_purchase_days"] == 1.0


def test_features_when_no_customer_has_a_repeat_purchase_yet(clean_of):
    """BUG (features.build_features -> btyd/bgnbd.py): at a snapshot where every customer has a
    single purchase day (a young source, the first days of history) the BG/NBD is not identified
    and ``build_features`` raises ``ValueError: fit_bgnbd: no repeat purchases ...`` instead of
    returning the customers' features (with the BTYD columns missing/NaN)."""
    tx = clean_of(HISTORY)
    f = build_features(tx, date(2011, 6, 30))  # 101, 102 and 104 have one purchase day each
    assert f.index.tolist() == [101, 102, 104]
    assert f["n_purchase_days"].tolist() == [1.0, 1.0, 1.0]
    assert f.loc[104, "spend_total"] == pytest.approx(30.0)
    assert "bgnbd_p_purchase" in f.columns


# -- labels -------------------------------------------------------------------------------------


LABEL_ROWS = [
    _line("300", "2011-08-31 12:00:00", 1),  # at D itself: a feature, not a label
    _line("301", "2011-09-30 23:59:00", 2),  # D+30 23:59: inside the 30-day purchase window
    _line("302", "2011-10-01 00:00:00", 3),  # D+31 00:00: outside it, inside the spend window
    _line("303", "2011-09-01 00:00:00", 4),  # D+1 00:00: the first instant of both windows
    _line("304", "2011-11-29 23:59:00", 5),  # D+90 23:59: last minute of the spend window
    _line("305", "2011-11-30 00:00:00", 6),  # D+91 00:00: outside the spend window
    _line("306", "2011-09-05 10:00:00", 7, qty=1),
    _line("C307", "2011-09-05 11:00:00", 7, qty=-3),  # a net-negative day is no purchase; spend floors at 0
]


def test_label_windows(clean_of):
    tx = clean_of(LABEL_ROWS)
    customers = pd.Index([1, 2, 3, 4, 5, 6, 7, 8], name="customer_id")
    labels = build_labels(tx, D, customers)
    assert labels.index.tolist() == [1, 2, 3, 4, 5, 6, 7, 8]
    assert labels["purchased"].to_dict() == {1: 0, 2: 1, 3: 0, 4: 1, 5: 0, 6: 0, 7: 0, 8: 0}
    assert labels["spend"].to_dict() == {1: 0.0, 2: 10.0, 3: 10.0, 4: 10.0, 5: 10.0, 6: 0.0, 7: 0.0, 8: 0.0}
    assert str(labels["purchased"].dtype) == "int64" and str(labels["spend"].dtype) == "float64"


def test_label_horizons_follow_the_arguments(clean_of):
    tx = clean_of(LABEL_ROWS)
    labels = build_labels(tx, D, pd.Index([2, 3, 4, 5]), purchase_days_h=31, spend_days_h=30)
    assert labels["purchased"].tolist() == [1, 1, 1, 0]
    assert labels["spend"].tolist() == [10.0, 0.0, 10.0, 0.0]


def test_labels_only_for_requested_customers(clean_of):
    labels = build_labels(clean_of(LABEL_ROWS), D, pd.Index([2]))
    assert labels.to_dict("index") == {2: {"purchased": 1, "spend": 10.0}}


# -- text customer ids ---------------------------------------------------------------------------


def _spelled(tx: pd.DataFrame) -> pd.DataFrame:
    """The same history with text ids whose order is not the integers' ("C-101" < "C-99")."""
    names = {101: "C-101", 102: "b7e2", 103: "C-99", 104: "00104", 999: "zz"}
    return tx.assign(customer_id=tx["customer_id"].map(names).astype(object))


def test_text_ids_give_the_same_features_and_labels_as_integer_ids(clean_of):
    tx = clean_of(HISTORY + [_line("200", "2011-09-05 10:00:00", 102), _line("C201", "2011-09-06 10:00:00", 103, qty=-1)])
    text = _spelled(tx)
    vectors = lambda texts: [[float(len(t)), 1.0] for t in texts]  # noqa: E731
    f_int, f_text = build_features(tx, D, vectors), build_features(text, D, vectors)
    assert f_text.index.tolist() == ["00104", "C-101", "C-99", "b7e2"]  # sorted as text
    assert f_text.index.dtype == object and f_text.index.name == "customer_id"
    names = _spelled(pd.DataFrame({"customer_id": f_int.index}))["customer_id"]
    expected = f_int.set_axis(pd.Index(names.to_numpy(), name="customer_id")).sort_index()
    pd.testing.assert_frame_equal(f_text, expected)
    l_int, l_text = build_labels(tx, D, f_int.index), build_labels(text, D, f_text.index)
    assert l_text.loc["b7e2", "purchased"] == l_int.loc[102, "purchased"] == 1
    assert l_text.loc["C-99", "purchased"] == 0 and l_text["purchased"].sum() == 1
    assert build_features(text.iloc[0:0], D).index.dtype == object
