"""Model fitting: SMOTE resamples the fitting rows only, calibration keeps the ranking, fits are
deterministic, and the gate's spend choice."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from purchasing_power import model as M
from purchasing_power.metrics import purchase_metrics

SNAPSHOTS = ("2011-01-02", "2011-01-16", "2011-01-30", "2011-02-13")


def make_table(n: int = 300, seed: int = 0, snapshots: tuple[str, ...] = SNAPSHOTS, text: bool = True) -> pd.DataFrame:
    """A training table like ``Context.training_table``: features, labels, snapshot."""
    rng = np.random.default_rng(seed)
    frames = []
    for k, snap in enumerate(snapshots):
        recency = rng.exponential(40.0, n)
        freq = rng.poisson(3.0, n).astype(float)
        spend = rng.lognormal(5.0, 1.0, n) * (1 + freq)
        z = 1.2 - 0.04 * recency + 0.5 * np.log1p(freq) + rng.normal(0, 1.0, n)
        purchased = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.int64)
        future = np.where(rng.random(n) < 1 / (1 + np.exp(-z)), spend * rng.lognormal(-1.0, 0.5, n), 0.0)
        f = pd.DataFrame(
            {
                "customer_id": np.arange(n, dtype=np.int64) + 1000,
                "recency_days": recency,
                "n_purchase_days": freq,
                "spend_total": spend,
                "spend_365d": spend * 0.9,
                "tenure_days": 30.0 + 14 * k + rng.uniform(0, 30, n),
                "bgnbd_p_purchase": 1 / (1 + np.exp(-z + rng.normal(0, 0.5, n))),
                "bgnbd_gg_spend": spend * 0.2,
                "ipt_mean": np.where(freq > 0, rng.uniform(5, 60, n), np.nan),  # NaN for one-timers
                "history_days": 60.0 + 14 * k,  # the same for every customer of a snapshot
            }
        )
        if text:
            for j in range(12):
                f[f"txt_{j:03d}"] = rng.normal(0, 1, n).astype(np.float32)
        frames.append(f.assign(purchased=purchased, spend=future, snapshot=snap))
    return pd.concat(frames, ignore_index=True)


def scoring_frame(table: pd.DataFrame) -> pd.DataFrame:
    """Features as the scorer sees them: indexed by customer, no labels or snapshot."""
    last = table[table["snapshot"] == table["snapshot"].max()]
    return last.drop(columns=["purchased", "spend", "snapshot"]).set_index("customer_id")


@pytest.fixture
def smote_calls(monkeypatch):
    """Record the number of rows every SMOTE resampling receives."""
    from imblearn.over_sampling import SMOTE

    calls: list[int] = []
    original = SMOTE._fit_resample

    def spy(self, X, y):
        calls.append(len(X))
        return original(self, X, y)

    monkeypatch.setattr(SMOTE, "_fit_resample", spy)
    return calls


def test_smote_resamples_only_the_fitting_rows(smote_calls):
    table = make_table()
    n_fit = int((table["snapshot"] < SNAPSHOTS[-1]).sum())
    n_cal = int((table["snapshot"] == SNAPSHOTS[-1]).sum())
    m = M.fit_purchase_model(table, seed=1, smote=True, smote_only=True, kinds=("hgb", "logreg", "blend"))
    assert m.selection["smote_used"] and m.selection["chosen"].endswith("+smote")
    # one resampling per fitted pipeline (hgb, logreg), each on the fitting snapshots only
    assert smote_calls == [n_fit, n_fit]
    # the calibration slice is the latest snapshot, all real rows
    assert m.selection["calibration_snapshot"] == SNAPSHOTS[-1]
    assert m.selection["calibration_rows"] == n_cal and m.selection["fit_rows"] == n_fit
    # scoring (and so any evaluation) never resamples
    before = len(smote_calls)
    p = m.predict_proba(scoring_frame(table))
    assert len(smote_calls) == before
    assert p.shape == (n_cal,) and np.all((p >= 0) & (p <= 1))


def test_smote_off_never_resamples(smote_calls):
    m = M.fit_purchase_model(make_table(), seed=1, smote=False)
    assert smote_calls == []
    assert not m.selection["smote_used"]
    assert all("smote" not in step for pipe in m.pipelines for step, _ in pipe.steps)


def test_smote_variants_compete_on_the_calibration_slice(smote_calls):
    m = M.fit_purchase_model(make_table(), seed=1, smote=True, kinds=("hgb",))
    assert set(m.selection["selection_metrics"]) == {"hgb", "hgb+smote"}
    assert len(smote_calls) == 1
    best = max(m.selection["selection_metrics"].items(), key=lambda kv: (kv[1]["pr_auc"], kv[1]["roc_auc"]))[0]
    assert m.selection["chosen"] == best


def test_only_the_requested_candidates_are_chosen():
    m = M.fit_purchase_model(make_table(), seed=1, smote=False, kinds=("blend",))
    assert m.kind == "blend" and len(m.pipelines) == 2
    assert set(m.selection["selection_metrics"]) == {"blend"}
    with pytest.raises(ValueError):
        M.fit_purchase_model(make_table(), seed=1, kinds=("forest",))


def test_resampled_training_is_balanced():
    from purchasing_power.rebalance import class_balance, make_smote

    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 3))
    y = (np.arange(120) < 20).astype(int)
    Xr, yr = make_smote(7, 20).fit_resample(X, y)
    assert class_balance(yr)["positives"] == class_balance(yr)["negatives"] == 100
    assert np.array_equal(Xr[:120], X)  # the real rows come first, unchanged
    with pytest.raises(ValueError):
        make_smote(7, 1)


def test_purchase_fit_is_deterministic():
    table = make_table(seed=3)
    X = scoring_frame(table)
    a = M.fit_purchase_model(table, seed=42, smote=True).predict_proba(X)
    b = M.fit_purchase_model(table.copy(), seed=42, smote=True).predict_proba(X)
    assert a.tobytes() == b.tobytes()


def test_spend_fit_is_deterministic_and_two_part():
    table = make_table(seed=4)
    X = scoring_frame(table)
    m1 = M.fit_spend_model(table, seed=42)
    m2 = M.fit_spend_model(table.copy(), seed=42)
    s1, s2 = m1.predict(X), m2.predict(X)
    assert s1.tobytes() == s2.tobytes()
    assert np.all(s1 >= 0) and np.all(np.isfinite(s1))
    p = m1.buy.predict_proba(X.reindex(columns=m1.columns))[:, 1]
    assert s1 == pytest.approx(p * m1.amount(X))
    # the amount grows with past spend (log-linear in it)
    assert m1.amount_coef[1] + m1.amount_coef[2] > 0
    assert m1.smearing >= 1.0  # E[exp(residual)] >= exp(E[residual]) = 1


def test_platt_calibration_keeps_the_ranking():
    rng = np.random.default_rng(0)
    raw = rng.uniform(0.01, 0.99, 500)
    y = (rng.random(500) < raw**2).astype(int)  # raw overstates the probability
    cal = M.PlattCalibrator.fit(raw, y)
    p = cal.predict(raw)
    assert np.array_equal(np.argsort(raw, kind="stable"), np.argsort(p, kind="stable"))
    assert purchase_metrics(y, p)["roc_auc"] == pytest.approx(purchase_metrics(y, raw)["roc_auc"])
    assert purchase_metrics(y, p)["ece"] < purchase_metrics(y, raw)["ece"]
    assert abs(p.mean() - y.mean()) < 0.01  # a logistic fit matches the mean on its own data


def test_calibration_reduces_ece_on_held_out_snapshot_after_smote():
    m = M.fit_purchase_model(make_table(n=400, seed=5), seed=1, smote=True, smote_only=True, kinds=("hgb",))
    ece = m.selection["calibration_slice_ece"]
    assert ece["after"] < ece["before"]


def test_too_little_data_raises_insufficient_data():
    with pytest.raises(M.InsufficientData):
        M.fit_purchase_model(make_table(snapshots=("2011-01-02",)), seed=1)
    tiny = make_table(n=6, snapshots=("2011-01-02", "2011-01-16"))
    with pytest.raises(M.InsufficientData):
        M.fit_purchase_model(tiny, seed=1)
    with pytest.raises(M.InsufficientData):
        M.fit_spend_model(tiny, seed=1)


def test_feature_columns_exclude_ids_labels_and_snapshot():
    num, text = M.feature_columns(make_table(n=5))
    assert "customer_id" not in num and "purchased" not in num and "snapshot" not in num and "spend" not in num
    assert "history_days" not in num  # global per snapshot: not a model feature
    assert text == [f"txt_{j:03d}" for j in range(12)]


def test_bundle_parts_fall_back_to_baselines():
    table = make_table(seed=6)
    X = scoring_frame(table)
    baseline = M.ModelBundle(version="b", kind="baseline")
    p, s = baseline.predict(X)
    assert np.array_equal(p, X["bgnbd_p_purchase"].to_numpy()) and np.array_equal(s, X["bgnbd_gg_spend"].to_numpy())
    window = pd.DataFrame({"spend_total": [100.0, 300.0, -5.0], "history_days": 50.0})
    past = M.fit_past_spend(window, [20.0, 40.0, 0.0])
    assert past.scale == pytest.approx(60.0 / (400.0 / 50.0))  # totals per day of history, scaled to the outcome
    assert past.predict(window) == pytest.approx([15.0, 45.0, 0.0])
    mixed = M.ModelBundle(version="m", kind="baseline", spend=past)
    expected = np.clip(X["spend_total"].to_numpy(), 0, None) / X["history_days"].to_numpy() * past.scale
    assert mixed.predict(X)[1] == pytest.approx(expected)


def test_gate_spend_choice():
    from purchasing_power.gate import spend_verdict

    ev = {
        "spend": {"past_spend": {"normalized_gini": 0.80}, "bgnbd_gg": {"normalized_gini": 0.75}, "candidate": {"normalized_gini": 0.81}},
        "past_spend_scale": 0.3,
    }
    assert spend_verdict(ev, 0.0)[0] == "candidate"
    assert spend_verdict(ev, 0.02)[0] == "past_spend"  # not 0.02 better than the better baseline
    assert spend_verdict(ev, 0.0, candidate_allowed=False)[0] == "past_spend"
    ev["spend"]["bgnbd_gg"]["normalized_gini"] = 0.9
    assert spend_verdict(ev, 0.0)[0] == "bgnbd_gg"
    assert spend_verdict({"spend": {}}, 0.0)[0] == "bgnbd_gg"
    assert spend_verdict({"spend": {"candidate": {"normalized_gini": 0.5}}}, 0.0)[0] == "candidate"


def _shifted_window(model: M.PurchaseModel, seed: int, shift: float) -> tuple[pd.DataFrame, np.ndarray]:
    """Customers scored by ``model`` whose true purchase odds are the model's times exp(shift)."""
    X = scoring_frame(make_table(n=600, seed=seed))
    rng = np.random.default_rng(seed)
    p_true = M.sigmoid(M.logit(model.predict_proba(X)) + shift)
    return X, (rng.random(len(X)) < p_true).astype(np.int64)


