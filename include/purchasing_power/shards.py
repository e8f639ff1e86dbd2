"""Customer shards: which of ``n`` buckets a customer belongs to, and reading one bucket's rows.

A shard is a stable hash of the customer id modulo ``n`` (:func:`shard_of`): the same id falls
in the same bucket on every machine, every day and every Python process (no ``hash()``
randomisation), so the tasks of a sharded features step (:mod:`purchasing_power.shardfeatures`)
can run on different workers and each reads only its own customers' rows
(:func:`read_shard`); one process that builds every shard in turn splits the history into
per-shard local files in one pass (:func:`spool_shards`). Integer ids hash their int64 value, text ids their UTF-8 text (pandas'
``hash_array`` with a fixed key); ``tests/unit/test_shards.py`` pins the buckets of a few ids so
that a library upgrade that changed them would fail a test instead of moving customers.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable

from purchasing_power.frames import to_frame
from purchasing_power.settings import MAX_FEATURE_SHARDS
from purchasing_power.storage import Storage, strip_conn

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import pandas as pd

#: pandas' default hash key, spelled out: the buckets must not follow a library default.
HASH_KEY = "0123456789123456"
MAX_SHARDS = MAX_FEATURE_SHARDS


def check_shards(shard: int, shards: int) -> None:
    if not 1 <= int(shards) <= MAX_SHARDS:
        raise ValueError(f"feature_shards must be within 1..{MAX_SHARDS}, got {shards}")
    if not 0 <= int(shard) < int(shards):
        raise ValueError(f"shard must be within 0..{int(shards) - 1}, got {shard}")


def shard_of(ids: np.ndarray | pd.Series | pd.Index, shards: int) -> np.ndarray:
    """The bucket (0 .. ``shards`` - 1, int64) of each customer id: int64 ids by their value,
    text ids by their text."""
    import numpy as np
    import pandas as pd

    check_shards(0, shards)
    values = np.asarray(ids)
    if shards == 1:
        return np.zeros(len(values), dtype=np.int64)
    if values.dtype.kind in "iu":
        h = pd.util.hash_array(values.astype(np.int64), hash_key=HASH_KEY)
    elif values.dtype.kind == "f":
        raise ValueError("customer ids to shard are float: they must be int64 or text")
    else:
        if pd.isna(values).any():
            raise ValueError("a customer id to shard is missing")
        h = pd.util.hash_array(values.astype(str).astype(object), hash_key=HASH_KEY, categorize=True)
    return (h % np.uint64(shards)).astype(np.int64)


def read_shard(
    storage: Storage,
    paths: list[str],
    shard: int,
    shards: int,
    *,
    columns: list[str] | None = None,
    dictionary: list[str] | None = None,
) -> pd.DataFrame:
    """The rows of ``paths`` (files of one schema with a ``customer_id`` column) whose customer
    falls in ``shard`` of ``shards``, concatenated in the given order (rows keep their order);
    ``columns``: only these; ``dictionary``: these text columns as categoricals. Files are read
    one at a time (a few in parallel) and filtered as they come, so memory holds the shard, not
    the history."""
    import pyarrow as pa

    check_shards(shard, shards)
    if not paths:
        raise ValueError("no files to read")
    if shards == 1:
        return storage.read_parquet_many(paths, columns=columns, dictionary=dictionary)
    need = None if columns is None else list(dict.fromkeys([*columns, "customer_id"]))

    def filtered(table: pa.Table) -> pa.Table:
        mask = shard_of(table.column("customer_id").to_numpy(zero_copy_only=False), shards) == shard
        table = table.filter(pa.array(mask))
        return table if columns is None else table.select(columns)

    tables = read_tables(storage, paths, need, filtered, dictionary=dictionary, what=f"shard {shard} of {shards}")
    return to_frame(pa.concat_tables(tables, promote_options="permissive"))


def read_file_shard(storage: Storage, path: str, shard: int, shards: int, *, batch_rows: int = 65_536) -> pd.DataFrame:
    """The rows of one Parquet file (with a ``customer_id`` column) whose customer falls in
    ``shard`` of ``shards``, in file order, read ``batch_rows`` rows at a time: memory holds the
    shard's rows and a row group of the file (the stored features are written in row groups of
    ``history.FEATURE_ROW_GROUP`` rows), not the whole file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    check_shards(shard, shards)
    remote = "://" in path
    fs = storage.fs if remote else None
    file = strip_conn(path) if remote else path
    try:
        if remote:
            fs.invalidate_cache(file)
        with fs.open(file, "rb") if remote else open(file, "rb") as fh, pq.ParquetFile(fh) as pf:
            schema, kept = pf.schema_arrow, []
            for batch in pf.iter_batches(batch_size=batch_rows):
                mask = shard_of(batch.column("customer_id").to_numpy(zero_copy_only=False), shards) == shard
                kept.append(batch.filter(pa.array(mask)))
    except Exception as exc:
        raise ValueError(f"cannot read shard {shard} of {shards} of {path}: {exc}") from exc
    return to_frame(pa.Table.from_batches(kept, schema=schema))


