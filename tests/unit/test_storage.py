"""Storage: partition paths, atomic Parquet I/O, overwrite-on-rerun, list_days."""

from __future__ import annotations

import os
import uuid
from datetime import date

import pandas as pd
import pytest

from purchasing_power import storage as storage_mod
from purchasing_power.storage import DATASETS, Storage, partition_path

DAY = date(2011, 8, 31)


def _frame(n: int = 3, offset: int = 0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": pd.Series([12345 + i + offset for i in range(n)], dtype="int64"),
            "value": pd.Series([1.5 * (i + offset) for i in range(n)], dtype="float64"),
            "name": [f"c{i + offset}" for i in range(n)],
        }
    )


def _files(folder) -> list[str]:
    return sorted(os.listdir(folder))


# -- partition_path -----------------------------------------------------------------------------


def test_partition_path_layout_with_date_and_string_day():
    assert partition_path("/data", "clean", DAY, "clean.parquet") == "/data/clean/ds=2011-08-31/clean.parquet"
    assert partition_path("/data/", "clean", "2011-08-31", "clean.parquet") == "/data/clean/ds=2011-08-31/clean.parquet"
    assert partition_path("s3://b/pp", "scores", DAY, "x.parquet") == "s3://b/pp/scores/ds=2011-08-31/x.parquet"


def test_partition_path_without_day_or_name():
    assert partition_path("/data", "raw") == "/data/raw"
    assert partition_path("/data", "raw", DAY) == "/data/raw/ds=2011-08-31"
    assert partition_path("/data", "embeddings", None, "index.json") == "/data/embeddings/index.json"


def test_partition_path_rejects_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset 'cleaned'"):
        partition_path("/data", "cleaned", DAY, "clean.parquet")
    assert "cleaned" not in DATASETS and "clean" in DATASETS


@pytest.mark.parametrize("bad_day", ["2011-13-01", "2011/08/31", "31-08-2011", "2011-8-31", "yesterday", ""])
def test_partition_path_rejects_malformed_days(bad_day):
    with pytest.raises(ValueError):
        partition_path("/data", "clean", bad_day, "clean.parquet")


@pytest.mark.parametrize("iso_but_not_canonical", ["20110831", "2011-W35-3"])
def test_partition_path_rejects_non_canonical_iso_days(iso_but_not_canonical):
    """BUG (storage.py:57): on Python >= 3.11 ``date.fromisoformat`` also accepts ISO basic and
    week dates, so these become folders ``ds=20110831`` / ``ds=2011-W35-3``: a second partition for
    2011-08-31 that ``list_days`` reports as that day but ``path(dataset, date(2011, 8, 31))``
    never reads. The comment promises a ValueError for anything that is not YYYY-MM-DD."""
    with pytest.raises(ValueError):
        partition_path("/data", "clean", iso_but_not_canonical, "clean.parquet")


@pytest.mark.parametrize("bad_name", ["a/b.parquet", "", ".", ".."])
def test_partition_path_rejects_non_plain_file_names(bad_name):
    with pytest.raises(ValueError, match="plain name"):
        partition_path("/data", "clean", DAY, bad_name)


