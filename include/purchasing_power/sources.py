"""The three forms a transaction source takes, and how each is read incrementally.

* **One file** (Parquet or CSV, a local path or an fsspec URI): staged once per version by
  ``staging.stage_source`` (a Parquet file chunk by chunk, in bounded memory).
* **A file set**: a folder, a glob of folders ending in ``/`` (``s3://b/tx/ds=*/``) or a glob of
  files (``/data/tx/*.parquet``, ``*.csv``). Every data file that matches is a *part* with its own
  version (:func:`list_parts`); :func:`stage_file_set` reads only the parts that are new or
  changed and merges them into one staged index of the same shape as a file's.
  Inside a folder, data files are those ending in ``.parquet``, ``.pq``, ``.csv`` or ``.csv.gz``;
  names starting with ``.`` or ``_`` (``_SUCCESS``, temporary files) are never parts.
* **A table**: ``sql://<conn_id>/<schema>.<table>`` read through an Airflow connection
  (PostgreSQL, see :mod:`purchasing_power.warehouse`). :class:`SqlTable` selects only the mapped
  columns, pushes the day filter into the query and fetches in chunks from a server-side cursor,
  inside one read-only REPEATABLE READ transaction (every query of a run sees one snapshot).

SQL is composed with ``psycopg.sql``: names are quoted identifiers, values are query parameters;
nothing a trigger can set is spliced into the text. Days are UTC days: a ``timestamptz``
InvoiceDate is converted to UTC and made naive, a ``timestamp`` is taken as UTC, a ``date`` as
midnight. A row whose InvoiceDate is NULL, infinite or outside the range the pipeline's
timestamps hold (:data:`DATED_FROM` .. :data:`DATED_UNTIL`) is *undated*: read by
:meth:`SqlTable.read_undated` with its InvoiceDate as text, quarantined once by clean.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from purchasing_power import extract, staging
from purchasing_power.errors import InputError, SourceError
from purchasing_power.schemas import CANONICAL_COLUMNS
from purchasing_power.settings import Settings
from purchasing_power.storage import STAGED_INDEX, Workspace, filesystem_for, normalise_uri, strip_conn

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

log = logging.getLogger(__name__)

#: Rows fetched per round trip from a SQL source: with one day's rows, what extract holds in memory.
SQL_CHUNK_ROWS = 50_000
#: InvoiceDates the pipeline's datetime64[ns] columns hold; a SQL row outside is undated.
DATED_FROM = date(1678, 1, 1)
DATED_UNTIL = date(2262, 1, 1)
#: InvoiceDate column types a SQL source may have (the day filter runs on the column itself).
TIMESTAMP_TYPES = {"timestamp with time zone": "timestamptz", "timestamp without time zone": "timestamp", "date": "date"}
#: Column types whose values are read as they are; every other type is read as text.
_INTEGER_TYPES = {"smallint", "integer", "bigint"}
_NUMBER_TYPES = _INTEGER_TYPES | {"numeric", "real", "double precision"}
_DATA_SUFFIXES = (".parquet", ".pq", ".csv", ".csv.gz")


def is_sql_source(source: str) -> bool:
    return source.strip().lower().startswith("sql://")


def is_file_set(source: str) -> bool:
    """Whether ``source`` names several files: a glob, a path ending in ``/``, or a local folder.
    (A folder on an object store is named with a trailing ``/``: telling it from a file would
    cost a request per run.)"""
    return any(c in source for c in "*?[") or source.endswith("/") or ("://" not in source and os.path.isdir(source))


def list_parts(source: str) -> list[tuple[str, str]]:
    """The data files of a file set, sorted by path, each with its version (size and
    modification time, or ETag). Listed afresh: files added since an earlier listing in this
    process are seen. No file at all is a :class:`FileNotFoundError` (retried: the files may
    not have arrived yet)."""
    fs = filesystem_for(source)
    getattr(fs, "fs", fs).invalidate_cache()  # object stores cache listings for the process's life
    pattern = strip_conn(source)
    folders_only = pattern.endswith("/")
    pattern = pattern.rstrip("/")
    matches = sorted(fs.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]
    files: set[str] = set()
    for match in matches:
        if fs.isdir(match):
            files.update(f for f in fs.find(match) if _is_data_file(f))
        elif not folders_only and not _hidden(match):
            files.add(match)
    if not files:
        raise FileNotFoundError(f"no source files match {source}")
    return [(_full_path(source, fs, f), fs.ukey(f)[:16]) for f in sorted(files)]


def _hidden(path: str) -> bool:
    return path.rstrip("/").rsplit("/", 1)[-1].startswith((".", "_"))


def _is_data_file(path: str) -> bool:
    return not _hidden(path) and path.lower().endswith(_DATA_SUFFIXES)


def _full_path(source: str, fs: Any, path: str) -> str:
    """A listed path written the way the source is (scheme and connection kept)."""
    uri = normalise_uri(source)
    if "://" not in uri:
        return path
    scheme, rest = uri.split("://", 1)
    head = rest.split("/", 1)[0]
    if "@" in head and scheme != "file":
        return f"{scheme}://{head.split('@', 1)[0]}@{path.lstrip('/')}"
    return fs.unstrip_protocol(path)


def part_version(path: str, ukey: str) -> str:
    """The staged name of one part: its path's digest and its version."""
    return f"p{hashlib.blake2b(path.encode(), digest_size=4).hexdigest()}-{ukey}"


