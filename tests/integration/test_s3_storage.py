"""The storage layer and real pipeline stages against a real S3-compatible server.

``moto_server`` (moto[server], a pinned requirement) is started by this module as a subprocess
on a free loopback port; every request below is real HTTP to it through s3fs/botocore, exactly
as in production against MinIO or S3. Nothing in the storage API is mocked. Covered:

* ``Storage`` on ``s3://bucket/pp`` with environment credentials (``AWS_ENDPOINT_URL``) and on
  an Airflow connection (``AIRFLOW_CONN_...``) in both URI forms, ``s3://conn@bucket/pp`` and
  ``conn@s3://bucket/pp``: Parquet/JSON round trips, ``exists``, ``list_days``,
  ``read_parquet_many``; the object keys carry no connection id.
* Rerun overwrites in place: same keys, no duplicates, no temporary objects.
* A long-lived process (the api-server) sees days another process publishes later: listings
  and existence checks are not served from s3fs's cache.
* Atomic commit: an upload cut off mid-body (a loopback proxy closes the connection after
  64 KiB) fails loudly and leaves the previously committed object intact and nothing else.
* ``extract`` and ``clean`` through ``purchasing_power.pipeline.run_stage`` with
  ``PURCHASING_POWER_STORAGE`` and the source both in the bucket, then a rerun that rewrites
  only day D, byte for byte, and adds no object.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import uuid
from datetime import date

import pandas as pd
import pytest

from purchasing_power.storage import Storage, filesystem_for

DAY = date(2024, 6, 30)
ACCESS_KEY = "pp-test-key"  # moto accepts any key pair; nothing real
SECRET_KEY = "pp-test-secret"


def _reset_fs_caches() -> None:
    """fsspec caches file system instances (and their endpoint) per process: start clean."""
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture
def env_s3(s3_endpoint, monkeypatch):
    """Environment credentials + endpoint, as an S3 client outside Airflow would have them."""
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "PURCHASING_POWER_SOURCE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    _reset_fs_caches()
    yield s3_endpoint
    _reset_fs_caches()


def _conn_json(endpoint: str) -> str:
    return json.dumps(
        {
            "conn_type": "aws",
            "login": ACCESS_KEY,
            "password": SECRET_KEY,
            "extra": {"endpoint_url": endpoint, "region_name": "us-east-1"},
        }
    )


@pytest.fixture
def conn_s3(s3_endpoint, monkeypatch):
    """Credentials only in an Airflow connection (``AIRFLOW_CONN_PP_S3``): no AWS_* variables."""
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL",
              "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "PURCHASING_POWER_SOURCE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AIRFLOW_CONN_PP_S3", _conn_json(s3_endpoint))
    _reset_fs_caches()
    yield s3_endpoint
    _reset_fs_caches()


def _client(endpoint: str):
    import boto3

    return boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
    )


def _new_bucket(endpoint: str) -> str:
    name = f"pp-{uuid.uuid4().hex[:12]}"
    _client(endpoint).create_bucket(Bucket=name)
    return name


def _objects(endpoint: str, bucket: str) -> dict[str, str]:
    """Every object key in the bucket -> its ETag (all pages)."""
    out: dict[str, str] = {}
    for page in _client(endpoint).get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            out[obj["Key"]] = obj["ETag"]
    return out


def _frame(n: int, offset: int = 0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": pd.Series(range(offset, offset + n), dtype="int64"),
            "value": pd.Series([0.5 * i for i in range(n)], dtype="float64"),
            "name": [f"c{i + offset}" for i in range(n)],
        }
    )


def _assert_no_temp_objects(keys) -> None:
    bad = [k for k in keys if ".tmp" in k or k.rsplit("/", 1)[-1].startswith(".")]
    assert not bad, f"temporary objects left behind: {bad}"


# -- the storage API ----------------------------------------------------------------------------


def _exercise_storage(store: Storage, endpoint: str, bucket: str) -> None:
    days = [date(2024, 6, 28), date(2024, 6, 30), date(2024, 6, 29)]
    for i, d in enumerate(days):
        store.write_parquet(_frame(5, 10 * i), store.path("clean", d, "clean.parquet"))
    # a day folder without the named file and a non-day key are not days
    store.write_json({"x": 1}, store.path("clean", date(2024, 7, 1), "other.json"))
    store.write_bytes(f"{store.path('clean')}/README", b"not a partition\n")

    p = store.path("clean", days[1], "clean.parquet")
    assert store.exists(p)
    assert not store.exists(store.path("clean", date(2024, 7, 2), "clean.parquet"))
    pd.testing.assert_frame_equal(store.read_parquet(p), _frame(5, 10))
    assert list(store.read_parquet(p, columns=["name"]).columns) == ["name"]
    assert store.list_days("clean", "clean.parquet") == sorted(days)
    assert store.list_days("features", "features.parquet") == []  # dataset never written

    many = store.read_parquet_many([store.path("clean", d, "clean.parquet") for d in sorted(days)])
    assert many["customer_id"].tolist() == [*range(0, 5), *range(20, 25), *range(10, 15)]

    j = store.path("runs", days[1], "clean.json")
    store.write_json({"day": days[1], "n": 3}, j)
    assert store.read_json(j) == {"day": "2024-06-30", "n": 3}

    keys = _objects(endpoint, bucket)
    assert sorted(keys) == sorted(
        [f"pp/clean/ds={d}/clean.parquet" for d in days]
        + ["pp/clean/ds=2024-07-01/other.json", "pp/clean/README", "pp/runs/ds=2024-06-30/clean.json"]
    )
    _assert_no_temp_objects(keys)


def test_storage_roundtrip_with_environment_credentials(env_s3):
    bucket = _new_bucket(env_s3)
    store = Storage.at(f"s3://{bucket}/pp/")
    assert store.root == f"s3://{bucket}/pp"
    _exercise_storage(store, env_s3, bucket)


@pytest.mark.parametrize("form", ["s3://pp_s3@{bucket}/pp", "pp_s3@s3://{bucket}/pp"])
def test_storage_roundtrip_with_an_airflow_connection(conn_s3, form):
    """Credentials and endpoint come only from the Airflow connection ``pp_s3``; both the URI
    form of Airflow's ObjectStoragePath and the README's ``conn_id@s3://...`` work, and the
    object keys never contain the connection id."""
    bucket = _new_bucket(conn_s3)
    store = Storage.at(form.format(bucket=bucket))
    assert store.root == f"s3://pp_s3@{bucket}/pp"
    _exercise_storage(store, conn_s3, bucket)
    # the same objects through a plain fsspec URI of the connection's file system
    fs = filesystem_for(store.root)
    assert fs.exists(f"s3://{bucket}/pp/runs/ds=2024-06-30/clean.json")


def test_rerun_overwrites_in_place(env_s3):
    bucket = _new_bucket(env_s3)
    store = Storage.at(f"s3://{bucket}/pp")
    path = store.path("predictions", DAY, "predictions.parquet")
    report = store.path("metrics", DAY, "metrics.json")

    store.write_parquet(_frame(4), path)
    store.write_json({"rows": 4}, report)
    first = _objects(env_s3, bucket)
    store.write_parquet(_frame(4), path)  # identical rerun: identical bytes
    store.write_json({"rows": 4}, report)
    assert _objects(env_s3, bucket) == first

    store.write_parquet(_frame(7, 100), path)  # a rerun with new data replaces the object
    store.write_json({"rows": 7}, report)
    after = _objects(env_s3, bucket)
    assert sorted(after) == sorted(first) == [
        "pp/metrics/ds=2024-06-30/metrics.json", "pp/predictions/ds=2024-06-30/predictions.parquet",
    ]
    assert after != first
    pd.testing.assert_frame_equal(store.read_parquet(path), _frame(7, 100))
    assert store.read_json(report) == {"rows": 7}
    assert store.list_days("predictions", "predictions.parquet") == [DAY]
    _assert_no_temp_objects(after)


# -- listings are fresh in a long-lived process ----------------------------------------------------

PUBLISH_ELSEWHERE = textwrap.dedent(
    """
    import hashlib, io, sys
    from datetime import date
    import pandas as pd
    from purchasing_power.storage import Storage, metrics_path, predictions_path
    store, day, listed = Storage.at(sys.argv[1]), date.fromisoformat(sys.argv[2]), date.fromisoformat(sys.argv[3])
    buf = io.BytesIO()
    pd.DataFrame({"customer_id": [1, 2]}).to_parquet(buf, index=False)
    store.write_bytes(predictions_path(store, day), buf.getvalue())
    store.write_json({"source": "s", "predictions_sha256": hashlib.sha256(buf.getvalue()).hexdigest()}, metrics_path(store, day))
    store.write_json({"windows": []}, store.path("metrics", listed, "report.json"))
    """
)


def _publish(store: Storage, day: date) -> None:
    data = _frame(3).to_parquet(index=False)
    store.write_bytes(store.path("predictions", day, "predictions.parquet"), data)
    store.write_json({"source": "s", "predictions_sha256": hashlib.sha256(data).hexdigest()}, store.path("metrics", day, "metrics.json"))


def test_a_long_lived_process_sees_days_published_later_by_another(env_s3):
    """The page's process lists the published days, then a worker (another process) publishes a
    new day and a file into a folder this process has listed: both appear here, without a restart."""
    from purchasing_power.ui.page_data import available_days, clear_cache

    bucket = _new_bucket(env_s3)
    store = Storage.at(f"s3://{bucket}/pp")
    first, later = date(2024, 6, 29), DAY
    _publish(store, first)
    clear_cache()
    assert store.list_days("metrics", "metrics.json") == [first]
    assert available_days(store) == [first]
    report = store.path("metrics", first, "report.json")
    store.fs.ls(store.path("metrics", first))  # this process has listed the day's folder too
    assert not store.exists(report)

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(p) for p in sys.path if p])}
    subprocess.run([sys.executable, "-c", PUBLISH_ELSEWHERE, store.root, later.isoformat(), first.isoformat()],
                   env=env, check=True, timeout=120)

    assert store.list_days("metrics", "metrics.json") == [first, later]
    assert store.list_days("predictions", "predictions.parquet") == [first, later]
    assert available_days(store) == [first, later]
    assert store.exists(report) and store.info(report) is not None
    assert store.read_json(report) == {"windows": []}


# -- atomic commit: an upload cut off mid-body -----------------------------------------------------


class CuttingProxy:
    """TCP proxy on loopback in front of the S3 server that closes a connection once the client
    has sent more than ``limit`` bytes on it: an upload dies half-way, as when a worker is killed
    or the network drops mid-PUT. Small requests (HEAD, GET, LIST) pass through untouched."""

    def __init__(self, upstream_port: int, limit: int) -> None:
        self.upstream_port = upstream_port
        self.limit = limit
        self.cuts = 0
        self._srv = socket.socket()
        self._srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._srv.bind(("127.0.0.1", 0))
        self._srv.listen(16)
        self.port = self._srv.getsockname()[1]
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._srv.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, outbound: bool) -> None:
        sent = 0
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if outbound and sent + len(data) > self.limit:
                    dst.sendall(data[: max(0, self.limit - sent)])
                    self.cuts += 1
                    break
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def close(self) -> None:
        self._stop.set()
        self._srv.close()


def test_an_upload_cut_mid_body_leaves_the_committed_object_intact(s3_endpoint, monkeypatch):
    import numpy as np

    bucket = _new_bucket(s3_endpoint)
    proxy = CuttingProxy(int(s3_endpoint.rsplit(":", 1)[1]), limit=64 * 1024)
    try:
        for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_PROFILE"):
            monkeypatch.delenv(k, raising=False)
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")  # fail fast: every attempt is cut the same way
        monkeypatch.setenv("AIRFLOW_CONN_PP_DIRECT", _conn_json(s3_endpoint))
        monkeypatch.setenv("AIRFLOW_CONN_PP_CUT", _conn_json(f"http://127.0.0.1:{proxy.port}"))
        _reset_fs_caches()

        direct = Storage.at(f"s3://pp_direct@{bucket}/pp")
        cut = Storage.at(f"s3://pp_cut@{bucket}/pp")
        path_direct = direct.path("scores", DAY, "predictions.parquet")
        path_cut = cut.path("scores", DAY, "predictions.parquet")

        committed = _frame(10)
        direct.write_parquet(committed, path_direct)
        before = _objects(s3_endpoint, bucket)
        # reads and existence checks are small requests: they pass through the proxy
        pd.testing.assert_frame_equal(cut.read_parquet(path_cut), committed)

        rng = np.random.default_rng(0)
        big = pd.DataFrame({"noise": rng.random(200_000)})  # ~1.6 MB, incompressible: > the cut
        with pytest.raises(Exception):
            cut.write_parquet(big, path_cut)
        assert proxy.cuts >= 1, "the proxy never cut an upload: the test did not test anything"

        after = _objects(s3_endpoint, bucket)
        assert after == before, "a cut upload changed or added objects"
        pd.testing.assert_frame_equal(direct.read_parquet(path_direct), committed)
        uploads = _client(s3_endpoint).list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        assert uploads == [], f"unfinished multipart uploads left: {uploads}"
        _assert_no_temp_objects(after)

        direct.write_parquet(big, path_direct)  # the retry (not cut) commits the whole object
        pd.testing.assert_frame_equal(direct.read_parquet(path_direct), big)
    finally:
        proxy.close()
        _reset_fs_caches()


# -- real pipeline stages with storage and source in the bucket -----------------------------------


def test_extract_and_clean_on_s3_then_rerun(conn_s3, monkeypatch):
    from purchasing_power.demo import write_demo_source
    from purchasing_power.pipeline import run_stage

    bucket = _new_bucket(conn_s3)
    root = f"pp_s3@s3://{bucket}/pp"  # the README's form; credentials only in the connection
    source = f"s3://pp_s3@{bucket}/landing/transactions.parquet"
    write_demo_source(source, n_customers=200, start=date(2024, 4, 1), end=DAY, seed=5)
    monkeypatch.setenv("PURCHASING_POWER_STORAGE", root)
    params = {"day": DAY.isoformat(), "source": source}
    n_days = (DAY - date(2024, 4, 1)).days + 1

    store = Storage.at(root)
    ext = store.read_json(run_stage("extract", params))
    assert ext["rows_in_source"] > 0 and ext["partitions_written"] == n_days
    cln = store.read_json(run_stage("clean", params))
    totals = cln["totals"]
    assert totals["read"] == totals["clean"] + totals["quarantined"] and totals["clean"] > 0

    first = _objects(conn_s3, bucket)
    _assert_no_temp_objects(first)
    assert all(not k.startswith("pp_s3@") and "pp_s3@" not in k for k in first)
    src_id = ext["source_id"]
    raw = [k for k in first if k.startswith(f"pp/sources/{src_id}/raw/")]
    clean = [k for k in first if k.startswith(f"pp/sources/{src_id}/clean/")]
    assert len(raw) == n_days and len(clean) == n_days
    assert f"pp/runs/ds={DAY}/extract.json" in first and f"pp/runs/ds={DAY}/clean.json" in first
    assert "landing/transactions.parquet" in first

    # Rerun of the same day: day D is rewritten (same bytes), history is reused, nothing added.
    ext2 = store.read_json(run_stage("extract", params))
    cln2 = store.read_json(run_stage("clean", params))
    assert ext2["partitions_written"] == 1
    assert cln2["totals"]["read"] <= totals["read"]
    second = _objects(conn_s3, bucket)
    assert sorted(second) == sorted(first), "a rerun added or removed objects"
    data_keys = [k for k in first if "/runs/" not in k]  # run reports carry timings
    assert {k: second[k] for k in data_keys} == {k: first[k] for k in data_keys}, "rerun changed data bytes"
    days = Storage.at(f"s3://pp_s3@{bucket}/pp/sources/{src_id}").list_days("clean", "clean.parquet")
    assert len(days) == n_days and days[-1] == DAY


def test_sharded_features_on_s3_equal_the_unsharded_ones(conn_s3, monkeypatch):
    """The sharded features tasks read their shard's rows straight from the bucket, hand their
    parts on through it, remove them once joined, and store the bytes an unsharded task stores;
    so does one task that spools the bucket's partitions by shard (history.ShardSpool)."""
    from purchasing_power.demo import write_demo_source
    from purchasing_power.pipeline import run_feature_shard, run_stage

    bucket = _new_bucket(conn_s3)
    root = f"pp_s3@s3://{bucket}/pp"
    source = f"s3://pp_s3@{bucket}/landing/transactions.parquet"
    write_demo_source(source, n_customers=120, start=date(2024, 4, 1), end=DAY, seed=6)
    monkeypatch.setenv("PURCHASING_POWER_STORAGE", root)
    params = {"day": DAY.isoformat(), "source": source}
    run_stage("extract", params)
    run_stage("clean", params)
    sharded = {"use_text": False, "feature_shards": 3}
    for step in ("feature_stats", "feature_part"):
        for k in range(3):
            run_feature_shard(step, k, params, overrides=sharded)
    store = Storage.at(root)
    joined = store.read_json(run_stage("features", params, overrides=sharded, combine=True))
    assert joined["feature_shards"] == 3 and joined["customers"] > 100
    path = joined["features_path"]
    sharded_sha = store.sha256(path)
    assert not [k for k in _objects(conn_s3, bucket) if "/feature_shards/" in k], "parts left behind"
    alone = store.read_json(run_stage("features", params, overrides={"use_text": False}))
    assert alone["features_path"] == path and alone["customers"] == joined["customers"]
    assert store.sha256(path) == sharded_sha
    # one task with 3 shards: the bucket's partitions spooled to local files, a shard at a time
    spooled = store.read_json(run_stage("features", params, overrides=sharded))
    assert spooled["features_path"] == path and store.sha256(path) == sharded_sha


def test_a_score_part_reads_its_shard_of_stored_features_from_the_bucket(conn_s3):
    """shards.read_file_shard on an object: the shard's rows of a file of several row groups, in
    file order, as a filter of the whole file gives them; every row in exactly one shard."""
    import numpy as np
    import pandas as pd

    from purchasing_power.shards import read_file_shard, shard_of

    bucket = _new_bucket(conn_s3)
    store = Storage.at(f"pp_s3@s3://{bucket}/pp")
    rng = np.random.default_rng(4)
    frame = pd.DataFrame({"customer_id": np.arange(5000, dtype=np.int64) * 7 + 3, "x": rng.random(5000),
                          "txt_000": rng.random(5000).astype("float32")})
    path = store.write_parquet(frame, store.path("features", DAY, "features-test.parquet"), row_group_size=700)
    parts = [read_file_shard(store, path, k, 3, batch_rows=512) for k in range(3)]
    for k, part in enumerate(parts):
        want = frame[shard_of(frame["customer_id"].to_numpy(), 3) == k].reset_index(drop=True)
        pd.testing.assert_frame_equal(part, want, check_exact=True)
    assert sum(len(p) for p in parts) == len(frame)
