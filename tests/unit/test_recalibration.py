"""Score-time recalibration: which closed windows are used, and their outcomes."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from purchasing_power import model as M
from purchasing_power.score import recalibrated
from purchasing_power.settings import Settings
from test_model import make_table, scoring_frame

DAY = date(2011, 6, 30)


@dataclass
class FakeContext:
    """What ``recalibrated`` reads of a Context: settings, the first day, features, history."""

    settings: Settings
    tx: pd.DataFrame
    first_day: date = date(2010, 12, 1)
    asked: list[date] = field(default_factory=list)

    def history_since(self, since: date) -> pd.DataFrame:
        self.since = since
        return self.tx[self.tx["invoice_ts"] >= pd.Timestamp(since)]

    def features(self, as_of: date) -> pd.DataFrame:
        self.asked.append(as_of)
        return scoring_frame(make_table(n=400, seed=as_of.toordinal() % 1000))


def history(buyers: dict[date, list[int]]) -> pd.DataFrame:
    """One sale line for each buyer, ten days after each as-of day."""
    rows = [
        {"customer_id": c, "invoice_ts": pd.Timestamp(d) + pd.Timedelta(days=10), "line_value": 5.0}
        for d, ids in buyers.items()
        for c in ids
    ]
    return pd.DataFrame(rows, columns=["customer_id", "invoice_ts", "line_value"])


@pytest.fixture(scope="module")
def bundle() -> M.ModelBundle:
    m = M.fit_purchase_model(make_table(seed=8), seed=1, smote=False)
    m.selection["calibration_snapshot"] = "2011-04-03"
    return M.ModelBundle(version="pp-test", kind="model", purchase=m)


def test_latest_closed_windows_and_their_outcomes(bundle):
    d30, d44 = DAY - timedelta(days=30), DAY - timedelta(days=44)
    ids = np.arange(1000, 1400)
    ctx = FakeContext(Settings(), history({d30: list(ids[:40]), d44: list(ids[:200])}))
    out, info = recalibrated(ctx, bundle, DAY)
    assert ctx.asked == [d30, d44]  # D - h, D - h - snapshot_step_days
    assert ctx.since == d44 + timedelta(days=1)  # outcomes are read from after the oldest as-of day
    assert info["applied"] and info["snapshots"] == [d30.isoformat(), d44.isoformat()]
    assert info["rows"] == 800 and info["purchase_rate"] == pytest.approx(240 / 800)
    X = scoring_frame(make_table(n=400, seed=5))
    p_fit, p_new = bundle.purchase.predict_proba(X), out.purchase.predict_proba(X)
    assert np.array_equal(np.argsort(p_fit, kind="stable"), np.argsort(p_new, kind="stable"))
    assert not np.allclose(p_fit, p_new)
    assert out.version == bundle.version and out.spend is bundle.spend


def test_windows_the_fit_may_have_trained_on_are_not_used(bundle):
    ids = list(range(1000, 1100))
    ctx = FakeContext(Settings(), history({DAY - timedelta(days=30): ids}))
    late = replace(bundle, purchase=replace(bundle.purchase, selection=bundle.purchase.selection | {"calibration_snapshot": (DAY - timedelta(days=35)).isoformat()}))
    _, info = recalibrated(ctx, late, DAY)
    assert info["snapshots"] == [(DAY - timedelta(days=30)).isoformat()]
    too_late = replace(bundle, purchase=replace(bundle.purchase, selection=bundle.purchase.selection | {"calibration_snapshot": (DAY - timedelta(days=20)).isoformat()}))
    same, info = recalibrated(ctx, too_late, DAY)
    assert same is too_late and info["applied"] is False and "no closed window" in info["reason"]


def test_baseline_bundle_and_switched_off_are_left_alone(bundle):
    ctx = FakeContext(Settings(recalibration_windows=0), history({}))
    assert recalibrated(ctx, bundle, DAY) == (bundle, None)
    base = M.ModelBundle(version="bgnbd", kind="baseline")
    assert recalibrated(FakeContext(Settings(), history({})), base, DAY) == (base, None)
    assert ctx.asked == []


def test_negative_window_count_is_refused():
    with pytest.raises(ValueError, match="recalibration_windows"):
        Settings().with_overrides(recalibration_windows="-1")


@dataclass
class ShardedContext(FakeContext):
    """FakeContext whose stored features can also be read one customer shard at a time."""

    def stored_features_shard(self, as_of: date, shard: int, shards: int) -> pd.DataFrame:
        from purchasing_power.shards import shard_of

        f = scoring_frame(make_table(n=400, seed=as_of.toordinal() % 1000))
        return f[shard_of(f.index.to_numpy(), shards) == shard]


@pytest.mark.parametrize("shards", [3, 7])
def test_shards_of_the_scores_give_the_predictions_and_calibration_of_one_pass(bundle, shards):
    """score_part's pieces (each shard's raw scores, spend and window rows, joined by score) give
    the very predictions and recalibration of one pass over every customer, with a fitted
    purchase model whose calibration is refitted."""
    from purchasing_power.score import finish_scores, shard_scores

    spend = M.fit_spend_model(make_table(seed=9), seed=1)
    full = replace(bundle, spend=spend)
    d30, d44 = DAY - timedelta(days=30), DAY - timedelta(days=44)
    ids = np.arange(1000, 1400)
    buyers = history({d30: list(ids[::7]), d44: list(ids[:150])})
    one = ShardedContext(Settings(), buyers)
    scored, windows = shard_scores(one, full, DAY)
    want, want_bundle, want_info = finish_scores(one, full, DAY, [scored], [windows])
    assert want_info["applied"] and want_info["rows"] == 800 and len(want) == 400

    ctx = ShardedContext(Settings(), buyers)
    parts = [shard_scores(ctx, full, DAY, k, shards) for k in range(shards)]
    assert sum(len(p[0]) for p in parts) == 400 and all(len(p[0]) < 400 for p in parts)
    got, got_bundle, got_info = finish_scores(ctx, full, DAY, [p[0] for p in reversed(parts)], [p[1] for p in reversed(parts)])
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    assert got_info == want_info and got_bundle.purchase.calibrator == want_bundle.purchase.calibrator
    p_direct, s_direct = want_bundle.predict(ctx.features(DAY))  # what one call of predict gives
    np.testing.assert_array_equal(got["p_purchase_30d"].to_numpy(), p_direct)
    np.testing.assert_array_equal(got["expected_spend_90d"].to_numpy(), s_direct)