def file_set_version(parts: list[tuple[str, str]]) -> str:
    """The version of a file set: changes when a part is added, removed or changed."""
    return "g" + _digest_text("\n".join(f"{p}\t{k}" for p, k in parts))[:15]


def stage(settings: Settings, ws: Workspace) -> dict[str, Any]:
    """The staged source of a file or a file set (``staging.stage_source``'s contract: an
    index with rows and a content hash per day and a key per undated row, read with
    :func:`read_staged` / :func:`read_undated`). A table is not staged."""
    source = settings.resolved_source
    if is_sql_source(source):
        raise SourceError(f"source {source} is a table: the extract stage reads it day by day, it is not staged")
    return stage_file_set(settings, ws) if is_file_set(source) else staging.stage_source(settings, ws)


def stage_file_set(settings: Settings, ws: Workspace) -> dict[str, Any]:
    """Stage a file set: each part (file) once per version, as a single file is, so only new
    or changed files are read; then the set's index, committed last: per day the rows of all
    parts and a hash of the parts' hashes of that day (it changes when any part's rows of the
    day do, and only then), undated keys numbered over the parts in path order, and ``parts``
    (each part's days and staged files). Staged files of dropped parts are removed.

    A set has one customer id type, as a file has: text when any part's ids are text (each
    part's own type is recorded with its staged copy); a part staged with integer ids is then
    read again as text, once, and every day's hash changes with it."""
    source = settings.resolved_source
    parts = list_parts(source)
    version = file_set_version(parts)
    store = ws.per_source
    index = extract.staged_index(store, version)
    if index is not None:
        return index
    staged = [_stage_part(store, path, ukey, settings.column_map) for path, ukey in parts]
    kind = "string" if any(p["own_ids"] == "string" for p in staged) else "int64"
    staged = [p if p["customer_ids"] == kind else _stage_part(store, p["source"], p["ukey"], settings.column_map, kind) for p in staged]
    if not any(p["rows"] for p in staged):
        raise SourceError(f"source {source} has no rows in its {len(parts)} file(s)")
    day_parts: dict[str, list[str]] = {}
    for part in staged:
        for d, h in part["day_hashes"].items():
            day_parts.setdefault(d, []).append(h)
    seen: dict[str, int] = {}
    keys = []
    for k in (k.rsplit("-", 1)[0] for p in staged for k in p["undated_keys"]):
        seen[k] = seen.get(k, -1) + 1
        keys.append(f"{k}-{seen[k]}")
    index = {
        "format": extract.STAGED_FORMAT,
        "source": source,
        "version": version,
        "customer_ids": kind,
        "rows": sum(p["rows"] for p in staged),
        "undated": sum(p["undated"] for p in staged),
        "days": {d: sum(p["days"].get(d, 0) for p in staged) for d in sorted(day_parts)},
        "day_hashes": {d: hs[0] if len(hs) == 1 else _digest_text("\n".join(hs)) for d, hs in sorted(day_parts.items())},
        "undated_keys": keys,
        "parts": [{k: p[k] for k in ("source", "version", "days", "undated", "dated_path", "undated_path")} for p in staged],
    }
    extract.remove_versions_but(store, {version, *(p["version"] for p in staged)})
    store.write_json(index, store.path("staged", None, STAGED_INDEX.format(version=version)))
    log.info("staged %s (version %s): %d file(s), %d rows, customer ids %s", source, version, len(parts), index["rows"], kind)
    return index


