"""Storage: the one place that turns (dataset, day) into a path, names every artefact, and does
atomic Parquet/JSON I/O.

Every intermediate and output of the pipeline is a single file inside a day partition::

    {root}/{dataset}/ds=YYYY-MM-DD/{name}

``root`` is a local folder (default ``./data``) or any fsspec URI (``s3://bucket/prefix``, ``memory://x``).
Writes are atomic (written under a temporary name in the same folder, fsynced and renamed locally; one PUT
on object stores): a task killed mid-write never leaves a partial partition behind and its retry simply
overwrites. Temporary files a killed writer left behind go with the next write there once an hour old.

Reads see the store as it is now: object-store listings are not served from the file system's
cache, and a path read out of a stored record is used only under the storage root.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import re
import time
import uuid
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

from purchasing_power.calendar import parse_day
from purchasing_power.errors import InputError
from purchasing_power.frames import release_arrow_memory, to_frame

if TYPE_CHECKING:  # pragma: no cover
    import fsspec
    import pandas as pd

    from purchasing_power.settings import Settings

#: Datasets the pipeline knows. Anything else is a programming error, caught early.
DATASETS = frozenset(
    {
        "staged",  # the source read once per source version (canonical names, sorted by day; not day keyed)
        "raw",  # per invoice day, as read from the source (canonical column names)
        "clean",  # per invoice day, validated and normalised rows
        "quarantine",  # per run day, rejected rows with a ``reason``
        "features",  # per snapshot day, point-in-time customer features
        "feature_shards", "score_shards",  # per run day, the parts the sharded features / score tasks hand on (feature_shards > 1)
        "embed_shards",  # per run day, the texts each mapped embed task handles
        "models",  # per anchor day, fitted model artefacts
        "evaluation",  # per run day, candidate/baseline/champion metrics before the gate
        "metrics",  # per run day, gate inputs, verdict and row counts (metrics.json)
        "scores",  # per run day, staged predictions (before publish)
        "predictions",  # per run day, the published output contract
        "embeddings",  # content-addressed embedding cache (not day keyed)
        "demo",  # the generated demo source
        "runs",  # per run day, each stage's JSON report (what XCom points to)
        "exports",  # per run day, what downstream Dags export from the published predictions
        "texts_staged",  # the user-text source read once per version, and its manifests (not day keyed)
        "texts_raw",  # per text day, user texts as read from the texts source (canonical names)
        "texts_clean",  # per text day, validated and normalised user texts
    }
)

#: File names inside the partitions, one definition each.
STAGED_INDEX = "{version}-index.json"  # staged/: the index that commits a staged source version
STAGED_DATED = "{version}-dated.parquet"  # staged/: its rows with an InvoiceDate, in day order
STAGED_UNDATED = "{version}-undated.parquet"  # staged/: its rows without one
RAW_MANIFEST = "raw-manifest.json"  # staged/: per raw partition, its rows' fingerprint and source version, and the day each undated row went to
CLEAN_MANIFEST = "clean-manifest.json"  # staged/: per clean partition, the raw fingerprint it was made from
RAW_FILE = "raw.parquet"  # raw/ds=D
CLEAN_FILE = "clean.parquet"  # clean/ds=D
QUARANTINE_FILE = "quarantine.parquet"  # quarantine/ds=D
FEATURES_FILE = "features-{feature_key}.parquet"  # features/ds=D, per feature key (text vectors, lookback)
FEATURES_SAMPLE_FILE = "sample-{feature_key}-seed{seed}-{level}.parquet"  # features/ds=D: a training sample's rows (share 2**-level)
FEATURE_PART_FILE = "{feature_key}-{shard:03d}of{shards:03d}-{part}.parquet"  # feature_shards/ds=D, score_shards/ds=D: a shard's parts
SHARD_FILE = "shard-{:04d}.parquet"  # embed_shards/ds=D
TRAINING_INFO = "training.json"  # models/ds=A: what the anchor's fits used
CANDIDATE_HOLDOUT = "candidate_holdout.pkl"  # models/ds=A: the candidate the gate judges
CANDIDATE_DEPLOY = "candidate.pkl"  # models/ds=A: the candidate deployed when promoted
BUNDLE_HASH_SUFFIX = ".sha256"  # models/ds=A: <bundle>.pkl.sha256, the hash save_bundle recorded
CHAMPION_FILE = "champion.json"  # models/ds=A: what A deploys when judged against the baselines only
DECISION_FILE = "decision.json"  # models/ds=A: the gate's decision
EVALUATION_FILE = "evaluation.json"  # evaluation/ds=A: contenders' metrics, champion included
BASELINE_EVALUATION_FILE = "evaluation_baselines.json"  # evaluation/ds=A: without the champion
EVALUATION_SCORES_FILE = "evaluation_scores.parquet"  # evaluation/ds=A: per-customer contender scores
PREDICTIONS_FILE = "predictions.parquet"  # scores/ds=D (staged) and predictions/ds=D (published)
METRICS_FILE = "metrics.json"  # metrics/ds=D: written last by publish, it commits the day
PREDICTIONS_SHA256 = "predictions_sha256"  # metrics.json: sha256 of the predictions file it commits
PREDICTIONS_ASSET = "purchasing_power_predictions"  # the Airflow Asset publish updates (by name: no storage path in its identity)
TIER_EXPORT_FILE = "{tier}-tier.parquet"  # exports/ds=D: one tier's customers (the export Dag)
REPORT_FILE = "report.json"  # metrics/ds=D: the UI page's curves
STAGE_REPORT = "{stage}.json"  # runs/ds=D: each task's report
TEXTS_STAGED = "{version}-texts.parquet"  # texts_staged/: the user-text source as read, normalised
TEXTS_STAGED_INDEX = "{version}-index.json"  # texts_staged/: its rows and content hash per day, undated keys
TEXTS_RAW_MANIFEST = "raw-manifest.json"  # texts_staged/: per raw text partition, its fingerprint; the day each undated text went to
TEXTS_CLEAN_MANIFEST = "clean-manifest.json"  # texts_staged/: per clean text partition, the raw fingerprint it was made from
TEXTS_RAW_FILE = "texts.parquet"  # texts_raw/ds=D
TEXTS_CLEAN_FILE = "texts.parquet"  # texts_clean/ds=D
TEXTS_QUARANTINE_FILE = "texts_quarantine.parquet"  # quarantine/ds=D: rejected user texts with a reason

#: A temporary file of :func:`atomic_write_bytes` (``.<name>.tmp-<uuid hex>``) and the age after
#: which a leftover one (its writer was killed) is removed.
_TEMP_RE = re.compile(r"^\..+\.tmp-[0-9a-f]{32}$")
TEMP_MAX_AGE_S = 3600


def partition_path(root: str, dataset: str, day: date | str | None = None, name: str | None = None) -> str:
    """Map (dataset, day) to its storage path. Pure: touches no file system.

    >>> partition_path("s3://b/pp", "clean", date(2011, 8, 31), "clean.parquet")
    's3://b/pp/clean/ds=2011-08-31/clean.parquet'
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {sorted(DATASETS)}")
    parts = [root.rstrip("/"), dataset]
    if day is not None:
        day_s = day if isinstance(day, str) else day.isoformat()
        parse_day(day_s)
        parts.append(f"ds={day_s}")
    if name is not None:
        if "/" in name or name in {"", ".", ".."}:
            raise ValueError(f"file name must be a plain name, got {name!r}")
        parts.append(name)
    return "/".join(parts)


