"""Features per customer shard give the very frame one pass over the whole history gives, and a
run whose features step is sharded (the DAG's feature_stats / feature_part / features) publishes
the very predictions of an unsharded run."""

from __future__ import annotations

import hashlib
import json
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from purchasing_power.clean import clean_frame
from purchasing_power.demo.generator import generate_demo_transactions
from purchasing_power.demo.reviews import generate_demo_reviews
from purchasing_power.errors import MissingInput
from purchasing_power.featureplan import ShardStats, plan_features
from purchasing_power.features import build_features, prepare_lines, shard_stats
from purchasing_power.shards import customer_sample, shard_of
from purchasing_power.storage import Storage
from purchasing_power.usertext import clean_texts_frame, normalise_text_dtypes

AS_OF = (date(2024, 6, 30), date(2024, 12, 31))


def _lookup(texts: list[str]) -> np.ndarray:
    return np.array([[len(t), sum(map(ord, t)) % 97, t.count("A"), t.count(" ")] for t in texts], dtype=np.float64)


@pytest.fixture(scope="module")
def demo() -> tuple[pd.DataFrame, pd.DataFrame]:
    raw = generate_demo_transactions(n_customers=600, seed=11)
    tx, _ = clean_frame(raw)
    texts, _, _ = clean_texts_frame(normalise_text_dtypes(generate_demo_reviews(raw, seed=11)))
    return tx, texts


@pytest.mark.parametrize("shards", [2, 3, 8])
def test_any_number_of_shards_gives_the_same_features(demo, shards):
    tx, texts = demo
    for as_of in AS_OF:
        whole = build_features(tx, as_of, _lookup, user_texts=(texts, _lookup))
        sharded = build_features(tx, as_of, _lookup, user_texts=(texts, _lookup), shards=shards)
        assert len(whole) > 300 and whole.shape[1] > 80
        assert any(c.startswith("txt_") for c in whole) and whole.filter(like="utxt_").abs().sum().sum() > 0
        pd.testing.assert_frame_equal(sharded, whole, check_exact=True)


def test_embedding_blocks_are_float32_and_exact(demo):
    """Embedding means are stored as float32 (what they are rounded to when made: nothing is
    lost), every other feature as float64; a shard whose customers have no text leaves the
    joined block float32 too."""
    tx, texts = demo
    f = build_features(tx, AS_OF[1], _lookup, user_texts=(texts, _lookup), shards=3)
    blocks = [c for c in f.columns if c.startswith(("txt_", "utxt_"))]
    assert blocks and {str(f[c].dtype) for c in blocks} == {"float32"}
    assert {str(t) for c, t in f.dtypes.items() if c not in blocks} == {"float64"}
    # the float64 mean of the lines' vectors, rounded once to float32
    one = f.index[0]
    sales = tx[(tx["customer_id"] == one) & ~tx["is_cancellation"] & (tx["invoice_ts"] < pd.Timestamp(AS_OF[1]) + pd.Timedelta(days=1))]
    expected = _lookup(sales["description"].tolist()).mean(axis=0).astype(np.float32)
    np.testing.assert_array_equal(f.loc[one, [f"txt_{i:03d}" for i in range(4)]].to_numpy(dtype=np.float32), expected)
    no_text = tx.assign(description=np.where(shard_of(tx["customer_id"].to_numpy(), 3) == 0, "", tx["description"]))
    g = build_features(no_text, AS_OF[1], _lookup, shards=3)
    assert {str(g[c].dtype) for c in g.columns if c.startswith("txt_")} == {"float32"}
    assert g.loc[shard_of(g.index.to_numpy(), 3) == 0, "txt_000"].isna().all()


def test_text_ids_and_more_shards_than_customers(demo):
    tx, _ = demo
    few = tx[tx["customer_id"].isin(tx["customer_id"].drop_duplicates().iloc[:5])]
    spelled = few.assign(customer_id="c-" + few["customer_id"].astype(str))
    for frame in (few, spelled):
        whole = build_features(frame, AS_OF[1], _lookup)
        assert len(whole) == 5
        pd.testing.assert_frame_equal(build_features(frame, AS_OF[1], _lookup, shards=16), whole, check_exact=True)


def test_a_snapshot_wide_quantity_really_comes_from_every_shard(demo):
    """Computing a shard's features under its own plan (not every shard's) changes them: the
    plan is what makes the parts agree, and the test above would catch a shard ignoring it."""
    tx, _ = demo
    buckets = shard_of(tx["customer_id"].to_numpy(), 3)
    lines = prepare_lines(tx[buckets == 0].reset_index(drop=True), AS_OF[1])
    own = plan_features(AS_OF[1], [shard_stats(lines)])
    every = plan_features(AS_OF[1], [shard_stats(prepare_lines(tx[buckets == k].reset_index(drop=True), AS_OF[1])) for k in range(3)])
    assert own.customers < every.customers and not own.popularity.equals(every.popularity)


