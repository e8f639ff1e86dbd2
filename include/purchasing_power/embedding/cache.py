"""The content-addressed embedding cache and what reads and fills it.

Vectors live under ``{storage}/embeddings/model={slug}/precision={dtype}/part-{digest}.parquet``
(``slug``: model id and revision), one row per text, keyed by ``sha256(model_id \\0 revision
\\0 text)`` within the folder of their compute precision. Parts are immutable and named by the
digest of their sorted keys, so writing the same content twice gives the same file, and shards
of one stage (Airflow dynamic task mapping, :func:`plan_shards`) write separate parts that read
back as one table. :func:`embed_new` embeds only the texts the cache lacks; :func:`load_vectors`
reads vectors back in the caller's order.

Precision. A text's vector depends on the compute precision (float16 on CUDA, bfloat16 or
float32 on a CPU), so each precision has its own folder and a CPU fallback never writes or reads
a GPU worker's vectors under one key. The rule:

* Writing (:func:`embed_new`, the embed stage): vectors go to the folder of the precision this
  worker computes in (``embed_device`` and ``embed_precision`` resolved as :func:`embed_texts`
  does: device ``auto`` -> cuda when visible, else cpu; precision ``auto`` -> float16 on CUDA,
  bfloat16 on CPUs with native bf16, else float32); then ``model={slug}/precision.json`` records
  that precision and device. Under ``embed_precision=auto``, when the record names another
  precision, every text stored under it is embedded again in this one ("carried over", e.g. a
  GPU worker joining a storage a CPU filled), so the new precision holds every text the old did.
* Reading (:func:`load_vectors`, and :func:`plan_shards`, which counts what is new; neither
  embeds, and in Airflow they run on CPU workers while embed runs on the ``gpu`` queue): an
  explicit ``embed_precision`` names the folder; ``auto`` takes the precision recorded in
  ``precision.json``, never the reader's own (without a record: the only precision folder there
  is). :func:`load_vectors` refuses, naming where they are, texts missing under that precision
  (mixed precisions for one day's texts, or a precision the embed stage did not write).
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import threading
import time
from typing import Any, Iterable, Sequence

import numpy as np

from purchasing_power.embedding.device import resolve_device, resolve_precision
from purchasing_power.embedding.encoder import embed_texts
from purchasing_power.embedding.model_ref import ModelRef, model_dim, resolve_model, text_key
from purchasing_power.settings import EMBED_PRECISIONS
from purchasing_power.storage import Storage, filesystem_for, strip_conn

log = logging.getLogger(__name__)

#: Precisions vectors are stored in (one folder each); ``auto`` is resolved before storing.
STORED_PRECISIONS = tuple(p for p in EMBED_PRECISIONS if p != "auto")
#: In a model folder: the precision (and device) the embed stage last computed in.
PRECISION_FILE = "precision.json"


class _Part:
    __slots__ = ("keys", "vectors")

    def __init__(self, keys: np.ndarray, vectors: np.ndarray):
        self.keys = keys
        self.vectors = vectors


class _Table:
    """All parts of one model folder, merged: key -> row of ``matrix``."""

    __slots__ = ("names", "index", "matrix")

    def __init__(self, names: tuple[str, ...], index: dict[str, int], matrix: np.ndarray):
        self.names = names
        self.index = index
        self.matrix = matrix


_PARTS: dict[str, _Part] = {}  # full part path -> its content (parts are immutable)
_TABLES: dict[str, _Table] = {}  # cache folder -> merged table of the part set last seen
_LOCK = threading.Lock()


def model_dir(storage: Storage, ref: ModelRef) -> str:
    """The cache folder of one (model_id, revision): a folder per precision and the record."""
    return f"{storage.path('embeddings')}/model={ref.slug}"


def _names(folder: str) -> list[str]:
    """Entry names in ``folder`` ([] when it does not exist)."""
    fs = filesystem_for(folder)
    try:
        entries = fs.ls(strip_conn(folder), detail=False)
    except FileNotFoundError:
        return []
    return [e.rstrip("/").rsplit("/", 1)[-1] for e in entries]


class EmbeddingCache:
    """Content-addressed vectors of one (model_id, revision) in one compute precision under a
    storage root."""

    def __init__(self, storage: Storage, ref: ModelRef, precision: str):
        if precision not in STORED_PRECISIONS:
            raise ValueError(f"embedding cache precision must be one of {STORED_PRECISIONS}, got {precision!r}")
        self.storage = storage
        self.ref = ref
        self.precision = precision
        self.dir = f"{model_dir(storage, ref)}/precision={precision}"
        self._dim: int | None = None

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = model_dim(self.ref)
        return self._dim

    # -- reading -----------------------------------------------------------------------------
    def part_names(self) -> list[str]:
        return sorted(n for n in _names(self.dir) if n.startswith("part-") and n.endswith(".parquet"))

    def texts(self) -> dict[str, str]:
        """Key -> text of every stored row (read from the parts; not kept in memory)."""
        import pyarrow.parquet as pq

        out: dict[str, str] = {}
        for name in self.part_names():
            path = f"{self.dir}/{name}"
            with filesystem_for(path).open(strip_conn(path), "rb") as fh:
                t = pq.read_table(fh, columns=["key", "text"])
            for k, text in zip(t.column("key").to_pylist(), t.column("text").to_pylist()):
                out.setdefault(k, text)
        return out

    def table(self) -> _Table:
        """The merged table, reloaded only when the set of part files changed. Where two parts
        hold a key, the first by file name wins."""
        names = tuple(self.part_names())
        with _LOCK:
            cached = _TABLES.get(self.dir)
            if cached is not None and cached.names == names:
                return cached
        parts = [self._part(n) for n in names]
        index: dict[str, int] = {}
        chunks: list[np.ndarray] = []
        offset = 0
        for part in parts:
            before = len(index)
            fresh = []
            for i, k in enumerate(part.keys.tolist()):
                if k not in index:
                    index[k] = offset + len(fresh)
                    fresh.append(i)
            if len(index) > before:
                chunks.append(part.vectors if len(fresh) == len(part.keys) else part.vectors[np.asarray(fresh)])
                offset += len(fresh)
        matrix = np.concatenate(chunks) if chunks else np.zeros((0, self.dim), dtype=np.float32)
        matrix.setflags(write=False)  # shared by every lookup in this process
        table = _Table(names, index, matrix)
        with _LOCK:
            _TABLES[self.dir] = table
        return table

    def _part(self, name: str) -> _Part:
        import pyarrow.parquet as pq

        path = f"{self.dir}/{name}"
        with _LOCK:
            hit = _PARTS.get(path)
        if hit is not None:
            return hit
        fs = filesystem_for(path)
        try:
            with fs.open(strip_conn(path), "rb") as fh:
                t = pq.read_table(fh, columns=["key", "vector"])
        except Exception as exc:
            raise ValueError(f"cannot read embedding cache part {path}: {exc}") from exc
        keys = np.asarray(t.column("key").to_pylist(), dtype=object)
        col = t.column("vector").combine_chunks()
        flat = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        if len(keys) and flat.size != len(keys) * self.dim:
            raise ValueError(f"embedding cache part {path} has vectors of the wrong size (expected {self.dim})")
        part = _Part(keys, flat.reshape(len(keys), self.dim))
        with _LOCK:
            _PARTS[path] = part
        return part

    def rows(self, keys: Sequence[str]) -> tuple[_Table, np.ndarray]:
        """Row of each key in ``table().matrix``, -1 where missing."""
        table = self.table()
        get = table.index.get
        return table, np.fromiter((get(k, -1) for k in keys), dtype=np.int64, count=len(keys))

    def lookup(self, keys: Iterable[str]) -> dict[str, np.ndarray]:
        table = self.table()
        m, idx = table.matrix, table.index
        return {k: m[i] for k in keys if (i := idx.get(k)) is not None}

    # -- writing -----------------------------------------------------------------------------
    def add(self, keys: Sequence[str], texts: Sequence[str], vectors: np.ndarray) -> str | None:
        """Write one new part with these rows (sorted by key); returns its path, None if empty."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        keys, texts = list(keys), list(texts)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if not keys:
            return None
        if not (len(keys) == len(texts) == len(vectors)) or vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(
                f"add(): {len(keys)} keys, {len(texts)} texts and vectors of shape {vectors.shape} (dim {self.dim}) do not match"
            )
        order = sorted(range(len(keys)), key=keys.__getitem__)
        keys = [keys[i] for i in order]
        if len(set(keys)) != len(keys):
            raise ValueError("add(): duplicate keys")
        texts = [texts[i] for i in order]
        vectors = vectors[np.asarray(order)]
        digest = hashlib.sha256("\n".join(keys).encode()).hexdigest()[:24]
        path = f"{self.dir}/part-{digest}.parquet"
        if self.storage.exists(path):
            return path  # same keys already written (idempotent retry)
        n = len(keys)
        table = pa.table(
            {
                "key": pa.array(keys, pa.string()),
                "text": pa.array(texts, pa.string()),
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), self.dim),
                "model_id": pa.array([self.ref.model_id] * n, pa.string()),
                "revision": pa.array([self.ref.revision] * n, pa.string()),
            }
        )
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd", write_statistics=False)
        self.storage.write_bytes(path, buf.getvalue())
        return path


