"""The features stage reads text columns as codes (``features.compact_history``): features built
from them are the very same bytes as from the texts, and the codes order as the texts do."""

from __future__ import annotations

import io
from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from purchasing_power.compact import compact_history, sorted_codes
from purchasing_power.features import build_features, customer_text_vectors

D = date(2011, 8, 31)


def _row(inv, stock, desc, qty, ts, price, cust, country):
    return {"invoice_no": inv, "stock_code": stock, "description": desc, "quantity": qty, "invoice_ts": pd.Timestamp(ts),
            "unit_price": price, "customer_id": cust, "country": country, "is_cancellation": inv.startswith("C"),
            "line_value": qty * price}


def _history() -> pd.DataFrame:
    """Every kind of row: several lines per invoice, returns, a customer whose sales were all
    returned, missing and empty descriptions and countries, a tie of countries, rows after D."""
    rows = [
        _row("100", "85123A", "WHITE HEART", 2, "2011-06-01 09:00", 5.0, 101, "United Kingdom"),
        _row("100", "22423", "CAKE STAND", 1, "2011-06-01 09:00", 12.75, 101, "United Kingdom"),
        _row("101", "85123A", "WHITE HEART", 3, "2011-07-01 10:00", 5.0, 101, "France"),
        _row("102", "22423", None, 1, "2011-08-15 11:00", 12.75, 101, "United Kingdom"),
        _row("103", "B1", "", 4, "2011-06-20 12:00", 2.5, 102, None),
        _row("104", "85123A", "WHITE HEART", 1, "2011-08-31 23:59:59", 5.0, 102, ""),
        _row("105", "A9", "ALPHA", 10, "2011-07-10 08:00", 1.25, 103, "EIRE"),
        _row("C106", "A9", "ALPHA", -4, "2011-07-12 08:00", 1.25, 103, "EIRE"),
        _row("107", "85123A", "WHITE HEART", 2, "2011-08-01 14:00", 5.0, 103, "France"),
        _row("107", "Z0", "ZED", 6, "2011-08-01 14:00", 0.5, 103, "France"),
        _row("108", "A9", "ALPHA", 1, "2011-05-05 15:00", 30.0, 104, "EIRE"),
        _row("C109", "A9", "ALPHA", -1, "2011-05-06 15:00", 30.0, 104, "EIRE"),  # all returned
        _row("110", "22423", "CAKE STAND", 2, "2011-04-01 10:00", 12.75, 105, "France"),
        _row("111", "22423", "CAKE STAND", 2, "2011-05-02 10:00", 12.75, 105, "France"),
        _row("112", "B1", "BETA", 1, "2011-06-03 10:00", 2.5, 105, "France"),
        _row("113", "85123A", "WHITE HEART", 5, "2011-09-01 00:00", 5.0, 101, "Spain"),  # after D
        _row("C114", "B1", "BETA", -1, "2011-07-04 10:00", 2.5, 106, "Spain"),  # only a return
    ]
    return pd.DataFrame(rows)


def _lookup(texts: list[str]) -> np.ndarray:
    return np.array([[len(t), sum(map(ord, t)) % 97, t.count("A")] for t in texts], dtype=np.float64)


def _categorical(tx: pd.DataFrame) -> pd.DataFrame:
    """Text columns as categoricals with their categories in reverse order (a Parquet
    dictionary read gives them in no particular order)."""
    out = tx.copy()
    for c in ("invoice_no", "stock_code", "description", "country"):
        cats = sorted(tx[c].dropna().unique(), reverse=True)
        out[c] = pd.Categorical(tx[c], categories=cats)
    return out


def _parquet(f: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(f.reset_index(), preserve_index=False), buf, compression="zstd")
    return buf.getvalue()


def test_sorted_codes_order_and_drop_as_the_texts():
    s = pd.Series(["b", None, "a", "", "c", "a"])
    assert sorted_codes(s.dropna()).tolist() == [2, 1, 0, 3, 1]  # "" < "a" < "b" < "c"
    assert sorted_codes(s.dropna()).dtype == np.int32
    np.testing.assert_array_equal(sorted_codes(s), [2, np.nan, 1, 0, 3, 1])
    np.testing.assert_array_equal(sorted_codes(s, empty_missing=True), [2, np.nan, 1, np.nan, 3, 1])
    cat = pd.Series(pd.Categorical(s, categories=["c", "b", "a", ""]))
    np.testing.assert_array_equal(sorted_codes(cat), sorted_codes(s))
    np.testing.assert_array_equal(sorted_codes(cat, empty_missing=True), sorted_codes(s, empty_missing=True))


def test_compact_history_keeps_a_compact_frame_as_is():
    c = compact_history(_categorical(_history()))
    assert compact_history(c) is c
    assert all(pd.api.types.is_numeric_dtype(c[k]) for k in ("invoice_no", "stock_code", "country"))
    assert isinstance(c["description"].dtype, pd.CategoricalDtype)


def test_features_from_codes_are_the_same_bytes_as_from_texts():
    tx = _history()
    for vectors in (None, _lookup):
        ref = build_features(tx, D, vectors)
        for other in (_categorical(tx), compact_history(_categorical(tx)), compact_history(tx, description=vectors is not None)):
            f = build_features(other, D, vectors)
            pd.testing.assert_frame_equal(f, ref, check_exact=True)
            assert _parquet(f) == _parquet(ref)
    assert ref.index.tolist() == [101, 102, 103, 104, 105]  # 106 only returned; nothing after D


def test_text_dependent_features_against_a_plain_reference():
    tx = _history()
    f = build_features(_categorical(tx), D, _lookup)
    tx = tx[tx["invoice_ts"] < pd.Timestamp(D) + pd.Timedelta(days=1)]
    sales = tx[~tx["is_cancellation"]]
    for cust, rows in sales.groupby("customer_id"):
        assert f.loc[cust, "n_orders"] == rows["invoice_no"].nunique()
        assert f.loc[cust, "distinct_products"] == rows["stock_code"].nunique()
        texts = [t for t in rows["description"] if isinstance(t, str) and t]
        if texts:
            want = _lookup(texts).mean(axis=0).astype(np.float32)
            np.testing.assert_array_equal(f.loc[cust, ["txt_000", "txt_001", "txt_002"]].to_numpy(), want)
    # the scored customers' known countries before D: France 6 lines, EIRE 4, United Kingdom 3 (the
    # main one: France); 103 has EIRE and France twice each (the tie goes to EIRE, by name);
    # 102 has none ("" and missing)
    main = {101: 0.0, 102: np.nan, 103: 0.0, 104: 0.0, 105: 1.0}
    for cust, want in main.items():
        got = f.loc[cust, "is_main_country"]
        assert (np.isnan(got) and np.isnan(want)) or got == want, (cust, got)
    vec = customer_text_vectors(sales, _lookup)
    assert vec.index.tolist() == [101, 102, 103, 104, 105]


def test_derived_frames_share_the_code_values_instead_of_copying_them():
    """pandas deep-copies ``attrs`` into every derived frame: the code values must be shared
    (copying millions of texts per operation made features several times slower)."""
    from purchasing_power.compact import CODE_VALUES

    compact = compact_history(_history())
    values = compact.attrs[CODE_VALUES]
    assert list(values["stock_code"]) == sorted(_history()["stock_code"].unique())
    derived = compact[compact["quantity"] > 0].groupby("customer_id").head(1)
    assert derived.attrs[CODE_VALUES] is values
