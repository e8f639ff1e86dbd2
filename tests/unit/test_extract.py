"""Extract: column mapping onto the canonical schema, raw partitions per invoice day, reruns."""

from __future__ import annotations

import os
from datetime import date

import pandas as pd
import pytest

from purchasing_power.errors import SourceError
from purchasing_power.extract import map_columns, read_source
from purchasing_power.schemas import CANONICAL_COLUMNS
from purchasing_power.stages.extract import extract_day
from purchasing_power.storage import RAW_FILE, Workspace

DAY = date(2011, 8, 31)


def _online_retail_ii() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "Invoice": ["489434", "C489449"],
            "StockCode": ["85048", "22087"],
            "Description": ["15CM CHRISTMAS GLASS BALL 20 LIGHTS", "PAPER BUNTING WHITE LACE"],
            "Quantity": [12, -12],
            "InvoiceDate": ["2009-12-01 07:45:00", "2009-12-01 10:33:00"],
            "Price": [6.95, 2.95],
            "Customer ID": [13085.0, 16321.0],
            "Country": ["United Kingdom", "Australia"],
            "Extra": ["dropped", "dropped"],
        }
    )


# -- map_columns --------------------------------------------------------------------------------


def test_map_columns_recognises_online_retail_ii_names():
    out = map_columns(_online_retail_ii(), {})
    assert list(out.columns) == list(CANONICAL_COLUMNS)
    assert out["InvoiceNo"].tolist() == ["489434", "C489449"]
    assert out["UnitPrice"].tolist() == [6.95, 2.95]
    assert out["CustomerID"].tolist() == [13085.0, 16321.0]
    assert out["InvoiceDate"].tolist() == ["2009-12-01 07:45:00", "2009-12-01 10:33:00"]  # still text here


def test_map_columns_keeps_canonical_frames_and_drops_extras(tiny_raw):
    out = map_columns(tiny_raw.assign(Extra=1)[["Extra", *reversed(CANONICAL_COLUMNS)]], {})
    pd.testing.assert_frame_equal(out, tiny_raw)


def test_map_columns_explicit_map_wins():
    df = _online_retail_ii().rename(columns={"Invoice": "Bill", "Customer ID": "Client"})
    out = map_columns(df, {"Bill": "InvoiceNo", "Price": "UnitPrice", "Client": "CustomerID"})
    assert out["InvoiceNo"].tolist() == ["489434", "C489449"]
    assert out["CustomerID"].tolist() == [13085.0, 16321.0]


def test_map_columns_missing_required_column_is_named():
    df = _online_retail_ii().drop(columns=["Country"])
    with pytest.raises(SourceError, match=r"source tx\.csv is missing canonical column\(s\) \['Country'\]"):
        map_columns(df, {}, source="tx.csv")


def test_map_columns_unknown_map_key_is_named():
    with pytest.raises(SourceError, match=r"column_map names columns \['Bill'\]"):
        map_columns(_online_retail_ii(), {"Bill": "InvoiceNo"})


def test_source_error_is_a_value_error():
    assert issubclass(SourceError, ValueError)


def test_read_source_csv_with_online_retail_ii_names(tmp_path):
    path = tmp_path / "online_retail_ii.csv"
    _online_retail_ii().to_csv(path, index=False)
    out = read_source(str(path))
    assert list(out.columns) == list(CANONICAL_COLUMNS)
    assert out["InvoiceNo"].tolist() == ["489434", "C489449"]
    with pytest.raises(FileNotFoundError, match="source file not found"):
        read_source(str(tmp_path / "missing.parquet"))


# -- extract_day end to end ---------------------------------------------------------------------


def _raw_files(settings) -> dict[str, bytes]:
    ws = Workspace.for_settings(settings)
    base = ws.per_source.path("raw")
    out = {}
    for folder in sorted(os.listdir(base)):
        for name in sorted(os.listdir(f"{base}/{folder}")):
            with open(f"{base}/{folder}/{name}", "rb") as fh:
                out[f"{folder}/{name}"] = fh.read()
    return out


def test_extract_day_writes_one_raw_partition_per_invoice_day(settings_factory, tmp_path):
    settings = settings_factory()
    report = extract_day(settings, DAY)
    ws = Workspace.for_settings(settings)
    assert ws.per_source.root == f"{tmp_path}/data/sources/{settings.source_id}"
    assert report["raw_path"] == f"{tmp_path}/data/sources/{settings.source_id}/raw/ds=2011-08-31/{RAW_FILE}"
    assert {k: report[k] for k in ("rows_in_source", "rows_up_to_day", "rows_of_day", "rows_undated", "rows_after_day", "partitions_written", "first_day")} == {
        "rows_in_source": 8,
        "rows_up_to_day": 7,
        "rows_of_day": 5,
        "rows_undated": 1,
        "rows_after_day": 0,
        "partitions_written": 2,
        "first_day": "2011-08-30",
    }
    assert list(_raw_files(settings)) == ["ds=2011-08-30/raw.parquet", "ds=2011-08-31/raw.parquet"]
    assert ws.per_source.list_days("raw", RAW_FILE) == [date(2011, 8, 30), DAY]

    d30 = ws.per_source.read_parquet(ws.per_source.path("raw", date(2011, 8, 30), RAW_FILE))
    d31 = ws.per_source.read_parquet(ws.per_source.path("raw", DAY, RAW_FILE))
    assert d30["InvoiceNo"].tolist() == ["536365", "536365"]
    # the run day holds its own rows plus the undated one (quarantined later by clean)
    assert len(d31) == 6
    undated = d31[d31["InvoiceDate"].isna()]
    assert undated["InvoiceDate_raw"].tolist() == ["not a date"]
    assert str(d31["InvoiceDate"].dtype) == "datetime64[ns]"
    assert d31["InvoiceDate"].dropna().dt.date.eq(DAY).all()


