"""Sources read through Airflow connections: a table on the machine's PostgreSQL (127.0.0.1:5432,
trust auth; .ci/run starts it when it is not running), and a file set on S3 (moto).

The table is unlike UCI's on purpose: other column names, text customer ids (``C-00123``),
``timestamptz`` sale times, ``numeric(10,2)`` prices, integer quantities and extra columns. Only
raw partitions and the raw manifest are checked here (the extract stage's contract)."""

from __future__ import annotations

import logging
import uuid
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

psycopg = pytest.importorskip("psycopg")
from psycopg import sql  # noqa: E402

from purchasing_power.errors import SourceError  # noqa: E402
from purchasing_power.settings import Settings  # noqa: E402
from purchasing_power.stages.extract import extract_day  # noqa: E402
from purchasing_power.storage import RAW_FILE, RAW_MANIFEST, Workspace  # noqa: E402

PG = "postgresql://postgres@127.0.0.1:5432/postgres"
MAP = {
    "order_ref": "InvoiceNo", "sku": "StockCode", "item_name": "Description", "units": "Quantity",
    "sold_at": "InvoiceDate", "price_eur": "UnitPrice", "client_ref": "CustomerID", "shop_country": "Country",
}
D = date(2031, 3, 4)

# order_ref, sku, item_name, units, sold_at, price_eur, client_ref, shop_country
ROWS = [
    ("S-1", "A1", "red mug", 2, "2031-03-01 09:00:00+00", "3.50", "C-00123", "FR"),
    ("S-2", "B7", "blue mug", 1, "2031-03-01 18:30:00+00", "4.25", "C-00124", "FR"),
    ("S-3", "A1", "red mug", 5, "2031-03-02 00:30:00+02", "3.50", "C-00123", "DE"),  # 03-01 22:30 UTC
    ("S-4", "C3", "teapot", 1, "2031-03-02 12:00:00+00", "19.99", "C-00125", "DE"),
    ("S-5", "A1", "red mug", 3, "2031-03-04 08:00:00+00", "3.50", "C-00126", "IT"),
    ("S-6", "B7", "blue mug", 2, "2031-03-04 09:00:00+00", "4.25", "C-00123", "FR"),
    ("S-7", "C3", "teapot", 1, "2031-03-04 10:00:00+00", "19.99", "C-00127", "FR"),
    ("S-8", "D9", "saucer", 4, "2031-03-04 23:59:59+00", "1.10", "C-00128", "FR"),
    ("S-9", "A1", "red mug", 1, "2031-03-05 07:00:00+00", "3.50", "C-00129", "FR"),  # after D
    ("S-10", "E5", "spoon", 6, "2031-03-06 07:00:00+00", "0.99", "C-00130", "FR"),  # after D
]


@pytest.fixture()
def pg():
    """A schema of its own on the local PostgreSQL, dropped afterwards."""
    name = f"pp_src_{uuid.uuid4().hex[:8]}"
    schema = sql.Identifier(name)
    try:
        admin = psycopg.connect(PG, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:  # pragma: no cover - a machine without the service
        pytest.fail(f"PostgreSQL on 127.0.0.1:5432 is required for this test: {exc}")
    with admin:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(schema))
        try:
            yield name
        finally:
            admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(schema))


def load(schema: str, rows: list[tuple], table: str = "sales", ts_type: str = "timestamptz", create: bool = True) -> None:
    t = sql.Identifier(schema, table)
    with psycopg.connect(PG, autocommit=True) as c:
        if create:
            c.execute(sql.SQL(
                "CREATE TABLE {} (id bigserial PRIMARY KEY, order_ref text, sku text, item_name text, units integer, "
                "sold_at {}, price_eur numeric(10,2), client_ref text, shop_country text, channel text DEFAULT 'web', "
                "loaded_at timestamptz DEFAULT now())"
            ).format(t, sql.SQL(ts_type)))
        with c.cursor() as cur:
            cur.executemany(sql.SQL(
                "INSERT INTO {} (order_ref, sku, item_name, units, sold_at, price_eur, client_ref, shop_country) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)").format(t), rows)


