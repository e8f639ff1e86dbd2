"""The stage runner: what each Airflow task calls.

``run_stage(name, params, logical_date, run_after)`` builds the settings (environment + run
Params), resolves the day the run covers, runs that stage's function, stores its JSON report
under ``runs/ds=D/<stage>.json`` and returns that path: the only thing that goes through XCom.

``params`` is run conf: only the DAG's Params (``settings.CONF_KEYS``). Code that runs stages
itself (tests, benchmarks, notebooks) sets other fields through ``overrides``, which no trigger
can reach.
"""

from __future__ import annotations

import importlib
import logging
from datetime import date, datetime
from typing import Any, Callable, Mapping

from purchasing_power.calendar import resolve_day
from purchasing_power.errors import NothingToDo
from purchasing_power.settings import Settings
from purchasing_power.stages import EXTRA_STAGES, SKIPPED_WITH, STAGES
from purchasing_power.storage import Storage, stage_report_path

log = logging.getLogger(__name__)

def stage_function(name: str) -> Callable[[Settings, date], dict[str, Any]]:
    try:
        target = STAGES.get(name) or EXTRA_STAGES[name]
    except KeyError:
        raise ValueError(f"unknown stage {name!r}; stages are {list(STAGES) + list(EXTRA_STAGES)}") from None
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


def settings_for(params: Mapping[str, Any] | None, overrides: Mapping[str, Any] | None = None) -> Settings:
    """Environment, then run conf ``params`` (the DAG's Params only), then code ``overrides``."""
    return Settings.from_env().with_conf(params or {}).with_overrides(**(overrides or {}))


def run_stage(name: str, *args: Any, **kwargs: Any) -> str:
    """Run one stage for the run's day; return the path of its report
    (``runs/ds=D/<report_name or name>.json``). Arguments as :func:`run_stage_report`."""
    return run_stage_report(name, *args, **kwargs)[0]


def run_stage_report(
    name: str,
    params: Mapping[str, Any] | None = None,
    logical_date: datetime | None = None,
    run_after: datetime | None = None,
    *,
    report_name: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    run_id: str | None = None,
    **kwargs: Any,
) -> tuple[str, dict[str, Any]]:
    """Run stage ``name`` for the day the run covers (``params["day"]``, else the logical date /
    queue time, see ``resolve_day``), store its report under ``runs/ds=D/<report_name or
    name>.json`` and return (that path, the report). ``overrides``: settings set by code (see
    :func:`settings_for`); ``run_id``: the Airflow run's, for its lease on the day (see
    :func:`day_lease`); ``kwargs`` go to the stage function."""
    params = dict(params or {})
    settings = settings_for(params, overrides)
    day = resolve_day(params.get("day"), logical_date, run_after)
    day_lease(settings, day, run_id, name)
    log.info("stage %s for day %s (storage %s, source %s)", name, day, settings.storage, settings.resolved_source)
    report = stage_function(name)(settings, day, **kwargs)
    day_lease(settings, day, run_id, name, finished=True)
    out = Storage.at(settings.storage)
    return out.write_json(report, stage_report_path(out, day, report_name or name)), report


