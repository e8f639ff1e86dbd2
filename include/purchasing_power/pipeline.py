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

from purchasing_power.settings import Settings, resolve_day
from purchasing_power.storage import Storage

log = logging.getLogger(__name__)

#: Stages the DAG runs in other shapes: ``embed`` becomes ``embed_plan`` + ``embed_shard``
#: mapped over the plan's shards (dynamic task mapping).
EXTRA_STAGES: dict[str, str] = {
    "embed_plan": "purchasing_power.embed:plan_day",
    "embed_shard": "purchasing_power.embed:embed_shard",
}

#: stage name -> "module:function"; each function takes (settings, day) and returns a JSON-able report.
STAGES: dict[str, str] = {
    "extract": "purchasing_power.extract:extract_day",
    "clean": "purchasing_power.clean:clean_day",
    "embed": "purchasing_power.embed:embed_day",
    "features": "purchasing_power.features:features_day",
    "train": "purchasing_power.train:train_day",
    "evaluate": "purchasing_power.gate:evaluate_day",
    "gate": "purchasing_power.gate:gate_day",
    "score": "purchasing_power.score:score_day",
    "publish": "purchasing_power.publish:publish_day",  # also writes the UI page's report
}


#: stage -> the stages the DAG skips with it (their only upstream) when it has nothing to do.
SKIPPED_WITH: dict[str, tuple[str, ...]] = {"train": ("evaluate", "gate")}


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
    return out.write_json(report, out.path("runs", day, f"{report_name or name}.json")), report


def run_all(params: Mapping[str, Any] | None = None, day: date | None = None, *, timings: dict[str, float] | None = None) -> dict[str, str]:
    """Run every stage in order in this process (for notebooks and benchmarks; the DAG runs
    the same functions as separate tasks). ``timings``, when given, receives seconds per stage."""
    import time

    from purchasing_power.errors import NothingToDo

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
