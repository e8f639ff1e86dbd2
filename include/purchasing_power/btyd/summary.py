"""Per-customer RFM summary ``(x, t_x, T, monetary value)`` from transaction lines.

Time unit
---------
Everything is in DAYS. :func:`rfm_summary` builds the per-customer ``(x, t_x, T)`` summary with the
following convention (consistent with how ``lifetimes`` counts, shifted by one day at the end):

* every transaction timestamp is floored to its calendar day; the customer's net value per day is
  summed, and a *purchase* is a day whose net value is > 0 (a cancellation that nets a day to
  zero or below removes that day; a negative day on its own is ignored);
* a purchase on day ``d`` happens at time ``d`` (the start of the day); the observation window
  ends at the END of ``as_of``, i.e. at ``as_of + 1 day`` (rows with ``ts >= as_of + 1 day`` are
  dropped);
* ``frequency`` = purchase days - 1 (repeat purchases), ``recency`` = (last day - first day) in
  days, ``T`` = (as_of + 1 day - first day) in days = ``(as_of - first_day).days + 1``.

Hence ``0 <= recency <= T - 1 < T`` always, and a customer whose only purchase was on ``as_of``
has ``T = 1``. Since purchases are aggregated per day, at most one purchase per day is counted.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd


def rfm_summary(
    tx: pd.DataFrame,
    as_of: date,
    *,
    customer_col: str = "customer_id",
    ts_col: str = "invoice_ts",
    value_col: str = "line_value",
) -> pd.DataFrame:
    """Per-customer BTYD summary as of the END of ``as_of`` (see the module docstring).

    Returns a frame indexed by customer id (name ``customer_id``), sorted: int64 for numeric ids
    (which must be whole numbers), the ids' text for a column of text ids; with columns

    * ``frequency`` (float): number of repeat purchase days (purchase days - 1),
    * ``recency`` (float, days): last purchase day - first purchase day,
    * ``T`` (float, days): ``as_of + 1 day - first purchase day`` (>= 1),
    * ``monetary_value`` (float): mean daily net value over the REPEAT purchase days (the first
      purchase day is excluded, as in the Gamma-Gamma usage of Fader & Hardie); 0 when
      ``frequency == 0``,
    * ``n_orders`` (int64): number of purchase days (= frequency + 1), i.e. orders at day
      granularity.

    Rows without a customer id or timestamp, or with ``ts >= as_of + 1 day``, are ignored;
    missing values count as 0. Customers without any positive-net day before the cut-off are
    excluded. ``as_of`` may be a ``date``, a ``datetime``/``Timestamp`` (its date is used) or an
    ISO string. Timezone-aware timestamps are cut and floored to days in their own timezone.
    """
    missing = [c for c in (customer_col, ts_col, value_col) if c not in tx.columns]
    if missing:
        raise ValueError(f"rfm_summary: transactions lack column(s) {missing}")
    as_of_day = pd.Timestamp(as_of).normalize()
    if as_of_day.tzinfo is not None:
        as_of_day = as_of_day.tz_localize(None)

    df = tx[[customer_col, ts_col, value_col]]
    ts = pd.to_datetime(df[ts_col])
    tz = getattr(ts.dt, "tz", None)
    if tz is not None:
        ts = ts.dt.tz_localize(None)  # wall-clock time in its own timezone
    cutoff = as_of_day + pd.Timedelta(days=1)
    keep = df[customer_col].notna().to_numpy() & ts.notna().to_numpy() & (ts < cutoff).to_numpy()

    ids = _customer_ids(df[customer_col][keep], customer_col)
    work = pd.DataFrame(
        {
            "customer_id": ids,
            "day": ts[keep].dt.normalize().to_numpy(),
            "value": pd.to_numeric(df[value_col][keep], errors="raise").fillna(0.0).to_numpy(dtype="float64"),
        }
    )
    daily = work.groupby(["customer_id", "day"], sort=True)["value"].sum()
    daily = daily[daily > 0].reset_index()  # purchase days, sorted by customer then day

    cols = ["frequency", "recency", "T", "monetary_value", "n_orders"]
    if daily.empty:
        out = pd.DataFrame({c: pd.Series(dtype="float64") for c in cols})
        out["n_orders"] = out["n_orders"].astype("int64")
        out.index = pd.Index([], dtype=ids.dtype, name="customer_id")
        return out

    g = daily.groupby("customer_id", sort=True)
    agg = g.agg(
        first_day=("day", "min"),
        last_day=("day", "max"),
        n=("day", "size"),
        total=("value", "sum"),
        first_value=("value", "first"),  # rows are sorted by day inside each customer
    )
    one_day = np.timedelta64(1, "D")
    n = agg["n"].to_numpy(dtype="int64")
    freq = (n - 1).astype("float64")
    recency = (agg["last_day"] - agg["first_day"]).to_numpy() / one_day
    T = (as_of_day - agg["first_day"]).to_numpy() / one_day + 1.0
    repeat_total = agg["total"].to_numpy() - agg["first_value"].to_numpy()
    monetary = np.where(n > 1, repeat_total / np.maximum(n - 1, 1), 0.0)
    out = pd.DataFrame(
        {
            "frequency": freq,
            "recency": recency.astype("float64"),
            "T": T.astype("float64"),
            "monetary_value": monetary.astype("float64"),
            "n_orders": n,
        },
        index=pd.Index(agg.index.to_numpy(dtype=ids.dtype), name="customer_id"),
    )
    return out


def _customer_ids(values: pd.Series, column: str) -> np.ndarray:
    """The ids as int64 (numbers must be whole) or, for a column of text ids, as their text."""
    if not pd.api.types.is_numeric_dtype(values.dtype) and pd.api.types.infer_dtype(values, skipna=True) in ("string", "empty"):
        return values.to_numpy(dtype=object)
    cust = pd.to_numeric(values, errors="raise")
    cust_f = cust.to_numpy(dtype="float64")
    if cust_f.size and not np.all(np.isfinite(cust_f) & (cust_f == np.round(cust_f))):
        raise ValueError(f"rfm_summary: column {column!r} holds numbers that are not integer customer ids (ids are integers or text)")
    return cust.to_numpy().astype("int64")