def test_shard_stats_survive_the_trip_through_storage(demo, tmp_path):
    tx, _ = demo
    stats = shard_stats(prepare_lines(tx, AS_OF[0]))
    store = Storage.at(str(tmp_path))
    stats.write(store, lambda part: str(tmp_path / f"{part}.parquet"))
    back = ShardStats.read(store, lambda part: str(tmp_path / f"{part}.parquet"))
    assert back.customers == stats.customers and back.again_n == stats.again_n and back.again_sum == stats.again_sum
    assert back.history_start == stats.history_start
    pd.testing.assert_frame_equal(back.products, stats.products)
    pd.testing.assert_series_equal(back.country_lines, stats.country_lines, check_names=False)
    pd.testing.assert_frame_equal(back.summary, stats.summary)
    a, b = plan_features(AS_OF[0], [stats]), plan_features(AS_OF[0], [back])
    assert (a.main_country, a.repurchase_prior) == (b.main_country, b.repurchase_prior)
    pd.testing.assert_series_equal(a.product_repurchase, b.product_repurchase)


# -- a whole run ----------------------------------------------------------------------------------
DAY = date(2024, 3, 20)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> str:
    from purchasing_power.demo import write_demo_source

    path = tmp_path_factory.mktemp("src") / "transactions.parquet"
    return write_demo_source(str(path), n_customers=150, start=date(2023, 6, 1), end=date(2024, 3, 31), seed=3)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_sharded_run_publishes_the_predictions_of_an_unsharded_one(tmp_path, source, monkeypatch):
    from purchasing_power.pipeline import run_all, run_stage

    params = {"source": source}
    runs = {}
    for name, shards in (("one", 1), ("three", 3)):
        monkeypatch.setenv("PURCHASING_POWER_STORAGE", str(tmp_path / name))
        runs[name] = run_all(params, DAY, overrides={"use_text": False, "feature_shards": shards})
    three = runs["three"]
    assert {f"{step}-{k:03d}" for step in ("feature_stats", "feature_part", "score_part") for k in range(3)} <= set(three)
    assert json.loads(Path(three["score"]).read_text())["score_shards"] == 3
    assert sum(json.loads(Path(three[f"score_part-{k:03d}"]).read_text())["customers"] for k in range(3)) == \
        json.loads(Path(three["score"]).read_text())["customers_scored"]
    assert json.loads(Path(three["features"]).read_text())["feature_shards"] == 3
    assert sum(json.loads(Path(three[f"feature_part-{k:03d}"]).read_text())["customers"] for k in range(3)) == \
        json.loads(Path(three["features"]).read_text())["customers"]
    one_dir, three_dir = tmp_path / "one", tmp_path / "three"
    for rel in (f"predictions/ds={DAY}/predictions.parquet",):
        assert _sha(one_dir / rel) == _sha(three_dir / rel), rel
    day_features = sorted(three_dir.glob(f"sources/*/features/ds={DAY}/features-*.parquet"))
    assert len(day_features) == 1
    assert _sha(day_features[0]) == _sha(next(one_dir.glob(f"sources/*/features/ds={DAY}/features-*.parquet")))
    assert not list(three_dir.glob("sources/*/feature_shards/*/*.parquet")), "the parts are removed once joined"
    assert not list(three_dir.glob("sources/*/score_shards/*/*.parquet")), "the score parts are removed once joined"

    # the join without the shards' parts says which tasks to clear
    monkeypatch.setenv("PURCHASING_POWER_STORAGE", str(three_dir))
    with pytest.raises(MissingInput, match="clear the day's feature_stats tasks"):
        run_stage("features", {**params, "day": DAY.isoformat()}, overrides={"use_text": False, "feature_shards": 3}, combine=True)


def test_sharded_score_joins_only_complete_parts_of_the_deployed_model(tmp_path, source, monkeypatch):
    """score (the join) names the score_part tasks to clear when a shard's part is missing or was
    made with another model than the one deployed; a rerun of the parts and the join stages the
    same bytes."""
    from purchasing_power.pipeline import run_all, run_score_shard, run_stage

    params, over = {"source": source}, {"use_text": False, "feature_shards": 3}
    monkeypatch.setenv("PURCHASING_POWER_STORAGE", str(tmp_path / "s"))
    out = run_all(params, DAY, overrides=over)
    staged = Path(json.loads(Path(out["score"]).read_text())["scores_path"])
    before = _sha(staged)
    day = {**params, "day": DAY.isoformat()}
    with pytest.raises(MissingInput, match=r"no scores of shard\(s\) \[0, 1, 2\] .* clear the day's score_part tasks"):
        run_stage("score", day, overrides=over, combine=True)
    reports = [json.loads(Path(run_score_shard(k, day, overrides=over)).read_text()) for k in range(3)]
    scored = Path(reports[1]["paths"]["scored"])
    part = pd.read_parquet(scored)
    pd.concat([part.assign(model_version="pp-20990101-old")]).to_parquet(scored, index=False)
    with pytest.raises(MissingInput, match="made with model pp-20990101-old.* clear the day's score_part tasks"):
        run_stage("score", day, overrides=over, combine=True)
    run_score_shard(1, day, overrides=over)
    run_stage("score", day, overrides=over, combine=True)
    assert _sha(staged) == before


