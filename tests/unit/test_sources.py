"""File sets (a folder or glob of files) read incrementally, and the source-form helpers."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

import purchasing_power.extract as extract
import purchasing_power.staging as staging
from purchasing_power.settings import Settings
from purchasing_power.sources import day_ranges, is_file_set, is_sql_source, list_parts, read_all
from purchasing_power.stages.extract import extract_day
from purchasing_power.storage import RAW_FILE, Workspace

DAYS = [date(2011, 8, 29), date(2011, 8, 30), date(2011, 8, 31)]


def _rows(day: date, n: int, first: int = 0) -> list[tuple]:
    return [(str(first + i), "A", "X", 1 + i, f"{day} {10 + i}:00:00", 1.5, 17850.0 + i, "UK") for i in range(n)]


def _write(make_raw, path: Path, rows: list[tuple]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = make_raw(rows)
    frame.to_csv(path, index=False) if path.suffix == ".csv" else frame.to_parquet(path, index=False)


def _settings(tmp_path: Path, source: str, root: str = "data") -> Settings:
    return Settings(storage=str(tmp_path / root), source=source).validated()


def _raw(settings: Settings) -> dict[str, bytes]:
    base = Path(Workspace.for_settings(settings).per_source.path("raw"))
    return {p.parent.name: p.read_bytes() for p in sorted(base.glob("ds=*/raw.parquet"))}


@pytest.fixture
def reads(monkeypatch) -> list[str]:
    """The files staging reads (``staging.SourceChunks``: Parquet chunk by chunk, CSV whole)."""
    calls: list[str] = []
    real = staging.SourceChunks.__enter__
    monkeypatch.setattr(staging.SourceChunks, "__enter__", lambda self: calls.append(os.path.basename(self.source)) or real(self))
    return calls


def test_a_new_daily_file_is_the_only_one_read(tmp_path, make_raw, reads):
    folder = tmp_path / "tx"
    for i, d in enumerate(DAYS[:2]):
        _write(make_raw, folder / f"ds={d}" / "part-0.parquet", _rows(d, 2, first=10 * i))
    settings = _settings(tmp_path, f"{folder}/ds=*/")
    first = extract_day(settings, DAYS[1])
    assert sorted(reads) == ["part-0.parquet", "part-0.parquet"] and first["partitions_written"] == 2
    history = _raw(settings)
    reads.clear()
    assert extract_day(settings, DAYS[1])["partitions_written"] == 1 and reads == []  # nothing new: nothing read

    _write(make_raw, folder / f"ds={DAYS[2]}" / "part-0.parquet", _rows(DAYS[2], 3, first=20))
    third = extract_day(settings, DAYS[2])
    assert reads == ["part-0.parquet"] and third["history_rewritten"] == [] and third["rows_of_day"] == 3
    assert third["rows_in_source"] == 7 and third["partitions_written"] == 1
    assert {k: v for k, v in _raw(settings).items() if k != f"ds={DAYS[2]}"} == history
    ws = Workspace.for_settings(settings).per_source
    assert ws.read_parquet(ws.path("raw", DAYS[2], RAW_FILE))["InvoiceNo"].tolist() == ["20", "21", "22"]


def test_a_file_set_gives_the_same_partitions_as_one_file_with_its_rows(tmp_path, make_raw):
    rows = [r for i, d in enumerate(DAYS) for r in _rows(d, 3, first=10 * i)]
    one = tmp_path / "one.parquet"
    _write(make_raw, one, rows)
    for i, d in enumerate(DAYS):
        _write(make_raw, tmp_path / "set" / f"{d}.csv", _rows(d, 3, first=10 * i))
    whole, parts = _settings(tmp_path, str(one), "a"), _settings(tmp_path, str(tmp_path / "set" / "*.csv"), "b")
    extract_day(whole, DAYS[2])
    extract_day(parts, DAYS[2])
    assert _raw(whole) == _raw(parts) and len(_raw(parts)) == 3


def test_a_changed_file_is_read_again_and_only_its_days_are_rewritten(tmp_path, make_raw, reads):
    folder = tmp_path / "tx"
    for i, d in enumerate(DAYS):
        _write(make_raw, folder / f"{d}.parquet", _rows(d, 2, first=10 * i))
    settings = _settings(tmp_path, str(folder))  # a plain folder: every data file in it
    extract_day(settings, DAYS[2])
    reads.clear()
    _write(make_raw, folder / f"{DAYS[0]}.parquet", _rows(DAYS[0], 3))  # a corrected day
    os.utime(folder / f"{DAYS[0]}.parquet", ns=(1, 1))
    report = extract_day(settings, DAYS[2])
    assert reads == [f"{DAYS[0]}.parquet"] and report["history_rewritten"] == [DAYS[0].isoformat()]
    ws = Workspace.for_settings(settings).per_source
    assert len(ws.read_parquet(ws.path("raw", DAYS[0], RAW_FILE))) == 3
    staged = sorted(p.name for p in Path(ws.path("staged")).iterdir())
    assert len([n for n in staged if n.endswith("-dated.parquet")]) == 3  # the old version of the changed file is gone

    (folder / f"{DAYS[1]}.parquet").unlink()  # a removed file: its day is emptied
    report = extract_day(settings, DAYS[2])
    assert report["history_rewritten"] == [DAYS[1].isoformat()] and reads == [f"{DAYS[0]}.parquet"]
    assert ws.read_parquet(ws.path("raw", DAYS[1], RAW_FILE)).empty


def test_two_files_with_rows_of_one_day_are_merged_in_path_order(tmp_path, make_raw):
    folder = tmp_path / "tx"
    _write(make_raw, folder / "b.parquet", _rows(DAYS[0], 2, first=20))
    _write(make_raw, folder / "a.parquet", _rows(DAYS[0], 2, first=10) + [("99", "A", "X", 1, "not a date", 1.0, 1.0, "UK")])
    _write(make_raw, folder / "c.parquet", [("98", "A", "X", 1, "not a date", 1.0, 1.0, "UK")])  # equal undated rows
    _write(make_raw, folder / "_SUCCESS.parquet", [])  # marker files are never parts
    (folder / ".hidden.csv").write_text("garbage")
    (folder / "README.txt").write_text("not data")
    settings = _settings(tmp_path, f"{folder}/")
    report = extract_day(settings, DAYS[0])
    assert report["rows_in_source"] == 6 and report["rows_undated"] == 2
    ws = Workspace.for_settings(settings).per_source
    got = ws.read_parquet(ws.path("raw", DAYS[0], RAW_FILE))
    assert got["InvoiceNo"].tolist() == ["10", "11", "20", "21", "99", "98"]
    index = extract.staged_index(ws, report["source_version"])
    assert [k.rsplit("-", 1)[1] for k in index["undated_keys"]] == ["0", "0"]  # different rows, different keys
    assert [os.path.basename(p["source"]) for p in index["parts"]] == ["a.parquet", "b.parquet", "c.parquet"]


def test_an_object_store_glob(make_raw, tmp_path):
    import fsspec

    mem = fsspec.filesystem("memory")
    for i, d in enumerate(DAYS[:2]):
        mem.pipe(f"memory://pp-src/tx/ds={d}/part.parquet", make_raw(_rows(d, 2, first=10 * i)).to_parquet(index=False))
    source = "memory://pp-src/tx/ds=*/"
    try:
        assert [p for p, _ in list_parts(source)] == [f"memory:///pp-src/tx/ds={d}/part.parquet" for d in DAYS[:2]]
        settings = _settings(tmp_path, source)
        assert extract_day(settings, DAYS[1])["rows_in_source"] == 4
        mem.pipe(f"memory://pp-src/tx/ds={DAYS[2]}/part.parquet", make_raw(_rows(DAYS[2], 1)).to_parquet(index=False))
        assert extract_day(settings, DAYS[2])["rows_in_source"] == 5  # the new object is listed afresh
        assert len(read_all(source)) == 5
    finally:
        mem.rm("memory://pp-src", recursive=True)


def test_a_file_set_without_files_or_rows(tmp_path, make_raw):
    with pytest.raises(FileNotFoundError, match="no source files match"):
        extract_day(_settings(tmp_path, str(tmp_path / "nothing" / "*.parquet")), DAYS[0])
    _write(make_raw, tmp_path / "empty" / "a.parquet", [])
    with pytest.raises(extract.SourceError, match=r"has no rows in its 1 file\(s\)"):
        extract_day(_settings(tmp_path, str(tmp_path / "empty")), DAYS[0])


def test_source_forms():
    assert is_sql_source("sql://wh/a.b") and not is_sql_source("/data/sql/x.parquet")
    assert is_file_set("s3://b/tx/ds=*/") and is_file_set("/x/*.csv") and is_file_set("s3://b/tx/")
    assert not is_file_set("s3://b/tx.parquet") and not is_file_set("/no/such/file.parquet")
    d = [date(2024, 1, i) for i in (1, 2, 3, 5, 9)]
    assert day_ranges(d) == [(d[0], d[2]), (d[3], d[3]), (d[4], d[4])]
    # a gap whose days have no rows is bridged; one with rows (already extracted) is not
    assert day_ranges(d, {date(2024, 1, 4): 0, date(2024, 1, 7): 3}) == [(d[0], d[3]), (d[4], d[4])]


def test_read_all_of_a_file_set_concatenates_its_parts(tmp_path, make_raw):
    for i, d in enumerate(DAYS):
        _write(make_raw, tmp_path / "tx" / f"{d}.parquet", _rows(d, 2, first=10 * i))
    frame = read_all(str(tmp_path / "tx" / "*.parquet"))
    assert frame["InvoiceNo"].tolist() == ["0", "1", "10", "11", "20", "21"]
    pd.testing.assert_frame_equal(read_all(str(tmp_path / "tx" / f"{DAYS[0]}.parquet")), extract.read_source(str(tmp_path / "tx" / f"{DAYS[0]}.parquet")))