def run_all(
    params: Mapping[str, Any] | None = None,
    day: date | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    timings: dict[str, float] | None = None,
) -> dict[str, str]:
    """Run every stage in order in this process (for notebooks and benchmarks; the DAG runs
    the same functions as separate tasks; with ``feature_shards`` > 1 the features step runs as
    the DAG's feature_stats and feature_part of each shard, then features joining them, and the
    score step as score_part of each shard, then score joining them). ``params``: run conf (the DAG's Params only);
    ``overrides``: any other settings, from code. ``timings``, when given, receives seconds per stage."""
    import time

    params = dict(params or {})
    if day is not None:
        params["day"] = day.isoformat()
    out: dict[str, str] = {}
    skipped: set[str] = set()
    shards = int(settings_for(params, overrides).feature_shards)
    for name in STAGES:
        if name in skipped:
            continue
        if name == "features" and shards > 1:  # as the DAG: the mapped shard steps, then the join
            for step in ("feature_stats", "feature_part"):
                t0 = time.perf_counter()
                for k in range(shards):
                    out[f"{step}-{k:03d}"] = run_feature_shard(step, k, params, overrides=overrides)
                if timings is not None:
                    timings[step] = round(time.perf_counter() - t0, 2)
        if name == "score" and shards > 1:
            t0 = time.perf_counter()
            for k in range(shards):
                out[f"score_part-{k:03d}"] = run_score_shard(k, params, overrides=overrides)
            if timings is not None:
                timings["score_part"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        try:
            if name in ("features", "score"):
                out[name] = run_stage(name, params, overrides=overrides, combine=shards > 1)
            else:
                out[name] = run_stage(name, params, overrides=overrides)
        except NothingToDo as exc:  # as in the DAG: the stage and the ones that only follow it skip
            log.info("%s skipped: %s", name, exc)
            skipped.update(SKIPPED_WITH.get(name, ()))
        if timings is not None:
            timings[name] = round(time.perf_counter() - t0, 2)
    return out


def run_embed_plan(params: Mapping[str, Any] | None, logical_date: datetime | None = None, run_after: datetime | None = None,
                   *, run_id: str | None = None, overrides: Mapping[str, Any] | None = None) -> list[str]:
    """The DAG's ``embed_plan`` task: plan the shards (report saved as ``runs/ds=D/embed.json``)
    and return the shard paths to map the embed task over (paths only, never texts)."""
    _, report = run_stage_report("embed_plan", params, logical_date, run_after, report_name="embed", run_id=run_id, overrides=overrides)
    return list(report["shards"])


def run_features(params: Mapping[str, Any] | None, logical_date: datetime | None = None, run_after: datetime | None = None,
                 *, run_id: str | None = None, overrides: Mapping[str, Any] | None = None, combine: bool = False) -> list[str]:
    """The DAG's ``features`` task: build the day's features (``combine``: join the parts of the
    sharded features tasks) and return what ``train`` maps over: ``[report path]`` when the
    day's anchor still needs a model, ``[]`` when it is decided (train, evaluate and gate are
    then skipped without starting a process)."""
    path, report = run_stage_report("features", params, logical_date, run_after, run_id=run_id, overrides=overrides, combine=combine)
    return [path] if report["needs_training"] else []


def run_feature_shard(step: str, shard: int, params: Mapping[str, Any] | None, logical_date: datetime | None = None,
                      run_after: datetime | None = None, *, run_id: str | None = None,
                      overrides: Mapping[str, Any] | None = None) -> str:
    """The DAG's mapped ``feature_stats`` / ``feature_part`` task for customer shard ``shard``;
    its report is ``runs/ds=D/<step>-<shard>.json``."""
    if step not in ("feature_stats", "feature_part"):
        raise ValueError(f"unknown sharded features step {step!r}")
    return run_stage(step, params, logical_date, run_after, report_name=f"{step}-{int(shard):03d}", shard=int(shard),
                     run_id=run_id, overrides=overrides)


def run_score_shard(shard: int, params: Mapping[str, Any] | None, logical_date: datetime | None = None,
                    run_after: datetime | None = None, *, run_id: str | None = None,
                    overrides: Mapping[str, Any] | None = None) -> str:
    """The DAG's mapped ``score_part`` task for customer shard ``shard``; its report is
    ``runs/ds=D/score_part-<shard>.json``."""
    return run_stage("score_part", params, logical_date, run_after, report_name=f"score_part-{int(shard):03d}", shard=int(shard),
                     run_id=run_id, overrides=overrides)


def run_publish(params: Mapping[str, Any] | None, logical_date: datetime | None = None, run_after: datetime | None = None,
                *, run_id: str | None = None, overrides: Mapping[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """The DAG's ``publish`` task: publish the day; returns (its report's path, the extra of the
    ``purchasing_power_predictions`` Asset event: day, predictions path, rows, ...)."""
    path, report = run_stage_report("publish", params, logical_date, run_after, run_id=run_id, overrides=overrides)
    return path, dict(report["asset_extra"])


def run_export_tier(extra: Mapping[str, Any] | None, tier: str = "high", *, overrides: Mapping[str, Any] | None = None) -> str:
    """The export Dag's task: export ``tier`` of the day a predictions Asset event names (its
    ``extra``: day, path, rows); returns the report's path (``runs/ds=D/export-<tier>.json``)."""
    from purchasing_power.errors import InputError

    extra = dict(extra or {})
    missing = [k for k in ("day", "path", "rows") if k not in extra]
    if missing:
        raise InputError(f"predictions event extra lacks {missing}: got {sorted(extra)}")
    try:
        rows = int(extra["rows"])
    except (TypeError, ValueError):
        raise InputError(f"predictions event extra has a non-integer row count: {extra['rows']!r}") from None
    return run_stage("export_tier", {"day": str(extra["day"])}, report_name=f"export-{tier}", overrides=overrides,
                     path=str(extra["path"]), rows=rows, tier=tier)


def run_embed_shard(shard: str, params: Mapping[str, Any] | None, logical_date: datetime | None = None,
                    run_after: datetime | None = None, *, run_id: str | None = None,
                    overrides: Mapping[str, Any] | None = None) -> str:
    """The DAG's mapped ``embed`` task for one shard; its report is ``runs/ds=D/embed-<shard>.json``.
    The shard path (from the plan's XCom) must lie under the storage root."""
    shard = Storage.at(settings_for(params, overrides).storage).resolve_inside(shard)
    name = shard.rstrip("/").rsplit("/", 1)[-1].removesuffix(".parquet")
    return run_stage("embed_shard", params, logical_date, run_after, report_name=f"embed-{name}", shard=shard, run_id=run_id,
                     overrides=overrides)


def day_lease(settings: Settings, day: date, run_id: str | None, stage: str, *, finished: bool = False) -> None:
    """One Airflow run of a day at a time (``lease.py``). Before a stage runs: take or renew run
    ``run_id``'s lease on ``day``; another run's live lease raises ``DayBusy`` (the task fails and
    its retries try again). After ``publish`` (``finished``), release it. Code that runs stages
    itself (``run_all``, tests: no run id) holds nothing."""
    if not run_id:
        return
    from purchasing_power import lease

    store = Storage.at(settings.storage)
    if not finished:
        lease.acquire(store, day, run_id, stage=stage, ttl=lease.ttl_from_env())
    elif stage == "publish":
        lease.release(store, day, run_id)


def release_day_lease(params: Mapping[str, Any] | None, logical_date: datetime | None = None,
                      run_after: datetime | None = None, *, run_id: str) -> None:
    """The DAG's ``on_failure_callback``: a run whose task failed for good frees its day at once
    (not only when the lease expires), so that a rerun of the day can start."""
    from purchasing_power import lease

    params = dict(params or {})
    settings = settings_for(params)
    day = resolve_day(params.get("day"), logical_date, run_after)
    if lease.release(Storage.at(settings.storage), day, run_id):
        log.info("released run %s's lease on day %s", run_id, day)