def test_recalibration_follows_the_latest_window_and_keeps_the_ranking():
    m = M.fit_purchase_model(make_table(seed=8), seed=1, smote=False)
    X, y = _shifted_window(m, seed=21, shift=-1.0)  # the purchase rate fell after the fit
    before = m.predict_proba(X)
    m2, info = M.recalibrate_scored(m, [("2011-03-01", m.raw_score(X), y)])
    after = m2.predict_proba(X)
    assert info["applied"] and info["rows"] == len(X) and info["snapshots"] == ["2011-03-01"]
    assert abs(before.mean() - y.mean()) > 0.1  # the fit's calibration is off on the new window
    assert abs(after.mean() - y.mean()) < 0.01  # the refitted one matches its rate
    assert purchase_metrics(y, after)["ece"] < purchase_metrics(y, before)["ece"]
    assert np.array_equal(np.argsort(before, kind="stable"), np.argsort(after, kind="stable"))
    assert np.array_equal(m.predict_proba(X), before)  # the deployed model itself is not changed
    assert m2.selection["recalibration"] == info and m2.pipelines is m.pipelines


def test_recalibration_with_a_single_class_keeps_the_fit():
    m = M.fit_purchase_model(make_table(seed=8), seed=1, smote=False)
    X = scoring_frame(make_table(n=50, seed=3))
    m2, info = M.recalibrate_scored(m, [("2011-03-01", m.raw_score(X), np.zeros(len(X), dtype=np.int64))])
    assert m2 is m and info["applied"] is False and "single class" in info["reason"]
    m3, info = M.recalibrate_scored(m, [])
    assert m3 is m and info["applied"] is False and info["rows"] == 0


