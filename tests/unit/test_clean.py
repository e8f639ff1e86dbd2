"""Clean: every raw row lands in clean or quarantine with the right reason; text normalisation;
cancellations stay as negative lines."""

from __future__ import annotations

import pandas as pd
import pytest

from purchasing_power.clean import clean_frame, normalise_text, normalise_texts
from purchasing_power.schemas import CANONICAL_COLUMNS, CLEAN_COLUMNS
from purchasing_power.schemas import QUARANTINE_REASONS as REASONS

GOOD = ("540001", "22423", "REGENCY CAKESTAND 3 TIER", 2, "2011-08-31 12:00:00", 12.75, 14911.0, "EIRE")


def _row(**changes) -> dict:
    row = dict(zip(CANONICAL_COLUMNS, GOOD))
    row.update(changes)
    return row


def _source(rows: list[dict]) -> pd.DataFrame:
    """A source-like frame with every column as text (what a CSV source gives extract)."""
    return pd.DataFrame(rows, columns=list(CANONICAL_COLUMNS)).astype(object)


# -- the tiny fixture --------------------------------------------------------------------------


def test_tiny_raw_reasons_and_counts_reconcile(tiny_raw, tiny_expected_reasons, as_raw_partition):
    raw = as_raw_partition(tiny_raw)
    clean, quarantine = clean_frame(raw)
    assert len(raw) == len(clean) + len(quarantine) == 8
    assert len(clean) == 4
    expected_q = [r for r in tiny_expected_reasons if r is not None]
    assert sorted(quarantine["reason"]) == sorted(expected_q)
    # quarantined rows keep their raw values, plus reason/detail in front
    assert list(quarantine.columns[:2]) == ["reason", "detail"]
    by_reason = quarantine.set_index("reason")
    assert by_reason.loc["missing_customer", "InvoiceNo"] == "536380"
    assert by_reason.loc["non_positive_price", "detail"] == "UnitPrice=0.0"
    assert by_reason.loc["unparseable_date", "detail"] == "InvoiceDate=not a date"
    assert by_reason.loc["unparseable_date", "InvoiceDate_raw"] == "not a date"
    assert by_reason.loc["duplicate_line", "detail"] == "exact duplicate of an earlier line on invoice 536383"
    assert by_reason.loc["missing_customer", "detail"] == "CustomerID is empty (guest checkout)"


def test_tiny_raw_clean_rows(tiny_raw, as_raw_partition):
    clean, _ = clean_frame(as_raw_partition(tiny_raw))
    assert list(clean.columns) == list(CLEAN_COLUMNS)
    assert clean["invoice_no"].tolist() == ["536365", "536365", "C536379", "536383"]
    assert clean["stock_code"].tolist() == ["71053", "85123A", "71053", "84029G"]  # sorted by ts, invoice, stock
    assert clean["description"].tolist() == [
        "WHITE METAL LANTERN",
        "WHITE HANGING HEART T-LIGHT HOLDER",
        "WHITE METAL LANTERN",
        "KNITTED UNION FLAG HOT WATER BOTTLE",
    ]
    assert clean["customer_id"].tolist() == [17850, 17850, 17850, 13047]
    assert clean["quantity"].tolist() == [6, 6, -2, 3]
    assert clean["line_value"].round(2).tolist() == [20.34, 15.3, -6.78, 10.17]
    assert {c: str(t) for c, t in clean.dtypes.items()} == {
        "invoice_no": "object",
        "stock_code": "object",
        "description": "object",
        "quantity": "int64",
        "invoice_ts": "datetime64[ns]",
        "unit_price": "float64",
        "customer_id": "int64",
        "country": "object",
        "is_cancellation": "bool",
        "line_value": "float64",
    }


def test_cancellation_is_kept_as_a_negative_line(as_raw_partition):
    raw = as_raw_partition(_source([_row(InvoiceNo=" c540002 ", Quantity="-3", UnitPrice="2.5")]))
    clean, quarantine = clean_frame(raw)
    assert quarantine.empty
    row = clean.iloc[0]
    assert row["invoice_no"] == "C540002"
    assert bool(row["is_cancellation"]) is True
    assert row["quantity"] == -3
    assert row["line_value"] == pytest.approx(-7.5)