def test_feature_part_reads_the_lines_its_feature_stats_handed_on(tmp_path, source, monkeypatch):
    """feature_stats stores its shard's rows once; feature_part reads that file, not the clean
    partitions (removing them changes nothing), and without it names the task to clear."""
    import shutil

    from purchasing_power.pipeline import run_all, run_feature_shard, run_stage

    params = {"source": source}
    over = {"use_text": False, "feature_shards": 2}
    monkeypatch.setenv("PURCHASING_POWER_STORAGE", str(tmp_path / "s"))
    run_all(params, DAY, overrides=over)
    [stored] = (tmp_path / "s").glob(f"sources/*/features/ds={DAY}/features-*.parquet")
    before = _sha(stored)
    day = {**params, "day": DAY.isoformat()}
    for k in range(2):
        run_feature_shard("feature_stats", k, day, overrides=over)
    lines = sorted((tmp_path / "s").glob(f"sources/*/feature_shards/ds={DAY}/*-lines.parquet"))
    assert len(lines) == 2
    [clean] = (tmp_path / "s").glob("sources/*/clean")
    shutil.move(str(clean), str(tmp_path / "clean-aside"))  # feature_part must not need the partitions
    for k in range(2):
        run_feature_shard("feature_part", k, day, overrides=over)
    run_stage("features", day, overrides=over, combine=True)
    assert _sha(stored) == before
    assert not any(p.exists() for p in lines), "the handed-on lines are removed once joined"

    shutil.move(str(tmp_path / "clean-aside"), str(clean))
    run_feature_shard("feature_stats", 0, day, overrides=over)
    run_feature_shard("feature_stats", 1, day, overrides=over)
    lines[1].unlink()
    with pytest.raises(MissingInput, match="no lines of shard 1 .* clear the day's feature_stats tasks"):
        run_feature_shard("feature_part", 1, day, overrides=over)


@pytest.mark.parametrize("shards", [1, 3])
def test_features_of_a_sample_are_the_full_frames_rows(demo, shards):
    """Training on a sample computes only the sampled customers' features; each row equals the
    full frame's (plan, percentile ranks and BG/NBD still from every customer)."""
    tx, texts = demo
    full = build_features(tx, AS_OF[0], _lookup, user_texts=(texts, _lookup))
    part = build_features(tx, AS_OF[0], _lookup, user_texts=(texts, _lookup), shards=shards,
                          sample=lambda ids: customer_sample(ids, 0.25, seed=5))
    assert 0 < len(part) < len(full) / 2
    pd.testing.assert_frame_equal(part, full.loc[part.index], check_exact=True)
    within = part["recency_days"].rank(pct=True, method="average")
    assert not np.allclose(part["recency_days_pct"], within)  # ranked among everyone, not the sample


def test_training_samples_are_stored_reused_and_nested(tmp_path, source, monkeypatch):
    from datetime import timedelta

    from purchasing_power import history
    from purchasing_power.history import RunData
    from purchasing_power.pipeline import run_stage, settings_for

    monkeypatch.setenv("PURCHASING_POWER_STORAGE", str(tmp_path))
    params, over = {"source": source, "day": DAY.isoformat()}, {"use_text": False}
    for stage in ("extract", "clean"):
        run_stage(stage, params, overrides=over)
    settings = settings_for(params, over)
    snap = DAY - timedelta(days=60)
    data = RunData.load(settings, DAY)
    quarter = data.sampled_features(snap, 2)
    sample_file, full_file = Path(data.sample_path(snap, 2)), Path(data.feature_path(snap))
    assert sample_file.exists() and not full_file.exists()  # a sample is not stored as the snapshot's features
    full = RunData.load(settings, DAY).features(snap, keep=False)
    assert 0 < len(quarter) < len(full) / 2
    pd.testing.assert_frame_equal(quarter, full.loc[quarter.index], check_exact=True)
    assert RunData.load(settings, DAY).customers_as_of(snap) == len(full)
    full_file.unlink()
    assert RunData.load(settings, DAY).customers_as_of(snap) == len(full)  # counted from the history

    def no_compute(*args, **kwargs):
        raise AssertionError("computed again instead of reading the stored sample")

    monkeypatch.setattr(history, "build_features", no_compute)
    eighth = RunData.load(settings, DAY).sampled_features(snap, 3)  # served by the stored quarter
    assert set(eighth.index) <= set(quarter.index) and 0 < len(eighth) < len(quarter)
    pd.testing.assert_frame_equal(eighth, full.loc[eighth.index], check_exact=True)
    assert not Path(data.sample_path(snap, 3)).exists()