def _is_empty(t: Any) -> bool:
    if t is None:
        return True
    if isinstance(t, str):
        return t == ""
    if isinstance(t, float) and math.isnan(t):
        return True
    raise TypeError(f"texts must be strings (or None/NaN for missing), got {type(t).__name__}")


def split_texts(texts: Iterable[Any]) -> tuple[int, int, list[str]]:
    """(rows, empty, sorted unique non-empty texts); None, NaN and "" are empty."""
    rows = empty = 0
    uniq: set[str] = set()
    for t in texts:
        rows += 1
        if _is_empty(t):
            empty += 1
        else:
            uniq.add(t)
    return rows, empty, sorted(uniq)


def recorded_precision(storage: Storage, ref: ModelRef) -> dict[str, str] | None:
    """What ``precision.json`` of the model folder says the embed stage last computed in
    (``precision``, ``device``, ``model_id``, ``revision``); None when there is no record."""
    path = f"{model_dir(storage, ref)}/{PRECISION_FILE}"
    try:
        record = storage.read_json(path)
    except FileNotFoundError:
        return None
    if not isinstance(record, dict) or record.get("precision") not in STORED_PRECISIONS:
        raise ValueError(f"{path} must name a precision among {STORED_PRECISIONS}, got {record!r}")
    return record