@pytest.mark.parametrize("invoice", ["540002", "RET-77", "R540002", "c540002"])
def test_a_negative_quantity_is_a_return_whatever_the_invoice_number_looks_like(invoice, as_raw_partition):
    """The "C" prefix is one convention: a negative quantity on any invoice is a return, kept as a
    negative line (not quarantined)."""
    raw = as_raw_partition(_source([_row(), _row(InvoiceNo=invoice, Quantity="-2", UnitPrice="12.75")]))
    clean, quarantine = clean_frame(raw)
    assert quarantine.empty, quarantine[["reason", "detail"]]
    ret = clean[clean["quantity"] < 0].iloc[0]
    assert ret["invoice_no"] == invoice.upper()
    assert bool(ret["is_cancellation"]) is True
    assert ret["line_value"] == pytest.approx(-25.5)
    assert clean.loc[clean["quantity"] > 0, "is_cancellation"].tolist() == [False]


def test_a_c_invoice_with_a_positive_quantity_is_still_quarantined(as_raw_partition):
    clean, quarantine = clean_frame(as_raw_partition(_source([_row(), _row(InvoiceNo="C540002")])))
    assert clean["invoice_no"].tolist() == ["540001"]
    assert quarantine["reason"].tolist() == ["cancellation_with_positive_quantity"]


def test_non_sale_codes_are_an_argument_with_uci_codes_by_default(as_raw_partition):
    from purchasing_power.schemas import UCI_NON_SALE_CODES

    codes = ["POST", "M", "BANK CHARGES", "22423"]
    raw = as_raw_partition(_source([_row(InvoiceNo=str(540001 + i), StockCode=c) for i, c in enumerate(codes)]))
    _, default = clean_frame(raw)
    assert default["StockCode"].tolist() == ["BANK CHARGES"]
    assert tuple(sorted(UCI_NON_SALE_CODES)) == ("ADJUST", "ADJUST2", "AMAZONFEE", "B", "BANK CHARGES", "CRUK")
    clean, own = clean_frame(raw, non_sale_codes=(" post", "m"))  # matched as StockCode is: trimmed, upper case
    assert own["StockCode"].tolist() == ["POST", "M"]
    assert own["detail"].tolist() == ["StockCode=POST", "StockCode=M"]
    assert clean["stock_code"].tolist() == ["BANK CHARGES", "22423"]
    clean, none = clean_frame(raw, non_sale_codes=())
    assert none.empty and len(clean) == 4


def test_non_sale_codes_setting_from_env_code_and_source_id():
    from purchasing_power.schemas import UCI_NON_SALE_CODES
    from purchasing_power.settings import Settings

    default = Settings.from_env({"PURCHASING_POWER_STORAGE": "/s"})
    assert default.non_sale_codes == UCI_NON_SALE_CODES
    env = Settings.from_env({"PURCHASING_POWER_STORAGE": "/s", "PURCHASING_POWER_NON_SALE_CODES": " post, m ,,POST,Bank Charges"})
    assert env.non_sale_codes == ("POST", "M", "BANK CHARGES")
    assert default.with_overrides(non_sale_codes="POST,M").non_sale_codes == ("POST", "M")
    assert default.with_overrides(non_sale_codes=["dot"]).non_sale_codes == ("DOT",)
    # other codes clean the source differently: its derived data lives elsewhere; the default keeps the id
    assert env.source_id != default.source_id
    assert Settings(storage="/s", non_sale_codes=tuple(reversed(UCI_NON_SALE_CODES))).source_id == default.source_id
    with pytest.raises(ValueError, match="non_sale_codes"):
        Settings(storage="/s", non_sale_codes=("POST", 3)).validated()
    with pytest.raises(Exception, match="not allowed"):
        default.with_conf({"non_sale_codes": "POST"})  # not a Param: a trigger cannot change what counts as spend


# -- one row per reason ------------------------------------------------------------------------

