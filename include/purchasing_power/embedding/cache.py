"""The content-addressed embedding cache and what reads and fills it.

Vectors live under ``{storage}/embeddings/model={slug}/part-{digest}.parquet``, one row per
text, keyed by ``sha256(model_id \\0 revision \\0 text)``. Parts are immutable and named by the
digest of their sorted keys, so writing the same content twice gives the same file, and shards
of one stage (Airflow dynamic task mapping, :func:`plan_shards`) write separate parts that read
back as one table. :func:`embed_new` embeds only the texts the cache lacks; :func:`load_vectors`
reads vectors back in the caller's order.
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

from purchasing_power.embedding.encoder import embed_texts
from purchasing_power.embedding.model_ref import ModelRef, model_dim, resolve_model, text_key
from purchasing_power.storage import Storage, filesystem_for, strip_conn

log = logging.getLogger(__name__)


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


class EmbeddingCache:
    """Content-addressed vectors of one (model_id, revision) under a storage root."""

    def __init__(self, storage: Storage, ref: ModelRef):
        self.storage = storage
        self.ref = ref
        self.dir = f"{storage.path('embeddings')}/model={ref.slug}"
        self._dim: int | None = None

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = model_dim(self.ref)
        return self._dim

    # -- reading -----------------------------------------------------------------------------
    def part_names(self) -> list[str]:
        fs = filesystem_for(self.dir)
        try:
            entries = fs.ls(strip_conn(self.dir), detail=False)
        except FileNotFoundError:
            return []
        names = [e.rstrip("/").rsplit("/", 1)[-1] for e in entries]
        return sorted(n for n in names if n.startswith("part-") and n.endswith(".parquet"))

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


def embed_new(texts: Iterable[str], storage: Storage, settings: Any) -> dict[str, Any]:
    """The embed stage: embed the distinct non-empty texts not yet in the cache, add them as one
    new cache part, and return a JSON-able report."""
    t0 = time.perf_counter()
    rows, empty, unique = split_texts(texts)
    ref = resolve_model(settings.embed_model)
    cache = EmbeddingCache(storage, ref)
    keys = [text_key(ref, t) for t in unique]
    _, found = cache.rows(keys)
    missing = np.flatnonzero(found < 0)
    report: dict[str, Any] = {
        "rows": rows,
        "unique": len(unique),
        "empty": empty,
        "cached": len(unique) - len(missing),
        "new": len(missing),
        "model_id": ref.model_id,
        "revision": ref.revision,
        "device": None,
        "truncation_rate": 0.0,
        "cache_part": None,
        "cache_dir": cache.dir,
    }
    if len(missing):
        new_texts = [unique[i] for i in missing]
        vectors, stats = embed_texts(
            new_texts,
            ref,
            device=getattr(settings, "embed_device", "auto"),
            batch_size=getattr(settings, "embed_batch_size", 256),
            threads=getattr(settings, "embed_threads", 0),
            precision=getattr(settings, "embed_precision", "auto"),
        )
        report["cache_part"] = cache.add([keys[i] for i in missing], new_texts, vectors)
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
    seconds = time.perf_counter() - t0
    report["seconds"] = round(seconds, 3)
    report["texts_per_s"] = round(len(unique) / max(seconds, 1e-9), 1)
    log.info(
        "embed: %d rows, %d unique, %d empty, %d cached, %d new in %.1fs",
        rows, len(unique), empty, report["cached"], report["new"], seconds,
    )
    return report


def plan_shards(
    texts: Iterable[str],
    max_per_shard: int,
    *,
    storage: Storage | None = None,
    settings: Any = None,
) -> list[list[str]]:
    """Split the sorted distinct non-empty texts (only those not cached yet, when ``storage`` and
    ``settings`` are given) into contiguous, balanced shards of at most ``max_per_shard`` texts,
    for dynamic task mapping: each shard goes to :func:`embed_new` on its own."""
    if int(max_per_shard) < 1:
        raise ValueError(f"max_per_shard must be >= 1, got {max_per_shard}")
    _, _, unique = split_texts(texts)
    if storage is not None and settings is not None and unique:
        ref = resolve_model(settings.embed_model)
        _, found = EmbeddingCache(storage, ref).rows([text_key(ref, t) for t in unique])
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
    """Vectors of ``texts`` in order from the cache: ``[n, dim]`` float32; empty text -> zeros.
    Raises ValueError when a non-empty text was never embedded."""
    ref = resolve_model(settings.embed_model)
    cache = EmbeddingCache(storage, ref)
    texts = list(texts)
    uniq: dict[str, int] = {}
    codes = np.empty(len(texts), dtype=np.int64)
    for i, t in enumerate(texts):
        codes[i] = -1 if _is_empty(t) else uniq.setdefault(t, len(uniq))
    table, rows = cache.rows([text_key(ref, t) for t in uniq])
    missing = int((rows < 0).sum())
    if missing:
        example = next(t for t, r in zip(uniq, rows) if r < 0)
        raise ValueError(
            f"{missing} of {len(uniq)} distinct texts have no cached embedding for model "
            f"{ref.model_id} (revision {ref.revision}) under {cache.dir} (e.g. {example[:60]!r}); "
            "run the embed stage for these days first"
        )
    out = np.zeros((len(texts), cache.dim), dtype=np.float32)
    has = codes >= 0
    if has.any():
        out[has] = table.matrix[rows[codes[has]]]
    return out
