"""The export stage of the downstream Dag: one tier of a published day, from the predictions
Asset event that names it (``export.event_fields``)."""

from __future__ import annotations

from datetime import date
from typing import Any

from purchasing_power.errors import InputError
from purchasing_power.export import tier_rows
from purchasing_power.settings import Settings
from purchasing_power.storage import TIER_EXPORT_FILE, Storage


def export_tier_day(settings: Settings, day: date, *, path: str, rows: int, tier: str = "high") -> dict[str, Any]:
    """Write ``tier``'s rows of ``day``'s published predictions to ``exports/ds=D/`` (and to
    ``settings.tier_export``'s table, replacing the day's rows). ``path`` and ``rows`` come from
    the Asset event: the path must lie under the storage root and hold that many rows, else the
    event and the storage disagree and nothing is written."""
    store = Storage.at(settings.storage)
    path = store.resolve_inside(path)
    if not store.exists(path):
        raise InputError(f"predictions event for {day} names {path}, which does not exist")
    predictions = store.read_parquet(path)
    if len(predictions) != rows:
        raise InputError(f"predictions event for {day} reports {rows} rows; {path} holds {len(predictions)}")
    if len(predictions) and set(predictions["as_of"].unique()) != {day}:
        raise InputError(f"{path} holds predictions of other days than {day}")
    selected = tier_rows(predictions, tier)
    out = store.write_parquet(selected, store.path("exports", day, TIER_EXPORT_FILE.format(tier=tier)))
    report: dict[str, Any] = {"day": day.isoformat(), "tier": tier, "rows": int(len(selected)), "path": out, "table": None}
    if settings.tier_export:
        from purchasing_power.warehouse import write_results

        report["table"] = write_results(settings.tier_export, selected, day)
    return report