def _record_precision(storage: Storage, ref: ModelRef, precision: str, device: str) -> None:
    record = {"model_id": ref.model_id, "revision": ref.revision, "precision": precision, "device": device.split(":")[0]}
    if recorded_precision(storage, ref) != record:
        storage.write_json(record, f"{model_dir(storage, ref)}/{PRECISION_FILE}")


def stored_precisions(storage: Storage, ref: ModelRef) -> list[str]:
    """The precisions that have a folder in the model's cache, sorted."""
    found = (n.split("=", 1)[1] for n in _names(model_dir(storage, ref)) if n.startswith("precision="))
    return sorted(p for p in found if p in STORED_PRECISIONS)


def read_precision(storage: Storage, ref: ModelRef, settings: Any) -> tuple[str | None, str]:
    """The precision whose vectors readers take, and why (see the module docstring): an explicit
    ``embed_precision``; for ``auto`` the recorded one, else the only one stored. None when
    there is none to take."""
    asked = (getattr(settings, "embed_precision", "auto") or "auto").lower()
    if asked != "auto":
        if asked not in STORED_PRECISIONS:
            raise ValueError(f"embed precision must be one of {EMBED_PRECISIONS}, got {asked!r}")
        return asked, "named by embed_precision"
    record = recorded_precision(storage, ref)
    if record is not None:
        return record["precision"], f"recorded by the embed stage, on {record.get('device', '?')}, in {PRECISION_FILE}"
    stored = stored_precisions(storage, ref)
    if len(stored) == 1:
        return stored[0], f"the only one stored (no {PRECISION_FILE})"
    if stored:
        return None, f"precisions {stored} are stored and {PRECISION_FILE} records none"
    return None, "nothing is stored for this model"