def test_extract_day_fills_gap_days_and_ignores_later_rows(settings_factory, make_raw):
    rows = [
        ("1", "A", "X", 1, "2011-08-28 10:00:00", 1.0, 1.0, "UK"),
        ("2", "A", "X", 1, "2011-08-31 10:00:00", 1.0, 1.0, "UK"),
        ("3", "A", "X", 1, "2011-09-01 00:00:00", 1.0, 1.0, "UK"),  # after the run day
    ]
    settings = settings_factory(make_raw(rows))
    report = extract_day(settings, DAY)
    assert report["rows_after_day"] == 1 and report["partitions_written"] == 4
    ws = Workspace.for_settings(settings)
    assert ws.per_source.list_days("raw", RAW_FILE) == [date(2011, 8, 28), date(2011, 8, 29), date(2011, 8, 30), DAY]
    assert len(ws.per_source.read_parquet(ws.per_source.path("raw", date(2011, 8, 29), RAW_FILE))) == 0
    assert ws.per_source.read_parquet(ws.per_source.path("raw", DAY, RAW_FILE))["InvoiceNo"].tolist() == ["2"]


def test_extract_day_rerun_is_byte_identical(settings_factory):
    settings = settings_factory()
    extract_day(settings, DAY)
    first = _raw_files(settings)
    report = extract_day(settings, DAY)
    assert report["partitions_written"] == 1  # only the run day is rewritten; history is kept
    assert _raw_files(settings) == first


def test_extract_day_two_sources_never_share_raw_history(settings_factory, tiny_raw):
    a = settings_factory(tiny_raw, name="a.parquet")
    b = settings_factory(tiny_raw.iloc[:2], name="b.parquet")
    assert a.source_id != b.source_id
    extract_day(a, DAY)
    extract_day(b, DAY)
    ws_a, ws_b = Workspace.for_settings(a), Workspace.for_settings(b)
    assert len(ws_a.per_source.read_parquet(ws_a.per_source.path("raw", DAY, RAW_FILE))) == 6
    assert len(ws_b.per_source.read_parquet(ws_b.per_source.path("raw", DAY, RAW_FILE))) == 0


def test_extract_day_rejects_an_empty_source(settings_factory, tiny_raw):
    settings = settings_factory(tiny_raw.iloc[0:0])
    with pytest.raises(SourceError, match="has no rows"):
        extract_day(settings, DAY)


def test_day_before_the_source_fails_at_extract_with_a_clear_input_error(settings_factory):
    from purchasing_power.errors import InputError

    settings = settings_factory()
    with pytest.raises(InputError, match="no dated rows on or before 2001-01-01"):
        extract_day(settings, date(2001, 1, 1))


# -- the staged source ---------------------------------------------------------------------------


def test_unchanged_source_is_read_once_and_later_days_read_only_their_rows(settings_factory, make_raw, monkeypatch):
    import purchasing_power.extract as extract

    rows = [
        ("1", "A", "X", 1, "2011-08-29 10:00:00", 1.0, 1.0, "UK"),
        ("2", "A", "X", 2, "2011-08-30 10:00:00", 1.0, 1.0, "UK"),
        ("3", "A", "X", 3, "2011-08-31 10:00:00", 1.0, 1.0, "UK"),
        ("4", "A", "X", 4, "2011-09-01 09:00:00", 1.0, 1.0, "UK"),
    ]
    settings = settings_factory(make_raw(rows))
    extract_day(settings, date(2011, 8, 30))
    calls = []
    monkeypatch.setattr(extract, "read_source", lambda *a, **k: calls.append(a) or pytest.fail("source read again"))
    report = extract_day(settings, date(2011, 9, 1))  # the same file version: served from staged/
    assert calls == [] and report["partitions_written"] == 2 and report["rows_in_source"] == 4  # 08-31 and 09-01
    ws = Workspace.for_settings(settings)
    got = {d: ws.per_source.read_parquet(ws.per_source.path("raw", d, RAW_FILE))["InvoiceNo"].tolist() for d in ws.per_source.list_days("raw", RAW_FILE)}
    assert got == {date(2011, 8, 29): ["1"], date(2011, 8, 30): ["2"], date(2011, 8, 31): ["3"], date(2011, 9, 1): ["4"]}


def test_a_changed_source_is_staged_again_and_the_run_day_picks_up_the_correction(settings_factory, make_raw):
    rows = [("1", "A", "X", 1, "2011-08-31 10:00:00", 1.0, 1.0, "UK")]
    settings = settings_factory(make_raw(rows))
    first = extract_day(settings, DAY)
    corrected = make_raw([("1", "A", "X", 7, "2011-08-31 10:00:00", 1.0, 1.0, "UK"), ("2", "A", "X", 1, "2011-08-31 11:00:00", 1.0, 1.0, "UK")])
    corrected.to_parquet(settings.source)
    os.utime(settings.source, ns=(1, 1))  # a new version even on a coarse-mtime file system
    second = extract_day(settings, DAY)
    assert second["source_version"] != first["source_version"] and second["rows_of_day"] == 2
    ws = Workspace.for_settings(settings)
    assert ws.per_source.read_parquet(ws.per_source.path("raw", DAY, RAW_FILE))["Quantity"].tolist() == [7.0, 1.0]
    staged = sorted(p.rsplit("/", 1)[-1].split("-", 1)[1] for p in ws.per_source.fs.ls(ws.per_source.path("staged"), detail=False))
    assert staged == ["dated.parquet", "index.json", "undated.parquet"]  # the old version is gone
