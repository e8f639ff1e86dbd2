"""Customer ids of any form: a source of integer ids (an integer column, a float column of whole
numbers as pandas makes of an integer column with gaps, or text spelling numbers as a CSV does)
gives int64 ids end to end; any other source keeps its ids as text, spelled as the source spells
them (hashes, UUIDs, ``C-00123``, zero-padded numbers); only an empty id is ``missing_customer``.
The type is decided once per source, so a day's partition never flips it."""

from __future__ import annotations

import uuid
from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from purchasing_power.btyd import rfm_summary
from purchasing_power.clean import clean_frame
from purchasing_power.extract import normalise_raw_dtypes, source_customer_id_type
from purchasing_power.schemas import CANONICAL_COLUMNS, clean_schema, customer_id_type, quarantine_schema, raw_schema

GOOD = ("540001", "22423", "REGENCY CAKESTAND 3 TIER", "2", "2011-08-31 12:00:00", "12.75", "14911", "EIRE")


def _source(ids: list, **column) -> pd.DataFrame:
    """A source of one line per id (invoice numbers 540000 + i), every column as text but the ids."""
    rows = [dict(zip(CANONICAL_COLUMNS, GOOD), InvoiceNo=str(540000 + i), CustomerID=c) for i, c in enumerate(ids)]
    frame = pd.DataFrame(rows, columns=list(CANONICAL_COLUMNS))
    for name, values in column.items():
        frame[name] = values
    return frame


# -- a source's id type --------------------------------------------------------------------------

HASHES = ["9f86d081884c7d659a2feaa0c55ad015", "2c26b46b68ffc68ff99b453c1d304134"]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (pd.Series([17850.0, np.nan, 13047.0]), "int64"),  # UCI: float64, NaN for guests
        (pd.Series([17850, 13047], dtype="int64"), "int64"),
        (pd.Series([17850, None], dtype="Int64"), "int64"),
        (pd.Series(["17850.0", None, "13047.0"], dtype=object), "int64"),  # the same as CSV text
        (pd.Series([" 17850 ", "0", "12.5", "inf", "1e400", "nan"], dtype=object), "int64"),  # numbers; clean judges each
        (pd.Series(["C-00123", "C-00124", None]), "string"),
        (pd.Series(["00123", "00124"]), "string"),  # zero-padded: the spelling is the id
        (pd.Series(HASHES), "string"),
        (pd.Series([str(uuid.UUID(int=i)) for i in range(3)]), "string"),
        (pd.Series([uuid.UUID(int=1), uuid.UUID(int=2)], dtype=object), "string"),  # a SQL driver's uuid objects
        (pd.Series(["17850", "x12"]), "string"),  # one text id: every id is text (nothing is lost)
        (pd.Series([17850.0, "C-1"], dtype=object), "string"),
        (pd.Series(["1_000", "0x1f"]), "string"),  # not plain decimal numbers
        (pd.Series([None, "", "  "], dtype=object), "int64"),  # no id at all: nothing to keep as text
        (pd.Series([], dtype=object), "int64"),
    ],
)
def test_a_sources_id_type_is_decided_from_all_its_ids(values, expected):
    assert source_customer_id_type(values) == expected


def test_text_ids_keep_their_spelling_and_only_empty_ids_are_missing():
    ids = [" C-00123 ", "c-00123", "00042", HASHES[0], uuid.UUID(int=7), 17850.0, 42, None, "", "   ", np.nan]
    raw = normalise_raw_dtypes(_source(ids))
    assert customer_id_type(raw) == "string"
    expected = ["C-00123", "c-00123", "00042", HASHES[0], str(uuid.UUID(int=7)), "17850", "42", None, None, None, None]
    assert raw["CustomerID"].tolist() == expected
    assert raw["CustomerID_raw"].isna().all()
    clean, quarantine = clean_frame(raw)
    assert clean["customer_id"].tolist() == [e for e in expected if e]
    assert clean["customer_id"].map(type).eq(str).all()
    assert quarantine["reason"].tolist() == ["missing_customer"] * 4
    assert quarantine["detail"].unique().tolist() == ["CustomerID is empty (guest checkout)"]


def test_a_float_column_of_whole_numbers_gives_int64_ids():
    raw = normalise_raw_dtypes(_source([17850.0, np.nan, 13047.0, 9007199254740991.0]).astype({"CustomerID": "float64"}))
    assert customer_id_type(raw) == "int64" and raw["CustomerID"].dtype == "float64"
    clean, quarantine = clean_frame(raw)
    assert clean["customer_id"].dtype == "int64"
    assert clean["customer_id"].tolist() == [17850, 13047, 2**53 - 1]
    assert quarantine["reason"].tolist() == ["missing_customer"]


def test_numbers_in_a_text_source_are_spelled_without_a_float_suffix():
    raw = normalise_raw_dtypes(_source([17850.0, 12.5, 7, "C-1"]))
    assert raw["CustomerID"].tolist() == ["17850", "12.5", "7", "C-1"]


def test_a_non_finite_float_among_text_ids_is_quarantined_with_its_text():
    raw = normalise_raw_dtypes(_source(["C-1", float("inf")]))
    clean, quarantine = clean_frame(raw)
    assert clean["customer_id"].tolist() == ["C-1"]
    assert quarantine["reason"].tolist() == ["non_finite_number"]
    assert quarantine["CustomerID_raw"].tolist() == ["inf"]


