"""Customer shards: a stable bucket per id, and reading one bucket's rows of daily files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from purchasing_power.shards import read_shard, shard_of, spool_shards
from purchasing_power.storage import Storage


def test_buckets_are_pinned_for_integer_and_text_ids():
    # fixed here on purpose: a library upgrade that moved customers between shards must fail
    ints = shard_of(np.array([0, 1, 12346, 17850, 10**12], dtype=np.int64), 8)
    texts = shard_of(np.array(["C-0001", "alice@example.com", "17850", "Ünïcode"], dtype=object), 8)
    assert ints.tolist() == PINNED_INTS
    assert texts.tolist() == PINNED_TEXTS


PINNED_INTS = [0, 5, 7, 6, 7]
PINNED_TEXTS = [7, 1, 7, 5]


def test_same_id_same_bucket_whatever_the_container_and_order():
    ids = np.arange(5000, dtype=np.int64)
    b = shard_of(ids, 7)
    assert b.dtype == np.int64 and b.min() >= 0 and b.max() < 7
    perm = np.random.default_rng(0).permutation(len(ids))
    assert (shard_of(ids[perm], 7) == b[perm]).all()
    assert (shard_of(pd.Series(ids), 7) == b).all() and (shard_of(pd.Index(ids), 7) == b).all()
    assert (shard_of(ids.astype(np.int32), 7) == b).all(), "int32 and int64 ids hash alike"
    # every bucket gets a fair share
    counts = np.bincount(b, minlength=7)
    assert counts.min() > 0.8 * len(ids) / 7 and counts.max() < 1.2 * len(ids) / 7, counts


def test_one_shard_is_everyone_and_bad_input_is_refused():
    assert (shard_of(np.array(["a", "b"], dtype=object), 1) == 0).all()
    with pytest.raises(ValueError, match="within 1..256"):
        shard_of(np.array([1]), 0)
    with pytest.raises(ValueError, match="float"):
        shard_of(np.array([1.0, 2.0]), 4)
    with pytest.raises(ValueError, match="missing"):
        shard_of(np.array(["a", None], dtype=object), 4)


@pytest.mark.parametrize("text_ids", [False, True])
def test_read_shard_keeps_each_shards_rows_in_order_and_loses_none(tmp_path, text_ids):
    rng = np.random.default_rng(1)
    store = Storage.at(str(tmp_path))
    paths, frames = [], []
    for i in range(5):
        ids = rng.integers(1, 300, 400)
        df = pd.DataFrame({"customer_id": ids.astype(str).astype(object) if text_ids else ids, "row": np.arange(400) + 1000 * i,
                           "stock_code": rng.choice(["A", "B", "C"], 400)})
        path = str(tmp_path / f"day{i}.parquet")
        df.to_parquet(path, index=False)
        paths.append(path)
        frames.append(df)
    whole = pd.concat(frames, ignore_index=True)
    got = [read_shard(store, paths, k, 4, columns=["row", "stock_code"], dictionary=["stock_code"]) for k in range(4)]
    buckets = shard_of(whole["customer_id"].to_numpy(), 4)
    for k, part in enumerate(got):
        assert list(part.columns) == ["row", "stock_code"]
        assert part["row"].tolist() == whole["row"][buckets == k].tolist(), "a shard's rows, in file and row order"
        assert isinstance(part["stock_code"].dtype, pd.CategoricalDtype)
    assert sum(len(p) for p in got) == len(whole)
    with pytest.raises(ValueError, match="shard must be within 0..3"):
        read_shard(store, paths, 4, 4)


def test_spooled_shards_hold_read_shards_rows_in_order(tmp_path):
    """One pass splits daily files into per-shard files (a few input files at a time): reading
    a shard's files gives what read_shard gives, every row once, columns as asked."""
    rng = np.random.default_rng(2)
    store = Storage.at(str(tmp_path))
    paths = []
    for i in range(5):
        ids = rng.integers(1, 300, 400 if i != 2 else 0)  # an empty day too
        path = str(tmp_path / f"day{i}.parquet")
        pd.DataFrame({"customer_id": ids, "row": np.arange(len(ids)) + 1000 * i,
                      "stock_code": rng.choice(["A", "B", "C"], len(ids))}).to_parquet(path, index=False)
        paths.append(path)
    files = spool_shards(store, paths, 4, str(tmp_path / "spool"), columns=["customer_id", "row"], files_per_chunk=2)
    assert [len(f) for f in files] == [3, 3, 3, 3], "one file per shard and chunk of input files"
    total = 0
    for k, shard_files in enumerate(files):
        got = pd.concat([pd.read_parquet(f) for f in shard_files], ignore_index=True)
        want = read_shard(store, paths, k, 4, columns=["customer_id", "row"])
        pd.testing.assert_frame_equal(got, want)
        total += len(got)
    assert total == 1600
    with pytest.raises(ValueError, match="no files"):
        spool_shards(store, [], 4, str(tmp_path / "none"))