def _carry_over(storage: Storage, ref: ModelRef, cache: EmbeddingCache, asked: str, skip: set[str]) -> tuple[list[str], list[str]]:
    """Under ``auto``: (keys, texts) stored under the recorded precision, when that is another
    one, that ``cache`` lacks (``skip``: keys embedded anyway)."""
    if (asked or "auto").lower() != "auto":
        return [], []
    record = recorded_precision(storage, ref)
    if record is None or record["precision"] == cache.precision:
        return [], []
    old = EmbeddingCache(storage, ref, record["precision"]).texts()
    index = cache.table().index
    keys = sorted(k for k in old if k not in index and k not in skip)
    if keys:
        log.warning(
            "embed: the cache's vectors are %s (recorded) and this worker computes in %s: embedding "
            "their %d texts again in %s so that readers find every text in one precision",
            record["precision"], cache.precision, len(keys), cache.precision,
        )
    return keys, [old[k] for k in keys]


def embed_new(texts: Iterable[str], storage: Storage, settings: Any) -> dict[str, Any]:
    """The embed stage: embed the distinct non-empty texts not yet in the cache of the precision
    this worker computes in (plus, under ``auto``, those carried over from the recorded
    precision), add them as new cache parts, record the precision, and return a JSON-able
    report."""
    t0 = time.perf_counter()
    rows, empty, unique = split_texts(texts)
    ref = resolve_model(settings.embed_model)
    device = resolve_device(getattr(settings, "embed_device", "auto"))
    asked = getattr(settings, "embed_precision", "auto")
    precision = resolve_precision(asked, device)
    cache = EmbeddingCache(storage, ref, precision)
    keys = [text_key(ref, t) for t in unique]
    _, found = cache.rows(keys)
    missing = np.flatnonzero(found < 0)
    new_keys = [keys[i] for i in missing]
    new_texts = [unique[i] for i in missing]
    carried_keys, carried_texts = _carry_over(storage, ref, cache, asked, set(new_keys))
    report: dict[str, Any] = {
        "rows": rows,
        "unique": len(unique),
        "empty": empty,
        "cached": len(unique) - len(missing),
        "new": len(missing),
        "carried": len(carried_keys),
        "model_id": ref.model_id,
        "revision": ref.revision,
        "precision": precision,
        "device": device,
        "truncation_rate": 0.0,
        "cache_part": None,
        "cache_dir": cache.dir,
    }
    if new_texts or carried_texts:
        vectors, stats = embed_texts(
            new_texts + carried_texts,
            ref,
            device=device,
            batch_size=getattr(settings, "embed_batch_size", 256),
            threads=getattr(settings, "embed_threads", 0),
            precision=precision,
        )
        n = len(new_texts)
        report["cache_part"] = cache.add(new_keys, new_texts, vectors[:n])
        if carried_keys:  # a part of its own: every shard carrying the same texts writes the same file
            report["carried_part"] = cache.add(carried_keys, carried_texts, vectors[n:])
        report.update(
            device=stats["device"],
            truncation_rate=stats["truncation_rate"],
            embed_seconds=stats["seconds"],
            embed_texts_per_s=stats["texts_per_s"],
            max_length=stats["max_length"],
            padding_overhead=stats["padding_overhead"],
            threads=stats["threads"],
            dtype=stats["dtype"],
        )
    # after the parts: a reader that follows the record finds every text it was written for
    _record_precision(storage, ref, precision, device)
    seconds = time.perf_counter() - t0
    report["seconds"] = round(seconds, 3)
    report["texts_per_s"] = round(len(unique) / max(seconds, 1e-9), 1)
    log.info(
        "embed: %d rows, %d unique, %d empty, %d cached, %d new, %d carried over (%s) in %.1fs",
        rows, len(unique), empty, report["cached"], report["new"], report["carried"], precision, seconds,
    )
    return report


