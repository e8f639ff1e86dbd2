"""Point-in-time customer features.

``build_features(tx, as_of)`` looks only at rows with ``invoice_ts < as_of + 1 day`` (and, with
``lookback`` = L days, at or after ``as_of + 1 - L``); it filters them itself, so passing the
whole history is safe. Labels are :mod:`purchasing_power.labels`'. Pure functions over
DataFrames: what to compute from which days is decided by the stages and
:mod:`purchasing_power.history` (the feature store).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Callable

from purchasing_power.compact import CODE_VALUES, codes_and_values, compact_history, sale_lines, take_rows
from purchasing_power.labels import purchase_days
from purchasing_power.schemas import EMBEDDING_DTYPE, HISTORY_DAYS, TEXT_PREFIX
from purchasing_power.shards import shard_of

from purchasing_power.featureplan import (RANKED, REPURCHASE_PRIOR_WEIGHT, FeaturePlan, ShardStats, finish_features,
                                          plan_features, typed_features)

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import pandas as pd

log = logging.getLogger(__name__)

WINDOWS = (30, 90, 180, 365)
PURCHASE_DAY_WINDOWS = (14, 30, 60, 90, 180, 365)
ACTIVE_BINS = 12  # 30-day bins looked back for the active-month share
HAZARD_DAYS = 30

VectorLookup = Callable[[list[str]], "np.ndarray"]


def _end_of(day: date) -> pd.Timestamp:
    import pandas as pd

    return pd.Timestamp(day) + pd.Timedelta(days=1)


def lookback_since(as_of: date, lookback: int) -> date | None:
    """The first day whose lines features as of ``as_of`` read with a lookback of ``lookback``
    days (the as-of day is the last of them), or ``None`` for the whole history (0)."""
    from datetime import timedelta

    return as_of - timedelta(days=int(lookback) - 1) if int(lookback) > 0 else None


def build_features(
    tx: pd.DataFrame | Callable[[int], pd.DataFrame],
    as_of: date,
    vectors: VectorLookup | None = None,
    user_texts: tuple[pd.DataFrame, VectorLookup | None] | None = None,
    shards: int = 1,
    sample: Callable[[np.ndarray], np.ndarray] | None = None,
    lookback: int = 0,
) -> pd.DataFrame:
    """Customer features as of the end of ``as_of`` for every customer with a valid sale line
    before ``as_of + 1 day`` (purchase-day features count days with net value > 0); ``lookback``
    = L > 0: from the lines and user texts of the L days through ``as_of`` only
    (:func:`lookback_since`), so a customer without a sale line in them has no row.
    ``vectors``: the mean embedding of the products bought; ``user_texts`` ((clean user texts,
    vector lookup)): the user-text features of ``usertext.user_text_features`` (texts dated
    before ``as_of + 1 day`` only).
    Index: customer_id (int64 for integer ids, the ids' text for text ids), sorted.

    The frame is built per customer shard (:mod:`purchasing_power.featureplan`): the
    :func:`shard_stats` of each shard, one plan from them all, the :func:`customer_features` of
    each shard under that plan, joined by ``featureplan.finish_features``. ``shards`` > 1 holds
    one shard's intermediate frames at a time (less memory, each shard's lines prepared twice);
    any number of shards gives the very same frame. ``tx`` may be a function k -> shard k's rows
    (in history order; :class:`history.ShardSpool`): one shard's rows held at a time. The sharded
    features tasks of the DAG run these steps, a shard per task (:mod:`purchasing_power.stages.features`).

    ``sample`` (customer ids -> bool mask): the rows of only those customers, each equal to its
    row of the full frame (the snapshot-wide quantities, percentile ranks and BG/NBD fit still
    come from every customer), at the cost of the full frame's cheap parts only: what training
    on a sample of customers needs (:func:`train.training_table`)."""
    import numpy as np

    description = vectors is not None
    whole = None if callable(tx) else compact_history(tx, description=description)
    rows = None if whole is None or shards == 1 else shard_of(whole["customer_id"].to_numpy(), shards)

    def shard_rows(k: int) -> pd.DataFrame:
        if whole is None:
            return compact_history(tx(k), description=description)
        return whole if rows is None else take_rows(whole, np.flatnonzero(rows == k))

    def shard_lines(k: int, sampled: bool = False) -> Lines:
        part = shard_rows(k)
        if sampled:
            part = take_rows(part, np.flatnonzero(np.asarray(sample(part["customer_id"].to_numpy()), dtype=bool)))
        return prepare_lines(part, as_of, description=description, lookback=lookback)

    stats, ranked = [], []
    for k in range(shards):
        lines = shard_lines(k)
        stats.append(shard_stats(lines))
        if sample is not None:
            ranked.append(ranked_columns(lines))
        if sample is None and shards == 1:  # the one pass: its lines serve the features too
            plan = plan_features(as_of, stats)
            parts = [customer_features(lines, plan, vectors, user_texts)]
            del lines
            return finish_features(plan, parts, [stats[0].summary])
        del lines
    plan = plan_features(as_of, stats)
    parts = [customer_features(shard_lines(k, sample is not None), plan, vectors, user_texts) for k in range(shards)]
    return finish_features(plan, parts, [s.summary for s in stats], ranked=ranked or None)


@dataclass
class Lines:
    """One shard's (or the whole history's) lines prepared for a snapshot: the rows of the
    customers with a valid sale line before the end of ``as_of`` (:attr:`tx`, compact), and
    what both :func:`shard_stats` and :func:`customer_features` derive from them."""

    as_of: date
    end: pd.Timestamp
    start: pd.Timestamp | None  # the first instant of the lookback (None: the whole history)
    tx: pd.DataFrame
    customers: np.ndarray
    id_dtype: str
    values: dict[str, np.ndarray]  # text of each code of the CODED columns (compact_history)
    first_sale: pd.Series
    last_sale: pd.Series
    buy_days: pd.DataFrame
    sales: pd.DataFrame
    closed: pd.DataFrame  # purchase days whose follow-up window closed (_closed_days)


def prepare_lines(tx: pd.DataFrame, as_of: date, *, description: bool = False, lookback: int = 0) -> Lines:
    import numpy as np
    import pandas as pd

    end = _end_of(as_of)
    since = lookback_since(as_of, lookback)
    start = None if since is None else pd.Timestamp(since)
    tx = compact_history(tx, description=description)  # no copy when already compact
    values = tx.attrs[CODE_VALUES]
    ids = id_dtype(tx["customer_id"])
    in_time = (tx["invoice_ts"] < end).to_numpy()
    if start is not None:
        in_time &= (tx["invoice_ts"] >= start).to_numpy()
    if not in_time.all():
        tx = tx[in_time]
    days = purchase_days(tx)
    buy_days = days[days["line_value"] > 0]
    del days
    # every customer with a valid sale line is scored, even if returns netted all their days out
    sold = sale_lines(tx)
    sale_ts = tx["invoice_ts"][sold].groupby(tx["customer_id"][sold])
    del sold
    first_sale, last_sale = sale_ts.min(), sale_ts.max()
    customers = np.sort(first_sale.index.to_numpy())
    scored = tx["customer_id"].isin(customers).to_numpy()
    if not scored.all():
        tx = tx[scored]
    del scored
    return Lines(as_of=as_of, end=end, start=start, tx=tx, customers=customers, id_dtype=ids, values=values, first_sale=first_sale,
                 last_sale=last_sale, buy_days=buy_days, sales=tx[~tx["is_cancellation"]], closed=_closed_days(buy_days, end))


def shard_stats(lines: Lines) -> ShardStats:
    """What the shard adds to the snapshot's :class:`featureplan.FeaturePlan`: its customers,
    first line, lines per country, buyers and follow-up purchases per product, and the RFM
    summary of its customers (keyed by text, not by codes: codes are the shard's own)."""
    import numpy as np
    import pandas as pd

    from purchasing_power import btyd

    tx, customers = lines.tx, lines.customers
    if len(customers) == 0:
        return ShardStats.empty(lines.id_dtype)
    country = tx["country"].to_numpy()
    known = ~pd.isna(country)
    per_country = pd.Series(country[known]).value_counts()
    country_lines = pd.Series(per_country.to_numpy(dtype=np.int64), index=_texts(lines, "country", per_country.index))
    bought = lines.sales[["customer_id", "stock_code"]].drop_duplicates()
    buyers = bought.groupby("stock_code").size()
    labelled = _labelled_lines(lines)[1].groupby("stock_code")["again"]
    products = pd.DataFrame({"buyers": buyers, "again_sum": labelled.sum(), "again_n": labelled.count()})
    products = products.fillna({"again_sum": 0.0, "again_n": 0}).astype({"buyers": "int64", "again_sum": "float64", "again_n": "int64"})
    products.index = _texts(lines, "stock_code", products.index)
    summary = btyd.rfm_summary(tx, lines.as_of)
    netted_out = customers[~np.isin(customers, summary.index.to_numpy())]
    if len(netted_out):  # sales fully returned: one-time buyers with nothing kept (frequency 0)
        T = (lines.end - lines.first_sale.reindex(netted_out).dt.normalize()).dt.days.astype("float64")
        extra = pd.DataFrame(
            {"frequency": 0.0, "recency": 0.0, "T": T.to_numpy(), "monetary_value": 0.0, "n_orders": 1},
            index=pd.Index(netted_out, name=summary.index.name),
        )
        summary = pd.concat([summary, extra.astype(summary.dtypes.to_dict())]).sort_index()
    return ShardStats(customers=len(customers), history_start=tx["invoice_ts"].min(), country_lines=country_lines,
                      products=products, again_sum=float(lines.closed["again"].sum()), again_n=int(len(lines.closed)),
                      summary=summary)


def _texts(lines: Lines, column: str, codes: pd.Index) -> pd.Index:
    """The texts of codes of a CODED column (``lines.values``; a missing code: ``None``)."""
    import numpy as np
    import pandas as pd

    codes = np.asarray(codes)
    if codes.dtype.kind == "f":
        out = np.full(len(codes), None, dtype=object)
        ok = ~np.isnan(codes)
        out[ok] = lines.values[column][codes[ok].astype(np.int64)]
        return pd.Index(out, dtype=object, name=column)
    return pd.Index(lines.values[column][codes.astype(np.int64)], dtype=object, name=column)


def customer_features(lines: Lines, plan: FeaturePlan, vectors: VectorLookup | None = None,
                      user_texts: tuple[pd.DataFrame, VectorLookup | None] | None = None) -> pd.DataFrame:
    """The features of the customers of ``lines`` under the snapshot's ``plan``, all but those
    :func:`featureplan.finish_features` adds from every shard (percentile ranks, BG/NBD)."""
    import numpy as np
    import pandas as pd

    end, customers = lines.end, lines.customers
    if len(customers) == 0:
        return pd.DataFrame(index=pd.Index([], name="customer_id", dtype=lines.id_dtype))
    tx, buy_days, sales = lines.tx, lines.buy_days, lines.sales
    f = pd.DataFrame(index=pd.Index(customers, name="customer_id"))

    for col, values in _tenure(lines).items():
        f[col] = values
    # the same for every customer: how much history the source has (not a model feature; it
    # scales spend totals to a horizon, see model.GLOBAL_COLUMNS)
    f.insert(2, HISTORY_DAYS, float((end - plan.history_start.normalize()).days))

    # purchase-day counts over several windows and the share of recent 30-day bins with a purchase
    day_age = (end - buy_days["day"]).dt.days.astype("float64")  # 1 = the as-of day itself
    for col, values in _purchase_day_counts(lines, PURCHASE_DAY_WINDOWS).items():
        f[col] = values
    bins = ((day_age - 1) // 30).astype("int64")  # 0 = the last 30 days
    recent = buy_days.assign(bin=bins)[bins < ACTIVE_BINS].drop_duplicates(["customer_id", "bin"])
    for k in (3, 6, ACTIVE_BINS):
        n_active = (recent["bin"] < k).groupby(recent["customer_id"]).sum()
        f[f"active_bins_{k}"] = n_active.reindex(customers, fill_value=0).astype("float64")
    possible = np.clip(np.ceil(f["tenure_days"].to_numpy() / 30.0), 1, ACTIVE_BINS)
    f["active_bin_share"] = f[f"active_bins_{ACTIVE_BINS}"] / possible
    f["purchase_rate_30d"] = f["n_purchase_days"] / f["tenure_days"].clip(lower=30.0) * 30.0

    # inter-purchase intervals over purchase days
    gaps = buy_days.groupby("customer_id")["day"].diff().dt.days
    gap_rows = buy_days.assign(gap=gaps).dropna(subset=["gap"])
    gap_frame = gap_rows.groupby("customer_id")["gap"]
    f["ipt_mean"] = gap_frame.mean()
    f["ipt_std"] = gap_frame.std()
    f["ipt_median"] = gap_frame.median()
    f["ipt_min"] = gap_frame.min()
    f["ipt_max"] = gap_frame.max()
    f["ipt_last"] = buy_days.assign(gap=gaps).groupby("customer_id")["gap"].last()
    f["overdue_ratio"] = f["recency_days"] / f["ipt_mean"]
    f["overdue_median_ratio"] = f["recency_days"] / f["ipt_median"]
    f["ipt_cv"] = f["ipt_std"] / f["ipt_mean"].clip(lower=1.0)
    # the customer's own gaps as a hazard: of the past gaps longer than the current wait, the
    # share that ended within the next HAZARD_DAYS (smoothed towards 1/2)
    wait = (end - buy_days.groupby("customer_id")["day"].max()).dt.days.astype("float64") - 1.0
    w_rows = wait.reindex(gap_rows["customer_id"]).to_numpy()
    g = gap_rows["gap"].to_numpy()
    gcust = gap_rows["customer_id"].to_numpy()
    longer = pd.Series(g > w_rows).groupby(gcust).sum()
    within = pd.Series((g > w_rows) & (g <= w_rows + HAZARD_DAYS)).groupby(gcust).sum()
    f["gap_hazard_30d"] = (within + 0.5) / (longer + 1.0)
    f["gaps_longer_than_wait"] = longer.astype("float64")
    nth_last_gap = gap_rows.groupby("customer_id").cumcount(ascending=False)
    for k in (1, 2):
        f[f"ipt_last_{k + 1}"] = gap_rows.loc[nth_last_gap.to_numpy() == k].set_index("customer_id")["gap"]
    f["ipt_trend"] = f["ipt_last"] / f["ipt_median"].clip(lower=1.0)
    # days until the median gap is reached (negative: overdue)
    f["days_to_median_gap"] = f["ipt_median"] - wait.reindex(customers)
    last_day_value = buy_days.groupby("customer_id")["line_value"].last()
    f["last_day_value"] = last_day_value

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
    tx_age = _line_age(lines)
    spend = _window_spend(lines, WINDOWS, tx_age)
    for w in WINDOWS:
        in_w = age_days <= w
        f[f"orders_{w}d"] = in_w.groupby(ocust).sum().astype("float64")
        f[f"spend_{w}d"] = spend[f"spend_{w}d"]
    f["spend_total"] = tx.groupby("customer_id")["line_value"].sum()
    f["spend_trend"] = f["spend_90d"] / (f["spend_180d"] - f["spend_90d"]).abs().clip(lower=1.0)
    f["orders_trend"] = f["orders_90d"] / (f["orders_180d"] - f["orders_90d"]).clip(lower=1.0)
    gross = tx["line_value"].clip(lower=0).groupby(tx["customer_id"]).sum()
    returned = (-tx["line_value"].clip(upper=0)).groupby(tx["customer_id"]).sum()
    f["return_value_ratio"] = returned / gross.clip(lower=1e-9)
    f["return_line_share"] = tx["is_cancellation"].groupby(tx["customer_id"]).mean()
    f["weekend_share"] = (orders["ts"].dt.dayofweek >= 5).groupby(ocust).mean()
    f["hour_mean"] = orders["ts"].dt.hour.groupby(ocust).mean()
    f["orders_per_purchase_day"] = f["n_orders"] / f["n_purchase_days"].clip(lower=1.0)
    f["spend_per_purchase_day"] = f["spend_total"] / f["n_purchase_days"].clip(lower=1.0)
    f["spend_per_purchase_day_90d"] = f["spend_90d"] / f["pdays_90d"].clip(lower=1.0)
    f["lines_total"] = sales.groupby("customer_id").size().astype("float64")
    f["product_diversity"] = f["distinct_products"] / f["lines_total"].clip(lower=1.0)
    # how mainstream the basket is: mean share of customers who bought each of its products
    bought = sales[["customer_id", "stock_code"]].drop_duplicates()
    pop = plan.popularity.reindex(_texts(lines, "stock_code", bought["stock_code"])).to_numpy()
    f["product_popularity"] = pd.Series(pop).groupby(bought["customer_id"].to_numpy()).mean()
    f["weekday_concentration"] = _weekday_concentration(ocust.to_numpy(), orders["ts"].dt.dayofweek.to_numpy())
    f["is_main_country"] = _is_main_country(lines, plan.main_country).reindex(customers)
    for col, values in _repurchase_features(lines, plan).items():
        f[col] = values
    f["last_day_value_ratio"] = f["last_day_value"] / f["spend_per_purchase_day"].abs().clip(lower=1.0)
    f["returned_30d"] = (-tx["line_value"].clip(upper=0)).where(tx_age <= 30, 0.0).groupby(tx["customer_id"]).sum()

    if vectors is not None:
        f = f.join(customer_text_vectors(sales, vectors), how="left")
    if user_texts is not None:
        from purchasing_power.usertext import user_text_features

        texts, lookup = user_texts
        if lines.start is not None:
            texts = texts[(texts["text_ts"] >= lines.start).to_numpy()]
        f = f.join(user_text_features(texts, lines.as_of, f.index, lookup, lines.id_dtype), how="left")
    f = typed_features(f)
    f.index = f.index.astype(lines.id_dtype)
    return f


def _weekday_concentration(customers: np.ndarray, weekday: np.ndarray) -> pd.Series:
    """Per customer: the share of their orders placed on their busiest weekday (orders as rows:
    each order's customer and weekday)."""
    import numpy as np
    import pandas as pd

    per_day = pd.Series(np.ones(len(customers), dtype=np.int64)).groupby([customers, weekday], sort=True).sum()
    by_customer = per_day.groupby(level=0, sort=True)
    return by_customer.max() / by_customer.sum()


def _tenure(lines: Lines) -> dict[str, pd.Series]:
    """recency_days (since the last sale line), tenure_days (since the first purchase day, or the
    first sale when returns netted every day out) and n_purchase_days of ``lines.customers``."""
    customers, end, buy_days = lines.customers, lines.end, lines.buy_days
    first = buy_days.groupby("customer_id")["day"].min().reindex(customers)
    first = first.fillna(lines.first_sale.dt.normalize().reindex(customers))
    return {"recency_days": (end - lines.last_sale.reindex(customers)).dt.total_seconds() / 86400.0,
            "tenure_days": (end - first).dt.days.astype("float64"),
            "n_purchase_days": buy_days.groupby("customer_id").size().reindex(customers, fill_value=0).astype("float64")}


def _purchase_day_counts(lines: Lines, windows: tuple[int, ...]) -> dict[str, pd.Series]:
    """pdays_{w}d: purchase days within the last w days (the as-of day included), per customer."""
    buy_days = lines.buy_days
    day_age = (lines.end - buy_days["day"]).dt.days.astype("float64")  # 1 = the as-of day itself
    bcust = buy_days["customer_id"]
    return {f"pdays_{w}d": (day_age <= w).groupby(bcust).sum().reindex(lines.customers, fill_value=0).astype("float64")
            for w in windows}


def _line_age(lines: Lines) -> pd.Series:
    """Days from each line to the end of the as-of day."""
    return (lines.end - lines.tx["invoice_ts"]).dt.total_seconds() / 86400.0


def _window_spend(lines: Lines, windows: tuple[int, ...], tx_age: pd.Series | None = None) -> dict[str, pd.Series]:
    """spend_{w}d: net line value within the last w days, per customer with a line."""
    tx = lines.tx
    age = _line_age(lines) if tx_age is None else tx_age
    return {f"spend_{w}d": tx["line_value"].where(age <= w, 0.0).groupby(tx["customer_id"]).sum() for w in windows}


def ranked_columns(lines: Lines) -> pd.DataFrame:
    """The :data:`featureplan.RANKED` features of every customer of ``lines``, computed as
    :func:`customer_features` computes them: what the percentile ranks of a sample of customers
    are taken among (:func:`build_features` with ``sample``)."""
    import pandas as pd

    cols: dict[str, pd.Series] = {**_tenure(lines), **_purchase_day_counts(lines, (90,)), **_window_spend(lines, (365,))}
    out = pd.DataFrame(index=pd.Index(lines.customers, name="customer_id"))
    for col in RANKED:
        out[col] = cols[col]
    return out.astype("float64")


def id_dtype(ids: pd.Series) -> str:
    """The dtype customer ids keep in feature and label frames: int64 for integer ids, object
    (the ids' text) for text ids."""
    import pandas as pd

    return "int64" if pd.api.types.is_numeric_dtype(ids.dtype) else "object"


def customer_text_vectors(sales: pd.DataFrame, vectors: VectorLookup) -> pd.DataFrame:
    """Mean embedding of the product descriptions each customer bought (one weight per line)."""
    import numpy as np
    import pandas as pd
    from scipy import sparse

    codes, values = codes_and_values(sales["description"], empty_missing=True)  # "" and missing: no text
    keep = codes >= 0
    if not keep.any():
        return pd.DataFrame()
    cust_codes, cust_index = pd.factorize(sales["customer_id"][keep], sort=True)
    text_codes, used = pd.factorize(codes[keep], sort=True)
    text_index = values[used]  # the texts bought, sorted
    counts = sparse.csr_matrix(
        (np.ones(len(cust_codes), dtype=np.float64), (cust_codes, text_codes)), shape=(len(cust_index), len(text_index))
    )
    counts.sum_duplicates()
    totals = np.asarray(counts.sum(axis=1)).ravel()
    mat = np.asarray(vectors(list(text_index)), dtype=np.float64)
    mean = (counts @ mat) / totals[:, None]
    cols = [f"{TEXT_PREFIX}{i:03d}" for i in range(mat.shape[1])]
    index = pd.Index(cust_index.astype(id_dtype(sales["customer_id"])), name="customer_id")
    return pd.DataFrame(mean.astype(EMBEDDING_DTYPE), index=index, columns=cols)


def _closed_days(buy_days: pd.DataFrame, end: pd.Timestamp) -> pd.DataFrame:
    """The purchase days (customer, day) whose follow-up window (day, day + HAZARD_DAYS] closed
    before ``end``, with ``again`` = 1.0 when another purchase day fell in it."""
    import pandas as pd

    h = pd.Timedelta(days=HAZARD_DAYS)
    bd = buy_days[["customer_id", "day"]].sort_values(["customer_id", "day"], kind="stable")
    nxt = bd.groupby("customer_id")["day"].shift(-1)
    closed = bd["day"] + h < end  # the day's follow-up window (day, day + h] is fully observed
    again = (nxt.notna() & (nxt <= bd["day"] + h)).astype("float64")
    return bd.assign(again=again)[closed]


def _labelled_lines(lines: Lines) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the distinct (customer, product, day) sale lines, those of them on a closed purchase day
    with its ``again``)."""
    sales = lines.sales
    days = sales[["customer_id", "stock_code", "invoice_ts"]].assign(day=sales["invoice_ts"].dt.normalize())
    days = days.drop_duplicates(["customer_id", "stock_code", "day"])
    return days, days.merge(lines.closed[["customer_id", "day", "again"]], on=["customer_id", "day"], how="inner")


def _repurchase_features(lines: Lines, plan: FeaturePlan) -> dict[str, pd.Series]:
    """How often a purchase day was followed by another within HAZARD_DAYS, counting only purchase
    days whose follow-up window closed before the end of the as-of day (so nothing after it is used):

    * ``repurchase_rate``: per customer, smoothed towards the population rate (``plan.repurchase_prior``);
    * ``basket_repurchase_last`` / ``basket_repurchase_mean``: per product, the same rate over the
      purchase days that contained it (smoothed; ``plan.product_repurchase``), averaged over the
      customer's last purchase day's lines / over all their lines -- what buyers of these
      products usually did next."""
    import pandas as pd

    prior = plan.repurchase_prior
    m = REPURCHASE_PRIOR_WEIGHT
    g = lines.closed.groupby("customer_id")["again"]
    out: dict[str, pd.Series] = {"repurchase_rate": (g.sum() + m * prior) / (g.count() + m)}
    days, _ = _labelled_lines(lines)
    line_score = plan.product_repurchase.reindex(_texts(lines, "stock_code", days["stock_code"])).fillna(prior).to_numpy()
    cust = days["customer_id"].to_numpy()
    out["basket_repurchase_mean"] = pd.Series(line_score).groupby(cust).mean()
    last_day = days.groupby("customer_id")["day"].transform("max")
    on_last = (days["day"] == last_day).to_numpy()
    out["basket_repurchase_last"] = pd.Series(line_score[on_last]).groupby(cust[on_last]).mean()
    return out


def _is_main_country(lines: Lines, main: str | None) -> pd.Series:
    """Per customer: 1.0 when the country of most of their lines is ``main`` (the source's most
    common country, :class:`featureplan.FeaturePlan`), else 0.0 (ties broken by name, so it is
    deterministic); customers without a known country: missing. No country is hard-coded."""
    import numpy as np
    import pandas as pd

    tx = lines.tx
    codes = tx["country"].to_numpy()  # compact_history codes: "" is missing
    ok = ~pd.isna(codes)
    if main is None or not ok.any():  # a source without countries: the feature stays empty
        return pd.Series(dtype="float64")
    known = pd.DataFrame({"customer_id": tx["customer_id"].to_numpy()[ok], "country": codes[ok]})
    counts = known.groupby(["customer_id", "country"], sort=True).size().rename("n").reset_index()
    top = counts.sort_values(["customer_id", "n", "country"], ascending=[True, False, True], kind="stable")
    top = top.drop_duplicates("customer_id")
    top_text = lines.values["country"][top["country"].to_numpy().astype(np.int64)]
    return pd.Series((top_text == main).astype("float64"), index=top["customer_id"].to_numpy())