def spool_shards(
    storage: Storage,
    paths: list[str],
    shards: int,
    folder: str,
    *,
    columns: list[str] | None = None,
    files_per_chunk: int = 32,
) -> list[list[str]]:
    """Split the rows of ``paths`` (files of one schema with a ``customer_id`` column, in
    history order) by customer shard into local Parquet files under ``folder``, in one pass
    holding ``files_per_chunk`` input files at a time. Returns each shard's files in history
    order: reading shard ``k``'s gives :func:`read_shard`'s rows of shard ``k`` without
    scanning every input file again. ``columns``: only these."""
    import os

    import pyarrow as pa
    import pyarrow.parquet as pq

    check_shards(0, shards)
    if not paths:
        raise ValueError("no files to read")
    need = None if columns is None else list(dict.fromkeys([*columns, "customer_id"]))
    out: list[list[str]] = [[] for _ in range(shards)]
    for k in range(shards):
        os.makedirs(os.path.join(folder, f"shard={k}"), exist_ok=True)
    for j, start in enumerate(range(0, len(paths), files_per_chunk)):
        tables = read_tables(storage, paths[start:start + files_per_chunk], need)
        chunk = pa.concat_tables(tables, promote_options="permissive")
        del tables
        buckets = shard_of(chunk.column("customer_id").to_numpy(zero_copy_only=False), shards)
        for k in range(shards):
            path = os.path.join(folder, f"shard={k}", f"part-{j:05d}.parquet")
            rows = chunk.filter(pa.array(buckets == k))
            pq.write_table(rows if columns is None else rows.select(columns), path)
            out[k].append(path)
        del chunk
    return out


def read_tables(storage: Storage, paths: list[str], columns: list[str] | None, each: Callable[[Any], Any] | None = None, *,
                dictionary: list[str] | None = None, what: str = "Parquet files") -> list[Any]:
    """``paths`` as Arrow tables (``columns`` only, ``dictionary`` columns dictionary-encoded;
    ``each`` applied to each table as it comes, a few files read in parallel), in the given order."""
    import pyarrow.parquet as pq

    remote = "://" in paths[0]
    fs = storage.fs if remote else None

    def one(path: str) -> Any:
        file = strip_conn(path) if remote else path
        if remote:
            fs.invalidate_cache(file)
        table = pq.read_table(file, columns=columns, read_dictionary=dictionary or None, filesystem=fs)
        return table if each is None else each(table)

    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            return list(pool.map(one, paths))
    except Exception as exc:
        raise ValueError(f"cannot read {what} under {storage.root}: {exc}") from exc


def customer_sample(customer_ids: np.ndarray | pd.Series | pd.Index, share: float, seed: int) -> np.ndarray:
    """A seeded, stable sample of customers: True for the ids whose hash (keyed by ``seed``) falls
    below ``share``. The same customer is in or out of every snapshot and every run, so a
    sampled training table keeps whole customer histories; ids of any type (integers, strings).
    Samples nest: the customers of a smaller share are among those of a larger one."""
    import numpy as np
    import pandas as pd

    if share >= 1.0:
        return np.ones(len(customer_ids), dtype=bool)
    ids = pd.util.hash_array(np.asarray(customer_ids))  # uint64 per id (object and numeric ids)
    key = np.uint64(pd.util.hash_array(np.array([int(seed)], dtype=np.int64))[0])
    h = pd.util.hash_array(ids ^ key)  # mixed again with the seed: a different sample per seed
    return h < np.uint64(min(int(share * 2.0**64), 2**64 - 1))
