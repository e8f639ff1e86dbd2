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
    "publish": "purchasing_power.publish:publish_day",
}


def stage_function(name: str) -> Callable[[Settings, date], dict[str, Any]]:
    try:
        target = STAGES[name]
    except KeyError:
        raise ValueError(f"unknown stage {name!r}; stages are {list(STAGES)}") from None
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


def settings_for(params: Mapping[str, Any] | None) -> Settings:
    return Settings.from_env().with_conf(params or {})


def run_stage(
    name: str,
    params: Mapping[str, Any] | None = None,
    logical_date: datetime | None = None,
    run_after: datetime | None = None,
) -> str:
    """Run one stage for the run's day; return the path of its report."""
    params = dict(params or {})
    settings = settings_for(params)
    day = resolve_day(params.get("day"), logical_date, run_after)
    log.info("stage %s for day %s (storage %s, source %s)", name, day, settings.storage, settings.resolved_source)
    report = stage_function(name)(settings, day)
    out = Storage.at(settings.storage)
    return out.write_json(report, out.path("runs", day, f"{name}.json"))


def run_all(params: Mapping[str, Any] | None = None, day: date | None = None) -> dict[str, str]:
    """Run every stage in order in this process (for notebooks and benchmarks; the DAG runs
    the same functions as separate tasks)."""
    params = dict(params or {})
    if day is not None:
        params["day"] = day.isoformat()
    return {name: run_stage(name, params) for name in STAGES}