def test_snapshot_features_in_one_process_hold_one_shard_at_a_time(tmp_path, source, monkeypatch):
    """With feature_shards > 1 a stage's own snapshot features (train, evaluate) read the history
    one shard at a time from a spool of local files (made once), never as a whole, and give the
    very frames (full and sampled) of an unsharded build; the spool goes with the run's data."""
    import gc
    from datetime import timedelta

    from purchasing_power.history import RunData
    from purchasing_power.pipeline import run_stage, settings_for

    monkeypatch.setenv("PURCHASING_POWER_STORAGE", str(tmp_path / "s"))
    params, over = {"source": source, "day": DAY.isoformat()}, {"use_text": False}
    for stage in ("extract", "clean"):
        run_stage(stage, params, overrides=over)
    snap = DAY - timedelta(days=45)
    one = settings_for(params, over)
    monkeypatch.setenv("PURCHASING_POWER_STORAGE", str(tmp_path / "s"))
    want = RunData.load(one, DAY).features(snap, keep=False)
    want_sample = RunData.load(one, DAY).sampled_features(snap - timedelta(days=14), 1)
    for path in (tmp_path / "s").glob("sources/*/features/*/*.parquet"):
        path.unlink()

    three = settings_for(params, {**over, "feature_shards": 3})
    data = RunData.load(three, DAY)
    data.feature_history = lambda: pytest.fail("the whole history was loaded")  # type: ignore[method-assign]
    got = data.features(snap, keep=False)
    spool = data._spool
    got_sample = data.sampled_features(snap - timedelta(days=14), 1)
    assert data._spool is spool, "the history is split once per run"
    del spool
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    pd.testing.assert_frame_equal(got_sample, want_sample, check_exact=True)
    assert 0 < len(got_sample) < len(got)
    folder = Path(data._spool._folder.name)
    assert sorted(p.name for p in folder.glob("compact-*.parquet")) == [f"compact-{k}.parquet" for k in range(3)]
    assert not list(folder.glob("shard=*/*")), "the split files go once each shard is compacted"
    data.release_histories()  # memory only: the spool stays for the next snapshots
    assert folder.exists()
    del data
    gc.collect()
    assert not folder.exists()


def test_the_spool_gives_each_shards_compact_rows_texts_included(tmp_path, source, monkeypatch):
    """ShardSpool.read(k) holds the rows shard_history(k) reads from the partitions, in the same
    order, with the same texts behind the codes and the description (product text on)."""
    from purchasing_power.compact import CODE_VALUES, CODED
    from purchasing_power.history import RunData, ShardSpool, load_clean_history
    from purchasing_power.pipeline import run_stage, settings_for
    from purchasing_power.storage import Workspace

    monkeypatch.setenv("PURCHASING_POWER_STORAGE", str(tmp_path / "s"))
    params, over = {"source": source, "day": DAY.isoformat()}, {"use_text": False}
    for stage in ("extract", "clean"):
        run_stage(stage, params, overrides=over)
    settings = settings_for(params, {"use_text": True, "feature_shards": 3})
    data = RunData(settings=settings, day=DAY, ws=Workspace.for_settings(settings), feature_key="test")
    spool = ShardSpool(data)
    total = 0
    for k in range(3):
        got, want = spool.read(k), data.shard_history(k)
        assert list(got.columns) == list(want.columns) and len(got) == len(want) > 0
        for c in got.columns:
            if c in CODED:
                texts = [np.asarray(f.attrs[CODE_VALUES][c], dtype=object)[np.nan_to_num(f[c].to_numpy(dtype=float), nan=-1).astype(int)]
                         for f in (got, want)]
                missing = [f[c].isna().to_numpy() for f in (got, want)]
                assert (missing[0] == missing[1]).all() and (texts[0][~missing[0]] == texts[1][~missing[1]]).all(), c
            elif c == "description":
                assert isinstance(got[c].dtype, pd.CategoricalDtype)
                assert got[c].astype(object).equals(want[c].astype(object))
            else:
                assert got[c].equals(want[c]), c
        total += len(got)
    assert total == len(load_clean_history(settings, DAY))
