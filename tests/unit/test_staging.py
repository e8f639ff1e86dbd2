"""Staging a Parquet source chunk by chunk gives exactly what staging it in one piece gives."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from purchasing_power import staging
from purchasing_power.extract import normalise_raw_dtypes
from purchasing_power.settings import Settings
from purchasing_power.stages.extract import extract_day
from purchasing_power.storage import Workspace

DAY = date(2011, 3, 10)


def _source(text_ids: bool) -> pd.DataFrame:
    """~300 rows over ~70 days in no particular order, with undated and unparseable dates, a
    quantity column with gaps in only some chunks, and (``text_ids``) one text id, in the last
    rows only: a chunk-by-chunk staging that decided the id type per chunk would differ."""
    rng = np.random.default_rng(3)
    n = 300
    start = pd.Timestamp("2011-01-01 08:00")
    dates = [start + pd.Timedelta(days=int(d), minutes=int(m)) for d, m in zip(rng.integers(0, 70, n), rng.integers(0, 600, n))]
    df = pd.DataFrame({
        "InvoiceNo": [f"5{i:05d}" for i in range(n)],
        "StockCode": rng.choice(["85123A", "22423", "POST"], n),
        "Description": rng.choice(["CAKESTAND", "HEART", None], n),
        "Quantity": pd.array(rng.integers(-2, 12, n), dtype="Int64"),
        "InvoiceDate": pd.Series([d.strftime("%Y-%m-%d %H:%M:%S") for d in dates], dtype=object),
        "UnitPrice": rng.choice([1.25, 2.5, 0.0], n),
        "CustomerID": pd.Series([str(v) for v in rng.integers(12000, 12040, n)], dtype=object),
        "Country": "United Kingdom",
    })
    df.loc[[5, 77, 150, 151], "InvoiceDate"] = None
    df.loc[[9, 200], "InvoiceDate"] = "not a date"
    df.loc[[120, 121], "InvoiceDate"] = "2/1/2011 9:05"
    df.loc[[40, 260], "Quantity"] = pd.NA
    df.loc[[12, 13], "CustomerID"] = None
    df.loc[[60, 61], :] = df.loc[[60, 61], :].to_numpy()  # equal rows: numbered undated keys
    df.loc[[150, 151], :] = df.loc[[150], :].to_numpy().repeat(2, axis=0)
    if text_ids:
        df.loc[n - 3, "CustomerID"] = "C-00042"
    else:
        df["CustomerID"] = pd.to_numeric(df["CustomerID"]).astype("float64")
    return df


def _staged_run(tmp_path: Path, name: str, source: Path, chunk_rows: int, bucket_days: int, monkeypatch) -> dict[str, bytes]:
    monkeypatch.setattr(staging, "STAGE_CHUNK_ROWS", chunk_rows)
    monkeypatch.setattr(staging, "SPILL_BUCKET_DAYS", bucket_days)
    settings = Settings(storage=str(tmp_path / name), source=str(source)).validated()
    extract_day(settings, DAY)
    base = Path(Workspace.for_settings(settings).per_source.path("staged")).parent
    out = {}
    for p in sorted(base.rglob("*")):
        if p.is_file() and "/runs/" not in str(p):
            data = p.read_bytes()
            if p.name.endswith("-index.json"):  # its paths name the storage root
                index = json.loads(data)
                data = json.dumps({k: v for k, v in index.items() if not k.endswith("_path")}, sort_keys=True).encode()
            out[str(p.relative_to(base))] = data
    return out


@pytest.mark.parametrize("text_ids", [True, False])
def test_staging_in_tiny_chunks_writes_the_bytes_of_staging_in_one_chunk(tmp_path, monkeypatch, text_ids):
    source = tmp_path / "source.parquet"
    frame = _source(text_ids)
    frame.to_parquet(source, row_group_size=50)
    whole = _staged_run(tmp_path, "whole", source, 10**9, 10**6, monkeypatch)
    chunked = _staged_run(tmp_path, "chunked", source, 7, 2, monkeypatch)
    assert len([k for k in whole if k.startswith("raw/")]) > 60
    assert any(k.endswith("-undated.parquet") for k in whole) and sorted(whole) == sorted(chunked)
    assert [k for k in whole if whole[k] != chunked[k]] == []

    # and both are what sorting the whole normalised source by day gives (the staging before chunks)
    index = json.loads(next(v for k, v in whole.items() if k.endswith("-index.json")))
    assert index["rows"] == len(frame) and index["undated"] == 6 and len(index["undated_keys"]) == 6
    assert sorted(k for k in index["undated_keys"] if k.endswith("-1"))  # equal undated rows numbered
    expected = normalise_raw_dtypes(frame)
    assert (expected["CustomerID"].map(type) == str).any() == text_ids
    dated = expected[expected["InvoiceDate"].notna()]
    dated = dated.iloc[dated["InvoiceDate"].dt.normalize().argsort(kind="stable")].reset_index(drop=True)
    got = pd.read_parquet(next((tmp_path / "whole").rglob("*-dated.parquet")))
    pd.testing.assert_frame_equal(got, dated, check_dtype=False)
    assert index["days"] == {str(d)[:10]: int(n) for d, n in dated["InvoiceDate"].dt.normalize().value_counts().sort_index().items()}


def test_a_day_range_of_one_row_group_and_an_empty_source_file(tmp_path, monkeypatch, make_raw):
    """Row groups of the staged file are cut as one write of all the rows cuts them, across
    buckets; a source without rows is refused before anything is staged."""
    from purchasing_power.errors import SourceError

    monkeypatch.setattr(staging.extract, "STAGED_ROW_GROUP", 4)
    rows = [(f"{i}", "A", "X", 1, str(date(2011, 3, 1) + timedelta(days=i % 9)), 1.0, 12000.0 + i, "UK") for i in range(23)]
    source = tmp_path / "s.parquet"
    make_raw(rows).to_parquet(source)
    outs = [_staged_run(tmp_path, name, source, c, b, monkeypatch) for name, c, b in (("a", 10**6, 10**6), ("b", 3, 1))]
    assert outs[0] == outs[1]
    import pyarrow.parquet as pq

    dated = next((tmp_path / "b").rglob("*-dated.parquet"))
    assert [pq.ParquetFile(dated).metadata.row_group(i).num_rows for i in range(6)] == [4, 4, 4, 4, 4, 3]

    empty = tmp_path / "empty.parquet"
    make_raw(rows).iloc[:0].to_parquet(empty)
    settings = Settings(storage=str(tmp_path / "e"), source=str(empty)).validated()
    with pytest.raises(SourceError, match="no rows"):
        staging.stage_source(settings, Workspace.for_settings(settings))
    assert not list((tmp_path / "e").rglob("*.parquet"))


def test_a_killed_stagings_spill_files_are_no_parquet_artefacts_and_go_once_stale(tmp_path, monkeypatch):
    """A run killed while staging leaves its spill folder (no cleanup runs): its files are named
    ``*.spill``, so nothing that reads the storage's ``*.parquet`` takes them for artefacts, and
    the next staging removes the folder once it is older than TEMP_MAX_AGE_S."""
    import os

    source = tmp_path / "source.parquet"
    _source(False).to_parquet(source, row_group_size=50)
    monkeypatch.setattr(staging.shutil, "rmtree", lambda *a, **k: None)  # the kill: no cleanup
    _staged_run(tmp_path, "killed", source, 7, 2, monkeypatch)
    [spill] = [p for p in (tmp_path / "killed").rglob(".spill-*") if p.is_dir()]
    assert sorted({p.suffix for p in spill.iterdir()}) == [".spill"] and not list(spill.rglob("*.parquet"))
    monkeypatch.undo()
    old = os.stat(spill).st_mtime - staging.TEMP_MAX_AGE_S - 1
    os.utime(spill, (old, old))
    settings = Settings(storage=str(tmp_path / "killed"), source=str(source)).validated()
    with staging._spill_folder(Workspace.for_settings(settings).per_source) as fresh:
        assert not spill.exists() and os.path.isdir(fresh)