def predictions_path(storage: Storage, day: date) -> str:
    return storage.path("predictions", day, PREDICTIONS_FILE)


def metrics_path(storage: Storage, day: date) -> str:
    return storage.path("metrics", day, METRICS_FILE)


def report_path(storage: Storage, day: date) -> str:
    return storage.path("metrics", day, REPORT_FILE)


def stage_report_path(storage: Storage, day: date, stage: str) -> str:
    return storage.path("runs", day, STAGE_REPORT.format(stage=stage))


@dataclass(frozen=True)
class Storage:
    """A storage root plus the file system that serves it."""

    root: str

    @classmethod
    def at(cls, root: str) -> Storage:
        if "://" not in root:
            root = os.path.abspath(root)
        return cls(root=normalise_uri(root).rstrip("/"))

    # -- paths -------------------------------------------------------------------------------
    def path(self, dataset: str, day: date | str | None = None, name: str | None = None) -> str:
        return partition_path(self.root, dataset, day, name)

    def resolve_inside(self, path: str) -> str:
        """``path``, read from a stored record (a decision's ``deployed_path``), as a path under
        this root. A record must not be able to point a reader elsewhere: another root or
        scheme, or a ``..``, ``.`` or empty segment, is an :class:`InputError`. A path written
        through a connection URI (``s3://conn@bucket/...``) is read through this root's own."""
        root = strip_conn(self.root)
        target = strip_conn(path) if isinstance(path, str) else ""
        rel = target[len(root) + 1 :] if target.startswith(root + "/") else ""
        if not rel or "\x00" in rel or any(seg in ("", ".", "..") for seg in rel.split("/")):
            raise InputError(f"stored artefact path {path!r} is outside the storage root {self.root}: refusing to read it")
        return f"{self.root}/{rel}"

    # -- file system -------------------------------------------------------------------------
    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        return filesystem_for(self.root)

    def exists(self, path: str) -> bool:
        return fresh_fs(path).exists(path)

    def info(self, path: str) -> dict[str, Any] | None:
        """The file's current details (size, mtime or ETag), ``None`` when it does not exist."""
        try:
            return fresh_fs(path).info(path)
        except FileNotFoundError:
            return None

    def sha256(self, path: str) -> str:
        """Hex sha256 of the file's bytes (streamed)."""
        digest = hashlib.sha256()
        with fresh_fs(path).open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()

    def list_days(self, dataset: str, name: str) -> list[date]:
        """Days that have a committed ``name`` file in ``dataset``, sorted. Listed afresh each call."""
        base = self.path(dataset)
        fs = fresh_fs(base)
        if not fs.exists(base):
            return []
        days = []
        for entry in fs.ls(base, detail=False):
            leaf = entry.rstrip("/").rsplit("/", 1)[-1]
            if leaf.startswith("ds="):
                try:
                    d = parse_day(leaf[3:])
                except ValueError:
                    continue
                if self.exists(f"{base}/{leaf}/{name}"):
                    days.append(d)
        return sorted(days)

    # -- atomic writes -----------------------------------------------------------------------
    def write_bytes(self, path: str, data: bytes) -> str:
        atomic_write_bytes(path, data)
        return path

    def write_parquet(self, df: pd.DataFrame, path: str, schema: Any = None, row_group_size: int | None = None) -> str:
        """Write ``df`` atomically; ``schema`` (a pyarrow schema) pins column types (partitions of one dataset agree); ``row_group_size``: rows per row group (readers of a few rows stream them)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(df, preserve_index=False, schema=schema)
        if schema is not None:
            table = table.replace_schema_metadata(None)
        buf = io.BytesIO()
        # Deterministic bytes (fixed compression, no timestamps); no dictionary for floats (features: 2x faster, 1/5 smaller)
        pq.write_table(table, buf, compression="zstd", write_statistics=True, row_group_size=row_group_size,
                       use_dictionary=[f.name for f in table.schema if not pa.types.is_floating(f.type)])
        del table
        release_arrow_memory()
        return self.write_bytes(path, buf.getvalue())

    def write_json(self, obj: Any, path: str) -> str:
        data = json.dumps(obj, indent=2, sort_keys=True, default=_json_default).encode() + b"\n"
        return self.write_bytes(path, data)

    # -- reads -------------------------------------------------------------------------------
    def read_parquet(self, path: str, columns: list[str] | None = None, index: str | None = None) -> pd.DataFrame:
        return read_parquet(path, columns, index)

    def read_parquet_many(self, paths: list[str], columns: list[str] | None = None, dictionary: list[str] | None = None) -> pd.DataFrame:
        """Many files of one schema as one frame, in the given order (parallel I/O); ``columns``: only these; ``dictionary``: these text columns as categoricals."""
        import pyarrow.dataset as pads

        if not paths:
            raise ValueError("no files to read")
        fs = None if "://" not in paths[0] else self.fs
        files = paths if fs is None else [strip_conn(p) for p in paths]
        for f in files if fs is not None else ():
            fs.invalidate_cache(f)  # sizes as they are now, not as a listing cached them
        try:
            fmt = pads.ParquetFileFormat(read_options=pads.ParquetReadOptions(dictionary_columns=dictionary or []))
            return to_frame(pads.dataset(files, format=fmt, filesystem=fs).to_table(columns=columns))
        except Exception as exc:
            raise ValueError(f"cannot read Parquet files under {self.root}: {exc}") from exc

    def read_json(self, path: str) -> Any:
        with fresh_fs(path).open(path, "rb") as fh:
            return json.load(fh)


def commits(metrics: dict[str, Any], predictions_sha256: str) -> bool:
    """Whether a day's ``metrics.json`` commits the predictions whose hash is given: the day is
    published only then (a publish killed between its two writes leaves new predictions beside
    old metrics, and the day reads as not published). Metrics written before the marker existed
    record no hash and are taken as they are."""
    recorded = metrics.get(PREDICTIONS_SHA256)
    return recorded is None or recorded == predictions_sha256


def published_metrics(storage: Storage, day: date) -> dict[str, Any] | None:
    """The day's ``metrics.json`` when the day is published (see :func:`commits`), else ``None``."""
    met, pred = metrics_path(storage, day), predictions_path(storage, day)
    if not (storage.exists(met) and storage.exists(pred)):
        return None
    metrics = storage.read_json(met)
    return metrics if commits(metrics, storage.sha256(pred)) else None


