"""The stage runner: what each Airflow task calls.

``run_stage(name, params, logical_date, run_after)`` builds the settings (environment + run
Params), resolves the day the run covers, runs that stage's function, stores its JSON report
under ``runs/ds=D/<stage>.json`` and returns that path: the only thing that goes through XCom.
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


def settings_for(params: Mapping[str, Any] | None) -> Settings:
    return Settings.from_env().with_conf(params or {})


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
    **kwargs: Any,
) -> tuple[str, dict[str, Any]]:
    """Run stage ``name`` for the day the run covers (``params["day"]``, else the logical date /
    queue time, see ``resolve_day``), store its report under ``runs/ds=D/<report_name or
    name>.json`` and return (that path, the report). ``kwargs`` go to the stage function."""
    params = dict(params or {})
    settings = settings_for(params)
    day = resolve_day(params.get("day"), logical_date, run_after)
    log.info("stage %s for day %s (storage %s, source %s)", name, day, settings.storage, settings.resolved_source)
    report = stage_function(name)(settings, day, **kwargs)
    out = Storage.at(settings.storage)
    return out.write_json(report, stage_report_path(out, day, report_name or name)), report


def run_all(params: Mapping[str, Any] | None = None, day: date | None = None, *, timings: dict[str, float] | None = None) -> dict[str, str]:
    """Run every stage in order in this process (for notebooks and benchmarks; the DAG runs
    the same functions as separate tasks). ``timings``, when given, receives seconds per stage."""
    import time

    params = dict(params or {})
    if day is not None:
        params["day"] = day.isoformat()
    out: dict[str, str] = {}
    skipped: set[str] = set()
    for name in STAGES:
        if name in skipped:
            continue
        t0 = time.perf_counter()
        try:
            out[name] = run_stage(name, params)
        except NothingToDo as exc:  # as in the DAG: the stage and the ones that only follow it skip
            log.info("%s skipped: %s", name, exc)
            skipped.update(SKIPPED_WITH.get(name, ()))
        if timings is not None:
            timings[name] = round(time.perf_counter() - t0, 2)
    return out


def run_embed_plan(params: Mapping[str, Any] | None, logical_date: datetime | None = None, run_after: datetime | None = None) -> list[str]:
    """The DAG's ``embed_plan`` task: plan the shards (report saved as ``runs/ds=D/embed.json``)
    and return the shard paths to map the embed task over (paths only, never texts)."""
    _, report = run_stage_report("embed_plan", params, logical_date, run_after, report_name="embed")
    return list(report["shards"])


def run_features(params: Mapping[str, Any] | None, logical_date: datetime | None = None, run_after: datetime | None = None) -> list[str]:
    """The DAG's ``features`` task: build the day's features and return what ``train`` maps
    over: ``[report path]`` when the day's anchor still needs a model, ``[]`` when it is
    decided (train, evaluate and gate are then skipped without starting a process)."""
    path, report = run_stage_report("features", params, logical_date, run_after)
    return [path] if report["needs_training"] else []


def run_embed_shard(shard: str, params: Mapping[str, Any] | None, logical_date: datetime | None = None, run_after: datetime | None = None) -> str:
    """The DAG's mapped ``embed`` task for one shard; its report is ``runs/ds=D/embed-<shard>.json``."""
    name = shard.rstrip("/").rsplit("/", 1)[-1].removesuffix(".parquet")
    return run_stage("embed_shard", params, logical_date, run_after, report_name=f"embed-{name}", shard=shard)