def test_the_setting_comes_from_the_environment_and_is_validated():
    from purchasing_power.settings import Settings, feature_shards_from_env

    assert Settings.from_env({"PURCHASING_POWER_FEATURE_SHARDS": "4"}).feature_shards == 4
    assert feature_shards_from_env({}) == 1 and feature_shards_from_env({"PURCHASING_POWER_FEATURE_SHARDS": " 8 "}) == 8
    for bad, message in (("0", "within 1..256"), ("257", "within 1..256"), ("many", "must be an integer")):
        with pytest.raises(ValueError, match=message):
            feature_shards_from_env({"PURCHASING_POWER_FEATURE_SHARDS": bad})


@pytest.mark.parametrize("text_ids", [False, True])
def test_sold_customers_counts_each_buyer_once_across_partitions(tmp_path, text_ids):
    """The streaming count equals counting the valid sale lines' customers of all partitions at
    once: cancellations and returns (quantity <= 0) do not make a buyer, a customer buying on
    several days counts once, an empty partition counts nothing."""
    from purchasing_power.compact import sale_lines
    from purchasing_power.history import sold_customers

    import pyarrow as pa

    rng = np.random.default_rng(3)
    store = Storage.at(str(tmp_path))
    schema = pa.schema([("customer_id", pa.string() if text_ids else pa.int64()), ("quantity", pa.int64()),
                        ("is_cancellation", pa.bool_())])  # pinned, as clean writes its partitions
    paths, frames = [], []
    for i in range(6):
        n = 0 if i == 3 else 300
        ids = rng.integers(1, 500, n)
        df = pd.DataFrame({"customer_id": ids.astype(str).astype(object) if text_ids else ids,
                           "quantity": rng.integers(-3, 6, n), "is_cancellation": rng.random(n) < 0.2})
        paths.append(store.write_parquet(df, str(tmp_path / f"day{i}.parquet"), schema=schema))
        frames.append(df)
    whole = pd.concat(frames, ignore_index=True)
    want = whole.loc[sale_lines(whole), "customer_id"].nunique()
    assert 0 < want < whole["customer_id"].nunique(), "the data must hold customers without a sale"
    assert sold_customers(store, paths) == want
    assert sold_customers(store, []) == 0


def test_a_partition_that_cannot_be_read_names_the_storage(tmp_path):
    from purchasing_power.shards import read_tables

    store = Storage.at(str(tmp_path))
    good = str(tmp_path / "good.parquet")
    pd.DataFrame({"customer_id": [1, 2]}).to_parquet(good, index=False)
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet")
    assert [t.num_rows for t in read_tables(store, [good, good], ["customer_id"])] == [2, 2]
    with pytest.raises(ValueError, match="cannot read clean partitions under"):
        read_tables(store, [good, str(bad)], ["customer_id"], what="clean partitions")