@dataclass(frozen=True)
class Workspace:
    """Where a settings object's data lives.

    ``root``: the storage root, shared by every source: published predictions and metrics,
    quarantine, staged scores, stage reports and the embedding cache.
    ``per_source``: ``{root}/sources/<source_id>``, what is derived from one source (staged copy,
    raw, clean, features, models, evaluations), so two sources never mix."""

    root: Storage
    per_source: Storage

    @classmethod
    def for_settings(cls, settings: Settings) -> Workspace:
        root = Storage.at(settings.storage)
        return cls(root=root, per_source=Storage.at(f"{root.root}/sources/{settings.source_id}"))


#: ``conn_id@scheme://rest``: the connection written before the scheme (the README's form).
_CONN_FIRST_RE = re.compile(r"^(?P<conn>[A-Za-z0-9_.\-]+)@(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://(?P<rest>.*)$", re.S)


def normalise_uri(uri: str) -> str:
    """``conn_id@s3://bucket/prefix`` -> ``s3://conn_id@bucket/prefix`` (``ObjectStoragePath``'s form); else unchanged."""
    m = _CONN_FIRST_RE.match(uri)
    return f"{m['scheme']}://{m['conn']}@{m['rest']}" if m else uri


def fresh_fs(path: str) -> fsspec.AbstractFileSystem:
    """``filesystem_for(path)`` with what it cached about ``path`` and its folders dropped, so
    that a long-lived process (the api-server, a worker) sees files other processes wrote since
    (s3fs keeps listings for the life of the process; local files are not cached)."""
    fs = filesystem_for(path)
    fs.invalidate_cache(path)
    return fs


