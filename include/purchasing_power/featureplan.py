"""What a feature snapshot needs from every customer at once, so that customer shards can compute
their features apart and still give the very frame one pass over the whole history gives.

Per customer, features read only that customer's lines, except for a few quantities of the
whole snapshot: the first line of the history, the most common country, how many customers
bought each product and how often a purchase day with it was followed by another (with the
population's follow-up rate as the prior), the BG/NBD and Gamma-Gamma fits, and the percentile
ranks. Each shard reports its part (:class:`ShardStats`, from ``features.shard_stats``); the parts
add up to one :class:`FeaturePlan` (:func:`plan_features`: counts and sums, exact in any order);
each shard computes its customers' features under it (``features.customer_features``); and
:func:`finish_features` joins the parts, fits BG/NBD on every customer's RFM summary and ranks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Callable, ClassVar

from purchasing_power.schemas import EMBEDDING_DTYPE, TEXT_PREFIX, TEXT_PREFIXES, USER_TEXT_PREFIX
from purchasing_power.usertext import COUNT, COUNT_RECENT, DAYS_SINCE_LAST
from purchasing_power.storage import Storage

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

log = logging.getLogger(__name__)

#: the columns ``customer_features`` joins last (product text, then user text): the ranks and
#: BG/NBD columns go before them
TEXT_COLUMN_PREFIXES = (TEXT_PREFIX, USER_TEXT_PREFIX, COUNT, COUNT_RECENT, DAYS_SINCE_LAST)

#: Features also given as the customer's percentile among the snapshot's customers (0..1):
#: comparable across snapshots whatever the length of the history or the season.
RANKED = ("recency_days", "n_purchase_days", "pdays_90d", "spend_365d", "tenure_days")
REPURCHASE_PRIOR = 0.5  # the follow-up rate assumed while no purchase day's window has closed
REPURCHASE_PRIOR_WEIGHT = 5.0  # weight (in purchase days) of the population's rate in the smoothed per-customer and per-product rates


@dataclass
class ShardStats:
    """One shard's part of a snapshot's :class:`FeaturePlan`."""

    customers: int
    history_start: pd.Timestamp  # NaT for a shard without customers
    country_lines: pd.Series  # country text -> lines (missing countries not counted)
    products: pd.DataFrame  # stock code text -> buyers (distinct customers), again_sum, again_n
    again_sum: float  # closed purchase days followed by another within the hazard window
    again_n: int  # closed purchase days
    summary: pd.DataFrame  # btyd.rfm_summary of the shard's customers (netted-out ones included)

    #: the Parquet frames :meth:`write` stores, one file each
    FRAMES: ClassVar[tuple[str, ...]] = ("scalars", "countries", "products", "summary")

    @classmethod
    def empty(cls, id_dtype: str) -> ShardStats:
        import pandas as pd

        summary = pd.DataFrame({c: pd.Series(dtype="float64") for c in ("frequency", "recency", "T", "monetary_value")})
        summary["n_orders"] = pd.Series(dtype="int64")
        summary.index = pd.Index([], dtype=id_dtype, name="customer_id")
        products = pd.DataFrame({"buyers": pd.Series(dtype="int64"), "again_sum": pd.Series(dtype="float64"),
                                 "again_n": pd.Series(dtype="int64")}, index=pd.Index([], dtype=object, name="stock_code"))
        return cls(0, pd.NaT, pd.Series(dtype="int64", index=pd.Index([], dtype=object, name="country")), products, 0.0, 0, summary)

    # -- between tasks: one Parquet file per frame, ``path(frame)`` --------------------------
    def write(self, storage: Storage, path: Callable[[str], str]) -> None:
        import pandas as pd

        scalars = pd.DataFrame({"customers": [self.customers], "history_start": [self.history_start],
                                "again_sum": [self.again_sum], "again_n": [self.again_n]})
        frames = {"products": self.products.reset_index(), "countries": self.country_lines.rename("lines").reset_index(),
                  "summary": self.summary.reset_index(), "scalars": scalars}
        for name in self.FRAMES:
            storage.write_parquet(frames[name], path(name))

    @classmethod
    def read(cls, storage: Storage, path: Callable[[str], str], frames: tuple[str, ...] | None = None) -> ShardStats:
        """What :meth:`write` stored; ``frames``: only these (the others are left empty)."""
        import pandas as pd

        f = {name: storage.read_parquet(path(name)) for name in frames or cls.FRAMES}
        s = f["scalars"].iloc[0]
        none = pd.DataFrame({"customer_id": pd.Series(dtype="int64"), "stock_code": pd.Series(dtype=object),
                             "country": pd.Series(dtype=object), "lines": pd.Series(dtype="int64")})
        return cls(customers=int(s["customers"]), history_start=s["history_start"],
                   country_lines=f.get("countries", none).set_index("country")["lines"],
                   products=f["products"].set_index("stock_code"), again_sum=float(s["again_sum"]), again_n=int(s["again_n"]),
                   summary=f.get("summary", none[["customer_id"]]).set_index("customer_id"))


@dataclass
class FeaturePlan:
    """The snapshot-wide quantities every shard's features read."""

    as_of: date
    customers: int
    history_start: pd.Timestamp
    main_country: str | None  # most lines; ties: the first name
    popularity: pd.Series  # stock code text -> share of the snapshot's customers who bought it
    repurchase_prior: float  # share of closed purchase days followed by another
    product_repurchase: pd.Series  # stock code text -> that share over its purchase days, smoothed


