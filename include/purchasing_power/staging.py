"""Staging a transaction file once per version, in memory that does not grow with the file.

A Parquet source is read batch by batch (:data:`STAGE_CHUNK_ROWS` rows) and each batch is
normalised on its own (``extract.normalise_raw_dtypes``) with the customer id type decided for
the whole file in a first pass over its id column. Normalised dated rows are spilled into
temporary Parquet files of :data:`SPILL_BUCKET_DAYS` days each (with each row's content hash),
in the source's order; the staged file is then written bucket by bucket (each bucket sorted by
day, stably) through one Parquet writer in row groups of ``extract.STAGED_ROW_GROUP`` rows, so
the staged files and the index are exactly those of sorting the whole source in memory. A CSV
source is read whole (``extract.read_source``) and staged as one chunk.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from purchasing_power import extract
from purchasing_power.errors import SourceError
from purchasing_power.schemas import customer_id_type, raw_schema
from purchasing_power.settings import Settings
from purchasing_power.storage import STAGED_DATED, STAGED_INDEX, STAGED_UNDATED, TEMP_MAX_AGE_S, Storage, Workspace, atomic_write_file, strip_conn

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

log = logging.getLogger(__name__)

#: Rows of a Parquet source read and normalised at a time.
STAGE_CHUNK_ROWS = 250_000
#: Days of dated rows per spill file: the most rows the final write holds at once.
SPILL_BUCKET_DAYS = 31
_HASH = "__row_hash"
_NS_PER_DAY = 86_400 * 10**9
_UNDATED = -(2**62)  # the spill bucket of rows without an InvoiceDate


def stage_source(settings: Settings, ws: Workspace) -> dict[str, Any]:
    """The source read and normalised once per source version: ``staged/<version>-dated.parquet``
    (rows with an InvoiceDate, in day order, the source's order within a day, small row groups
    so that a day range reads only its own) plus ``<version>-undated.parquet`` and an index
    with the rows per day, a content hash per day and a key per undated row (what tells a later
    version's changed days from unchanged ones). Every later extract of an unchanged source
    reads only the days it writes instead of the whole file. Returns the index."""
    source = settings.resolved_source
    version = extract.source_version(source)
    store = ws.per_source
    index = extract.staged_index(store, version)
    if index is not None:
        return index
    with SourceChunks(source, settings.column_map) as chunks:
        kind = chunks.customer_id_type()
        normalised = (extract.normalise_raw_dtypes(c, kind) for c in chunks)
        index = write_staged_chunks(store, normalised, source, version, kind, require_rows=True)
    extract.remove_versions_but(store, {version})
    store.write_json(index, store.path("staged", None, STAGED_INDEX.format(version=version)))  # last: the index commits the staged copy
    log.info("staged %s (version %s): %d rows, %d days", source, version, index["rows"], len(index["days"]))
    return index


class SourceChunks:
    """A transaction file's rows with the canonical column names (as ``extract.read_source``
    gives them), chunk by chunk in file order: a Parquet file batch by batch (a file on object
    storage is first copied to a local temporary file: its I/O errors propagate as they are),
    a CSV file whole. Iterate it inside ``with``; :meth:`customer_id_type` is the whole file's."""

    def __init__(self, source: str, column_map: dict[str, str] | None = None, chunk_rows: int | None = None) -> None:
        self.source, self.column_map = source, column_map or {}
        self.chunk_rows = chunk_rows or STAGE_CHUNK_ROWS
        self.is_csv = source.lower().endswith((".csv", ".csv.gz", ".txt"))
        self._frame: pd.DataFrame | None = None
        self._tmp: str | None = None
        self._file: Any = None
        self._float_ints: set[str] = set()
        self._kind: str | None = None

    def __enter__(self) -> SourceChunks:
        if self.is_csv:
            self._frame = extract.read_source(self.source, self.column_map)
            return self
        fs = extract._source_fs(self.source)
        if not fs.exists(self.source):
            raise FileNotFoundError(f"source file not found: {self.source}")
        local = self.source.removeprefix("file://") if "://" not in self.source or self.source.startswith("file://") else None
        if local is None:
            fd, self._tmp = tempfile.mkstemp(suffix=".parquet")
            os.close(fd)
            fs.get_file(strip_conn(self.source), self._tmp)
            local = self._tmp
        self._file = self._parsed(lambda: _open_parquet(local))
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._file is not None:
            self._file.close()
        if self._tmp and os.path.exists(self._tmp):
            os.unlink(self._tmp)

    def _parsed(self, read: Any) -> Any:
        try:
            return read()
        except (SourceError, MemoryError):
            raise
        except Exception as exc:
            raise SourceError(f"cannot read source {self.source}: {type(exc).__name__}: {exc}") from exc

    def customer_id_type(self) -> str:
        """The file's customer id type (``extract.source_customer_id_type`` of all its ids), from
        one pass over the id column (and integer columns: one with a missing value anywhere is
        read as floats in every chunk, as pandas reads the whole column)."""
        if self._kind is None:
            self._kind = self._first_pass()
        return self._kind

    def _first_pass(self) -> str:
        import pyarrow as pa
        import pyarrow.types as pat

        if self._frame is not None:
            return extract.source_customer_id_type(self._frame["CustomerID"])
        pf = self._file
        empty = self._parsed(lambda: pf.schema_arrow.empty_table().to_pandas())
        id_column = extract.map_columns(_names_frame(list(empty.columns)), self.column_map, source=self.source)["CustomerID"].iloc[0]
        schema = pf.schema_arrow
        # numpy integer columns (not pandas' nullable Int64, which the file's pandas metadata may ask for)
        ints = [f.name for f in schema if pat.is_integer(f.type) and f.name in empty.columns and _is_numpy_int(empty[f.name].dtype)]
        float_id = id_column in ints
        ints = [n for n in ints if n != id_column]
        if id_column not in schema.names:  # not a plain column (e.g. a stored pandas index): read whole chunks
            kinds = {extract.source_customer_id_type(c["CustomerID"]) for c in self._chunks()}
            return "string" if "string" in kinds else "int64"
        id_type = schema.field(id_column).type
        scan_ids = id_type is not None and not (pat.is_integer(id_type) or pat.is_floating(id_type) or pat.is_decimal(id_type)
                                                or pat.is_boolean(id_type) or pat.is_null(id_type))
        kind = "int64"
        columns = ints + [id_column]
        for batch in self._batches(columns):
            for name in ints:
                if batch.column(name).null_count:
                    self._float_ints.add(name)
            if float_id and batch.column(id_column).null_count:
                self._float_ints.add(id_column)
            if scan_ids and kind == "int64":
                ids = pa.Table.from_batches([batch.select([id_column])]).to_pandas()[id_column]
                kind = extract.source_customer_id_type(ids)
        return kind

    def __iter__(self) -> Iterator[pd.DataFrame]:
        if self._frame is not None:
            yield self._frame
            return
        self.customer_id_type()  # the first pass: which integer columns pandas would read as floats
        yield from self._chunks()

    def _chunks(self) -> Iterator[pd.DataFrame]:
        import pyarrow as pa

        metadata = self._file.schema_arrow.metadata
        for batch in self._batches(None):
            table = pa.Table.from_batches([batch])
            for name in self._float_ints:
                i = table.schema.get_field_index(name)
                table = table.set_column(i, pa.field(name, pa.float64()), table.column(i).cast(pa.float64(), safe=False))
            frame = self._parsed(lambda t=table: t.replace_schema_metadata(metadata).to_pandas())
            yield extract.map_columns(frame, self.column_map, source=self.source)

    def _batches(self, columns: list[str] | None) -> Iterator[Any]:
        """The file's record batches (of ``columns``; None: all); what cannot be read is a :class:`SourceError`."""
        batches = self._parsed(lambda: self._file.iter_batches(batch_size=self.chunk_rows, columns=columns))
        while (batch := self._parsed(lambda: next(batches, None))) is not None:
            yield batch


