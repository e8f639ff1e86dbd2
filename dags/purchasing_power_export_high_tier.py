"""Example downstream Dag: export each published day's high tier (thin wiring; logic in
include/purchasing_power/stages/export.py)."""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, dag, get_current_context, task

from purchasing_power.notify import TASK_FAILED, WebhookNotifier
from purchasing_power.storage import PREDICTIONS_ASSET

PREDICTIONS = Asset(name=PREDICTIONS_ASSET)

DOC = """
# Purchasing power — export the high tier

An example of a Dag downstream of `purchasing_power_daily`, **scheduled on the
`purchasing_power_predictions` Asset**: every publish of a day (a scheduled run, a manual run,
each day of a backfill) queues one run here. Its task reads the Asset events that triggered the
run; each event's extra names the published `day`, the predictions file (`path`) and its `rows`.
For each, it writes the day's `high` tier to `exports/ds=D/high-tier.parquet` under the
storage root and, when `PURCHASING_POWER_TIER_EXPORT=sql://<conn_id>/<schema>.<table>` is set,
replaces that day's rows of the table (created when missing; one row per customer). A rerun
overwrites the same day. An event whose file is missing, lies outside the storage root or holds
another row count fails the task with the reason, without retries.

Copy this Dag to send the tier elsewhere (a CRM upload, a feature store): the Asset event gives
the day and the file; nothing else is needed from the daily Dag.
"""


@dag(
    dag_id="purchasing_power_export_high_tier",
    schedule=[PREDICTIONS],
    start_date=pendulum.datetime(2000, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={
        "owner": "purchasing-power",
        "retries": 2,
        "retry_delay": timedelta(seconds=30),
        "execution_timeout": timedelta(minutes=30),
        "on_failure_callback": WebhookNotifier(TASK_FAILED),
    },
    doc_md=DOC,
    tags=["purchasing-power", "export"],
)
def purchasing_power_export_high_tier():
    @task
    def export_high_tier() -> list[str]:
        """Export the high tier of every day whose publish triggered this run."""
        from airflow.sdk.exceptions import AirflowFailException

        from purchasing_power.errors import InputError
        from purchasing_power.pipeline import run_export_tier

        events = get_current_context()["triggering_asset_events"][PREDICTIONS]
        try:
            return [run_export_tier(event.extra, "high") for event in events]
        except InputError as exc:  # the event and the storage disagree: retrying cannot help
            raise AirflowFailException(f"export_high_tier: {exc}") from exc

    export_high_tier()


purchasing_power_export_high_tier()