def test_candidate_fits_do_not_depend_on_how_many_run_at_once():
    from purchasing_power.pipelines import fit_variants

    table = make_table(n=400)
    base, cal = M.split_calibration(table)
    num, text = M.feature_columns(table)
    y = base["purchased"].to_numpy()
    variants = [("hgb", False), ("logreg", False), ("hgb", True), ("logreg", True)]
    with M.single_threaded():
        one = fit_variants(base, y, cal, variants, num=num, text=text, seed=3, minority=50, workers=1)
        four = fit_variants(base, y, cal, variants, num=num, text=text, seed=3, minority=50, workers=4)
    X = scoring_frame(table)
    for v in variants:
        np.testing.assert_array_equal(one[1][v], four[1][v])
        np.testing.assert_array_equal(one[0][v].predict_proba(X[num + text]), four[0][v].predict_proba(X[num + text]))
    # one preprocessing, fitted once, serves every candidate
    assert len({id(pipe.named_steps["pre"]) for pipe in four[0].values()}) == 1


def test_fitting_threads_run_openmp_single_threaded(monkeypatch):
    from sklearn.utils._openmp_helpers import _openmp_effective_n_threads

    from purchasing_power import pipelines

    seen: list[int] = []
    real = pipelines.hgb_classifier

    def spy(seed):
        seen.append(_openmp_effective_n_threads())
        return real(seed)

    monkeypatch.setattr(pipelines, "hgb_classifier", spy)
    M.fit_purchase_model(make_table(), seed=1, smote=True, kinds=("hgb",))
    assert seen == [1, 1]