def filesystem_for(uri: str) -> fsspec.AbstractFileSystem:
    """The fsspec file system for a path or URI.

    ``scheme://conn_id@bucket/...`` (or ``conn_id@scheme://bucket/...``) URIs are resolved
    through Airflow's ``ObjectStoragePath`` so that credentials come from an Airflow connection;
    the returned file system accepts paths with or without the ``conn_id@`` part. Plain URIs use
    fsspec's defaults (environment credentials, e.g. ``AWS_ENDPOINT_URL``); paths without a
    scheme are local.
    """
    import fsspec

    uri = normalise_uri(uri)
    if "://" in uri:
        scheme, rest = uri.split("://", 1)
        if "@" in rest.split("/", 1)[0] and scheme != "file":
            from airflow.sdk import ObjectStoragePath  # only needed for connection-style URIs

            return _connection_fs(ObjectStoragePath(uri).fs)
        return fsspec.filesystem(scheme)
    return fsspec.filesystem("file")


def _connection_fs(fs: fsspec.AbstractFileSystem) -> fsspec.AbstractFileSystem:
    """Wrap the file system of an Airflow connection so that every path given to it may keep
    its ``conn_id@`` part (``fs.exists("s3://conn@bucket/key")``): the bare one would read
    ``conn@bucket`` as the bucket name."""
    return _connection_fs_class()(fs=fs)


