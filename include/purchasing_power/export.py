"""Exports downstream of the published predictions: one tier's customers for a marketing tool.

The example Dag ``purchasing_power_export_high_tier`` is scheduled on the
``purchasing_power_predictions`` Asset. Each Asset event's extra (written by the publish task,
:func:`asset_extra`) names the published day, the predictions file and its row count; the stage
``stages/export.py`` checks them against the storage and writes that day's rows of one tier
(:func:`tier_rows`) to ``exports/ds=D/<tier>-tier.parquet``, and to a table when
``Settings.tier_export`` names one (``PURCHASING_POWER_TIER_EXPORT=sql://<conn_id>/<schema>.<table>``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from purchasing_power.errors import InputError
from purchasing_power.schemas import TIERS

if TYPE_CHECKING:
    import pandas as pd

def asset_extra(publish_report: Mapping[str, Any]) -> dict[str, Any]:
    """The ``purchasing_power_predictions`` Asset event's extra for a publish report."""
    return {
        "day": publish_report["day"],
        "path": publish_report["predictions_path"],
        "rows": int(publish_report["rows"]),
        "metrics_path": publish_report["metrics_path"],
        "volume_status": publish_report.get("volume_status"),
    }


def tier_rows(predictions: pd.DataFrame, tier: str) -> pd.DataFrame:
    """The rows of ``tier``, by customer id."""
    if tier not in TIERS:
        raise InputError(f"tier {tier!r} is not one of {list(TIERS)}")
    return predictions[predictions["tier"] == tier].sort_values("customer_id", kind="stable").reset_index(drop=True)