REASON_ROWS = {
    "unparseable_date": (_row(InvoiceDate="31/31/2011 25:00"), "InvoiceDate=31/31/2011 25:00"),
    "missing_invoice": (_row(InvoiceNo="   "), "InvoiceNo is empty"),
    "missing_customer": (_row(CustomerID=None), "CustomerID is empty (guest checkout)"),
    "invalid_customer": (_row(CustomerID="12.5"), "CustomerID=12.5"),  # ids are numbers here: 12.5 is none
    "invalid_quantity": (_row(Quantity="1.5"), "Quantity=1.5"),
    "zero_quantity": (_row(Quantity="0"), "Quantity=0"),
    "invalid_price": (_row(UnitPrice="n/a"), "UnitPrice=n/a"),
    "non_positive_price": (_row(UnitPrice="-1.0"), "UnitPrice=-1.0"),
    "cancellation_with_positive_quantity": (_row(InvoiceNo="C540001"), "Quantity=2.0 on invoice C540001"),
    "non_sale_adjustment": (_row(StockCode="bank charges"), "StockCode=BANK CHARGES"),
    "non_finite_number": (_row(UnitPrice="inf"), "UnitPrice=inf"),
    "customer_out_of_range": (_row(CustomerID="9223372036854775808"), "CustomerID=9223372036854775808"),
    "quantity_out_of_range": (_row(Quantity="1e18"), "Quantity=1e18"),
    "price_out_of_range": (_row(UnitPrice="1e300"), "UnitPrice=1e300"),
    "missing_stock_code": (_row(StockCode="  "), "StockCode is empty"),
}


def test_every_reason_has_a_case():
    assert set(REASON_ROWS) | {"duplicate_line"} == set(REASONS)


@pytest.mark.parametrize("reason", sorted(REASON_ROWS))
def test_each_bad_row_gets_its_reason(reason, as_raw_partition):
    bad, detail = REASON_ROWS[reason]
    raw = as_raw_partition(_source([_row(), bad]))
    clean, quarantine = clean_frame(raw)
    assert len(clean) == 1 and clean["invoice_no"].iloc[0] == "540001"
    assert quarantine["reason"].tolist() == [reason]
    assert quarantine["detail"].tolist() == [detail]


def test_duplicate_keeps_the_first_and_quarantines_the_rest(as_raw_partition):
    raw = as_raw_partition(_source([_row(), _row(), _row(Quantity="3"), _row()]))
    clean, quarantine = clean_frame(raw)
    assert clean["quantity"].tolist() == [2, 3]
    assert quarantine["reason"].tolist() == ["duplicate_line", "duplicate_line"]


def test_first_applicable_reason_wins(as_raw_partition):
    # missing customer AND zero price AND zero quantity: the earliest check is recorded
    raw = as_raw_partition(_source([_row(CustomerID=None, UnitPrice="0", Quantity="0")]))
    _, quarantine = clean_frame(raw)
    assert quarantine["reason"].tolist() == ["missing_customer"]


def test_counts_reconcile_on_a_mixed_frame(as_raw_partition):
    rows = [_row()] + [bad for bad, _ in REASON_ROWS.values()] + [_row(), _row(InvoiceNo="540003")]
    raw = as_raw_partition(_source(rows))
    clean, quarantine = clean_frame(raw)
    assert len(raw) == 3 + len(REASON_ROWS) == 18
    assert (len(clean), len(quarantine)) == (2, len(REASON_ROWS) + 1)
    assert quarantine["reason"].value_counts().to_dict() == {r: 1 for r in REASONS}


# -- numbers a float column cannot carry ---------------------------------------------------------

NUMERIC = ("Quantity", "UnitPrice", "CustomerID")


@pytest.mark.parametrize("column", NUMERIC)
@pytest.mark.parametrize("text", ["inf", "-inf", "Infinity", "1e400", "-1e400", "nan", "NaN"])
def test_non_finite_numbers_are_quarantined_with_their_text(column, text, as_raw_partition):
    raw = as_raw_partition(_source([_row(), _row(InvoiceNo="540002", **{column: text})]))
    clean, quarantine = clean_frame(raw)  # no IntCastingNaNError, nothing non-finite in clean
    assert clean["invoice_no"].tolist() == ["540001"]
    assert quarantine["reason"].tolist() == ["non_finite_number"]
    assert quarantine["detail"].tolist() == [f"{column}={text}"]
    assert quarantine[f"{column}_raw"].tolist() == [text]