def test_predictions_in_blocks_of_rows_equal_the_whole_frames(monkeypatch):
    table = make_table(n=400)
    bundle = M.ModelBundle(version="v", kind="model", purchase=M.fit_purchase_model(table, seed=1, smote=False),
                           spend=M.fit_spend_model(table, seed=1))
    X = scoring_frame(table)
    whole = bundle.predict(X)
    monkeypatch.setattr(M, "PREDICT_ROWS", 7)  # 400 rows in 58 blocks, the last one short
    blocks = bundle.predict(X)
    # the same up to float64 rounding (BLAS kernels may sum a short block's dot products in
    # another order); in row order, every row
    np.testing.assert_allclose(whole[0], blocks[0], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(whole[1], blocks[1], rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(bundle.predict(X)[0], blocks[0])  # the same blocks: the very bytes


def test_predictions_do_not_depend_on_the_openmp_threads():
    from threadpoolctl import threadpool_limits

    table = make_table(n=400)
    bundle = M.ModelBundle(version="v", kind="model", purchase=M.fit_purchase_model(table, seed=1, smote=False, kinds=("hgb",)),
                           spend=M.fit_spend_model(table, seed=1))
    X = scoring_frame(table)
    with threadpool_limits(limits=1, user_api="openmp"):
        one = bundle.predict(X)
    with threadpool_limits(limits=2, user_api="openmp"):
        two = bundle.predict(X)
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[1], two[1])
