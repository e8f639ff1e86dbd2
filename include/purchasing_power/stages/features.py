"""The features stage: point-in-time features of every customer as of the end of the run's day.

With ``feature_shards`` = N > 1 the DAG runs it as three steps, so that N workers share the
day and each holds only its customers' rows: ``feature_stats`` (mapped over the N customer
shards: each shard's part of the snapshot-wide quantities, :mod:`purchasing_power.featureplan`),
``feature_part`` (mapped: each shard's features under the plan those parts add up to, from the
shard's rows ``feature_stats`` stored: the clean partitions are scanned once per shard), and
``features`` with ``combine`` (joins the parts, fits BG/NBD on every customer, ranks, and stores
the very frame one process would have built). The parts live in ``feature_shards/ds=D/`` until
``features`` has stored the day's features, then they are removed.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from purchasing_power.calendar import anchor_for
from purchasing_power.errors import MissingInput
from purchasing_power.featureplan import ShardStats, finish_features, plan_features
from purchasing_power.features import customer_features, prepare_lines, shard_stats
from purchasing_power.gate import decided_model
from purchasing_power.history import RunData
from purchasing_power.schemas import TEXT_PREFIX, USER_TEXT_PREFIX
from purchasing_power.settings import Settings
from purchasing_power.storage import fresh_fs

#: the Parquet frames a shard hands on (ShardStats.write's, its lines, and its features)
FEATURES_PART = "features"
LINES_PART = "lines"  # the shard's rows of the clean history: feature_part reads them, not the partitions


def features_day(settings: Settings, day: date, combine: bool = False) -> dict[str, Any]:
    """Build (and store) the day's features -- or, with ``combine``, join the parts the sharded
    features tasks stored -- and say whether the day's anchor still needs a model (the DAG maps
    ``train`` over that answer)."""
    data = RunData.load(settings, day, snapshots_from=day)  # the day's features only: its lookback's partitions
    if combine:
        f = _combined(data)
    else:
        f = data.features(day, refresh=True)
    text_cols = [c for c in f.columns if c.startswith(TEXT_PREFIX)]
    decision = decided_model(settings, day)
    return {
        "day": day.isoformat(),
        "customers": int(len(f)),
        "feature_columns": int(f.shape[1]),
        "text_columns": len(text_cols),
        "user_text_columns": sum(c.startswith(USER_TEXT_PREFIX) for c in f.columns),
        "features_path": data.feature_path(day),
        "feature_shards": int(settings.feature_shards) if combine else 1,
        # the DAG maps train over this: fit only while the day's anchor is undecided
        "anchor": anchor_for(settings, day).isoformat(),
        "needs_training": decision is None,
        "decision_path": decision,
    }


def feature_stats_day(settings: Settings, day: date, shard: int) -> dict[str, Any]:
    """Shard ``shard``'s part of the day's feature plan (customers, products, countries, RFM summary)."""
    data = RunData.load(settings, day, snapshots_from=day)
    history = data.shard_history(shard, hand_on=data.feature_part_path(shard, LINES_PART))
    lines = prepare_lines(history, day, description=settings.use_text, lookback=int(settings.feature_lookback_days))
    stats = shard_stats(lines)
    stats.write(data.ws.per_source, lambda part: data.feature_part_path(shard, part))
    return {"day": day.isoformat(), "shard": shard, "shards": int(settings.feature_shards), "customers": stats.customers,
            "lines": int(len(lines.tx)), "products": int(len(stats.products))}


def feature_part_day(settings: Settings, day: date, shard: int) -> dict[str, Any]:
    """Shard ``shard``'s customers' features under the plan of every shard's stats."""
    data = RunData.load(settings, day, snapshots_from=day)
    plan = plan_features(day, _all_stats(data, frames=("scalars", "countries", "products")))  # not the summaries
    handed = data.feature_part_path(shard, LINES_PART)
    if not data.ws.per_source.exists(handed):
        raise MissingInput(f"no lines of shard {shard} for {day} at {handed}: clear the day's feature_stats tasks too")
    lines = prepare_lines(data.handed_history(handed), day, description=settings.use_text, lookback=int(settings.feature_lookback_days))
    product = data.vectors if settings.use_text else None
    user = (data.texts, data.vectors) if data.user_text else None
    part = customer_features(lines, plan, product, user)
    path = data.feature_part_path(shard, FEATURES_PART)
    data.ws.per_source.write_parquet(part.reset_index(), path)
    return {"day": day.isoformat(), "shard": shard, "shards": int(settings.feature_shards), "customers": int(len(part)),
            "features_path": path}


def _all_stats(data: RunData, frames: tuple[str, ...] | None = None) -> list[ShardStats]:
    n = int(data.settings.feature_shards)
    missing = [k for k in range(n) if not data.ws.per_source.exists(data.feature_part_path(k, "scalars"))]
    if missing:
        raise MissingInput(
            f"no feature stats of shard(s) {missing} of {n} for {data.day} under {data.ws.per_source.path('feature_shards', data.day)}: "
            "clear the day's feature_stats tasks too (they run before feature_part and features)"
        )
    return [ShardStats.read(data.ws.per_source, lambda part, k=k: data.feature_part_path(k, part), frames) for k in range(n)]


def _combined(data: RunData) -> Any:
    store, n = data.ws.per_source, int(data.settings.feature_shards)
    stats = _all_stats(data)
    paths = [data.feature_part_path(k, FEATURES_PART) for k in range(n)]
    missing = [k for k, p in enumerate(paths) if not store.exists(p)]
    if missing:
        raise MissingInput(f"no features of shard(s) {missing} of {n} for {data.day}: clear the day's feature_part tasks too")
    parts = [store.read_parquet(p, index="customer_id") for p in paths]
    f = finish_features(plan_features(data.day, stats), parts, [s.summary for s in stats])
    data.store_features(data.day, f)
    for k in range(n):  # handed on: the day's features are stored
        for part in (*ShardStats.FRAMES, LINES_PART, FEATURES_PART):
            path = data.feature_part_path(k, part)
            fresh_fs(path).rm(path)
    return f
