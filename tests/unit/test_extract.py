"""Extract: column mapping onto the canonical schema, raw partitions per invoice day, reruns."""

from __future__ import annotations

import os
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest

from purchasing_power.errors import SourceError
from purchasing_power.extract import map_columns, read_source
from purchasing_power.schemas import CANONICAL_COLUMNS
from purchasing_power.settings import Settings
from purchasing_power.stages.clean import clean_day
from purchasing_power.stages.extract import extract_day
from purchasing_power.storage import CLEAN_FILE, QUARANTINE_FILE, RAW_FILE, Workspace

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
    import purchasing_power.staging as staging

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
    monkeypatch.setattr(staging.SourceChunks, "__enter__", lambda *a: calls.append(a) or pytest.fail("source read again"))
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
    # the old version is gone; raw-manifest.json records what the raw partitions hold
    assert staged == ["dated.parquet", "index.json", "manifest.json", "undated.parquet"]


# -- helpers for extract + clean ----------------------------------------------------------------


def _text_frame(rows: list[tuple]) -> pd.DataFrame:
    """A source-like frame with every column as text (what a CSV holds)."""
    return pd.DataFrame([[None if v is None else str(v) for v in r] for r in rows], columns=list(CANONICAL_COLUMNS)).astype(object)


def _good(invoice: str, ts: str = "2011-08-31 10:00:00", **changes) -> tuple:
    row = dict(zip(CANONICAL_COLUMNS, (invoice, "22423", "CAKESTAND", "2", ts, "12.75", "14911", "EIRE")))
    row.update(changes)
    return tuple(row.values())


def _quarantined(settings) -> dict[date, pd.DataFrame]:
    ws = Workspace.for_settings(settings)
    return {d: ws.root.read_parquet(ws.root.path("quarantine", d, QUARANTINE_FILE)) for d in ws.root.list_days("quarantine", QUARANTINE_FILE)}


def _clean(settings, day: date) -> pd.DataFrame:
    ws = Workspace.for_settings(settings)
    return ws.per_source.read_parquet(ws.per_source.path("clean", day, CLEAN_FILE))


def _run(settings, day: date) -> tuple[dict, dict]:
    return extract_day(settings, day), clean_day(settings, day)


