"""Days: parsing, which day a run covers (and whether an existing run covers it with the conf
a backfill would use), and the fixed grids of snapshots and anchors.

Snapshot days (training tables) and anchor days (model fits) lie on grids ``EPOCH + k * step``,
so a day's snapshots and anchor are the same whichever other days ran before it, or in which
order. A run for day D scores with the model decided at its anchor ``A = anchor_for(D)``, the
latest anchor-grid day <= D (or D itself with ``force_retrain``).
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta, timezone
from typing import TYPE_CHECKING, Any, Iterable, Mapping

if TYPE_CHECKING:  # pragma: no cover
    from purchasing_power.settings import Settings

#: Grid epoch: a Sunday. Snapshot and anchor days are EPOCH + k * step.
EPOCH = date(2000, 1, 2)

_DAY_RE = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_day(value: str) -> date:
    """Strict ``YYYY-MM-DD`` (``date.fromisoformat`` also takes ``20110831`` and week dates)."""
    if not isinstance(value, str) or not _DAY_RE.fullmatch(value):
        raise ValueError(f"day must be YYYY-MM-DD, got {value!r}")
    return date.fromisoformat(value)


def resolve_day(day_param: str | None, logical_date: datetime | None, run_after: datetime | None) -> date:
    """The day D a run covers: it predicts as of the end of D.

    * ``day`` Param/conf, when given, wins (manual runs of any day).
    * A logical date at 00:00 UTC names the day: **logical date D covers day D**. Scheduled and
      backfill runs always have one: the Dag's data-interval timetable gives the run with logical
      date D the interval [D, D+1) and starts it once D is over.
    * A logical date inside a day (the trigger form fills in "now") or none at all (then the time
      the run was queued for, ``run_after``) covers the last complete day before it.

    Times are read in UTC (a naive one is taken as UTC).
    """
    if day_param:
        try:
            return parse_day(str(day_param))
        except ValueError as exc:
            raise ValueError(f"Param 'day' must be YYYY-MM-DD, got {day_param!r}") from exc
    if logical_date is not None:
        at = _utc(logical_date)
        if at.time() == time(0):
            return at.date()
        return at.date() - timedelta(days=1)
    if run_after is None:
        raise ValueError("cannot tell which day this run covers: no 'day' Param and no logical date")
    return _utc(run_after).date() - timedelta(days=1)


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=timezone.utc) if at.tzinfo is None else at.astimezone(timezone.utc)


#: What a backfill with each ``reprocess_behavior`` reruns among the existing runs of its range
#: (runs still queued or running are always left alone).
REPROCESSED_STATES = {"none": frozenset(), "failed": frozenset({"failed"}), "completed": frozenset({"failed", "success"})}


def stale_runs(runs: Iterable[Mapping[str, Any]], conf: Mapping[str, Any] | None, reprocess: str,
               defaults: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The existing Dag runs a backfill with ``conf`` would rerun with a different computation.

    A backfill reruns an existing run (``reprocess`` ``failed``/``completed``) with the conf that
    run was created with, not the backfill's: a run made with another source would silently be
    recomputed from it. ``runs`` are REST API Dag runs (``logical_date``, ``state``, ``conf``);
    ``defaults`` the Dag's Param values. Two confs differ when they differ once a key equal to
    its Param's default is dropped, and a ``day`` equal to the day the run's logical date covers.
    """
    if reprocess not in REPROCESSED_STATES:
        raise ValueError(f"unknown reprocess behaviour {reprocess!r}; one of {sorted(REPROCESSED_STATES)}")
    rerun = REPROCESSED_STATES[reprocess]
    out = []
    for run in runs:
        if str(run.get("state")) not in rerun or not run.get("logical_date"):
            continue
        covers = resolve_day(None, datetime.fromisoformat(str(run["logical_date"]).replace("Z", "+00:00")), None)
        if _effective_conf(run.get("conf"), covers, defaults) != _effective_conf(conf, covers, defaults):
            out.append(run)
    return out


def _effective_conf(conf: Mapping[str, Any] | None, covers: date, defaults: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in (conf or {}).items():
        if key in defaults and value == defaults[key]:
            continue
        if key == "day" and (not value or str(value) == covers.isoformat()):
            continue
        out[key] = value
    return out


def grid_days(start: date, end: date, step: int) -> list[date]:
    """Grid points EPOCH + k*step within [start, end], ascending."""
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


def anchor_for(settings: Settings, day: date) -> date:
    """The anchor whose model scores ``day``: the latest anchor-grid day <= day (the day
    itself with ``force_retrain``)."""
    return day if settings.force_retrain else grid_floor(day, settings.retrain_every_days)


def previous_anchor(settings: Settings, anchor: date) -> date:
    """The anchor before ``anchor`` on the grid: it provides ``anchor``'s champion."""
    return grid_floor(anchor - timedelta(days=1), settings.retrain_every_days)
