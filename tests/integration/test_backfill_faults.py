"""A real backfill under the scheduler, with faults injected, ends equal to a clean run.

No mocks: a private Airflow (``tools/localairflow.py``: embedded PostgreSQL, scheduler
with the preloading LocalExecutor, dag-processor, api-server) backfills 10 days of a small demo
source written as CSV with a corrupt day in it. Faults:

* bad rows on one day (text in Quantity / UnitPrice, a fractional CustomerID, a duplicated line)
  and a return without a cancellation code (a clean negative line): quarantined with their reasons,
  counts reconcile, nothing is lost;
* the first ``train`` task (fitting the anchor's models, writing artefacts) is SIGKILLed while it
  runs: its retry succeeds and leaves no partial file;
* then the source file is replaced by a corrupt one and one more day is backfilled: the run fails
  at ``extract`` with an error naming the file, does not retry; the file is fixed and the failed
  run is reprocessed: it succeeds.
* a backfill of the same days with another source is refused before it is created (its runs
  would be rerun with their own conf), naming the runs; with the same source it is not.

Finally every day's published files (predictions, metrics, report, quarantine) are compared,
byte for byte, with the same days run one after another in one process on fresh storage.
"""

from __future__ import annotations

import io
import json
import os
import signal
import threading
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

FIRST, LAST = date(2024, 6, 20), date(2024, 6, 29)  # days = logical dates (logical date D covers D)
BAD_DAY = date(2024, 6, 25)
EXTRA = date(2024, 6, 30)  # the day run against a corrupt source
TIMEOUT_S = 1200