def _is_numpy_int(dtype: Any) -> bool:
    import numpy as np

    return isinstance(dtype, np.dtype) and dtype.kind in "iu"


def _open_parquet(path: str) -> Any:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path)


def _names_frame(names: list[Any]) -> pd.DataFrame:
    """A one-row frame whose values are its column names: mapped onto the canonical columns, it
    tells which source column each canonical one comes from."""
    import pandas as pd

    return pd.DataFrame([names], columns=names, dtype=object)


def write_staged(store: Storage, df: pd.DataFrame, source: str, version: str) -> dict[str, Any]:
    """Write a normalised frame's dated and undated rows under ``version`` (the raw schema of
    the frame's customer id type); return their index (not yet written: writing it commits them)."""
    return write_staged_chunks(store, [df], source, version, customer_id_type(df))


def write_staged_chunks(store: Storage, chunks: Iterable[pd.DataFrame], source: str, version: str, kind: str, *,
                        require_rows: bool = False) -> dict[str, Any]:
    """:func:`write_staged` of the rows of ``chunks`` (normalised frames, in source order, with
    customer id type ``kind``) without holding them all: see the module's description.
    ``require_rows``: a source without rows is a :class:`SourceError`, before anything is written."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = raw_schema(kind)
    spill_schema = schema.append(pa.field(_HASH, pa.uint64()))
    paths = {
        "dated_path": store.path("staged", None, STAGED_DATED.format(version=version)),
        "undated_path": store.path("staged", None, STAGED_UNDATED.format(version=version)),
    }
    rows = 0
    with _spill_folder(store) as spill:
        writers: dict[int, Any] = {}
        try:
            for df in chunks:
                rows += len(df)
                table = pa.Table.from_pandas(df.reset_index(drop=True), preserve_index=False, schema=schema)
                table = table.replace_schema_metadata(None).append_column(_HASH, pa.array(extract.row_hashes(df), pa.uint64()))
                ns = df["InvoiceDate"].to_numpy(dtype="datetime64[ns]").view("int64")
                undated = df["InvoiceDate"].isna().to_numpy()
                bucket = np.where(undated, _UNDATED, (ns // _NS_PER_DAY) // SPILL_BUCKET_DAYS)
                order = np.argsort(bucket, kind="stable")  # each bucket's rows in source order
                bucket, table = bucket[order], table.take(pa.array(order))
                starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]]) if len(bucket) else []
                for a, b in zip(starts, [*starts[1:], len(bucket)]):
                    key = int(bucket[a])
                    if key not in writers:
                        writers[key] = pq.ParquetWriter(os.path.join(spill, f"{len(writers)}.spill"), spill_schema, compression="lz4")
                    writers[key].write_table(table.slice(a, b - a))
        finally:
            for w in writers.values():
                w.close()
        if require_rows and rows == 0:
            raise SourceError(f"source {source} has no rows")
        spills = {k: os.path.join(spill, f"{i}.spill") for i, k in enumerate(writers)}
        dated_keys = sorted(k for k in spills if k != _UNDATED)
        per_day: dict[str, tuple[int, str]] = {}

        def dated_parts() -> Iterator[Any]:
            for k in dated_keys:
                part = pq.read_table(spills[k])
                days = part.column("InvoiceDate").cast(pa.int64()).to_numpy() // _NS_PER_DAY
                order = np.argsort(days, kind="stable")
                days, hashes = days[order], part.column(_HASH).to_numpy()[order]
                starts = np.flatnonzero(np.r_[True, days[1:] != days[:-1]])
                for a, b in zip(starts, np.r_[starts[1:], len(days)]):
                    per_day[str(np.datetime64(int(days[a]), "D"))] = (int(b - a), extract.digest(hashes[a:b]))
                yield part.take(pa.array(order)).drop_columns([_HASH])

        undated_hashes = np.array([], dtype=np.uint64)
        undated_table = schema.empty_table()
        if _UNDATED in spills:
            undated_table = pq.read_table(spills[_UNDATED])
            undated_hashes = undated_table.column(_HASH).to_numpy()
            undated_table = undated_table.drop_columns([_HASH])
        _write_row_groups(paths["dated_path"], schema, dated_parts())
        _write_row_groups(paths["undated_path"], schema, [undated_table])
    return {
        "format": extract.STAGED_FORMAT,
        "source": source,
        "version": version,
        "rows": int(rows),
        "undated": int(len(undated_hashes)),
        "days": {d: n for d, (n, _) in per_day.items()},
        "day_hashes": {d: h for d, (_, h) in per_day.items()},
        "undated_keys": extract.hash_keys(undated_hashes),
        **paths,
    }


def _write_row_groups(path: str, schema: Any, parts: Iterable[Any]) -> None:
    """Write the rows of ``parts`` (Arrow tables of ``schema``) to ``path`` atomically, in row
    groups of ``extract.STAGED_ROW_GROUP`` rows however the parts are cut: the bytes
    ``pq.write_table`` makes of all the rows as one table."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    size = extract.STAGED_ROW_GROUP
    options = {"compression": "zstd", "write_statistics": True}

    def write(local: str) -> None:
        pending = schema.empty_table()
        wrote = False
        with pq.ParquetWriter(local, schema, **options) as writer:
            for part in parts:
                pending = pa.concat_tables([pending, part.cast(schema)])
                full = len(pending) // size * size
                if full:
                    writer.write_table(pending.slice(0, full).combine_chunks(), row_group_size=size)
                    pending, wrote = pending.slice(full).combine_chunks(), True
            if len(pending) or not wrote:
                writer.write_table(pending.combine_chunks(), row_group_size=size)

    atomic_write_file(path, write)


@contextmanager
def _spill_folder(store: Storage) -> Iterator[str]:
    """A temporary local folder for spill files (Parquet named ``N.spill``, so that nothing takes a
    killed run's unfinished one for an artefact): in ``staged/`` when the storage is local (the
    data's own disk), else the system's temporary folder. Spill folders that a killed run left
    behind are removed once they are older than ``storage.TEMP_MAX_AGE_S``."""
    staged = strip_conn(store.path("staged")).removeprefix("file://")
    parent = staged if "://" not in staged else None
    if parent:
        os.makedirs(parent, exist_ok=True)
        for entry in os.scandir(parent):
            if entry.name.startswith(".spill-") and entry.is_dir() and entry.stat().st_mtime < time.time() - TEMP_MAX_AGE_S:
                shutil.rmtree(entry.path, ignore_errors=True)
    folder = tempfile.mkdtemp(prefix=".spill-", dir=parent)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