def _stamp(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_ino, st.st_mtime_ns


def _rewrite_source(settings, frame: pd.DataFrame) -> None:
    """Replace the source file with ``frame`` as a new version (another size or mtime)."""
    if settings.source.endswith(".csv"):
        frame.to_csv(settings.source, index=False)
    else:
        frame.to_parquet(settings.source, index=False)
    st = os.stat(settings.source)
    os.utime(settings.source, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


# -- numbers a float column cannot carry, through extract and clean -------------------------------

BAD_NUMBERS = {
    "Quantity": {"inf": "non_finite_number", "-inf": "non_finite_number", "1e400": "non_finite_number",
                 "Infinity": "non_finite_number", "1e30": "quantity_out_of_range"},
    "UnitPrice": {"inf": "non_finite_number", "-inf": "non_finite_number", "1e400": "non_finite_number",
                  "Infinity": "non_finite_number", "1e300": "price_out_of_range"},
    "CustomerID": {"inf": "non_finite_number", "-inf": "non_finite_number", "1e400": "non_finite_number",
                   "Infinity": "non_finite_number", "9223372036854775808": "customer_out_of_range",
                   "99999999999999999999": "customer_out_of_range", "9007199254740993": "customer_out_of_range"},
}


@pytest.mark.parametrize("name", ["tx.csv", "tx.parquet"])
@pytest.mark.parametrize("column", sorted(BAD_NUMBERS))
def test_non_finite_and_out_of_range_numbers_are_quarantined_by_extract_and_clean(settings_factory, column, name):
    bad = BAD_NUMBERS[column]
    rows = [_good("1")] + [_good(str(100 + i), **{column: text}) for i, text in enumerate(bad)]
    settings = settings_factory(_text_frame(rows), name=name)
    _, report = _run(settings, DAY)
    assert report["run_day"]["read"] == len(rows) and report["run_day"]["clean"] == 1
    q = _quarantined(settings)[DAY]
    assert dict(zip(q[f"{column}_raw"], q["reason"])) == bad
    assert dict(zip(q[f"{column}_raw"], q["detail"])) == {text: f"{column}={text}" for text in bad}
    assert _clean(settings, DAY)["invoice_no"].tolist() == ["1"]


@pytest.mark.parametrize("column", sorted(BAD_NUMBERS))
def test_nan_text_is_quarantined_and_a_csv_nan_marker_reads_as_missing(settings_factory, column):
    rows = [_good("1"), _good("2", **{column: "nan"})]
    typed = settings_factory(_text_frame(rows), name="text.parquet")  # "nan" as text in a Parquet string column
    _run(typed, DAY)
    q = _quarantined(typed)[DAY]
    assert q["reason"].tolist() == ["non_finite_number"] and q[f"{column}_raw"].tolist() == ["nan"]

    csv = settings_factory(_text_frame(rows), name="marker.csv", storage=str(Path(typed.storage).parent / "csv"))
    _run(csv, DAY)
    q = _quarantined(csv)[DAY]  # pandas reads CSV "nan" as a missing value: quarantined as missing
    expected = {"Quantity": "invalid_quantity", "UnitPrice": "invalid_price", "CustomerID": "missing_customer"}[column]
    assert q["reason"].tolist() == [expected]
    assert _clean(csv, DAY)["invoice_no"].tolist() == ["1"]


# -- undated rows are quarantined exactly once ----------------------------------------------------


def _unparseable_dates(settings) -> dict[date, list[str]]:
    out = {}
    for d, q in _quarantined(settings).items():
        hits = q.loc[q["reason"] == "unparseable_date", "InvoiceDate_raw"].tolist()
        if hits:
            out[d] = hits
    return out


def test_undated_rows_are_quarantined_once_on_the_day_that_first_extracted_them(settings_factory):
    settings = settings_factory()  # tiny_raw: one row dated "not a date"
    first, second = date(2011, 8, 30), DAY
    _run(settings, first)
    assert _unparseable_dates(settings) == {first: ["not a date"]}
    extract, clean = _run(settings, second)
    assert extract["rows_undated"] == 1 and extract["rows_undated_of_day"] == 0
    assert clean["run_day"]["quarantine_reasons"] == {"duplicate_line": 1, "missing_customer": 1, "non_positive_price": 1}
    assert _unparseable_dates(settings) == {first: ["not a date"]}
    _run(settings, first)  # a rerun of the first day re-assigns them to it
    assert _unparseable_dates(settings) == {first: ["not a date"]}
    _run(settings, second)
    assert _unparseable_dates(settings) == {first: ["not a date"]}


def test_undated_rows_stay_on_their_day_across_source_versions_and_new_ones_go_to_the_run_day(settings_factory, tiny_raw, make_raw):
    settings = settings_factory()
    _run(settings, date(2011, 8, 30))
    extra = make_raw([("536399", "22730", "CLOCK", 2, "31/31/2011", 3.75, 13047.0, "France")])
    _rewrite_source(settings, pd.concat([tiny_raw, extra], ignore_index=True))
    _run(settings, DAY)
    assert _unparseable_dates(settings) == {date(2011, 8, 30): ["not a date"], DAY: ["31/31/2011"]}
    _run(settings, DAY)
    _run(settings, date(2011, 8, 30))
    assert _unparseable_dates(settings) == {date(2011, 8, 30): ["not a date"], DAY: ["31/31/2011"]}
    # the first row is fixed in the source: it leaves the quarantine of the day that held it
    _rewrite_source(settings, pd.concat([tiny_raw[tiny_raw["InvoiceDate"] != "not a date"], extra], ignore_index=True))
    extract, _ = _run(settings, DAY)
    assert extract["history_rewritten"] == ["2011-08-30"]
    assert _unparseable_dates(settings) == {DAY: ["31/31/2011"]}


# -- transient source errors are retried, bad files are not ----------------------------------------


class _FlakyFile:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def read(self, *args):
        raise self.exc


class _FlakyFS:
    """A file system whose file exists but whose reads fail with ``exc`` (``where``: which call)."""

    def __init__(self, exc: BaseException, where: str) -> None:
        self.exc, self.where = exc, where

    def _maybe(self, call: str) -> None:
        if call == self.where:
            raise self.exc

    def invalidate_cache(self, path=None):
        pass

    def exists(self, path):
        self._maybe("exists")
        return True

    def ukey(self, path):
        self._maybe("ukey")
        return "0123456789abcdef0123"

    def open(self, path, mode="rb", **kw):
        self._maybe("open")
        return _FlakyFile(self.exc) if self.where == "read" else pytest.fail("unexpected open")


def _transient_errors() -> list[BaseException]:
    from botocore.exceptions import EndpointConnectionError, ReadTimeoutError

    return [
        ConnectionError("connection reset by peer"),
        TimeoutError("read timed out"),
        OSError(5, "Input/output error"),
        ConnectionResetError(104, "reset"),
        EndpointConnectionError(endpoint_url="http://minio:9000/bucket"),
        ReadTimeoutError(endpoint_url="http://minio:9000/bucket"),
    ]


@pytest.mark.parametrize("where", ["exists", "open", "read", "ukey"])
@pytest.mark.parametrize("exc", _transient_errors(), ids=lambda e: type(e).__name__)
def test_transient_source_errors_propagate_as_retryable(settings_factory, monkeypatch, exc, where):
    from purchasing_power import extract as extract_mod
    from purchasing_power.errors import InputError

    settings = settings_factory(name="tx.csv")
    monkeypatch.setattr(extract_mod, "filesystem_for", lambda uri: _FlakyFS(exc, where))
    with pytest.raises(type(exc)) as info:
        extract_day(settings, DAY)
    assert info.value is exc and not isinstance(info.value, InputError)


@pytest.mark.parametrize("name", ["tx.parquet", "tx.csv", "tx.csv.gz"])
def test_a_garbage_source_is_an_input_error_naming_the_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"PAR1\x00\x00garbage\xff\xfe" * 10)
    with pytest.raises(SourceError, match=f"cannot read source {path}"):
        read_source(str(path))


# -- truncated and ragged CSV ----------------------------------------------------------------------


def test_a_half_written_csv_fails_naming_the_file_and_the_line(settings_factory):
    rows = [_good("1"), _good("2"), _good("3")]
    settings = settings_factory(_text_frame(rows), name="tx.csv")
    with open(settings.source, "rb") as fh:
        data = fh.read()
    with open(settings.source, "wb") as fh:
        fh.write(data[: data.rindex(b",2011-08-31") + 5])  # the last line cut in half
    with pytest.raises(SourceError, match=rf"{settings.source}: line 4 has 5 of 8 fields"):
        extract_day(settings, DAY)


def test_a_csv_row_with_extra_fields_fails_naming_the_line(tmp_path):
    path = tmp_path / "tx.csv"
    _text_frame([_good("1"), _good("2")]).to_csv(path, index=False)
    lines = path.read_text().splitlines()
    lines[2] += ",surplus"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(SourceError, match=rf"{path}: line 3 has 9 of 8 fields"):
        read_source(str(path))


def test_a_quoted_newline_in_a_csv_is_not_a_short_row(tmp_path):
    path = tmp_path / "tx.csv"
    _text_frame([_good("1", Description="TWO\nLINES"), _good("2")]).to_csv(path, index=False)
    assert read_source(str(path))["Description"].tolist() == ["TWO\nLINES", "CAKESTAND"]


# -- a replaced source: history whose rows changed is extracted and cleaned again -----------------

HISTORY = [
    _good("1", "2011-08-28 10:00:00"),
    _good("2", "2011-08-29 10:00:00"),
    _good("3", "2011-08-30 10:00:00"),
    _good("4", "2011-08-31 10:00:00"),
]


def test_a_rewritten_history_day_is_extracted_and_cleaned_again(settings_factory):
    settings = settings_factory(_text_frame(HISTORY), name="tx.csv")
    _run(settings, date(2011, 8, 30))
    ws = Workspace.for_settings(settings).per_source
    days = [date(2011, 8, 28), date(2011, 8, 29), date(2011, 8, 30)]
    before = {d: (_stamp(ws.path("raw", d, RAW_FILE)), _stamp(ws.path("clean", d, CLEAN_FILE))) for d in days}
    rewritten = list(HISTORY)
    rewritten[1] = _good("2", "2011-08-29 10:00:00", Quantity="7")  # a correction of 08-29
    _rewrite_source(settings, _text_frame(rewritten))
    extract, clean = _run(settings, DAY)
    assert extract["history_rewritten"] == ["2011-08-29"] and extract["partitions_written"] == 2
    assert clean["partitions_cleaned"] == 2
    assert _clean(settings, date(2011, 8, 29))["quantity"].tolist() == [7]
    after = {d: (_stamp(ws.path("raw", d, RAW_FILE)), _stamp(ws.path("clean", d, CLEAN_FILE))) for d in days}
    assert after[date(2011, 8, 28)] == before[date(2011, 8, 28)]  # unchanged days are not rewritten
    assert after[date(2011, 8, 30)] == before[date(2011, 8, 30)]
    assert after[date(2011, 8, 29)][0] != before[date(2011, 8, 29)][0]
    assert after[date(2011, 8, 29)][1] != before[date(2011, 8, 29)][1]


def test_a_history_day_removed_from_the_source_is_emptied(settings_factory):
    settings = settings_factory(_text_frame(HISTORY), name="tx.csv")
    _run(settings, date(2011, 8, 30))
    _rewrite_source(settings, _text_frame(HISTORY[1:]))  # 08-28 is gone
    extract, _ = _run(settings, DAY)
    assert extract["history_rewritten"] == ["2011-08-28"]
    assert _clean(settings, date(2011, 8, 28)).empty


def test_a_new_version_with_the_same_rows_rewrites_no_history(settings_factory):
    settings = settings_factory(_text_frame(HISTORY), name="tx.csv")
    _run(settings, DAY)
    ws = Workspace.for_settings(settings).per_source
    days = [date(2011, 8, 28), date(2011, 8, 29), date(2011, 8, 30)]
    before = {d: (_stamp(ws.path("raw", d, RAW_FILE)), _stamp(ws.path("clean", d, CLEAN_FILE))) for d in days}
    _rewrite_source(settings, _text_frame(HISTORY))
    extract, clean = _run(settings, DAY)
    assert extract["history_rewritten"] == [] and extract["partitions_written"] == 1 and clean["partitions_cleaned"] == 1
    assert {d: (_stamp(ws.path("raw", d, RAW_FILE)), _stamp(ws.path("clean", d, CLEAN_FILE))) for d in days} == before


def test_a_clean_partition_made_from_an_older_raw_partition_is_cleaned_again(settings_factory):
    settings = settings_factory(_text_frame(HISTORY), name="tx.csv")
    _run(settings, date(2011, 8, 30))
    rewritten = list(HISTORY)
    rewritten[0] = _good("1", "2011-08-28 10:00:00", UnitPrice="1.5")
    _rewrite_source(settings, _text_frame(rewritten))
    extract_day(settings, DAY)  # clean of that run did not happen (e.g. the run failed there)
    clean_day(settings, DAY)
    assert _clean(settings, date(2011, 8, 28))["unit_price"].tolist() == [1.5]


# -- column_map mistakes and missing stock codes ----------------------------------------------------


def test_column_map_onto_a_column_the_file_already_has_is_a_source_error():
    df = _online_retail_ii().assign(UnitPrice=[1.0, 2.0])
    with pytest.raises(SourceError, match=r"column_map maps 'Price' onto 'UnitPrice', which tx\.csv already has"):
        map_columns(df, {"Invoice": "InvoiceNo", "Price": "UnitPrice", "Customer ID": "CustomerID"}, source="tx.csv")


def test_column_map_with_two_sources_for_one_column_is_a_source_error():
    df = _online_retail_ii()
    with pytest.raises(SourceError, match=r"column_map maps \['Extra', 'Price'\] onto one column 'UnitPrice'"):
        map_columns(df, {"Invoice": "InvoiceNo", "Price": "UnitPrice", "Extra": "UnitPrice", "Customer ID": "CustomerID"}, source="tx.csv")


def test_the_online_retail_ii_names_do_not_override_a_canonical_column_the_file_has():
    df = _online_retail_ii().assign(UnitPrice=[1.0, 2.0])
    assert map_columns(df, {})["UnitPrice"].tolist() == [1.0, 2.0]


def test_a_conflicting_column_map_fails_extract_with_a_source_error(settings_factory):
    frame = _online_retail_ii().assign(UnitPrice=[1.0, 2.0])
    settings = settings_factory(frame, column_map={"Invoice": "InvoiceNo", "Price": "UnitPrice", "Customer ID": "CustomerID"})
    with pytest.raises(SourceError, match="already has"):
        extract_day(settings, date(2009, 12, 1))


def test_a_missing_stock_code_is_quarantined_by_extract_and_clean(settings_factory):
    rows = [_good("1"), _good("2", StockCode=None), _good("3", StockCode=" ")]
    settings = settings_factory(_text_frame(rows), name="tx.csv")
    _run(settings, DAY)
    assert _quarantined(settings)[DAY]["reason"].tolist() == ["missing_stock_code"] * 2
    assert _clean(settings, DAY)["stock_code"].tolist() == ["22423"]


def test_a_changed_history_day_drops_the_features_and_models_computed_from_it(settings_factory):
    """Features, models and evaluations of days on or after a rewritten history day were computed
    from the old rows: clean removes them so that they are computed again; earlier ones stay."""
    settings = settings_factory(_text_frame(HISTORY), name="tx.csv")
    _run(settings, date(2011, 8, 30))
    ws = Workspace.for_settings(settings).per_source
    for dataset, d in (("features", date(2011, 8, 28)), ("features", date(2011, 8, 29)), ("models", date(2011, 8, 30)),
                       ("evaluation", date(2011, 8, 29))):
        ws.write_json({"stale": False}, ws.path(dataset, d, "x.json"))
    rewritten = list(HISTORY)
    rewritten[1] = _good("2", "2011-08-29 10:00:00", Quantity="7")  # a correction of 08-29
    _rewrite_source(settings, _text_frame(rewritten))
    _, clean = _run(settings, DAY)
    assert clean["history_changed"] == ["2011-08-29"]
    assert sorted(clean["derived_invalidated"]) == ["evaluation/ds=2011-08-29", "features/ds=2011-08-29", "models/ds=2011-08-30"]
    assert ws.exists(ws.path("features", date(2011, 8, 28), "x.json"))
    assert not ws.exists(ws.path("features", date(2011, 8, 29), "x.json"))
    _, again = _run(settings, DAY)  # nothing changed since: nothing more is removed
    assert again["history_changed"] == [] and again["derived_invalidated"] == []


# -- customer ids of any form through extract and clean --------------------------------------------


@pytest.mark.parametrize("name", ["tx.csv", "tx.parquet"])
def test_text_customer_ids_keep_their_spelling_through_extract_and_clean(settings_factory, name):
    """Text ids (one source, one type): every raw and clean partition, the empty day's included,
    holds them as strings, spelled as the source spells them; an empty id is missing."""
    import pyarrow.parquet as pq

    rows = [_good("1", CustomerID=" C-00123 "), _good("2", CustomerID="00042"), _good("3", CustomerID=""),
            _good("4", "2011-08-29 10:00:00", CustomerID="9f86d081"), _good("5", "2011-08-29 11:00:00", CustomerID="17850")]
    settings = settings_factory(_text_frame(rows), name=name)
    _, report = _run(settings, DAY)
    assert report["run_day"]["quarantine_reasons"] == {"missing_customer": 1}
    assert _clean(settings, DAY)["customer_id"].tolist() == ["C-00123", "00042"]
    assert _clean(settings, date(2011, 8, 29))["customer_id"].tolist() == ["9f86d081", "17850"]
    ws = Workspace.for_settings(settings).per_source
    for d in (date(2011, 8, 29), date(2011, 8, 30), DAY):  # 08-30 has no rows
        assert pq.read_schema(ws.path("raw", d, RAW_FILE)).field("CustomerID").type == "string"
        assert pq.read_schema(ws.path("clean", d, CLEAN_FILE)).field("customer_id").type == "string"


def test_integer_customer_ids_of_a_csv_stay_integers_through_extract_and_clean(settings_factory):
    rows = [_good("1", CustomerID="17850.0"), _good("2", CustomerID="13047"), _good("3", CustomerID="12.5"), _good("4", CustomerID="")]
    settings = settings_factory(_text_frame(rows), name="tx.csv")
    _, report = _run(settings, DAY)
    assert report["run_day"]["quarantine_reasons"] == {"invalid_customer": 1, "missing_customer": 1}
    clean = _clean(settings, DAY)
    assert clean["customer_id"].dtype == "int64" and clean["customer_id"].tolist() == [17850, 13047]


def test_a_source_whose_ids_turn_to_text_rewrites_every_partition_empty_days_included(settings_factory):
    """A new version of the source with one text id makes every id text: every raw and clean
    partition, those of days without rows included, must then hold text ids, or a read of the
    history that starts on such a day fails on mixed Arrow schemas."""
    import pyarrow.parquet as pq

    from purchasing_power.history import load_clean_history

    first = [_good("1", "2011-08-28 10:00:00", CustomerID="17850"), _good("2", CustomerID="13047")]
    settings = settings_factory(_text_frame(first), name="tx.csv")
    _run(settings, DAY)
    assert _clean(settings, DAY)["customer_id"].tolist() == [13047]
    _rewrite_source(settings, _text_frame(first + [_good("3", "2011-08-31 11:00:00", CustomerID="x12")]))
    _run(settings, DAY)
    ws = Workspace.for_settings(settings).per_source
    for d in (date(2011, 8, 28), date(2011, 8, 29), date(2011, 8, 30), DAY):  # 08-29 and 08-30 have no rows
        assert pq.read_schema(ws.path("raw", d, RAW_FILE)).field("CustomerID").type == "string", d
        assert pq.read_schema(ws.path("clean", d, CLEAN_FILE)).field("customer_id").type == "string", d
    since = load_clean_history(settings, DAY, since=date(2011, 8, 29))
    assert since["customer_id"].tolist() == ["13047", "x12"]


def test_clean_in_day_batches_writes_what_one_pass_writes(tmp_path, monkeypatch):
    """A first run over a long history cleans it in batches of whole days (bounded memory): every
    clean and quarantine partition, the counts and the manifest equal one pass over all days."""
    import hashlib

    import purchasing_power.stages.clean as clean_stage
    from purchasing_power.demo import generate_demo_transactions

    src = generate_demo_transactions(n_customers=60, start=date(2024, 1, 1), end=date(2024, 3, 31), seed=5)
    day = date(2024, 3, 31)

    def run(root: str, batch_rows: int):
        monkeypatch.setattr(clean_stage, "CLEAN_BATCH_ROWS", batch_rows)
        path = tmp_path / "src.parquet"
        src.to_parquet(path, index=False)
        settings = Settings(storage=str(tmp_path / root), source=str(path)).validated()
        extract_day(settings, day)
        report = clean_day(settings, day)
        base = tmp_path / root
        files = {str(p.relative_to(base)): hashlib.sha256(p.read_bytes()).hexdigest()
                 for p in sorted(base.rglob("*.parquet")) if "/clean/" in str(p) or "quarantine" in str(p)}
        return report, files

    one, one_files = run("one", 10**9)
    many, many_files = run("many", 200)
    assert clean_stage.day_batches(sorted({date(2024, 1, 1) + timedelta(days=i) for i in range(91)}), {}, 30)[0] == [
        date(2024, 1, 1) + timedelta(days=i) for i in range(30)]
    assert len(clean_stage.day_batches(
        [date(2024, 1, 1) + timedelta(days=i) for i in range(91)],
        {(date(2024, 1, 1) + timedelta(days=i)).isoformat(): {"rows": 100} for i in range(91)}, 200)) == 46
    assert one["totals"] == many["totals"] and one["run_day"] == many["run_day"] and one["totals"]["read"] > 1000
    assert one["partitions_cleaned"] == many["partitions_cleaned"] > 60
    assert len(one_files) > 60 and one_files == many_files


def test_the_first_day_writes_the_history_a_month_at_a_time_with_the_same_bytes(tmp_path, monkeypatch):
    """extract reads the staged copy in windows of WINDOW_DAYS days (bounded memory on a first
    day that extracts years): windows of a few days write the very partitions and manifest of
    one window over everything, undated rows included."""
    import purchasing_power.stages.extract as stage
    from purchasing_power.demo import write_demo_source
    from purchasing_power.settings import Settings
    from purchasing_power.storage import RAW_MANIFEST

    src = write_demo_source(str(tmp_path / "src" / "t.parquet"), n_customers=40, start=date(2024, 1, 1), end=date(2024, 4, 30), seed=2)
    frame = pd.read_parquet(src)
    frame.loc[frame.index[:7], "InvoiceDate"] = None  # undated rows, handed out to days
    frame.to_parquet(src, index=False)
    out = {}
    calls = []
    real = stage.read_staged
    monkeypatch.setattr(stage, "read_staged", lambda *a: calls.append(a[1:]) or real(*a))
    for name, window in (("one", 10_000), ("small", 5)):
        monkeypatch.setattr(stage, "WINDOW_DAYS", window)
        calls.clear()
        settings = Settings(storage=str(tmp_path / name), source=src).validated()
        extract_day(settings, date(2024, 4, 20))
        out[name] = (len(calls), {p.relative_to(tmp_path / name).as_posix(): p.read_bytes()
                                  for p in sorted((tmp_path / name).rglob("*")) if p.is_file() and ("raw" in p.parts or p.name == RAW_MANIFEST)})
    assert out["one"][0] == 1 and out["small"][0] == 22, "108 days (01-04 .. 04-20) in windows of 5 days"
    assert len(out["one"][1]) > 100 and out["one"][1] == out["small"][1]