@pytest.fixture()
def settings_for(pg, tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_PP_SRC", "postgres://postgres@127.0.0.1:5432/postgres")

    def make(table: str = "sales", column_map: dict[str, str] | None = None) -> Settings:
        return Settings(storage=str(tmp_path / "data"), source=f"sql://pp_src/{pg}.{table}",
                        column_map=MAP if column_map is None else column_map).validated()

    return make


def raw(settings: Settings, day: date) -> pd.DataFrame:
    ws = Workspace.for_settings(settings).per_source
    return ws.read_parquet(ws.path("raw", day, RAW_FILE))


def raw_bytes(settings: Settings) -> dict[str, bytes]:
    base = Path(Workspace.for_settings(settings).per_source.path("raw"))
    return {p.parent.name: p.read_bytes() for p in sorted(base.glob("ds=*/raw.parquet"))}


def id_text(frame: pd.DataFrame) -> list[str]:
    """The customer ids as the source spells them: the raw text column keeps what is not a number."""
    col = frame["CustomerID_raw"] if frame["CustomerID_raw"].notna().all() else frame["CustomerID"]
    return col.astype(str).tolist()


def test_first_run_reads_history_up_to_the_day_and_maps_names_and_types(pg, settings_for):
    load(pg, ROWS)
    settings = settings_for()
    report = extract_day(settings, D)
    assert report["table_read"]["days"] == [["2031-03-01", "2031-03-04"]]  # nothing after D is read
    assert report["table_read"]["rows_read"] == 8
    assert {k: report[k] for k in ("rows_in_source", "rows_up_to_day", "rows_of_day", "rows_after_day", "first_day", "partitions_written")} == {
        "rows_in_source": 10, "rows_up_to_day": 8, "rows_of_day": 4, "rows_after_day": 2, "first_day": "2031-03-01",
        "partitions_written": 4,
    }
    ws = Workspace.for_settings(settings).per_source
    assert ws.list_days("raw", RAW_FILE) == [date(2031, 3, d) for d in (1, 2, 3, 4)]
    first = raw(settings, date(2031, 3, 1))
    # timestamptz -> naive UTC: 00:30 at +02 is 22:30 UTC the day before
    assert first["InvoiceNo"].tolist() == ["S-1", "S-2", "S-3"]
    assert first["InvoiceDate"].dt.strftime("%Y-%m-%d %H:%M").tolist() == ["2031-03-01 09:00", "2031-03-01 18:30", "2031-03-01 22:30"]
    assert str(first["InvoiceDate"].dtype) == "datetime64[ns]"
    assert id_text(first) == ["C-00123", "C-00124", "C-00123"]  # text ids kept as the table spells them
    assert first["UnitPrice"].tolist() == [3.5, 4.25, 3.5] and str(first["UnitPrice"].dtype) == "float64"  # numeric -> float
    assert first["Quantity"].tolist() == [2.0, 1.0, 5.0]
    assert list(first.columns[:8]) == ["InvoiceNo", "StockCode", "Description", "Country", "Quantity", "Quantity_raw", "UnitPrice", "UnitPrice_raw"]
    assert "channel" not in first.columns and "loaded_at" not in first.columns  # only mapped columns are read
    assert raw(settings, date(2031, 3, 3)).empty  # a day without sales: an empty partition
    assert raw(settings, D)["InvoiceNo"].tolist() == ["S-5", "S-6", "S-7", "S-8"]


def test_later_days_and_reruns_read_only_what_they_need(pg, settings_for, caplog):
    load(pg, ROWS)
    settings = settings_for()
    extract_day(settings, D)
    before = raw_bytes(settings)
    with caplog.at_level(logging.INFO, logger="purchasing_power.sources"):
        caplog.clear()  # only this extract's queries: the first day's records are already captured when Airflow logs at INFO
        nxt = extract_day(settings, date(2031, 3, 5))
    first = raw_bytes(settings)
    assert nxt["table_read"]["days"] == [["2031-03-05", "2031-03-05"]] and nxt["table_read"]["rows_read"] == 1
    # distinct messages: a log record can reach caplog twice once Airflow has configured logging
    queries = list(dict.fromkeys(r.getMessage() for r in caplog.records if "ORDER BY" in r.getMessage() and "IS NOT TRUE" not in r.getMessage()))
    assert len(queries) == 1  # the filter is in the SQL: placeholders, the day's bounds as parameters
    assert '("sold_at" >= %s AND "sold_at" < %s)' in queries[0] and "2031-03-05 00:00:00+00:00" in queries[0]
    assert "2031-03-05" not in queries[0].split("-- parameters")[0]

    again = extract_day(settings, date(2031, 3, 5))  # a rerun re-reads its day only
    assert again["table_read"]["days"] == [["2031-03-05", "2031-03-05"]] and again["partitions_written"] == 1
    assert raw_bytes(settings) == first  # the same bytes
    assert {k: v for k, v in first.items() if k != "ds=2031-03-05"} == before

    # a late row for an extracted history day changes its count: that day is read again
    load(pg, [("S-11", "A1", "red mug", 1, "2031-03-02 15:00:00+00", "3.50", "C-00131", "FR")], create=False)
    late = extract_day(settings, date(2031, 3, 5))
    assert late["table_read"]["days"] == [["2031-03-02", "2031-03-02"], ["2031-03-05", "2031-03-05"]]
    assert late["history_rewritten"] == ["2031-03-02"] and late["table_read"]["rows_read"] == 3
    assert raw(settings, date(2031, 3, 2))["InvoiceNo"].tolist() == ["S-4", "S-11"]
    assert raw_bytes(settings)["ds=2031-03-01"] == before["ds=2031-03-01"]

    # a correction of the run day is picked up by its rerun
    with psycopg.connect(PG, autocommit=True) as c:
        c.execute(sql.SQL("UPDATE {} SET units = 9 WHERE order_ref = 'S-9'").format(sql.Identifier(pg, "sales")))
    extract_day(settings, date(2031, 3, 5))
    assert raw(settings, date(2031, 3, 5))["Quantity"].tolist() == [9.0]


def test_rows_come_in_chunks_and_the_partitions_do_not_depend_on_the_chunk_size(pg, settings_for, tmp_path, monkeypatch):
    import purchasing_power.stages.extract as stage

    many = [(f"S-{i}", "A1", "red mug", 1 + i % 3, f"2031-03-0{1 + i % 4} {10 + i % 9}:00:00+00", "3.50", f"C-{i % 7:05d}", "FR")
            for i in range(40)]
    load(pg, many)
    big = extract_day(settings_for(), D)
    reference = raw_bytes(settings_for())
    assert big["table_read"]["chunks"] == 1

    monkeypatch.setattr(stage, "SQL_CHUNK_ROWS", 3)
    small_settings = Settings(storage=str(tmp_path / "small"), source=settings_for().source, column_map=MAP).validated()
    small = extract_day(small_settings, D)
    assert small["table_read"]["rows_read"] == 40 and small["table_read"]["chunks"] == 14
    assert small["table_read"]["largest_chunk"] == 3  # never more than a chunk in flight, besides one day
    assert raw_bytes(small_settings) == reference


def test_undated_rows_are_handed_to_one_day_once(pg, settings_for):
    load(pg, ROWS + [
        ("U-1", "A1", "red mug", 1, None, "3.50", "C-00140", "FR"),
        ("U-2", "A1", "red mug", 1, "infinity", "3.50", "C-00141", "FR"),
        ("U-3", "A1", "red mug", 1, "2400-01-01 00:00:00+00", "3.50", "C-00142", "FR"),  # beyond what timestamps hold
    ])
    settings = settings_for()
    report = extract_day(settings, D)
    assert report["rows_undated"] == 3 and report["rows_undated_of_day"] == 3
    part = raw(settings, D)
    undated = part[part["InvoiceDate"].isna()]
    assert undated["InvoiceNo"].tolist() == ["U-1", "U-2", "U-3"]
    assert undated["InvoiceDate_raw"].tolist() == [None, "infinity", "2400-01-01 00:00:00+00"]
    later = extract_day(settings, date(2031, 3, 5))
    assert later["rows_undated_of_day"] == 0 and raw(settings, date(2031, 3, 5))["InvoiceDate"].notna().all()
    rerun = extract_day(settings, D)
    assert rerun["rows_undated_of_day"] == 3 and rerun["history_rewritten"] == []
    ws = Workspace.for_settings(settings).per_source
    assert set(ws.read_json(ws.path("staged", None, RAW_MANIFEST))["undated"].values()) == {D.isoformat()}


def test_names_from_params_are_never_sql(pg, settings_for):
    load(pg, ROWS)
    evil = "units\"; DROP TABLE sales; --"
    with pytest.raises(SourceError, match=r"column_map names columns .*DROP TABLE"):
        extract_day(settings_for(column_map={**{k: v for k, v in MAP.items() if k != "units"}, evil: "Quantity"}), D)
    with pytest.raises(SourceError, match="not a table URI"):
        extract_day(settings_for(table="sales; DROP TABLE sales"), D)
    with pytest.raises(ValueError, match="not canonical columns"):
        settings_for(column_map={**MAP, "units": "Quantity; DROP TABLE sales"})
    with psycopg.connect(PG, autocommit=True) as c:  # the table is still there, untouched
        assert c.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(pg, "sales"))).fetchone() == (10,)
        # a column whose real name looks like SQL is read as a quoted identifier
        c.execute(sql.SQL("ALTER TABLE {} RENAME COLUMN units TO {}").format(sql.Identifier(pg, "sales"), sql.Identifier(evil)))
    report = extract_day(settings_for(column_map={**{k: v for k, v in MAP.items() if k != "units"}, evil: "Quantity"}), D)
    assert report["table_read"]["rows_read"] == 8
    with psycopg.connect(PG) as c:
        assert c.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(pg, "sales"))).fetchone() == (10,)


