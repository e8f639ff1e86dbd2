"""The seeded demo data generator: schema, determinism, realism and anomalies."""

from __future__ import annotations

import re
from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from purchasing_power import demo
from purchasing_power.schemas import CANONICAL_COLUMNS

N = 200


@pytest.fixture(scope="module")
def df() -> pd.DataFrame:
    return demo.generate_demo_transactions(n_customers=N, seed=11)


def _purchases(df: pd.DataFrame) -> pd.DataFrame:
    return df[~df["InvoiceNo"].str.startswith("C") & (df["Quantity"] > 0)]


# -- schema ----------------------------------------------------------------------------------


def test_columns_and_dtypes_are_canonical(df):
    assert list(df.columns) == list(CANONICAL_COLUMNS)
    assert {c: str(t) for c, t in df.dtypes.items()} == demo.DEMO_SCHEMA_DTYPES
    for col in ("InvoiceNo", "StockCode", "Country"):
        assert df[col].map(type).eq(str).all(), col
    assert df["Description"].dropna().map(type).eq(str).all()
    assert df["InvoiceNo"].str.fullmatch(r"C?\d{6}").all()
    ids = df["CustomerID"].dropna()
    assert (ids == ids.round()).all() and ids.between(10_000, 99_999).all()
    assert df["InvoiceDate"].dt.second.eq(0).all()
    assert df["InvoiceDate"].dt.tz is None


def test_parquet_schema_matches_the_real_file(tmp_path):
    path = demo.write_demo_source(str(tmp_path / "demo" / "t.parquet"), n_customers=30, seed=1)
    schema = pq.read_schema(path)
    expected = {
        "InvoiceNo": pa.large_string(),
        "StockCode": pa.large_string(),
        "Description": pa.large_string(),
        "Quantity": pa.int64(),
        "InvoiceDate": pa.timestamp("us"),
        "UnitPrice": pa.float64(),
        "CustomerID": pa.float64(),
        "Country": pa.large_string(),
    }
    assert schema.names == list(CANONICAL_COLUMNS)
    assert {f.name: f.type for f in schema} == expected
    assert pq.ParquetFile(path).metadata.row_group(0).column(0).compression == "ZSTD"
    back = pd.read_parquet(path)
    assert {c: str(t) for c, t in back.dtypes.items()} == demo.DEMO_SCHEMA_DTYPES
    assert len(back) > 0


# -- determinism -----------------------------------------------------------------------------


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path):
    a = demo.write_demo_source(str(tmp_path / "a.parquet"), n_customers=80, seed=3)
    b = demo.write_demo_source(str(tmp_path / "b.parquet"), n_customers=80, seed=3)
    c = demo.write_demo_source(str(tmp_path / "c.parquet"), n_customers=80, seed=4)
    assert a == str(tmp_path / "a.parquet")
    ba, bb, bc = (open(p, "rb").read() for p in (a, b, c))
    assert ba == bb
    assert ba != bc
    fa, fc = pd.read_parquet(a), pd.read_parquet(c)
    assert len(fa) != len(fc) or not fa.equals(fc)
    # no temporary files left behind by the atomic write (the reviews are written beside each source)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.parquet", "b.parquet", "c.parquet", "texts.parquet"]


def test_rows_are_sorted_by_date_then_invoice(df):
    t = df["InvoiceDate"].to_numpy()
    inv = df["InvoiceNo"].to_numpy(dtype=str)
    assert (t[1:] >= t[:-1]).all()
    same_t = t[1:] == t[:-1]
    assert (inv[1:][same_t] >= inv[:-1][same_t]).all()
    # an invoice is one contiguous block with one timestamp and one customer
    blocks = (df["InvoiceNo"] != df["InvoiceNo"].shift()).cumsum()
    assert blocks.max() == df["InvoiceNo"].nunique()
    per_inv = df.groupby("InvoiceNo").agg(
        t=("InvoiceDate", "nunique"), c=("CustomerID", lambda s: s.fillna(-1).nunique())
    )
    assert (per_inv["t"] == 1).all() and (per_inv["c"] == 1).all()