def plan_shards(
    texts: Iterable[str],
    max_per_shard: int,
    *,
    storage: Storage | None = None,
    settings: Any = None,
) -> list[list[str]]:
    """Split the sorted distinct non-empty texts (only those the cache lacks in the precision
    readers take, :func:`read_precision`, when ``storage`` and ``settings`` are given) into
    contiguous, balanced shards of at most ``max_per_shard`` texts, for dynamic task mapping:
    each shard goes to :func:`embed_new` on its own."""
    if int(max_per_shard) < 1:
        raise ValueError(f"max_per_shard must be >= 1, got {max_per_shard}")
    _, _, unique = split_texts(texts)
    if storage is not None and settings is not None and unique:
        ref = resolve_model(settings.embed_model)
        precision, _ = read_precision(storage, ref, settings)
        if precision is not None:
            _, found = EmbeddingCache(storage, ref, precision).rows([text_key(ref, t) for t in unique])
            unique = [t for t, r in zip(unique, found) if r < 0]
    if not unique:
        return []
    k = -(-len(unique) // int(max_per_shard))
    size, extra = divmod(len(unique), k)
    shards, start = [], 0
    for i in range(k):
        end = start + size + (1 if i < extra else 0)
        shards.append(unique[start:end])
        start = end
    return shards


def load_vectors(texts: Sequence[str], storage: Storage, settings: Any) -> np.ndarray:
    """Vectors of ``texts`` in order from the cache, in the precision :func:`read_precision`
    names: ``[n, dim]`` float32; empty text -> zeros. Raises ValueError when a non-empty text
    has no vector in that precision (saying where it is, if stored in another)."""
    ref = resolve_model(settings.embed_model)
    texts = list(texts)
    uniq: dict[str, int] = {}
    codes = np.empty(len(texts), dtype=np.int64)
    for i, t in enumerate(texts):
        codes[i] = -1 if _is_empty(t) else uniq.setdefault(t, len(uniq))
    out = np.zeros((len(texts), model_dim(ref)), dtype=np.float32)
    if not uniq:
        return out
    precision, why = read_precision(storage, ref, settings)
    if precision is None:
        raise ValueError(
            f"no embeddings of model {ref.model_id} (revision {ref.revision}) to read under "
            f"{model_dir(storage, ref)}: {why}; run the embed stage for these days first"
        )
    cache = EmbeddingCache(storage, ref, precision)
    keys = [text_key(ref, t) for t in uniq]
    table, rows = cache.rows(keys)
    if (rows < 0).any():
        raise ValueError(_missing_message(cache, why, [k for k, r in zip(keys, rows) if r < 0], list(uniq), rows))
    has = codes >= 0
    out[has] = table.matrix[rows[codes[has]]]
    return out


def _missing_message(cache: EmbeddingCache, why: str, missing: list[str], texts: list[str], rows: np.ndarray) -> str:
    ref = cache.ref
    example = next(t for t, r in zip(texts, rows) if r < 0)
    msg = (
        f"{len(missing)} of {len(texts)} distinct texts have no {cache.precision} embedding of model "
        f"{ref.model_id} (revision {ref.revision}) under {cache.dir} (the precision {why}; "
        f"e.g. {example[:60]!r})"
    )
    elsewhere = {}
    for p in stored_precisions(cache.storage, ref):
        if p != cache.precision:
            _, found = EmbeddingCache(cache.storage, ref, p).rows(missing)
            if (found >= 0).any():
                elsewhere[p] = int((found >= 0).sum())
    if not elsewhere:
        return msg + "; run the embed stage for these days first"
    return (
        msg
        + f"; they are stored as {', '.join(f'{p} ({n})' for p, n in elsewhere.items())}: one day's texts "
        "must have vectors of one precision. Set embed_precision to auto or to the precision the "
        "embed stage computes in, or rerun the embed stage (embed_plan and its embed tasks) on one "
        "kind of worker: under auto it carries the recorded precision's texts over to its own"
    )