def test_unusable_tables_fail_with_an_input_error_naming_them(pg, settings_for, monkeypatch):
    load(pg, ROWS, table="text_dates", ts_type="text")
    with pytest.raises(SourceError, match=r"column 'sold_at' \(InvoiceDate\) is text; a table source needs a timestamptz"):
        extract_day(settings_for(table="text_dates"), D)
    with pytest.raises(SourceError, match=rf"table {pg}\.missing not found through connection 'pp_src'"):
        extract_day(settings_for(table="missing"), D)
    load(pg, ROWS)
    with pytest.raises(SourceError, match=r"missing canonical column\(s\) \['Country'\]"):
        extract_day(settings_for(column_map={k: v for k, v in MAP.items() if k != "shop_country"}), D)
    with pytest.raises(SourceError, match="no dated rows on or before 2031-02-01"):
        extract_day(settings_for(), date(2031, 2, 1))
    monkeypatch.setenv("AIRFLOW_CONN_PP_SRC", "mysql://root@127.0.0.1:3306/db")
    with pytest.raises(SourceError, match="only PostgreSQL connections"):
        extract_day(settings_for(), D)
    monkeypatch.setenv("AIRFLOW_CONN_PP_SRC", '{"conn_type": "mysql", "host": "127.0.0.1", "login": "root"}')
    with pytest.raises(SourceError, match="'mysql'; only PostgreSQL connections"):  # the JSON form too
        extract_day(settings_for(), D)


