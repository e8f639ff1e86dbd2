"""Point-in-time customer features and labels.

``build_features(tx, as_of)`` looks only at rows with ``invoice_ts < as_of + 1 day``; it filters
them itself, so passing the whole history is safe. ``build_labels(tx, as_of)`` looks only at the
horizon after it. Snapshot days used for training lie on a fixed grid (every
``snapshot_step_days`` from an epoch) so their features are computed once and reused by every
later run, whatever order runs happen in.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import pandas as pd

log = logging.getLogger(__name__)

#: Grid epoch: a Sunday. Snapshot and anchor days are epoch + k * step.
EPOCH = date(2000, 1, 2)
WINDOWS = (30, 90, 180, 365)
TEXT_PREFIX = "txt_"

VectorLookup = Callable[[list[str]], "np.ndarray"]


def grid_days(start: date, end: date, step: int) -> list[date]:
    """Grid points epoch + k*step within [start, end], ascending."""
    k0 = -((EPOCH - start).days // step) if start > EPOCH else (start - EPOCH).days // step
    first = EPOCH + timedelta(days=k0 * step)
    while first < start:
        first += timedelta(days=step)
    out = []
    d = first
    while d <= end:
        out.append(d)
        d += timedelta(days=step)
    return out


def grid_floor(day: date, step: int) -> date:
    """The latest grid point <= day."""
    return EPOCH + timedelta(days=((day - EPOCH).days // step) * step)


def _end_of(day: date) -> pd.Timestamp:
    import pandas as pd

    return pd.Timestamp(day) + pd.Timedelta(days=1)


def purchase_days(tx: pd.DataFrame) -> pd.DataFrame:
    """One row per (customer, calendar day) with the day's net value; purchase days have value > 0."""
    day = tx["invoice_ts"].dt.normalize()
    g = tx.assign(day=day).groupby(["customer_id", "day"], sort=True)["line_value"].sum()
    return g.reset_index()


def build_features(tx: pd.DataFrame, as_of: date, vectors: VectorLookup | None = None) -> pd.DataFrame:
    """Customer features as of the end of ``as_of`` for every customer with a valid sale line
    before ``as_of + 1 day`` (purchase-day features count days with net value > 0).
    Index: customer_id (int64), sorted."""
    import numpy as np
    import pandas as pd

    from purchasing_power import btyd

    end = _end_of(as_of)
    tx = tx[tx["invoice_ts"] < end]
    days = purchase_days(tx)
    buy_days = days[days["line_value"] > 0]
    # every customer with a valid sale line is scored, even if returns netted all their days out
    sale_ts = tx.loc[~tx["is_cancellation"] & (tx["quantity"] > 0)].groupby("customer_id")["invoice_ts"]
    first_sale = sale_ts.min()
    customers = np.sort(first_sale.index.to_numpy())
    if len(customers) == 0:
        return pd.DataFrame(index=pd.Index([], name="customer_id", dtype="int64"))
    tx = tx[tx["customer_id"].isin(customers)]
    f = pd.DataFrame(index=pd.Index(customers, name="customer_id"))

    first = buy_days.groupby("customer_id")["day"].min().reindex(customers)
    first = first.fillna(first_sale.dt.normalize().reindex(customers))
    f["recency_days"] = (end - sale_ts.max().reindex(customers)).dt.total_seconds() / 86400.0
    f["tenure_days"] = (end - first).dt.days.astype("float64")
    f["n_purchase_days"] = buy_days.groupby("customer_id").size().reindex(customers, fill_value=0).astype("float64")

    # inter-purchase intervals over purchase days
    gaps = buy_days.groupby("customer_id")["day"].diff().dt.days
    gap_frame = buy_days.assign(gap=gaps).dropna(subset=["gap"]).groupby("customer_id")["gap"]
    f["ipt_mean"] = gap_frame.mean()
    f["ipt_std"] = gap_frame.std()
    f["ipt_last"] = buy_days.assign(gap=gaps).groupby("customer_id")["gap"].last()
    f["overdue_ratio"] = f["recency_days"] / f["ipt_mean"]

    sales = tx[~tx["is_cancellation"]]
    orders = sales.groupby(["customer_id", "invoice_no"]).agg(
        ts=("invoice_ts", "min"), value=("line_value", "sum"), lines=("line_value", "size"), items=("quantity", "sum")
    )
    ocust = orders.index.get_level_values(0)
    f["n_orders"] = orders.groupby(level=0).size().astype("float64")
    f["aov_mean"] = orders.groupby(level=0)["value"].mean()
    f["aov_max"] = orders.groupby(level=0)["value"].max()
    f["lines_per_order"] = orders.groupby(level=0)["lines"].mean()
    f["items_per_order"] = orders.groupby(level=0)["items"].mean()
    f["distinct_products"] = sales.groupby("customer_id")["stock_code"].nunique().astype("float64")
    f["unit_price_mean"] = sales.groupby("customer_id")["unit_price"].mean()
    age_days = (end - orders["ts"]).dt.total_seconds() / 86400.0
    tx_age = (end - tx["invoice_ts"]).dt.total_seconds() / 86400.0
    for w in WINDOWS:
        in_w = age_days <= w
        f[f"orders_{w}d"] = in_w.groupby(ocust).sum().astype("float64")
        f[f"spend_{w}d"] = tx["line_value"].where(tx_age <= w, 0.0).groupby(tx["customer_id"]).sum()
    f["spend_total"] = tx.groupby("customer_id")["line_value"].sum()
    f["spend_trend"] = f["spend_90d"] / (f["spend_180d"] - f["spend_90d"]).abs().clip(lower=1.0)
    f["orders_trend"] = f["orders_90d"] / (f["orders_180d"] - f["orders_90d"]).clip(lower=1.0)
    gross = tx["line_value"].clip(lower=0).groupby(tx["customer_id"]).sum()
    returned = (-tx["line_value"].clip(upper=0)).groupby(tx["customer_id"]).sum()
    f["return_value_ratio"] = returned / gross.clip(lower=1e-9)
    f["return_line_share"] = tx["is_cancellation"].groupby(tx["customer_id"]).mean()
    f["weekend_share"] = (orders["ts"].dt.dayofweek >= 5).groupby(ocust).mean()
    f["hour_mean"] = orders["ts"].dt.hour.groupby(ocust).mean()
    country = tx.groupby("customer_id")["country"].agg(lambda s: s.mode().iat[0])
    f["is_uk"] = (country == "United Kingdom").astype("float64")

    # buy-till-you-die outputs as features (fitted on this snapshot's data only)
    summary = btyd.rfm_summary(tx, as_of)
    netted_out = customers[~np.isin(customers, summary.index.to_numpy())]
    if len(netted_out):  # sales fully returned: one-time buyers with nothing kept (frequency 0)
        T = (end - first_sale.reindex(netted_out).dt.normalize()).dt.days.astype("float64")
        extra = pd.DataFrame(
            {"frequency": 0.0, "recency": 0.0, "T": T.to_numpy(), "monetary_value": 0.0, "n_orders": 1},
            index=pd.Index(netted_out, name=summary.index.name),
        )
        summary = pd.concat([summary, extra.astype(summary.dtypes.to_dict())]).sort_index()
    if (summary["frequency"] > 0).any():
        bt = btyd.fit_and_predict(summary)
    else:  # no repeat buyer yet (a young source): BG/NBD is not identified; the models impute
        log.warning("features as of %s: no repeat purchases yet, BG/NBD features left empty", as_of)
        bt = pd.DataFrame(index=summary.index, columns=list(btyd.PREDICTION_COLUMNS), dtype="float64")
    for col in bt.columns:
        f[col] = bt[col].reindex(customers)

    if vectors is not None:
        f = f.join(customer_text_vectors(sales, vectors), how="left")

    f = f.astype("float64").sort_index()
    f.index = f.index.astype("int64")
    return f


