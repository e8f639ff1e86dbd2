"""Days: parsing, which day a run covers, and the fixed grids of snapshots and anchors.

Snapshot days (training tables) and anchor days (model fits) lie on grids ``EPOCH + k * step``,
so a day's snapshots and anchor are the same whichever other days ran before it, or in which
order. A run for day D scores with the model decided at its anchor ``A = anchor_for(D)``, the
latest anchor-grid day <= D (or D itself with ``force_retrain``).
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING

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
    * Otherwise a scheduled/backfill run with logical date L covers the day that ended at L:
      D = L.date() - 1 day. The ``@daily`` cron timetable fires at 00:00 of D+1, once D is over.
    * Manual runs without a logical date fall back to the time the run was queued for.
    """
    if day_param:
        try:
            return parse_day(str(day_param))
        except ValueError as exc:
            raise ValueError(f"Param 'day' must be YYYY-MM-DD, got {day_param!r}") from exc
    ref = logical_date or run_after
    if ref is None:
        raise ValueError("cannot tell which day this run covers: no 'day' Param and no logical date")
    return ref.date() - timedelta(days=1)


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