def _write_source(path: Path) -> dict[str, int]:
    """The demo source as CSV (all text), plus bad rows dated BAD_DAY; returns expected reasons."""
    import pandas as pd

    from purchasing_power.demo import generate_demo_transactions

    df = generate_demo_transactions(n_customers=150, start=date(2023, 7, 1), end=date(2024, 6, 30), seed=11)
    df = df.astype({c: "string" for c in df.columns if c != "InvoiceDate"})
    df["InvoiceDate"] = df["InvoiceDate"].dt.strftime("%Y-%m-%d %H:%M:%S")
    good = df[df["InvoiceDate"].str.startswith(BAD_DAY.isoformat()) & ~df["InvoiceNo"].str.startswith("C")].iloc[0]
    ts = f"{BAD_DAY} 13:37:00"

    def row(**kw):
        return {**good.to_dict(), "InvoiceDate": ts, **kw}

    bad = [
        row(Quantity="abc", InvoiceNo="900001"),
        row(UnitPrice="n/a", InvoiceNo="900002"),
        row(CustomerID="12.5", InvoiceNo="900003"),
        row(Quantity="-4", InvoiceNo="900004"),
        dict(good.to_dict()),  # an exact duplicate of an existing line
    ]
    out = pd.concat([df, pd.DataFrame(bad)], ignore_index=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(path, index=False)
    return {
        "invalid_quantity": 1,
        "invalid_price": 1,
        "invalid_customer": 1,
        "duplicate_line": 1,
    }


class Killer(threading.Thread):
    """SIGKILLs the first ``train`` task process that has run for a second (once)."""

    def __init__(self, la, task_id: str = "train") -> None:
        super().__init__(daemon=True)
        self.la, self.task_id = la, task_id
        self.killed: tuple[str, int] | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        from airflow_rest import parse_time
        from localairflow import DAG_ID

        while not self.stop.is_set() and self.killed is None:
            running = self.la.api.task_instances(DAG_ID, task_id=self.task_id, state="running")
            since = datetime.now(timezone.utc) - timedelta(seconds=1)
            rows = [(t["dag_run_id"], t["pid"]) for t in running
                    if t["pid"] is not None and t["start_date"] and parse_time(t["start_date"]) < since]
            for run_id, pid in rows:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue
                self.killed = (run_id, pid)
                break
            self.stop.wait(0.3)


def _published(root: Path, day: date) -> dict[str, bytes]:
    rels = [f"predictions/ds={day}/predictions.parquet", f"metrics/ds={day}/metrics.json",
            f"metrics/ds={day}/report.json", f"quarantine/ds={day}/quarantine.parquet"]
    return {rel: (root / rel).read_bytes() for rel in rels}


def test_backfill_survives_a_killed_task_bad_rows_and_a_corrupt_source(tmp_path):
    import pandas as pd

    from airflow_rest import backfill_check
    from localairflow import DAG_ID, LocalAirflow

    source = tmp_path / "source" / "transactions.csv"
    expected = _write_source(source)
    storage = tmp_path / "data"
    la = LocalAirflow(tmp_path / "airflow", extra_env={
        "PURCHASING_POWER_SOURCE": str(source),
        "PURCHASING_POWER_STORAGE": str(storage),
        "PURCHASING_POWER_EMBED_DEVICE": "cpu",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
    })
    la.migrate()
    killer = Killer(la)
    try:
        la.start()
        killer.start()
        bf = la.backfill(FIRST, LAST, max_active_runs=3)
        states = la.wait_backfill(bf, (LAST - FIRST).days + 1, TIMEOUT_S)
        killer.stop.set()
        tis = la.task_instances(bf)
        assert set(states.values()) == {"success"}, (states, [t for t in tis if t["state"] not in ("success", "skipped")])

        # the killed train task was retried; its retry succeeded, or was skipped because another
        # day's train fitted and gated the same anchor during the retry delay
        assert killer.killed is not None, "no train task was seen running long enough to be killed"
        run_id = killer.killed[0]
        train = [(t["state"], t["try_number"]) for t in la.api.task_instances(DAG_ID, run_id, task_id="train")]
        assert len(train) == 1 and train[0][0] in ("success", "skipped") and train[0][1] == 2, train
        # no partial file anywhere: every Parquet file the backfill left reads (temp files are hidden)
        for p in storage.rglob("*.parquet"):
            pd.read_parquet(p)
        # the days are published and free again: publish released each run's lease on its day
        assert not list(storage.glob("runs/ds=*/lease.json"))

        # `make backfill`'s check: a backfill with another source would rerun these runs with
        # their own conf; it is refused, naming them (the Dag's own defaults are no difference)
        out = io.StringIO()
        assert backfill_check(la.api, DAG_ID, FIRST.isoformat(), LAST.isoformat(), {"source": str(source) + ".other"},
                              "completed", out=out) == 1, out.getvalue()
        assert out.getvalue().count("backfill__") == len(states), out.getvalue()
        assert backfill_check(la.api, DAG_ID, FIRST.isoformat(), LAST.isoformat(), {"source": str(source)}, "completed",
                              out=io.StringIO()) == 0

        # a corrupt source: the run fails at extract, at once (no retries), naming the file
        good = source.read_bytes()
        source.write_bytes(b"PAR1\x00\x00garbage" * 10)
        bad_bf = la.backfill(EXTRA, EXTRA)
        assert la.wait_backfill(bad_bf, 1, TIMEOUT_S) == {EXTRA.isoformat(): "failed"}
        ext = [(t["state"], t["try_number"]) for t in la.task_instances(bad_bf) if t["task_id"] == "extract"]
        assert ext == [("failed", 1)], ext
        # (a run id names the run's run_after, the end of its interval: D+1, not its logical date)
        bad_run = la.api.backfill_runs(la.api.backfill(bad_bf))[0][0]["dag_run_id"]
        logs = list((tmp_path / "airflow" / "logs").glob(f"dag_id=*/run_id={bad_run}/task_id=extract/attempt=1.log"))
        assert logs, "no extract log for the corrupt-source run"
        text = logs[0].read_text(errors="replace")
        assert "extract:" in text and str(source) in text, text[-3000:]
        # fixed: reprocess the failed day
        source.write_bytes(good)
        fixed = la.backfill(EXTRA, EXTRA, reprocess="failed")
        assert la.wait_backfill(fixed, 1, TIMEOUT_S) == {EXTRA.isoformat(): "success"}
    finally:
        killer.stop.set()
        la.stop()

    # quarantine of the bad day: every bad row with its reason, and the counts reconcile
    q = pd.read_parquet(storage / "quarantine" / f"ds={BAD_DAY}" / "quarantine.parquet")
    counts = q["reason"].value_counts().to_dict()
    for reason, n in expected.items():
        assert counts.get(reason) == n, (reason, counts)
    clean_report = json.loads((storage / "runs" / f"ds={BAD_DAY}" / "clean.json").read_text())
    day = clean_report["run_day"]
    assert day["read"] == day["clean"] + day["quarantined"] and day["quarantined"] == len(q)
    # (undated rows go to whichever day's extract first sees them: tests/unit/test_extract.py)

    # outputs equal a clean run: the same days one after another, in one process, fresh storage
    from purchasing_power.pipeline import run_all

    reference = tmp_path / "reference"
    env = {"PURCHASING_POWER_STORAGE": str(reference), "PURCHASING_POWER_SOURCE": str(source)}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        days = [FIRST + timedelta(days=i) for i in range((EXTRA - FIRST).days + 1)]
        for d in days:
            run_all({}, d)
    finally:
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    for d in days:
        ours, ref = _published(storage, d), _published(reference, d)
        for rel in ours:
            assert ours[rel] == ref[rel], f"{rel} differs between the backfill and a clean run"
