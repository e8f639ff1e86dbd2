"""The feature lookback: features as of D with a lookback of L days are the features of the
history cut at D + 1 - L (lines and user texts), whatever the number of shards or the sample;
the day's features stage reads only the clean partitions of its lookback; the lookback is part
of the key stored features and models are kept under."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from purchasing_power.clean import clean_frame
from purchasing_power.demo.generator import generate_demo_transactions
from purchasing_power.demo.reviews import generate_demo_reviews
from purchasing_power.features import build_features, lookback_since
from purchasing_power.settings import DEFAULT_FEATURE_LOOKBACK_DAYS, Settings
from purchasing_power.shards import customer_sample
from purchasing_power.usertext import clean_texts_frame, normalise_text_dtypes

AS_OF = date(2024, 12, 31)


def _lookup(texts: list[str]) -> np.ndarray:
    return np.array([[len(t), sum(map(ord, t)) % 97, t.count("A"), t.count(" ")] for t in texts], dtype=np.float64)


@pytest.fixture(scope="module")
def demo() -> tuple[pd.DataFrame, pd.DataFrame]:
    raw = generate_demo_transactions(n_customers=500, seed=5)  # two years: 2023-01-01 .. 2024-12-31
    tx, _ = clean_frame(raw)
    texts, _, _ = clean_texts_frame(normalise_text_dtypes(generate_demo_reviews(raw, seed=5)))
    return tx, texts


def test_lookback_since_names_the_first_day_read():
    assert lookback_since(AS_OF, 365) == date(2024, 1, 2)  # 365 days, the as-of day the last
    assert lookback_since(AS_OF, 1) == AS_OF
    assert lookback_since(AS_OF, 0) is None


@pytest.mark.parametrize("shards", [1, 3])
def test_lookback_gives_the_features_of_the_history_cut_at_its_start(demo, shards):
    tx, texts = demo
    start = pd.Timestamp(lookback_since(AS_OF, 365))
    got = build_features(tx, AS_OF, _lookup, user_texts=(texts, _lookup), shards=shards, lookback=365)
    cut = build_features(tx[tx["invoice_ts"] >= start], AS_OF, _lookup,
                         user_texts=(texts[texts["text_ts"] >= start], _lookup), shards=shards)
    pd.testing.assert_frame_equal(got, cut, check_exact=True)

    whole = build_features(tx, AS_OF, _lookup, user_texts=(texts, _lookup), shards=shards)
    assert set(got.index) < set(whole.index), "customers without a sale line in the lookback have no row"
    assert got["history_days"].max() <= 365 and (whole["history_days"] > 700).all()
    assert (got["tenure_days"] <= 365).all() and whole["tenure_days"].max() > 365
    shared = got.index
    assert not np.allclose(got["spend_total"], whole.loc[shared, "spend_total"])  # lifetime sums are cut
    pd.testing.assert_series_equal(got["spend_365d"], whole.loc[shared, "spend_365d"])  # windows within it are not


def test_lookback_cuts_user_texts_too(demo):
    tx, texts = demo
    start = pd.Timestamp(lookback_since(AS_OF, 365))
    assert (texts["text_ts"] < start).any()
    got = build_features(tx, AS_OF, user_texts=(texts, None), lookback=365)
    uncut = build_features(tx[tx["invoice_ts"] >= start], AS_OF, user_texts=(texts, None))
    assert (got["user_texts_n"] <= uncut.loc[got.index, "user_texts_n"]).all()
    assert (got["user_texts_n"] < uncut.loc[got.index, "user_texts_n"]).any()


def test_the_lookback_boundary_is_exact(demo):
    """A sale at the first instant of the lookback counts; one a second before does not."""
    tx, _ = demo
    start = pd.Timestamp(lookback_since(AS_OF, 400))
    template = tx[~tx["is_cancellation"]].iloc[[0]]
    new = pd.concat([template.assign(customer_id=np.asarray([900001], dtype=tx["customer_id"].dtype), invoice_ts=start,
                                     invoice_no="X1"),
                     template.assign(customer_id=np.asarray([900002], dtype=tx["customer_id"].dtype),
                                     invoice_ts=start - pd.Timedelta(seconds=1), invoice_no="X2")])
    f = build_features(pd.concat([tx, new], ignore_index=True), AS_OF, lookback=400)
    assert 900001 in f.index and 900002 not in f.index
    assert f.loc[900001, "recency_days"] == pytest.approx(400.0)


def test_a_lookback_longer_than_the_history_changes_nothing(demo):
    tx, texts = demo
    whole = build_features(tx, AS_OF, _lookup, user_texts=(texts, _lookup))
    assert DEFAULT_FEATURE_LOOKBACK_DAYS > (AS_OF - tx["invoice_ts"].min().date()).days
    got = build_features(tx, AS_OF, _lookup, user_texts=(texts, _lookup), lookback=DEFAULT_FEATURE_LOOKBACK_DAYS)
    pd.testing.assert_frame_equal(got, whole, check_exact=True)


def test_a_samples_rows_are_the_lookback_frames_rows(demo):
    tx, _ = demo
    full = build_features(tx, AS_OF, lookback=365, shards=2)
    half = build_features(tx, AS_OF, lookback=365, shards=2, sample=lambda ids: customer_sample(ids, 0.5, 42))
    assert 0 < len(half) < len(full)
    pd.testing.assert_frame_equal(half, full.loc[half.index], check_exact=True)


def test_lookback_setting_is_validated_and_read_from_the_environment():
    assert Settings().feature_lookback_days == DEFAULT_FEATURE_LOOKBACK_DAYS
    assert Settings().with_overrides(feature_lookback_days=0).feature_lookback_days == 0
    assert Settings().with_overrides(feature_lookback_days="730").feature_lookback_days == 730
    for bad in (364, -1):
        with pytest.raises(ValueError, match="feature_lookback_days must be 0 .* at least 365"):
            Settings().with_overrides(feature_lookback_days=bad)
    env = {"PURCHASING_POWER_STORAGE": "/tmp/x", "PURCHASING_POWER_FEATURE_LOOKBACK_DAYS": " 500 "}
    assert Settings.from_env(env).feature_lookback_days == 500
    with pytest.raises(ValueError, match="feature_lookback_days must be an integer"):
        Settings.from_env({**env, "PURCHASING_POWER_FEATURE_LOOKBACK_DAYS": "a year"})


def test_the_lookback_is_part_of_the_feature_key():
    from purchasing_power.history import feature_key

    base = Settings(storage="/tmp/x").with_overrides(use_text=False, use_user_text=False)
    assert feature_key(base) == f"notext-lb{DEFAULT_FEATURE_LOOKBACK_DAYS}"
    assert feature_key(base.with_overrides(feature_lookback_days=400)) == "notext-lb400"
    assert feature_key(base.with_overrides(feature_lookback_days=0)) == "notext"


DAY = date(2024, 3, 20)


@pytest.fixture(scope="module")
def long_source(tmp_path_factory) -> str:
    from purchasing_power.demo import write_demo_source

    path = tmp_path_factory.mktemp("src") / "transactions.parquet"
    return write_demo_source(str(path), n_customers=120, start=date(2022, 10, 1), end=date(2024, 3, 31), seed=4)


def test_the_days_features_read_only_the_partitions_of_the_lookback(tmp_path, long_source, monkeypatch):
    """The features stage (one task, and the sharded feature_stats / feature_part / features)
    gives the frame built from every partition, with the partitions before the lookback
    unreadable: it never opens them."""
    from purchasing_power.history import RunData
    from purchasing_power.pipeline import run_feature_shard, run_stage, settings_for

    monkeypatch.setenv("PURCHASING_POWER_STORAGE", str(tmp_path / "s"))
    params, over = {"source": long_source, "day": DAY.isoformat()}, {"use_text": False, "feature_lookback_days": 365}
    for stage in ("extract", "clean"):
        run_stage(stage, params, overrides=over)
    settings = settings_for(params, over)
    want = RunData.load(settings, DAY).features(DAY, keep=False)  # every partition read, lines cut in memory
    for path in (tmp_path / "s").glob("sources/*/features/*/*.parquet"):
        path.unlink()
    assert RunData.load(settings, DAY).customers_as_of(DAY) == len(want)  # counted from the light history
    assert RunData.load(settings.with_overrides(feature_lookback_days=0), DAY).customers_as_of(DAY) > len(want)

    since = lookback_since(DAY, 365)
    old = [p for p in (tmp_path / "s").glob("sources/*/clean/ds=*/clean.parquet")
           if date.fromisoformat(p.parent.name.removeprefix("ds=")) < since]
    assert len(old) > 100
    for path in old:
        path.write_bytes(b"not parquet")
    with pytest.raises(Exception):  # noqa: B017 - the whole history can no longer be read
        RunData.load(settings, DAY).features(DAY, keep=False)

    def stored() -> pd.DataFrame:
        [path] = (tmp_path / "s").glob(f"sources/*/features/ds={DAY}/features-*-lb365.parquet")
        return pd.read_parquet(path).set_index("customer_id")

    for shards in (1, 3):
        run_stage("features", params, overrides={**over, "feature_shards": shards})
        pd.testing.assert_frame_equal(stored(), want, check_exact=True)
    sharded = {**over, "feature_shards": 3}
    for step in ("feature_stats", "feature_part"):
        for k in range(3):
            run_feature_shard(step, k, params, overrides=sharded)
    run_stage("features", params, overrides=sharded, combine=True)
    pd.testing.assert_frame_equal(stored(), want, check_exact=True)
    assert Path(RunData.load(settings, DAY).feature_path(DAY)).name.endswith("-lb365.parquet")
    with pytest.raises(ValueError, match="snapshots from 2024-03-20 on"):  # a run that pruned cannot go further back
        RunData.load(settings, DAY, snapshots_from=DAY).features(DAY - timedelta(days=1))
    assert (DAY - timedelta(days=364)) == since
