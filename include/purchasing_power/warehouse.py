"""Database tables through Airflow connections: ``sql://<conn_id>/<schema>.<table>`` URIs.

The connection comes from the environment (``AIRFLOW_CONN_<CONN_ID>``, a URI or Airflow's JSON
form) or from Airflow's connection store (the metadata DB, a secrets backend). PostgreSQL is
spoken through psycopg. Every identifier is quoted by psycopg (``sql.Identifier``) and every
value is a query parameter: no SQL is built from strings a trigger can set.

:func:`write_results` publishes a day's predictions to a table: created when missing (typed
columns, primary key ``(as_of, customer_id)``), the day's rows replaced in one transaction, so a
rerun of the day leaves exactly one row per customer.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from purchasing_power.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

_URI = re.compile(r"^sql://(?P<conn>[A-Za-z0-9_.\-]+)/(?:(?P<schema>[A-Za-z_][A-Za-z0-9_$]*)\.)?(?P<table>[A-Za-z_][A-Za-z0-9_$]*)$")


_POSTGRES = {"postgres", "postgresql"}


@dataclass(frozen=True)
class TableRef:
    """A table named by ``sql://<conn_id>/<schema>.<table>`` (schema optional: ``public``)."""

    conn_id: str
    schema: str
    table: str

    @classmethod
    def parse(cls, uri: str) -> TableRef:
        m = _URI.match(uri.strip())
        if not m:
            raise ValueError(f"not a table URI: {uri!r}; expected sql://<conn_id>/<schema>.<table>")
        return cls(conn_id=m["conn"], schema=m["schema"] or "public", table=m["table"])

    def __str__(self) -> str:
        return f"sql://{self.conn_id}/{self.schema}.{self.table}"


def connection_uri(conn_id: str) -> str:
    """A libpq URI for Airflow connection ``conn_id``: ``AIRFLOW_CONN_<ID>`` (URI or JSON) when set,
    else Airflow's connection store. A connection of another type than PostgreSQL is an
    :class:`InputError` (retrying cannot help); a store that cannot answer raises ``ValueError``."""
    raw = os.environ.get(f"AIRFLOW_CONN_{conn_id.upper()}")
    if raw is None:
        from airflow.sdk import Connection

        try:
            conn = Connection.get(conn_id)
        except Exception as exc:  # noqa: BLE001 - say which connection, whatever the store raised
            raise ValueError(f"Airflow connection {conn_id!r} not found: {exc}") from exc
        raw = conn.get_uri()
    if raw.lstrip().startswith("{"):
        d = json.loads(raw)
        if str(d.get("conn_type") or "postgres") not in _POSTGRES:
            raise InputError(f"connection {conn_id!r} is {d['conn_type']!r}; only PostgreSQL connections are supported")
        user = quote(str(d.get("login") or ""), safe="")
        pwd = quote(str(d.get("password") or ""), safe="")
        auth = f"{user}:{pwd}@" if pwd else (f"{user}@" if user else "")
        port = f":{d['port']}" if d.get("port") else ""
        return f"postgresql://{auth}{d.get('host') or ''}{port}/{d.get('schema') or ''}"
    parts = urlsplit(raw)
    if parts.scheme not in _POSTGRES:
        raise InputError(f"connection {conn_id!r} is {parts.scheme!r}; only PostgreSQL connections are supported")
    return "postgresql://" + raw.split("://", 1)[1].split("?", 1)[0] + (f"?{parts.query}" if parts.query else "")


def connect(ref: TableRef) -> Any:
    """A psycopg connection for the table's Airflow connection."""
    import psycopg

    return psycopg.connect(connection_uri(ref.conn_id))


def _id_type(frame: pd.DataFrame) -> str:
    import pandas as pd

    return "bigint" if pd.api.types.is_integer_dtype(frame["customer_id"]) else "text"


def write_results(uri: str, frame: pd.DataFrame, day: date) -> dict[str, Any]:
    """Replace ``day``'s rows of the results table with ``frame`` (the output contract's columns)
    in one transaction; create the table when it is missing. Returns what was written."""
    from psycopg import sql

    ref = TableRef.parse(uri)
    if len(frame) and set(frame["as_of"].unique()) != {day}:
        raise ValueError(f"predictions to write are not all as of {day}")
    table = sql.Identifier(ref.schema, ref.table)
    create = sql.SQL(
        "CREATE TABLE IF NOT EXISTS {} (customer_id {} NOT NULL, as_of date NOT NULL, p_purchase_30d double precision NOT NULL, "
        "expected_spend_90d double precision NOT NULL, tier text NOT NULL, model_version text NOT NULL, "
        "PRIMARY KEY (as_of, customer_id))"
    ).format(table, sql.SQL(_id_type(frame)))
    columns = ["customer_id", "as_of", "p_purchase_30d", "expected_spend_90d", "tier", "model_version"]
    copy = sql.SQL("COPY {} ({}) FROM STDIN").format(table, sql.SQL(", ").join(map(sql.Identifier, columns)))
    rows = frame[columns].itertuples(index=False, name=None)
    with connect(ref) as conn:  # one transaction: committed on success, rolled back on error
        with conn.cursor() as cur:
            cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(ref.schema)))
            cur.execute(create)
            cur.execute(sql.SQL("DELETE FROM {} WHERE as_of = %s").format(table), (day,))
            replaced = cur.rowcount
            with cur.copy(copy) as cp:
                for row in rows:
                    cp.write_row((row[0].item() if hasattr(row[0], "item") else row[0], *row[1:]))
    return {"table": str(ref), "day": day.isoformat(), "rows": int(len(frame)), "replaced_rows": int(replaced)}


def read_results(uri: str, day: date | None = None) -> pd.DataFrame:
    """The results table (``day``'s rows only when given), for checks and exports."""
    import pandas as pd
    from psycopg import sql

    ref = TableRef.parse(uri)
    query = sql.SQL("SELECT * FROM {}").format(sql.Identifier(ref.schema, ref.table))
    params: tuple[Any, ...] = ()
    if day is not None:
        query = sql.SQL("{} WHERE as_of = %s ORDER BY customer_id").format(query)
        params = (day,)
    with connect(ref) as conn, conn.cursor() as cur:
        cur.execute(query, params)
        names = [d.name for d in cur.description]
        return pd.DataFrame(cur.fetchall(), columns=names)