def _stage_part(store: Any, path: str, ukey: str, column_map: dict[str, str], kind: str | None = None) -> dict[str, Any]:
    """One part of a file set staged (read only when no staged copy exists): with customer id
    type ``kind``, or (``None``) with whichever copy exists, else the part's own type."""
    from purchasing_power.schemas import CUSTOMER_ID_TYPES

    base = part_version(path, ukey)
    for k in ([kind] if kind else CUSTOMER_ID_TYPES):
        index = extract.staged_index(store, f"{base}-{k}")
        if index is not None:
            return index
    with staging.SourceChunks(path, column_map) as chunks:
        own = chunks.customer_id_type()
        k = kind or own
        normalised = (extract.normalise_raw_dtypes(c, k) for c in chunks)
        index = staging.write_staged_chunks(store, normalised, path, f"{base}-{k}", k)
    index.update(ukey=ukey, customer_ids=k, own_ids=own)
    store.write_json(index, store.path("staged", None, STAGED_INDEX.format(version=f"{base}-{k}")))
    log.info("staged part %s (%d rows)", path, index["rows"])
    return index


def read_staged(index: dict[str, Any], first: date, last: date) -> pd.DataFrame:
    """Staged rows with first <= invoice day <= last, of a file (``extract.read_staged``) or a
    file set: only the parts with rows on those days, merged in day order, part order within a day."""
    import pandas as pd

    if "parts" not in index:
        return extract.read_staged(index, first, last)
    span = (first.isoformat(), last.isoformat())
    parts = [p for p in index["parts"] if any(span[0] <= d <= span[1] for d in p["days"])] or index["parts"][:1]
    frames = [extract.read_staged(p, first, last) for p in parts]
    rows = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    return rows.iloc[rows["InvoiceDate"].dt.normalize().argsort(kind="stable")].reset_index(drop=True)


def read_undated(index: dict[str, Any]) -> pd.DataFrame:
    """The staged rows without an InvoiceDate, in the order of ``index["undated_keys"]``."""
    import pandas as pd

    from purchasing_power.storage import read_parquet

    if "parts" not in index:
        return read_parquet(index["undated_path"])
    frames = [read_parquet(p["undated_path"]) for p in ([p for p in index["parts"] if p["undated"]] or index["parts"][:1])]
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def column_origin(columns: list[str], column_map: dict[str, str], *, source: str) -> dict[str, str]:
    """For each canonical column, the table column it is read from: ``extract.map_columns``'s
    rules and errors applied to a table's column names, before any row is read."""
    import pandas as pd

    probe = pd.DataFrame([columns], columns=columns)
    return {str(k): str(v) for k, v in extract.map_columns(probe, column_map, source=source).iloc[0].items()}


def read_all(source: str, column_map: dict[str, str] | None = None) -> pd.DataFrame:
    """Every row of any form of source with the canonical column names, not normalised (as
    ``extract.read_source`` gives a file): a file set's parts in path order, a table's dated
    rows in InvoiceDate order and then its undated ones. For checks and benchmarks; the
    pipeline reads incrementally."""
    import pandas as pd

    column_map = column_map or {}
    if is_sql_source(source):
        with open_table(source, lambda columns: column_origin(columns, column_map, source=source)) as table:
            frames = [f.astype({"InvoiceDate": object}) for f in (*table.read_days([(DATED_FROM, DATED_UNTIL - timedelta(days=1))]), *table.read_undated())]
    elif is_file_set(source):
        frames = [extract.read_source(path, column_map) for path, _ in list_parts(source)]
    else:
        return extract.read_source(source, column_map)
    return pd.concat([f for f in frames if len(f)] or frames[:1], ignore_index=True)


