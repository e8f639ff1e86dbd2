"""The bounded training table: a seeded, stable sample of whole customers."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd

from purchasing_power.settings import Settings
from purchasing_power.train import customer_sample, sample_level, training_table


def test_customer_sample_is_seeded_stable_and_near_the_share():
    ids = np.arange(100_000, 120_000)
    a = customer_sample(ids, 0.25, seed=42)
    assert abs(a.mean() - 0.25) < 0.02
    assert (customer_sample(ids, 0.25, seed=42) == a).all()  # the same customers every time
    assert (customer_sample(ids[::-1], 0.25, seed=42) == a[::-1]).all()  # per id, not per position
    assert (customer_sample(ids, 0.25, seed=7) != a).any()  # the seed matters
    assert customer_sample(ids, 1.0, seed=42).all()
    text = np.array([f"C-{i:05d}" for i in range(5000)], dtype=object)  # string ids work too
    assert 0.15 < customer_sample(text, 0.2, seed=1).mean() < 0.25


class FakeData:
    """What ``training_table`` reads: settings, stored features per snapshot, the history."""

    def __init__(self, n: int, snaps: list[date]):
        self.settings = Settings()
        self._f = {d: pd.DataFrame({"x": np.arange(n, dtype=float)}, index=pd.Index(np.arange(n, dtype=np.int64) + 1000, name="customer_id")) for d in snaps}
        self._tx = pd.DataFrame({"customer_id": np.arange(n, dtype=np.int64) + 1000, "invoice_ts": pd.Timestamp("2024-01-02"),
                                 "line_value": 1.0, "is_cancellation": False, "quantity": 1})

    def features(self, d: date, keep: bool = True) -> pd.DataFrame:
        return self._f[d]

    def history_since(self, since: date, through: date | None = None) -> pd.DataFrame:
        return self._tx

    def customers_as_of(self, d: date) -> int:
        return len(self._f[d])

    def sampled_features(self, d: date, level: int) -> pd.DataFrame:
        f = self._f[d]  # level 0: every row (share 1)
        return f[customer_sample(f.index.to_numpy(), 0.5**level, self.settings.seed)]


def test_training_table_keeps_whole_customers_within_the_bound():
    snaps = [date(2023, 6, 1) + timedelta(days=14 * k) for k in range(4)]
    data = FakeData(2000, snaps)
    full = training_table(data, snaps, date(2024, 1, 1))
    assert len(full) == 8000 and full.attrs["sample_share"] == 1.0
    small = training_table(data, snaps, date(2024, 1, 1), max_rows=2000)
    assert small.attrs["sample_share"] == 0.25
    assert 1500 < len(small) <= 2500
    per_customer = small.groupby("customer_id")["snapshot"].nunique()
    assert (per_customer == len(snaps)).all()  # a sampled customer is in every snapshot
    assert training_table(data, snaps, date(2024, 1, 1), max_rows=100_000).attrs["sample_share"] == 1.0
    # shares are powers of two: 3000 rows allowed of 8000 -> 1/4, not 3/8
    assert training_table(data, snaps, date(2024, 1, 1), max_rows=3000).attrs["sample_share"] == 0.25


def test_sample_levels_are_powers_of_two_within_the_bound_and_nest():
    assert sample_level(0, 10**9) == 0 and sample_level(1000, 1000) == 0 and sample_level(1000, 999) == 0
    assert sample_level(1000, 1001) == 1 and sample_level(1000, 2000) == 1 and sample_level(1000, 2001) == 2
    for bound in (1_500_000, 6_500_000, 26_000_000):
        k = sample_level(1_000_000, bound)
        assert bound * 0.5**k <= 1_000_000 < bound * 0.5 ** (k - 1)
    ids = np.arange(50_000)
    half, eighth = customer_sample(ids, 0.5, seed=3), customer_sample(ids, 0.125, seed=3)
    assert (half | ~eighth).all() and eighth.sum() < half.sum()  # the smaller sample lies within the larger


def _bundle_data(monkeypatch, tables: dict[str, pd.DataFrame]):
    """fit_bundle over given training tables: 'purchase' for the purchase snapshots, 'spend' for
    the spend ones (snapshots() stubbed to tell them apart)."""
    import purchasing_power.train as T

    p_day, s_day = date(2024, 1, 1), date(2023, 11, 1)
    monkeypatch.setattr(T, "snapshots", lambda data, anchor, label_end: [p_day] if label_end > s_day else [s_day])
    monkeypatch.setattr(T, "training_table", lambda data, snaps, anchor, max_rows=0: tables["purchase" if snaps == [p_day] else "spend"])

    class Data:
        settings = Settings(use_smote=False)

        def release_histories(self) -> None:  # fit_bundle frees the histories before the fits
            pass

    return Data(), date(2024, 3, 1), date(2024, 2, 1), date(2023, 12, 1)


def test_bundle_fits_spend_beside_purchase_with_the_same_models(monkeypatch):
    from test_model import make_table, scoring_frame

    from purchasing_power.model import fit_purchase_model, fit_spend_model
    from purchasing_power.train import fit_bundle

    ptab, stab = make_table(n=300, seed=1), make_table(n=300, seed=2)
    for t in (ptab, stab):
        t.attrs["sample_share"] = 1.0
    data, anchor, p_end, s_end = _bundle_data(monkeypatch, {"purchase": ptab, "spend": stab})
    bundle, info = fit_bundle(data, anchor, p_end, s_end, "v1")
    X = scoring_frame(ptab)
    alone_p = fit_purchase_model(ptab, seed=data.settings.seed, smote=False, kinds=tuple(data.settings.candidates))
    alone_s = fit_spend_model(stab, seed=data.settings.seed)
    np.testing.assert_array_equal(bundle.purchase.predict_proba(X), alone_p.predict_proba(X))
    np.testing.assert_array_equal(bundle.spend.predict(X), alone_s.predict(X))
    assert info["purchase_rows"] == len(ptab) and info["spend_rows"] == len(stab) and "spend_error" not in info


def test_bundle_without_spend_rows_falls_back_and_without_purchase_rows_is_none(monkeypatch):
    from test_model import make_table

    from purchasing_power.train import fit_bundle

    ptab = make_table(n=300, seed=1)
    ptab.attrs["sample_share"] = 1.0
    data, anchor, p_end, s_end = _bundle_data(monkeypatch, {"purchase": ptab, "spend": pd.DataFrame()})
    bundle, info = fit_bundle(data, anchor, p_end, s_end, "v1")
    assert bundle is not None and bundle.purchase is not None and bundle.spend is None
    assert info["spend_error"].startswith("no spend training snapshots") and "spend_rows" not in info
    data, anchor, p_end, s_end = _bundle_data(monkeypatch, {"purchase": pd.DataFrame(), "spend": ptab})
    bundle, info = fit_bundle(data, anchor, p_end, s_end, "v1")
    assert bundle is None and info["purchase_error"] == "no purchase training snapshots"