@functools.cache
def _connection_fs_class() -> type:
    from fsspec.implementations.dirfs import DirFileSystem

    class ConnectionFileSystem(DirFileSystem):
        """A DirFileSystem without a prefix whose only path rewrite drops ``conn_id@``."""

        def __init__(self, fs: fsspec.AbstractFileSystem) -> None:
            super().__init__(path="/", fs=fs)
            self.path = ""

        def _join(self, path):  # type: ignore[override]
            if isinstance(path, str):
                return strip_conn(path)
            if isinstance(path, dict):
                return {self._join(k): v for k, v in path.items()}
            return [self._join(p) for p in path]

    return ConnectionFileSystem


def strip_conn(uri: str) -> str:
    uri = normalise_uri(uri)
    if "://" in uri:
        scheme, rest = uri.split("://", 1)
        head, _, tail = rest.partition("/")
        if "@" in head:
            head = head.split("@", 1)[1]
        return f"{scheme}://{head}/{tail}" if tail else f"{scheme}://{head}"
    return uri


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new one,
    and (local files) so that the new one survives a crash once this returns."""
    fs = filesystem_for(path)
    target = strip_conn(path)
    if "://" not in path or path.startswith("file://"):
        local = target.removeprefix("file://")
        folder = os.path.dirname(local)
        _make_dirs(folder)
        tmp = f"{folder}/.{os.path.basename(local)}.tmp-{uuid.uuid4().hex}"
        try:
            # rename is atomic: a killed writer leaves only a hidden temp file, never a partial target
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())  # the bytes are on disk before the name points at them
            os.replace(tmp, local)
            _fsync_dir(folder)  # and the rename itself is durable
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        remove_stale_temps(folder)
        return
    # Object stores: a single PUT is atomic; the object appears whole or not at all.
    fs.pipe_file(target, data)
    fs.invalidate_cache(target)


def atomic_write_file(path: str, write: Any) -> None:
    """:func:`atomic_write_bytes` from a local file that ``write(local)`` fills (streamed, never whole in
    memory): locally a hidden temp file next to ``path``, fsynced and renamed; else one upload of it."""
    import tempfile

    target = strip_conn(path)
    is_local = "://" not in path or path.startswith("file://")
    folder = os.path.dirname(target.removeprefix("file://"))
    if is_local:
        _make_dirs(folder)
    tmp = f"{folder}/.{os.path.basename(target)}.tmp-{uuid.uuid4().hex}" if is_local else tempfile.mktemp(suffix=".upload")
    try:
        write(tmp)
        if is_local:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, target.removeprefix("file://"))
            _fsync_dir(folder)
        else:
            filesystem_for(path).put_file(tmp, target)
            filesystem_for(path).invalidate_cache(target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _make_dirs(folder: str) -> None:
    """``os.makedirs`` that also makes each new folder's entry durable in its parent."""
    missing = []
    while folder and not os.path.isdir(folder):
        missing.append(folder)
        folder = os.path.dirname(folder)
    for new in reversed(missing):
        os.makedirs(new, exist_ok=True)
        _fsync_dir(os.path.dirname(new))


def _fsync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_temps(folder: str, max_age_s: float = TEMP_MAX_AGE_S) -> list[str]:
    """Remove the temporary files of :func:`atomic_write_bytes` older than ``max_age_s`` in a
    local ``folder`` (left by writers killed mid-write; a live writer's file is seconds old).
    Returns the names removed."""
    cutoff = time.time() - max_age_s
    removed = []
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return removed
    for entry in entries:
        if not _TEMP_RE.match(entry.name):
            continue
        try:
            if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                os.unlink(entry.path)
                removed.append(entry.name)
        except FileNotFoundError:  # another writer removed it first
            continue
    return removed


def read_parquet(path: str, columns: list[str] | None = None, index: str | None = None) -> pd.DataFrame:
    import pyarrow.parquet as pq

    try:
        if "://" not in path:  # local: let Arrow read the file directly (2x faster than via fsspec)
            return to_frame(pq.read_table(path, columns=columns), index)
        with fresh_fs(path).open(strip_conn(path), "rb") as fh:
            return to_frame(pq.read_table(fh, columns=columns), index)
    except FileNotFoundError:
        raise
    except Exception as exc:  # corrupt or unreadable file: say which one
        raise ValueError(f"cannot read Parquet file {path}: {exc}") from exc


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, date):
        return obj.isoformat()
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