def _digest_text(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def day_ranges(days: Iterable[date], counts: dict[date, int] | None = None) -> list[tuple[date, date]]:
    """Days folded into ``(first, last)`` ranges, one predicate each: consecutive days, and
    days apart when ``counts`` says that no day between them has rows."""
    out: list[tuple[date, date]] = []
    for d in sorted(set(days)):
        gap = range(1, (d - out[-1][1]).days) if out else range(0)
        if out and (not gap or (counts is not None and not any(counts.get(out[-1][1] + timedelta(days=i)) for i in gap))):
            out[-1] = (out[-1][0], d)
        else:
            out.append((d, d))
    return out


class SqlTable:
    """A transaction table, its columns mapped onto the canonical ones (see :func:`open_table`)."""

    def __init__(self, uri: str, conn: Any, ref: Any, columns: dict[str, str], origin: dict[str, str]) -> None:
        from psycopg import sql

        self.uri, self.conn, self.ref, self.origin = uri, conn, ref, origin
        ts_name = origin["InvoiceDate"]
        kind = TIMESTAMP_TYPES.get(columns[ts_name])
        if kind is None:
            raise SourceError(
                f"source {uri}: column {ts_name!r} (InvoiceDate) is {columns[ts_name]}; a table source needs a timestamptz, "
                "timestamp or date column to filter days on (create a view that casts it)"
            )
        self.kind = kind
        #: The customer id type (``schemas.CUSTOMER_ID_TYPES``), from the column's type: numbers
        #: are integer ids (a fraction is quarantined by clean), anything else text ids as spelled.
        self.customer_ids = "int64" if columns[origin["CustomerID"]] in _NUMBER_TYPES else "string"
        self.ts = sql.Identifier(ts_name)
        self.table = sql.Identifier(ref.schema, ref.table)
        typed = {"InvoiceDate"} | {
            c for c in ("Quantity", "UnitPrice", "CustomerID")
            if columns[origin[c]] in (_INTEGER_TYPES if c == "CustomerID" else _NUMBER_TYPES)
        }

        def select(typed: set[str]) -> Any:
            """The canonical columns, those not in ``typed`` as text."""
            return sql.SQL(", ").join(
                sql.SQL("{} AS {}").format(
                    sql.Identifier(origin[c]) if c in typed else sql.SQL("{}::text").format(sql.Identifier(origin[c])), sql.Identifier(c)
                )
                for c in CANONICAL_COLUMNS
            )

        self.select = select(typed)
        self.select_undated = select(typed - {"InvoiceDate"})  # NULL, infinite or far-off dates: as text
        day = {"timestamptz": "({} AT TIME ZONE 'UTC')::date", "timestamp": "{}::date", "date": "{}"}[kind]
        self.day_expr = sql.SQL(day).format(self.ts)
        self.dated = sql.SQL("({ts} >= %s AND {ts} < %s)").format(ts=self.ts)

    def _bound(self, d: date) -> Any:
        """A day's start as a parameter of the InvoiceDate column's type."""
        if self.kind == "date":
            return d
        start = datetime(d.year, d.month, d.day)
        return start.replace(tzinfo=timezone.utc) if self.kind == "timestamptz" else start

    def day_counts(self) -> tuple[dict[date, int], int]:
        """Rows per UTC day and the number of undated rows, by one aggregate query (it reads the
        InvoiceDate column only; an index on it makes this an index-only scan)."""
        from psycopg import sql

        query = sql.SQL("SELECT CASE WHEN {dated} THEN {day} END AS day, count(*) FROM {table} GROUP BY 1").format(
            dated=self.dated, day=self.day_expr, table=self.table
        )
        counts: dict[date, int] = {}
        undated = 0
        for day, n in self._execute(query, (self._bound(DATED_FROM), self._bound(DATED_UNTIL))):
            if day is None:
                undated = int(n)
            else:
                counts[day] = int(n)
        return counts, undated

    def read_days(self, ranges: list[tuple[date, date]], chunk_rows: int = SQL_CHUNK_ROWS) -> Iterator[pd.DataFrame]:
        """The rows of the days in ``ranges`` (inclusive), in InvoiceDate order, ``chunk_rows`` at
        a time, canonical names, InvoiceDate naive UTC."""
        from psycopg import sql

        if not ranges:
            return
        where = sql.SQL(" OR ").join([self.dated] * len(ranges))
        params: list[Any] = []
        for first, last in ranges:
            params += [self._bound(first), self._bound(last + timedelta(days=1))]
        query = sql.SQL("SELECT {} FROM {} WHERE {} ORDER BY {}").format(self.select, self.table, where, self.ts)
        yield from self._chunks(query, params, chunk_rows, dated=True)

    def read_undated(self, chunk_rows: int = SQL_CHUNK_ROWS) -> Iterator[pd.DataFrame]:
        """The undated rows with their InvoiceDate as text, in a fixed order (every column), so
        that each keeps its key across runs; at least one (maybe empty) frame."""
        from psycopg import sql

        order = sql.SQL(", ").join(sql.SQL(str(i)) for i in range(1, len(CANONICAL_COLUMNS) + 1))
        query = sql.SQL("SELECT {} FROM {} WHERE {} IS NOT TRUE ORDER BY {}").format(self.select_undated, self.table, self.dated, order)
        params = [self._bound(DATED_FROM), self._bound(DATED_UNTIL)]
        yielded = False
        for frame in self._chunks(query, params, chunk_rows, dated=False):
            yielded = True
            yield frame
        if not yielded:
            yield self._frame([], dated=False)

    def _execute(self, query: Any, params: Any) -> list[tuple[Any, ...]]:
        with self._errors(), self.conn.cursor() as cur:
            self._log(query, params)
            cur.execute(query, params)
            return cur.fetchall()

    def _chunks(self, query: Any, params: Any, chunk_rows: int, dated: bool) -> Iterator[pd.DataFrame]:
        with self._errors(), self.conn.cursor(name="purchasing_power_extract") as cur:
            self._log(query, params)
            cur.itersize = chunk_rows
            cur.execute(query, params)
            while rows := cur.fetchmany(chunk_rows):
                yield self._frame(rows, dated)

    def _frame(self, rows: list[tuple[Any, ...]], dated: bool) -> pd.DataFrame:
        import pandas as pd

        names = list(CANONICAL_COLUMNS)
        frame = pd.DataFrame.from_records(rows, columns=names) if rows else pd.DataFrame({c: pd.Series(dtype=object) for c in names})
        if dated:
            ts = pd.to_datetime(frame["InvoiceDate"], utc=self.kind == "timestamptz")
            frame["InvoiceDate"] = ts.dt.tz_convert(None) if self.kind == "timestamptz" else ts
        return frame

    def _log(self, query: Any, params: Any) -> None:
        """The query as sent (placeholders, not values) and its parameters."""
        log.info("source %s: %s -- parameters %s", self.uri, query.as_string(self.conn), [str(p) for p in params])

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """What the server refuses (permissions, a type it cannot cast) is a :class:`SourceError`
        naming the table; a lost connection or a timeout propagates and is retried."""
        import psycopg

        try:
            yield
        except (psycopg.ProgrammingError, psycopg.DataError) as exc:
            raise SourceError(f"cannot read source {self.uri}: {type(exc).__name__}: {exc}") from exc


@contextmanager
def open_table(uri: str, origin_for: Callable[[list[str]], dict[str, str]]) -> Iterator[SqlTable]:
    """A :class:`SqlTable` over one read-only REPEATABLE READ transaction (session time zone
    UTC, ``numeric`` values as floats). ``origin_for(columns)`` says, for each canonical column,
    which of the table's columns it is read from (:func:`column_origin`: the column map's
    rules and errors)."""
    import psycopg
    from psycopg.types.numeric import FloatLoader

    from purchasing_power.warehouse import TableRef, connect

    try:
        ref = TableRef.parse(uri)
    except ValueError as exc:
        raise SourceError(str(exc)) from None
    try:
        conn = connect(ref)
    except InputError as exc:  # not a PostgreSQL connection
        raise SourceError(f"source {uri}: {exc}") from exc
    with conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        conn.adapters.register_loader("numeric", FloatLoader)
        conn.execute("SET TIME ZONE 'UTC'")
        rows = conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = %s AND table_name = %s "
            "ORDER BY ordinal_position",
            (ref.schema, ref.table),
        ).fetchall()
        if not rows:
            raise SourceError(
                f"source {uri}: table {ref.schema}.{ref.table} not found through connection {ref.conn_id!r} "
                "(names are case-sensitive; or the connection's user may not read it)"
            )
        columns = {name: kind for name, kind in rows}
        yield SqlTable(uri, conn, ref, columns, origin_for(list(columns)))
