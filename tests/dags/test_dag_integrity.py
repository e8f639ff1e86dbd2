"""DAG integrity: imports cleanly, parses fast, stays thin, wires the documented stages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "dags"
DAG_ID = "purchasing_power_daily"
STAGES = ["extract", "clean", "embed_plan", "embed", "features", "train", "evaluate", "gate", "score", "publish"]
HEAVY = ("torch", "transformers", "sklearn", "pandas", "numpy", "imblearn", "pyarrow", "scipy", "sentence_transformers")

PROBE = r"""
import json, sys, time
t0 = time.perf_counter()
import airflow.sdk  # the SDK itself is not the DAG file's cost
t1 = time.perf_counter()
import importlib.util
spec = importlib.util.spec_from_file_location("pp_dag", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
before = set(sys.modules)
spec.loader.exec_module(mod)
t2 = time.perf_counter()
heavy = sorted(m for m in set(sys.modules) - before if m.split(".")[0] in sys.argv[2].split(","))
print(json.dumps({"sdk_s": t1 - t0, "dag_s": t2 - t1, "heavy": sorted({m.split(".")[0] for m in heavy})}))
"""


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory):
    os.environ.setdefault("AIRFLOW_HOME", str(tmp_path_factory.mktemp("airflow_home")))
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert DAG_ID in dagbag.dag_ids


def test_tasks_and_dependencies_as_documented(dagbag):
    dag = dagbag.dags[DAG_ID]
    assert [t.task_id for t in dag.topological_sort()] == STAGES
    for up, down in zip(STAGES, STAGES[1:]):
        assert dag.get_task(down).upstream_task_ids == {up}
    assert dag.get_task("embed").queue == "gpu"
    assert dag.get_task("embed").pool == "gpu"
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    assert isinstance(dag.get_task("embed"), MappedOperator), "embed is mapped over the plan's shards"
    # train is mapped over features' answer: no instance (and no process) once the anchor is decided
    assert isinstance(dag.get_task("train"), MappedOperator)
    assert dag.get_task("features").trigger_rule == "none_failed"  # runs when no shard had work
    assert dag.get_task("extract").retries >= 1 and dag.get_task("extract").retry_exponential_backoff
    # tasks writing partitions shared by several days run one at a time across runs
    for name in ("extract", "clean", "train", "evaluate", "gate"):
        assert dag.get_task(name).max_active_tis_per_dag == 1, name
    assert dag.get_task("score").trigger_rule == "none_failed"  # runs when train skipped (anchor decided)
    for t in dag.tasks:
        assert t.doc_md or t.doc, f"task {t.task_id} has no doc"
    assert dag.doc_md and "logical date D covers day D" in dag.doc_md


def test_logical_date_d_covers_day_d_and_every_day_of_the_sources_runs(dagbag):
    """A data-interval timetable: the run with logical date D has the interval [D, D+1) and fires
    once D is over; the start date lies before any source's first day (a run before it would be
    marked successful without running a task)."""
    from datetime import date, datetime, timedelta, timezone

    from airflow.sdk import CronDataIntervalTimetable
    from airflow.serialization.serialized_objects import DagSerialization

    from purchasing_power.calendar import resolve_day

    dag = dagbag.dags[DAG_ID]
    assert isinstance(dag.timetable, CronDataIntervalTimetable)
    assert (dag.timetable.expression, str(dag.timetable.timezone)) == ("0 0 * * *", "UTC")
    assert dag.catchup is False
    assert dag.start_date <= datetime(2000, 1, 1, tzinfo=timezone.utc)
    for t in dag.tasks:
        assert t.start_date is None or t.start_date <= dag.start_date, t.task_id

    # backfilling 2011-09-01 .. 2011-09-30 (the UI, `make backfill`) creates logical dates
    # 2011-09-01 .. 2011-09-30, each covering its own day, and 2010-05-31 (before the old start
    # date 2010-12-02) is a day like any other
    scheduler_dag = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
    for first, last in [(date(2011, 9, 1), date(2011, 9, 30)), (date(2010, 5, 31), date(2010, 5, 31))]:
        infos = list(scheduler_dag.iter_dagrun_infos_between(
            datetime(first.year, first.month, first.day, tzinfo=timezone.utc),
            datetime(last.year, last.month, last.day, tzinfo=timezone.utc),
        ))
        days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
        assert [i.logical_date.date() for i in infos] == days
        for info, day in zip(infos, days):
            assert info.data_interval.start == info.logical_date
            assert info.data_interval.end == info.logical_date + timedelta(days=1) == info.run_after
            assert resolve_day(None, info.logical_date, info.run_after) == day


def test_params_validate_in_trigger_form(dagbag):
    dag = dagbag.dags[DAG_ID]
    params = dag.params
    assert {"day", "source", "column_map", "model", "force_retrain"} <= set(params.keys())
    from airflow.sdk.definitions.param import ParamsDict
    from airflow.sdk.exceptions import ParamValidationError

    good = ParamsDict({k: v for k, v in params.items()})
    good.update({"day": "2011-08-31", "column_map": {"Invoice": "InvoiceNo"}})
    good.validate()
    for key, bad in [("day", "31/08/2011"), ("force_retrain", "yes"), ("column_map", "Invoice")]:
        p = ParamsDict({k: v for k, v in params.items()})
        with pytest.raises(ParamValidationError):
            p[key] = bad  # validated on set (and again by validate())
            p.validate()


def test_publish_emits_predictions_asset(dagbag):
    dag = dagbag.dags[DAG_ID]
    outlets = dag.get_task("publish").outlets
    assert [o.name for o in outlets] == ["purchasing_power_predictions"]


@pytest.mark.parametrize("dag_file", ["purchasing_power_daily.py", "purchasing_power_export_high_tier.py"])
def test_parses_fast_without_heavy_imports(dag_file):
    env = dict(os.environ, PYTHONPATH=f"{ROOT / 'include'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(DAGS / dag_file), ",".join(HEAVY)],
        capture_output=True, text=True, env=env, check=True,
    )
    probe = json.loads(out.stdout.strip().splitlines()[-1])
    assert probe["heavy"] == [], f"DAG file imports heavy modules at top level: {probe['heavy']}"
    assert probe["dag_s"] < 2.0, f"DAG file took {probe['dag_s']:.2f}s to parse"


def test_dag_files_hold_no_logic():
    """Thin wiring: every task body is one call into include/ (no pandas/sklearn code in dags/)."""
    files = sorted(DAGS.glob("*.py"))
    assert len(files) == 2
    for path in files:
        text = path.read_text()
        for word in ("import pandas", "import torch", "read_parquet", "to_parquet", "datetime.now", "utcnow"):
            assert word not in text, (path.name, word)


def test_every_task_has_a_timeout_and_alerts_on_failure(dagbag):
    from purchasing_power.notify import CHAMPION_KEPT, TASK_FAILED, WebhookNotifier

    for dag_id in (DAG_ID, "purchasing_power_export_high_tier"):
        for t in dagbag.dags[dag_id].tasks:
            assert t.execution_timeout is not None and t.execution_timeout.total_seconds() > 0, (dag_id, t.task_id)
            events = [c.event for c in t.on_failure_callback if isinstance(c, WebhookNotifier)]
            assert events == [TASK_FAILED], (dag_id, t.task_id, t.on_failure_callback)
            assert not t.on_retry_callback, "a retry is not a failure for good: no alert"
    gate = dagbag.dags[DAG_ID].get_task("gate")
    assert [c.event for c in gate.on_success_callback] == [CHAMPION_KEPT]


def test_the_export_dag_is_scheduled_on_the_predictions_asset(dagbag):
    dag = dagbag.dags["purchasing_power_export_high_tier"]
    assert [a.name for a in dag.timetable.asset_condition.objects] == ["purchasing_power_predictions"]
    assert [t.task_id for t in dag.tasks] == ["export_high_tier"]
    assert dag.doc_md and "high" in dag.doc_md


def test_sharded_features_map_over_the_customer_shards(monkeypatch):
    """PURCHASING_POWER_FEATURE_SHARDS=4: features runs as feature_stats x4 -> feature_part x4 ->
    features (the join), score as score_part x4 -> score (the join); everything else keeps its place."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    monkeypatch.setenv("PURCHASING_POWER_FEATURE_SHARDS", "4")
    dag = DagBag(dag_folder=str(DAGS / "purchasing_power_daily.py")).dags[DAG_ID]
    order = [t.task_id for t in dag.topological_sort()]
    i = STAGES.index("score")
    assert order == STAGES[:4] + ["feature_stats", "feature_part"] + STAGES[4:i] + ["score_part"] + STAGES[i:]
    for name in ("feature_stats", "feature_part", "score_part"):
        task = dag.get_task(name)
        assert isinstance(task, MappedOperator) and task.op_kwargs_expand_input.value == {"shard": [0, 1, 2, 3]}, name
        assert task.doc_md and task.execution_timeout is not None
    assert dag.get_task("feature_stats").upstream_task_ids == {"embed"}
    assert dag.get_task("feature_stats").trigger_rule == "none_failed"  # runs when no text needed embedding
    assert dag.get_task("feature_part").upstream_task_ids == {"feature_stats"}
    assert dag.get_task("features").upstream_task_ids == {"feature_part"}
    assert dag.get_task("score_part").upstream_task_ids == {"gate"}
    assert dag.get_task("score_part").trigger_rule == "none_failed"  # runs when the anchor was decided (gate skipped)
    assert dag.get_task("score").upstream_task_ids == {"score_part"}
    assert "score_part ×N → score" in dag.doc_md
    assert "feature_stats ×N → feature_part ×N → features" in dag.doc_md

    monkeypatch.setenv("PURCHASING_POWER_FEATURE_SHARDS", "0")
    bad = DagBag(dag_folder=str(DAGS / "purchasing_power_daily.py"))
    assert any("feature_shards must be within 1..256" in err for err in bad.import_errors.values()), bad.import_errors