# -- calendar --------------------------------------------------------------------------------


@pytest.mark.parametrize("start,end", [(date(2023, 1, 1), date(2024, 12, 31)), (date(2022, 3, 10), date(2022, 8, 20))])
def test_dates_within_range_and_opening_hours(start, end):
    frame = demo.generate_demo_transactions(n_customers=120, start=start, end=end, seed=5)
    days = frame["InvoiceDate"].dt.date
    assert days.min() >= start and days.max() <= end
    assert frame["InvoiceDate"].dt.hour.between(7, 20).all()
    assert len(frame) > 500


def test_string_dates_are_accepted():
    frame = demo.generate_demo_transactions(n_customers=20, start="2023-05-01", end="2023-05-31", seed=2)
    assert frame["InvoiceDate"].dt.month.eq(5).all()


def test_seasonality_and_weekdays(df):
    month = df["InvoiceDate"].dt.month
    assert (month == 11).sum() > 1.3 * (month == 1).sum()
    assert (month == 11).sum() == month.value_counts().max()
    dow = df["InvoiceDate"].dt.dayofweek
    assert (dow == 5).mean() < 0.02  # very few Saturday sales
    assert (dow == 6).mean() > 0.05  # but some on Sundays
    assert (dow == 5).sum() < (dow == 6).sum() < (dow == 1).sum()
    # closed between Christmas Eve and 2 January
    d = df["InvoiceDate"]
    closed = ((d.dt.month == 12) & (d.dt.day >= 24)) | ((d.dt.month == 1) & (d.dt.day <= 2))
    assert not closed.any()


# -- behaviour -------------------------------------------------------------------------------