def test_storage_at_makes_local_roots_absolute_and_strips_slash(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert Storage.at("rel/data/").root == str(tmp_path / "rel" / "data")
    assert Storage.at("s3://bucket/prefix/").root == "s3://bucket/prefix"
    assert Storage.at("s3://bucket/prefix").path("raw", DAY, "raw.parquet") == "s3://bucket/prefix/raw/ds=2011-08-31/raw.parquet"


# -- Parquet round trip, atomicity, overwrite ------------------------------------------------


def test_parquet_round_trip(tmp_path):
    st = Storage.at(str(tmp_path))
    df = _frame(4)
    path = st.write_parquet(df, st.path("features", DAY, "f.parquet"))
    assert path == f"{tmp_path}/features/ds=2011-08-31/f.parquet"
    back = st.read_parquet(path)
    pd.testing.assert_frame_equal(back, df)
    assert st.read_parquet(path, columns=["value"])["value"].tolist() == [0.0, 1.5, 3.0, 4.5]


def test_parquet_schema_pins_types_of_empty_frames(tmp_path):
    import pyarrow as pa

    st = Storage.at(str(tmp_path))
    schema = pa.schema([("customer_id", pa.int64()), ("value", pa.float64()), ("name", pa.string())])
    empty = _frame(0).astype({"customer_id": "object", "value": "object"})
    path = st.write_parquet(empty, st.path("clean", DAY, "clean.parquet"), schema=schema)
    back = st.read_parquet(path)
    assert len(back) == 0
    assert {c: str(t) for c, t in back.dtypes.items()} == {"customer_id": "int64", "value": "float64", "name": "object"}


def test_atomic_write_leaves_only_the_target(tmp_path):
    st = Storage.at(str(tmp_path))
    path = st.path("scores", DAY, "predictions.parquet")
    st.write_parquet(_frame(), path)
    st.write_json({"b": 1, "a": date(2011, 8, 31)}, st.path("scores", DAY, "report.json"))
    assert _files(tmp_path / "scores" / "ds=2011-08-31") == ["predictions.parquet", "report.json"]
    assert st.read_json(st.path("scores", DAY, "report.json")) == {"a": "2011-08-31", "b": 1}


def test_failed_write_keeps_old_file_and_leaves_no_temp_file(tmp_path, monkeypatch):
    st = Storage.at(str(tmp_path))
    path = st.path("scores", DAY, "predictions.parquet")
    st.write_parquet(_frame(3), path)
    before = open(path, "rb").read()

    def boom(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(storage_mod.os, "replace", boom)
    with pytest.raises(OSError, match="disk gone"):
        st.write_parquet(_frame(5, offset=10), path)
    assert _files(tmp_path / "scores" / "ds=2011-08-31") == ["predictions.parquet"]
    assert open(path, "rb").read() == before


def test_overwrite_replaces_and_rerun_never_duplicates(tmp_path):
    st = Storage.at(str(tmp_path))
    path = st.path("predictions", DAY, "predictions.parquet")
    st.write_parquet(_frame(3), path)
    st.write_parquet(_frame(2, offset=100), path)
    back = st.read_parquet(path)
    assert back["customer_id"].tolist() == [12445, 12446]
    assert _files(tmp_path / "predictions" / "ds=2011-08-31") == ["predictions.parquet"]

    first = open(path, "rb").read()
    st.write_parquet(_frame(2, offset=100), path)  # the same frame again: the same bytes
    assert open(path, "rb").read() == first
    assert len(st.read_parquet(path)) == 2


def test_read_parquet_names_a_corrupt_file(tmp_path):
    st = Storage.at(str(tmp_path))
    path = st.write_bytes(st.path("raw", DAY, "raw.parquet"), b"not parquet at all")
    with pytest.raises(ValueError, match="raw.parquet"):
        st.read_parquet(path)
    with pytest.raises(FileNotFoundError):
        st.read_parquet(st.path("raw", date(2011, 9, 1), "raw.parquet"))


def test_read_parquet_many_concatenates_in_order(tmp_path):
    st = Storage.at(str(tmp_path))
    p2 = st.write_parquet(_frame(2, offset=2), st.path("clean", date(2011, 8, 2), "clean.parquet"))
    p1 = st.write_parquet(_frame(2, offset=0), st.path("clean", date(2011, 8, 1), "clean.parquet"))
    both = st.read_parquet_many([p1, p2])
    assert both["customer_id"].tolist() == [12345, 12346, 12347, 12348]
    with pytest.raises(ValueError, match="no files"):
        st.read_parquet_many([])


# -- list_days --------------------------------------------------------------------------------


def test_list_days_sorted_and_only_committed_files(tmp_path):
    st = Storage.at(str(tmp_path))
    assert st.list_days("raw", "raw.parquet") == []  # dataset folder does not exist yet
    for d in (date(2011, 9, 2), date(2011, 8, 30), date(2011, 9, 1)):
        st.write_parquet(_frame(1), st.path("raw", d, "raw.parquet"))
    # a partition holding only another file, a leftover temp file, and junk folders: not listed
    st.write_bytes(st.path("raw", date(2011, 8, 31), "other.parquet"), b"x")
    (tmp_path / "raw" / "ds=2011-09-03").mkdir()
    (tmp_path / "raw" / "ds=2011-09-03" / ".raw.parquet.tmp-abc").write_bytes(b"partial")
    (tmp_path / "raw" / "ds=garbage").mkdir()
    (tmp_path / "raw" / "ds=garbage" / "raw.parquet").write_bytes(b"x")
    (tmp_path / "raw" / "notes").mkdir()
    assert st.list_days("raw", "raw.parquet") == [date(2011, 8, 30), date(2011, 9, 1), date(2011, 9, 2)]
    assert st.list_days("raw", "other.parquet") == [date(2011, 8, 31)]
    assert st.list_days("clean", "raw.parquet") == []


def test_memory_filesystem_round_trip_and_list_days():
    st = Storage.at(f"memory://pp-test-{uuid.uuid4().hex}")
    path = st.write_parquet(_frame(3), st.path("clean", DAY, "clean.parquet"))
    st.write_parquet(_frame(1), st.path("clean", date(2011, 8, 1), "clean.parquet"))
    pd.testing.assert_frame_equal(st.read_parquet(path), _frame(3))
    assert st.exists(path)
    assert st.list_days("clean", "clean.parquet") == [date(2011, 8, 1), DAY]


# -- paths read from stored records -------------------------------------------------------------


def test_resolve_inside_accepts_paths_under_the_root(tmp_path):
    st = Storage.at(str(tmp_path / "data"))
    inside = st.path("models", DAY, "candidate.pkl")
    assert st.resolve_inside(inside) == inside
    s3 = Storage.at("pp_s3@s3://bucket/pp")
    # written through another connection id or none: read through this root's connection
    assert s3.resolve_inside("s3://bucket/pp/models/ds=2011-08-31/x.pkl") == "s3://pp_s3@bucket/pp/models/ds=2011-08-31/x.pkl"
    assert s3.resolve_inside("s3://other@bucket/pp/models/x.pkl") == "s3://pp_s3@bucket/pp/models/x.pkl"


@pytest.mark.parametrize(
    "stored",
    [
        "{root}/../evil.pkl",
        "{root}/models/../../evil.pkl",
        "{root}/models/./x.pkl",
        "{root}//x.pkl",
        "{root}",
        "{root}-other/models/x.pkl",
        "/etc/passwd",
        "models/x.pkl",
        "s3://attacker/pp/models/x.pkl",
        "file://{root}/../x.pkl",
        "",
        None,
    ],
)
def test_resolve_inside_refuses_paths_that_escape_the_root(tmp_path, stored):
    from purchasing_power.errors import InputError

    st = Storage.at(str(tmp_path / "data"))
    path = stored.format(root=st.root) if isinstance(stored, str) else stored
    with pytest.raises(InputError, match="outside the storage root"):
        st.resolve_inside(path)


def test_resolve_inside_refuses_another_bucket_or_scheme():
    from purchasing_power.errors import InputError

    st = Storage.at("s3://bucket/pp")
    for stored in ("s3://bucket/ppx/models/x.pkl", "s3://bucket2/pp/models/x.pkl", "gs://bucket/pp/models/x.pkl", "/bucket/pp/x.pkl"):
        with pytest.raises(InputError, match="outside the storage root"):
            st.resolve_inside(stored)


# -- durability and leftovers of local writes ---------------------------------------------------


def test_local_write_fsyncs_the_file_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        import stat

        events.append("fsync-dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync-file")
        real_fsync(fd)

    def replace(src, dst):
        events.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(storage_mod.os, "fsync", fsync)
    monkeypatch.setattr(storage_mod.os, "replace", replace)
    st = Storage.at(str(tmp_path))
    st.write_bytes(st.path("metrics", DAY, "metrics.json"), b"{}\n")
    assert events[-3:] == ["fsync-file", "replace", "fsync-dir"]
    assert events.count("fsync-dir") >= 3  # the new metrics/ and ds= folders' entries too


def test_a_write_removes_temp_files_older_than_an_hour_in_its_folder(tmp_path):
    import time

    st = Storage.at(str(tmp_path))
    folder = tmp_path / "predictions" / "ds=2011-08-31"
    folder.mkdir(parents=True)
    old = folder / f".predictions.parquet.tmp-{uuid.uuid4().hex}"
    fresh = folder / f".metrics.json.tmp-{uuid.uuid4().hex}"  # a live writer's
    other = folder / ".notes.tmp-keep"  # not one of ours
    for f in (old, fresh, other):
        f.write_bytes(b"partial")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    os.utime(other, (two_hours_ago, two_hours_ago))
    st.write_parquet(_frame(2), st.path("predictions", DAY, "predictions.parquet"))
    assert _files(folder) == sorted([fresh.name, other.name, "predictions.parquet"])