def test_a_chunk_is_normalised_with_its_sources_id_type():
    """Extract decides the type once per source; a chunk (one day) is read with it: a text id in
    a source of integer ids is an invalid id, not a reason to flip the source's type."""
    as_int = normalise_raw_dtypes(_source(["17850", "x12"]), customer_ids="int64")
    assert as_int["CustomerID"].dtype == "float64" and as_int["CustomerID_raw"].tolist() == [None, "x12"]
    clean, quarantine = clean_frame(as_int)
    assert clean["customer_id"].tolist() == [17850]
    assert quarantine["reason"].tolist() == ["invalid_customer"] and quarantine["detail"].tolist() == ["CustomerID=x12"]
    as_text = normalise_raw_dtypes(_source([17850.0, 13047.0]).astype({"CustomerID": "float64"}), customer_ids="string")
    assert clean_frame(as_text)[0]["customer_id"].tolist() == ["17850", "13047"]
    with pytest.raises(ValueError, match="customer id type"):
        normalise_raw_dtypes(_source([1]), customer_ids="uuid")


# -- one Arrow schema per source, empty partitions included -------------------------------------


@pytest.mark.parametrize(("ids", "kind", "arrow"), [([17850.0, 13047.0], "int64", pa.int64()), (["C-1", "C-2"], "string", pa.string())])
def test_partitions_of_a_source_have_one_schema_empty_ones_included(tmp_path, ids, kind, arrow):
    raw = normalise_raw_dtypes(_source(ids))
    path = tmp_path / "raw.parquet"
    pa.Table.from_pandas(raw.iloc[0:0], schema=raw_schema(kind), preserve_index=False).to_pandas().to_parquet(path)
    empty = pd.read_parquet(path)  # an empty day, read back: its dtype still tells the type
    assert customer_id_type(empty) == kind
    clean, quarantine = clean_frame(empty)
    assert customer_id_type(clean) == kind
    assert pa.Table.from_pandas(clean, schema=clean_schema(kind), preserve_index=False).schema.field("customer_id").type == arrow
    full, _ = clean_frame(raw)
    assert pa.Table.from_pandas(full, schema=clean_schema(kind), preserve_index=False).column("customer_id").type == arrow
    pa.Table.from_pandas(quarantine, schema=quarantine_schema(kind), preserve_index=False)


# -- BTYD summary and the whole pipeline ------------------------------------------------------------


def test_rfm_summary_keeps_text_ids():
    tx = pd.DataFrame(
        {
            "customer_id": ["b-2", "a-1", "b-2", "a-1"],
            "invoice_ts": pd.to_datetime(["2021-01-01", "2021-01-02", "2021-01-03", "2021-01-02"]),
            "line_value": [5.0, 3.0, 7.0, 1.0],
        }
    )
    s = rfm_summary(tx, date(2021, 1, 5))
    assert s.index.tolist() == ["a-1", "b-2"] and s.index.name == "customer_id"
    assert s["frequency"].tolist() == [0.0, 1.0] and s.loc["b-2", "monetary_value"] == 7.0
    as_int = rfm_summary(tx.assign(customer_id=[2, 1, 2, 1]), date(2021, 1, 5))
    np.testing.assert_array_equal(s.to_numpy(), as_int.to_numpy())
    assert rfm_summary(tx.iloc[0:0], date(2021, 1, 5)).index.dtype == object


@pytest.fixture(scope="module")
def demo_frame() -> pd.DataFrame:
    from purchasing_power.demo import generate_demo_transactions

    return generate_demo_transactions(n_customers=120, start=date(2023, 6, 1), end=date(2024, 3, 31), seed=3)


def _publish(tmp_path, monkeypatch, name: str, frame: pd.DataFrame, day: date) -> pd.DataFrame:
    """Run the whole pipeline for ``day`` on ``frame`` written as ``name`` (CSV or Parquet) on
    storage of its own; returns the published predictions."""
    from purchasing_power.pipeline import run_all

    source, storage = tmp_path / name, tmp_path / f"data-{name}"
    frame.to_csv(source, index=False) if name.endswith(".csv") else frame.to_parquet(source, index=False)
    monkeypatch.setenv("PURCHASING_POWER_STORAGE", str(storage))
    run_all({"source": str(source)}, day, overrides={"use_text": False})
    return pd.read_parquet(storage / "predictions" / f"ds={day}" / "predictions.parquet")


def test_text_ids_go_end_to_end_and_predict_as_integer_ids_do(tmp_path, monkeypatch, demo_frame):
    """The demo source with its ids spelled ``C-0010000`` (an order-preserving spelling) and
    read from CSV gives the same predictions as the integer ids, each carried with its spelling;
    the integer source's float column of whole numbers gives int64 ids."""
    day = date(2024, 3, 20)
    ints = _publish(tmp_path, monkeypatch, "ints.parquet", demo_frame, day)
    assert ints["customer_id"].dtype == "int64"
    spelled = demo_frame.assign(CustomerID=demo_frame["CustomerID"].map(lambda v: None if pd.isna(v) else f"C-{int(v):07d}"))
    text = _publish(tmp_path, monkeypatch, "text.csv", spelled, day)
    assert text["customer_id"].map(type).eq(str).all()
    assert text["customer_id"].tolist() == [f"C-{i:07d}" for i in ints["customer_id"]]
    cols = ["p_purchase_30d", "expected_spend_90d", "tier"]
    pd.testing.assert_frame_equal(text[cols], ints[cols])


def test_the_training_sample_of_text_ids_is_seeded_and_stable():
    from purchasing_power.train import customer_sample

    ids = np.array([f"C-{i:05d}" for i in range(2000)], dtype=object)
    keep = customer_sample(ids, 0.3, seed=42)
    assert 0.25 < keep.mean() < 0.35
    perm = np.random.default_rng(1).permutation(len(ids))
    np.testing.assert_array_equal(customer_sample(ids[perm], 0.3, seed=42), keep[perm])  # per id, not per position
    assert (customer_sample(ids, 0.3, seed=7) != keep).any()