def test_orders_per_customer_are_heterogeneous(df):
    orders = _purchases(df).dropna(subset=["CustomerID"]).groupby("CustomerID")["InvoiceNo"].nunique()
    assert len(orders) >= 0.9 * N  # (almost) every customer made its first purchase
    assert orders.median() <= 4
    assert orders.max() >= 5 * orders.median()
    top = orders.sort_values(ascending=False)
    assert top.iloc[: len(top) // 10].sum() > 0.3 * top.sum()  # a long tail
    assert (orders == 1).mean() > 0.2  # many one-off buyers (dropout)


def test_order_values_are_skewed_and_basket_sizes_bounded(df):
    p = _purchases(df)
    p = p[p["StockCode"] != "POST"]
    value = (p["Quantity"] * p["UnitPrice"]).groupby(p["InvoiceNo"]).sum()
    assert value.mean() > 1.3 * value.median()  # right-skewed
    lines = df[~df["InvoiceNo"].str.startswith("C")].groupby("InvoiceNo").size()
    # 1..40 product lines plus at most a postage line and a duplicated line or two
    assert lines.min() >= 1 and lines.max() <= 43
    assert lines.median() >= 3
    assert set(p["Quantity"].value_counts().index[:6]) <= {1, 2, 3, 4, 6, 8, 12, 24}


def test_catalogue_is_realistic():
    cat = demo.build_catalogue()
    assert 300 <= len(cat.desc) <= 500
    assert len(set(cat.desc.tolist())) == len(cat.desc)
    assert len(set(cat.code.tolist())) == len(cat.code)
    assert all(d == d.upper() and d.strip() for d in cat.desc)
    assert all(re.fullmatch(r"\d{5}[A-Z]?", c) for c in cat.code)
    assert sum(d.startswith("SET OF 12 ") for d in cat.desc) >= 10
    assert ((cat.price > 0) & (cat.price < 100)).all()


def test_country_mix(df):
    share = df["Country"].value_counts(normalize=True)
    assert share.index[0] == "United Kingdom"
    assert 0.8 < share["United Kingdom"] < 0.95
    assert df["Country"].nunique() >= 5
    # foreign orders usually carry postage
    post_countries = df.loc[df["StockCode"] == "POST", "Country"]
    assert (post_countries != "United Kingdom").mean() > 0.5


def test_products_carry_segment_signal():
    """Buyers of christmas/party items are seasonal: more of their orders fall in Sep-Dec."""
    frame = demo.generate_demo_transactions(n_customers=600, seed=21)
    p = _purchases(frame).dropna(subset=["CustomerID"])
    p = p[p["StockCode"] != "POST"]
    desc = p["Description"].fillna("")
    festive = desc.str.contains("CHRISTMAS|BAUBLE|ADVENT|SNOWFLAKE|PARTY|CAKE CASE|BIRTHDAY")
    share = festive.groupby(p["CustomerID"]).mean()
    inv = p.drop_duplicates("InvoiceNo")
    q4 = inv["InvoiceDate"].dt.month.ge(9).groupby(inv["CustomerID"]).mean()
    n_orders = inv.groupby("CustomerID").size()
    keep = n_orders[n_orders >= 3].index
    both = pd.DataFrame({"festive": share[keep], "q4": q4[keep]})
    assert both.corr(method="spearman").loc["festive", "q4"] > 0.1
    # bulk "SET OF n" items are bought by wholesalers, whose orders are much bigger
    bulk = desc.str.startswith("SET OF").groupby(p["CustomerID"]).mean()
    value = (p["Quantity"] * p["UnitPrice"]).groupby(p["InvoiceNo"]).sum()
    owner = inv.set_index("InvoiceNo")["CustomerID"]
    mean_value = value.groupby(owner.reindex(value.index)).mean().reindex(bulk.index)
    assert np.corrcoef(bulk.rank(), mean_value.rank())[0, 1] > 0.15
    assert mean_value[bulk > 0.4].median() > 2 * mean_value.median()


# -- anomalies -------------------------------------------------------------------------------


def test_cancellations_reverse_an_earlier_purchase(df):
    c = df[df["InvoiceNo"].str.startswith("C")]
    share = len(c) / len(df)
    assert 0.008 < share < 0.04
    assert (c["Quantity"] < 0).all()
    assert c["CustomerID"].notna().all()
    buys = _purchases(df)
    merged = c.reset_index().merge(
        buys[["CustomerID", "StockCode", "UnitPrice", "InvoiceDate", "Quantity"]],
        on=["CustomerID", "StockCode", "UnitPrice"],
        suffixes=("", "_buy"),
    )
    ok = merged[(merged["InvoiceDate_buy"] < merged["InvoiceDate"]) & (merged["Quantity_buy"] >= -merged["Quantity"])]
    assert set(ok["index"]) == set(c.index)
    # both full cancellations and partial returns
    assert (merged["Quantity_buy"] == -merged["Quantity"]).any()
    assert (merged["Quantity_buy"] > -merged["Quantity"]).any()


def test_guests_and_postage(df):
    guest = df["CustomerID"].isna().mean()
    assert 0.12 < guest < 0.3
    post = df[df["StockCode"] == "POST"]
    assert len(post) > 0 and post["Description"].eq("POSTAGE").all() and (post["UnitPrice"] > 0).all()


def test_every_anomaly_kind_is_present(df):
    not_c = ~df["InvoiceNo"].str.startswith("C")
    assert (df["UnitPrice"] == 0).sum() >= 2
    assert (df["UnitPrice"] == 0).mean() < 0.01
    assert df["Description"].isna().sum() >= 2
    assert (df["Description"] == "").sum() >= 1
    assert (df["Quantity"] == 0).sum() >= 1
    assert ((df["Quantity"] < 0) & not_c).sum() >= 2  # stock adjustments on normal invoices
    assert (df["UnitPrice"] < 0).sum() >= 1
    dups = df.duplicated().sum()
    assert 3 <= dups <= 0.02 * len(df)
    assert df["Description"].dropna().str.endswith(" ").any()  # untrimmed text
    assert df["Description"].dropna().str.islower().any()  # "damaged" etc.


def test_anomaly_rates_at_default_scale():
    frame = demo.generate_demo_transactions()
    assert 80_000 <= len(frame) <= 200_000
    assert 0.015 < frame["InvoiceNo"].str.startswith("C").mean() < 0.03
    assert 0.15 < frame["CustomerID"].isna().mean() < 0.25
    assert 0.002 < (frame["UnitPrice"] == 0).mean() < 0.006
    assert 0.003 < frame.duplicated().mean() < 0.01
    assert frame["CustomerID"].nunique() == 2500


def test_invalid_arguments():
    with pytest.raises(ValueError):
        demo.generate_demo_transactions(n_customers=0)
    with pytest.raises(ValueError):
        demo.generate_demo_transactions(start=date(2024, 1, 2), end=date(2024, 1, 1))


# -- CLI -------------------------------------------------------------------------------------


def test_cli_writes_and_if_missing_keeps_existing(tmp_path, capsys):
    out = tmp_path / "demo" / "ds=2023-03-31" / "transactions.parquet"
    args = ["--out", str(out), "--customers", "40", "--start", "2023-01-01", "--end", "2023-03-31", "--seed", "9"]
    assert demo.main(args + ["--if-missing"]) == 0
    first = out.read_bytes()
    frame = pd.read_parquet(out)
    assert frame["InvoiceDate"].max() < pd.Timestamp("2023-04-01")
    assert frame["CustomerID"].nunique() == 40

    out.write_bytes(b"sentinel")
    assert demo.main(args + ["--if-missing"]) == 0
    assert out.read_bytes() == b"sentinel"
    assert "exists" in capsys.readouterr().out

    assert demo.main(args) == 0  # without --if-missing: rewritten, same bytes as the first time
    assert out.read_bytes() == first


def test_cli_rejects_bad_arguments(tmp_path):
    with pytest.raises(SystemExit):
        demo.main(["--out", str(tmp_path / "x.parquet"), "--customers", "0"])
    with pytest.raises(SystemExit):
        demo.main(["--out", str(tmp_path / "x.parquet"), "--start", "2023-13-01"])
    assert not (tmp_path / "x.parquet").exists()


def test_a_large_source_is_written_block_by_block_without_shared_ids_or_invoices(tmp_path):
    """Above ``block_customers`` the writer generates blocks apart (bounded memory): the blocks'
    customers and invoices never collide, and every block's customers are there."""
    import pandas as pd

    from purchasing_power.demo import write_demo_source

    path = str(tmp_path / "big.parquet")
    write_demo_source(path, n_customers=250, block_customers=100, start="2023-01-01", end="2023-06-30", seed=3)
    df = pd.read_parquet(path)
    known = df.dropna(subset=["CustomerID"])
    assert known["CustomerID"].nunique() == 250
    # an invoice belongs to one customer (or to none: guests, adjustments)
    owners = known.groupby("InvoiceNo")["CustomerID"].nunique()
    assert (owners == 1).all()
    numbers = df["InvoiceNo"].str.lstrip("C").astype("int64")
    blocks = pd.cut(known["CustomerID"], bins=[10_000, 10_300, 10_600, 10_750], right=False)
    assert known.groupby(blocks, observed=True)["CustomerID"].nunique().tolist() == [100, 100, 50]
    ranges = numbers[known.index].groupby(blocks, observed=True).agg(["min", "max"]).to_numpy()
    assert all(ranges[i][1] < ranges[i + 1][0] for i in range(len(ranges) - 1)), ranges  # disjoint, in block order
    # the same arguments write the same bytes; a single block equals the one-frame writer
    again = str(tmp_path / "again.parquet")
    write_demo_source(again, n_customers=250, block_customers=100, start="2023-01-01", end="2023-06-30", seed=3)
    assert open(path, "rb").read() == open(again, "rb").read()