@pytest.mark.parametrize("column", NUMERIC)
def test_non_finite_floats_of_a_typed_source_are_quarantined(column, as_raw_partition):
    rows = [_row(), _row(InvoiceNo="540002"), _row(InvoiceNo="540003")]
    frame = _source(rows).astype({c: "float64" for c in NUMERIC})
    frame.loc[1, column] = float("inf")
    frame.loc[2, column] = float("-inf")
    clean, quarantine = clean_frame(as_raw_partition(frame))
    assert clean["invoice_no"].tolist() == ["540001"]
    assert quarantine["reason"].tolist() == ["non_finite_number"] * 2
    assert quarantine[f"{column}_raw"].tolist() == ["inf", "-inf"]


@pytest.mark.parametrize(
    "text",
    [
        "9223372036854775807",  # int64 max: a float64 cannot hold it exactly
        "9223372036854775808",  # 2**63
        "18446744073709551616",  # 2**64
        "99999999999999999999999",
        "1e19",
        "9007199254740993",  # 2**53 + 1: read as a float it would become 2**53, another customer
    ],
)
def test_customer_ids_a_float_cannot_hold_exactly_are_quarantined(text, as_raw_partition):
    raw = as_raw_partition(_source([_row(), _row(InvoiceNo="540002", CustomerID=text)]))
    clean, quarantine = clean_frame(raw)
    assert clean["customer_id"].tolist() == [14911]
    assert quarantine["reason"].tolist() == ["customer_out_of_range"]
    assert quarantine["detail"].tolist() == [f"CustomerID={text}"]
    assert quarantine["CustomerID_raw"].tolist() == [text]


def test_the_largest_exact_customer_id_is_kept(as_raw_partition):
    clean, quarantine = clean_frame(as_raw_partition(_source([_row(CustomerID="9007199254740991")])))
    assert quarantine.empty and clean["customer_id"].tolist() == [2**53 - 1]


@pytest.mark.parametrize(("column", "text", "reason"), [
    ("Quantity", "1e30", "quantity_out_of_range"),
    ("Quantity", "-9223372036854775809", "quantity_out_of_range"),
    ("UnitPrice", "1.7e308", "price_out_of_range"),
])
def test_out_of_range_quantities_and_prices_are_quarantined(column, text, reason, as_raw_partition):
    row = _row(InvoiceNo="C540002", **{column: text}) if text.startswith("-") else _row(InvoiceNo="540002", **{column: text})
    clean, quarantine = clean_frame(as_raw_partition(_source([_row(), row])))
    assert clean["invoice_no"].tolist() == ["540001"]
    assert quarantine["reason"].tolist() == [reason]
    assert quarantine[f"{column}_raw"].tolist() == [text]


@pytest.mark.parametrize("stock", [None, "", "   "])
def test_a_missing_stock_code_is_quarantined_not_stored_as_na_text(stock, as_raw_partition):
    clean, quarantine = clean_frame(as_raw_partition(_source([_row(), _row(InvoiceNo="540002", StockCode=stock)])))
    assert clean["stock_code"].tolist() == ["22423"]
    assert quarantine["reason"].tolist() == ["missing_stock_code"]
    assert quarantine["detail"].tolist() == ["StockCode is empty"]


def test_clean_frame_of_an_empty_partition(as_raw_partition, tiny_raw):
    clean, quarantine = clean_frame(as_raw_partition(tiny_raw.iloc[0:0]))
    assert clean.empty and quarantine.empty
    assert list(clean.columns) == list(CLEAN_COLUMNS)


# -- text normalisation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("  white   metal\tlantern \n", "WHITE METAL LANTERN"),
        ("Café crème", "CAFÉ CRÈME"),
        ("Cafe\u0301", "CAFÉ"),  # combining accent composed by NFKC
        ("\ufb01ne \uff21\uff22\uff23", "FINE ABC"),  # ligature and full-width letters folded
        ("a\u00a0b", "A B"),  # no-break space is whitespace
        ("tab\x00null\x07bell", "TAB NULL BELL"),  # control characters become spaces
        ("stra\u00dfe", "STRASSE"),
        ("日本語", "日本語"),
        (None, ""),
        (float("nan"), ""),
        (12, "12"),
    ],
)
def test_normalise_text(value, expected):
    assert normalise_text(value) == expected


def test_normalise_texts_maps_a_column_and_fills_missing():
    s = pd.Series([" a  b", None, " a  b", "c"], index=[10, 11, 12, 13])
    out = normalise_texts(s)
    assert out.tolist() == ["A B", "", "A B", "C"]
    assert out.index.tolist() == [10, 11, 12, 13]