def test_a_timestamp_or_date_column_filters_days_too(pg, settings_for):
    load(pg, [r[:4] + (r[4][:19],) + r[5:] for r in ROWS], table="naive", ts_type="timestamp")
    settings = settings_for(table="naive")
    report = extract_day(settings, D)
    assert report["table_read"]["rows_read"] == 8
    assert raw(settings, date(2031, 3, 2))["InvoiceNo"].tolist() == ["S-3", "S-4"]  # no time zone: taken as UTC
    load(pg, ROWS, table="dates", ts_type="date")
    dates = settings_for(table="dates")
    assert extract_day(dates, D)["rows_of_day"] == 4


def test_read_all_reads_the_whole_table(pg, settings_for):
    from purchasing_power.sources import read_all

    load(pg, ROWS + [("U-1", "A1", "red mug", 1, None, "3.50", "C-00140", "FR")])
    frame = read_all(settings_for().source, MAP)
    assert len(frame) == 11 and sorted(frame["InvoiceNo"])[:2] == ["S-1", "S-10"]


def test_a_texts_table_is_read_through_a_connection_cleaned_and_kept_point_in_time(pg, settings_for):
    """User-written texts from a table of their own (other names, text ids, timestamptz, an extra
    column): the extract and clean stages write them per text day with the transactions; an
    empty text is quarantined with its reason; a text after D is not in D's clean partitions."""
    from purchasing_power.stages.clean import clean_day
    from purchasing_power.storage import TEXTS_CLEAN_FILE, TEXTS_QUARANTINE_FILE

    load(pg, ROWS)
    t = sql.Identifier(pg, "reviews")
    with psycopg.connect(PG, autocommit=True) as c:
        c.execute(sql.SQL("CREATE TABLE {} (review_id serial, client_ref text, written_at timestamptz, body text, stars int)").format(t))
        c.cursor().executemany(sql.SQL("INSERT INTO {} (client_ref, written_at, body, stars) VALUES (%s, %s, %s, %s)").format(t), [
            ("C-00123", "2031-03-02 10:00:00+00", "Lovely  mug,\tI'll  order the teapot next", 5),
            ("C-00124", "2031-03-04 23:30:00-02", "Rückgabe leider nötig", 2),  # 03-05 01:30 UTC: after D
            ("C-00125", "2031-03-04 08:00:00+00", "   ", 3),  # empty once normalised
            ("C-00126", "2031-03-04 09:00:00+00", "Great saucer", 4),
        ])
    settings = settings_for().with_conf({"texts": f"sql://pp_src/{pg}.reviews",
                                         "texts_column_map": {"client_ref": "CustomerID", "written_at": "TextDate", "body": "Text"}})
    ext = extract_day(settings, D)
    assert ext["texts"]["rows_in_source"] == 4
    report = clean_day(settings, D)["texts"]
    assert report["run_day"]["quarantine_reasons"] == {"empty_text": 1}
    ws = Workspace.for_settings(settings)
    texts = pd.concat([ws.per_source.read_parquet(ws.per_source.path("texts_clean", d, TEXTS_CLEAN_FILE))
                       for d in ws.per_source.list_days("texts_clean", TEXTS_CLEAN_FILE)])
    assert sorted(texts["customer_id"]) == ["C-00123", "C-00126"]  # text ids as spelled; nothing after D
    assert "Lovely mug, I'll order the teapot next" in set(texts["text"])
    q = ws.root.read_parquet(ws.root.path("quarantine", D, TEXTS_QUARANTINE_FILE))
    assert list(q["reason"]) == ["empty_text"]
    nxt = extract_day(settings, date(2031, 3, 5))
    assert nxt["texts"]["partitions_written"] >= 1
    clean_day(settings, date(2031, 3, 5))
    later = ws.per_source.read_parquet(ws.per_source.path("texts_clean", date(2031, 3, 5), TEXTS_CLEAN_FILE))
    assert list(later["customer_id"]) == ["C-00124"] and later["text"].iat[0] == "Rückgabe leider nötig"
