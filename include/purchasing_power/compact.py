"""The compact form of the clean history the features stage loads: only the columns features read,
with invoice number, stock code and country as integer codes that order as their texts do (a
fraction of the memory of text columns), and the texts of the codes in ``attrs[CODE_VALUES]``
(what features keyed by text -- products, countries -- need across customer shards, whose codes
differ)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import pandas as pd

# the text columns build_features groups by, held as codes (see compact_history)
CODED = ("invoice_no", "stock_code", "country")
CODE_VALUES = "code_values"  # compact_history's attrs key: {coded column: its texts in code order}


class CodeValues(dict):
    """``attrs[CODE_VALUES]``: pandas deep-copies a frame's ``attrs`` into the result of every
    operation; these arrays are never changed once made, so every copy shares them (a deep copy
    of millions of texts per groupby would cost more than the features)."""

    def __deepcopy__(self, memo: dict) -> CodeValues:
        return self


FEATURE_COLUMNS = ("customer_id", "invoice_ts", "line_value", "quantity", "unit_price", "is_cancellation", *CODED)


def sorted_codes(values: pd.Series, *, empty_missing: bool = False) -> np.ndarray:
    """Codes of a text (object or categorical) column that order as the texts do (lexicographic,
    whatever the categories' order): int32, or float64 with NaN for missing values (and for ""
    with ``empty_missing``), so that groupbys on codes group, order and drop as on the texts."""
    import numpy as np

    codes, _ = codes_and_values(values, empty_missing=empty_missing)
    return _as_code_column(codes)


def _as_code_column(codes: np.ndarray) -> np.ndarray:
    import numpy as np

    if (codes < 0).any():
        out = codes.astype(np.float64)
        out[codes < 0] = np.nan
        return out
    return codes.astype(np.int32)


def codes_and_values(values: pd.Series, *, empty_missing: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(codes (int64, -1 = missing), the values in sorted order): ``values[i] == sorted[codes[i]]``."""
    import numpy as np
    import pandas as pd

    if isinstance(values.dtype, pd.CategoricalDtype):
        cats = values.cat.categories
        order = cats.argsort()
        rank = np.empty(len(cats) + 1, dtype=np.int64)
        rank[order] = np.arange(len(cats))
        rank[-1] = -1  # code -1 (missing) stays -1
        uniques = np.asarray(cats, dtype=object)[order]
        codes = rank[values.cat.codes.to_numpy()]
    else:
        codes, uniques = pd.factorize(values, sort=True)
        uniques = np.asarray(uniques, dtype=object)
    if empty_missing and len(uniques):
        empty = np.append(pd.Index(uniques).astype(str) == "", False)
        codes = np.where(empty[codes], -1, codes)  # codes -1 read the appended False
    return codes, uniques


def compact_history(tx: pd.DataFrame, *, description: bool = True) -> pd.DataFrame:
    """The columns build_features reads (``description`` too, as a categorical, with
    ``description``), with invoice number, stock code and country as :func:`sorted_codes` ("" a
    missing country): what the features stage loads, a fraction of the memory of text columns.
    ``attrs[CODE_VALUES]`` holds each coded column's texts in code order. A frame already in
    this form is returned as is (no copy)."""
    import pandas as pd

    cols = [*FEATURE_COLUMNS, *(("description",) if description else ())]
    if (set(cols) <= set(tx.columns) and CODE_VALUES in tx.attrs
            and (not description or isinstance(tx["description"].dtype, pd.CategoricalDtype))):
        return tx
    if CODE_VALUES in tx.attrs:
        raise ValueError("a compact history lacks a column features read: " + ", ".join(sorted(set(cols) - set(tx.columns))))
    out, values = {}, CodeValues()
    for c in cols:
        if c in CODED:
            codes, values[c] = codes_and_values(tx[c], empty_missing=c == "country")
            out[c] = _as_code_column(codes)
        elif c == "description":
            out[c] = tx[c].astype("category").array
        else:
            out[c] = tx[c].array
    frame = pd.DataFrame(out, index=pd.RangeIndex(len(tx)), copy=False)  # the columns are not copied again
    frame.attrs[CODE_VALUES] = values
    return frame


def take_rows(tx: pd.DataFrame, rows: np.ndarray) -> pd.DataFrame:
    """Rows (positions) of a :func:`compact_history` frame, still compact (its code values kept)."""
    out = tx.take(rows)
    out.attrs[CODE_VALUES] = tx.attrs[CODE_VALUES]
    return out


def sale_lines(tx: pd.DataFrame) -> np.ndarray:
    """Which lines are valid sales (not a cancellation, quantity > 0): a customer with one before
    the end of the as-of day has a row in that day's features."""
    return (~tx["is_cancellation"] & (tx["quantity"] > 0)).to_numpy()
