"""Point-in-time labels: what each customer did in the horizons after a snapshot's as-of day
(:func:`build_labels`), and the per-day net value both labels and features count purchase days
from (:func:`purchase_days`)."""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


def purchase_days(tx: pd.DataFrame) -> pd.DataFrame:
    """One row per (customer, calendar day) with the day's net value; purchase days have value > 0."""
    day = tx["invoice_ts"].dt.normalize().rename("day")
    g = tx["line_value"].groupby([tx["customer_id"], day], sort=True).sum()  # no copy of the frame
    return g.reset_index()


def build_labels(tx: pd.DataFrame, as_of: date, customers: pd.Index, purchase_days_h: int = 30, spend_days_h: int = 90) -> pd.DataFrame:
    """Outcomes after ``as_of`` for ``customers``: ``purchased`` = a purchase day (net value > 0) in
    [as_of+1, as_of+1+purchase_days_h); ``spend`` = net value in [as_of+1, as_of+1+spend_days_h),
    floored at 0."""
    import pandas as pd

    start = pd.Timestamp(as_of) + pd.Timedelta(days=1)
    p_end = start + pd.Timedelta(days=purchase_days_h)
    s_end = start + pd.Timedelta(days=spend_days_h)
    window = tx[(tx["invoice_ts"] >= start) & (tx["invoice_ts"] < max(p_end, s_end))]
    window = window[window["customer_id"].isin(customers)]
    days = purchase_days(window[window["invoice_ts"] < p_end])
    bought = days[days["line_value"] > 0]["customer_id"].unique()
    spend = window[window["invoice_ts"] < s_end].groupby("customer_id")["line_value"].sum()
    out = pd.DataFrame(index=customers)
    out["purchased"] = out.index.isin(bought).astype("int64")
    out["spend"] = spend.reindex(customers).fillna(0.0).clip(lower=0.0).astype("float64")
    return out
