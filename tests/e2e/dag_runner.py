"""Run the DAG once with ``dag.test()`` in a fresh process (so Airflow reads this test's config).

usage: python dag_runner.py DAGS_FOLDER LOGICAL_DATE CONF_JSON
Prints the run's final state on the last line; exit code 0 only when the run succeeded.
"""

from __future__ import annotations

import json
import sys

import pendulum
from airflow.dag_processing.dagbag import DagBag


def main() -> int:
    folder, logical, conf = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    bag = DagBag(dag_folder=folder)
    if bag.import_errors:
        print(f"import errors: {bag.import_errors}", file=sys.stderr)
        return 2
    dag = bag.dags["purchasing_power_daily"]
    run = dag.test(logical_date=pendulum.parse(logical), run_conf=conf)
    state = str(getattr(run.state, "value", run.state))
    print(f"ASSET_EVENTS {json.dumps(asset_events(run.run_id))}")
    print(f"STATE {state}")
    return 0 if state == "success" else 1


def asset_events(run_id: str) -> list[dict]:
    """The Asset events the run's tasks emitted (name and extra), from the metadata DB."""
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(select(AssetEvent).where(AssetEvent.source_run_id == run_id)).all()
        return [{"asset": e.asset.name, "task_id": e.source_task_id, "extra": e.extra} for e in rows]


if __name__ == "__main__":
    sys.exit(main())