def plan_features(as_of: date, parts: list[ShardStats], prior_weight: float = REPURCHASE_PRIOR_WEIGHT) -> FeaturePlan:
    """Add the shards' parts up (counts and sums of integers: the same in any order)."""
    import pandas as pd

    customers = sum(p.customers for p in parts)
    starts = [p.history_start for p in parts if p.customers and not pd.isna(p.history_start)]
    known = [p.country_lines for p in parts if len(p.country_lines)]
    countries = pd.concat(known) if known else None
    main = None
    if countries is not None:
        lines = countries.groupby(level=0).sum().sort_index(kind="stable").sort_values(ascending=False, kind="stable")
        main = str(lines.index[0])
    frames = [p.products for p in parts if len(p.products)]
    products = pd.concat(frames).groupby(level=0).sum() if frames else parts[0].products
    again_n = sum(p.again_n for p in parts)
    prior = sum(p.again_sum for p in parts) / again_n if again_n else REPURCHASE_PRIOR
    labelled = products[products["again_n"] > 0]
    return FeaturePlan(
        as_of=as_of,
        customers=customers,
        history_start=min(starts) if starts else pd.NaT,
        main_country=main,
        popularity=products["buyers"][products["buyers"] > 0] / float(max(customers, 1)),
        repurchase_prior=float(prior),
        product_repurchase=(labelled["again_sum"] + prior_weight * prior) / (labelled["again_n"] + prior_weight),
    )


def typed_features(f: pd.DataFrame) -> pd.DataFrame:
    """``f`` with its embedding-block columns as ``schemas.EMBEDDING_DTYPE`` and the others as
    float64, in the same column order, held as one block of each (a frame of a block per column
    slows every later insert)."""
    import pandas as pd

    vec = [c for c in f.columns if c.startswith(TEXT_PREFIXES)]
    if not vec:
        return f.astype("float64", copy=False)
    rest = f.columns.difference(vec, sort=False)
    both = pd.concat([f[rest].astype("float64", copy=False), f[vec].astype(EMBEDDING_DTYPE, copy=False)], axis=1)
    return both if both.columns.equals(f.columns) else both[f.columns]


def finish_features(plan: FeaturePlan, parts: list[pd.DataFrame], summaries: list[pd.DataFrame],
                    ranked: list[pd.DataFrame] | None = None) -> pd.DataFrame:
    """The snapshot's features from the shards' ``features.customer_features`` frames and RFM
    summaries: concatenated in customer order, with the percentile ranks of :data:`RANKED` and
    the BG/NBD / Gamma-Gamma predictions (fitted on every customer's summary) before the text
    columns (product text, then user text). ``parts`` is emptied: each part's memory is freed
    once the parts are joined (the join holds one copy of the features, not two). ``ranked``:
    the :data:`RANKED` columns of every customer of the snapshot (``features.ranked_columns``),
    when the parts hold only a sample of them: the ranks are taken among all."""
    import pandas as pd

    from purchasing_power import btyd

    filled = [p for p in parts if len(p)]
    if not filled:
        return parts[0]
    f = pd.concat(filled, copy=False) if len(filled) > 1 else filled[0]
    parts.clear()
    del filled
    if not f.index.is_monotonic_increasing:
        f = f.sort_index()
    if any(c.startswith(TEXT_PREFIXES) and t != EMBEDDING_DTYPE for c, t in f.dtypes.items()):
        f = typed_features(f)  # a part without a block's columns (no text in the shard) widened them
    if ranked is None:
        extra = {f"{col}_pct": f[col].rank(pct=True, method="average") for col in RANKED}
    else:
        everyone = pd.concat(ranked) if len(ranked) > 1 else ranked[0]
        extra = {f"{col}_pct": everyone[col].rank(pct=True, method="average").reindex(f.index) for col in RANKED}
    summary = pd.concat(summaries) if len(summaries) > 1 else summaries[0]
    if not summary.index.is_monotonic_increasing:
        summary = summary.sort_index()
    if (summary["frequency"] > 0).any():
        bt = btyd.fit_and_predict(summary)
    else:  # no repeat buyer yet (a young source): BG/NBD is not identified; the models impute
        log.warning("features as of %s: no repeat purchases yet, BG/NBD features left empty", plan.as_of)
        bt = pd.DataFrame(index=summary.index, columns=list(btyd.PREDICTION_COLUMNS), dtype="float64")
    for col in bt.columns:
        extra[col] = bt[col].reindex(f.index)
    text = [i for i, c in enumerate(f.columns) if c.startswith(TEXT_COLUMN_PREFIXES)]
    at = text[0] if text else len(f.columns)
    for i, (col, values) in enumerate(extra.items()):  # columns inserted, the features not copied
        f.insert(at + i, col, values.astype("float64"))
    return f