def customer_text_vectors(sales: pd.DataFrame, vectors: VectorLookup) -> pd.DataFrame:
    """Mean embedding of the product descriptions each customer bought (one weight per line)."""
    import numpy as np
    import pandas as pd
    from scipy import sparse

    texts = sales["description"].fillna("")
    sales = sales[texts != ""]
    if sales.empty:
        return pd.DataFrame()
    cust_codes, cust_index = pd.factorize(sales["customer_id"], sort=True)
    text_codes, text_index = pd.factorize(sales["description"], sort=True)
    counts = sparse.csr_matrix(
        (np.ones(len(sales), dtype=np.float64), (cust_codes, text_codes)), shape=(len(cust_index), len(text_index))
    )
    counts.sum_duplicates()
    totals = np.asarray(counts.sum(axis=1)).ravel()
    mat = np.asarray(vectors(list(text_index)), dtype=np.float64)
    mean = (counts @ mat) / totals[:, None]
    cols = [f"{TEXT_PREFIX}{i:03d}" for i in range(mat.shape[1])]
    return pd.DataFrame(mean.astype(np.float32), index=pd.Index(cust_index.astype("int64"), name="customer_id"), columns=cols)


def build_labels(tx: pd.DataFrame, as_of: date, customers: pd.Index, purchase_days_h: int = 30, spend_days_h: int = 90) -> pd.DataFrame:
    """Outcomes after ``as_of`` for ``customers``: ``purchased`` = a purchase day (net value > 0) in
    [as_of+1, as_of+1+purchase_days_h); ``spend`` = net value in [as_of+1, as_of+1+spend_days_h),
    floored at 0."""
    import pandas as pd

    start = _end_of(as_of)
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


def features_day(settings, day: date) -> dict:
    """Stage function: point-in-time features of every customer as of the end of ``day``."""
    from purchasing_power.train import Context

    ctx = Context.load(settings, day)
    f = ctx.features(day, refresh=True)
    text_cols = [c for c in f.columns if c.startswith(TEXT_PREFIX)]
    return {
        "day": day.isoformat(),
        "customers": int(len(f)),
        "feature_columns": int(f.shape[1]),
        "text_columns": len(text_cols),
        "features_path": ctx.feature_path(day),
    }
