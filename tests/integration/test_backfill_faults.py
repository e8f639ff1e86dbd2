"""A real backfill under the scheduler, with faults injected, ends equal to a clean run.

No mocks: a private Airflow (``tools/localairflow.py``: embedded PostgreSQL, scheduler
with the preloading LocalExecutor, dag-processor, api-server) backfills 10 days of a small demo
source written as CSV with a corrupt day in it. Faults:

* bad rows on one day (text in Quantity / UnitPrice, a fractional CustomerID, a duplicated line)
  and a return without a cancellation code (a clean negative line): quarantined with their reasons,
  counts reconcile, nothing is lost;
* the first ``extract``, ``clean``, ``train`` and ``publish`` task processes are SIGKILLed inside
  their stage (:class:`Killer`): extract and clean early in their work (the first of each stages
  the source or cleans the whole history, writing a year of partitions and then its manifest),
  train a second into its fit, publish right after it has replaced the day's predictions, before
  or while it writes the commit marker ``metrics.json``. Each is retried (try 2) and succeeds
  (train may instead skip, when another day's train decided the anchor meanwhile); the runs
  succeed, no partial file is left;
* then the source file is replaced by a corrupt one and one more day is backfilled: the run fails
  at ``extract`` with an error naming the file, does not retry; the file is fixed and the failed
  run is reprocessed: it succeeds.
* a backfill of the same days with another source is refused before it is created (its runs
  would be rerun with their own conf), naming the runs; with the same source it is not.
* two manual runs of the bad day triggered at once (same ``day`` conf): the day's lease
  (``lease.py``) lets one run at a time. The first to take it runs through; the other's first task
  fails naming that run and retries until the day is free, then reruns the day (it fails, naming
  the holder, only if the holder outlasts its retries). The day's files afterwards are the bytes
  it had before.

Finally every day's published files (predictions, metrics, report, quarantine) are compared,
byte for byte, with the same days run one after another in one process on fresh storage, and no
row is lost or doubled: per day, the source's rows = raw = clean + quarantined (as the clean
report says), no duplicate clean line, and one prediction per customer with a valid sale by the
end of the day, committed by the day's metrics.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import threading
import time
from datetime import date, timedelta
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


#: When each task's process is killed, counted from the moment its stage claims the day lease
#: (``runs/ds=D/lease.json`` naming the run and the stage: the stage function's first act, so the
#: kill lands in the stage's own work, not in Airflow's start-up of the task): seconds, or
#: ``"predictions"``: as soon as the day's predictions file has been replaced. extract waits out
#: the lease's settle time (0.2 s, ``lease.SETTLE_S``), train a second into its fit; clean is short.
KILLS: dict[str, float | str] = {"extract": 0.25, "clean": 0.0, "train": 1.0, "publish": "predictions"}


class Killer(threading.Thread):
    """SIGKILLs, once per task id in ``kills``, the first try of the first task process seen
    inside its stage (see :data:`KILLS`). Polls every 10 ms: the day leases in ``storage`` and,
    for the pid, Airflow's metadata DB (read directly: a query costs far less than a REST call).
    ``killed``: task id -> (run id, day, pid, how far the stage had got when it was killed)."""

    def __init__(self, la, storage: Path, kills: dict[str, float | str] = KILLS) -> None:
        super().__init__(daemon=True)
        self.la, self.storage, self.kills = la, storage, dict(kills)
        self.killed: dict[str, tuple[str, str, int, str]] = {}
        self.error: BaseException | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by the test, not lost in a thread
            self.error = exc

    def _run(self) -> None:
        from localairflow import DAG_ID
        from sqlalchemy import create_engine, text

        query = text("SELECT pid FROM task_instance WHERE dag_id = :dag AND run_id = :run AND task_id = :task "
                     "AND state = 'running' AND pid IS NOT NULL AND try_number = 1")
        engine = create_engine(self.la.url, isolation_level="AUTOCOMMIT")
        seen: dict[tuple[str, str], tuple[float, object] | None] = {}  # (run, task) -> (seen at, predictions stamp); None: missed
        try:
            with engine.connect() as db:
                while not self.stop.is_set() and len(self.killed) < len(self.kills):
                    for path in self.storage.glob("runs/ds=*/lease.json"):
                        try:
                            lease = json.loads(path.read_text())
                        except (OSError, ValueError):
                            continue
                        run_id, task, day = lease.get("run_id"), lease.get("stage"), lease.get("day")
                        if task not in self.kills or task in self.killed:
                            continue
                        if (run_id, task) not in seen:
                            seen[run_id, task] = (time.monotonic(), self._stamp(day))
                        if seen[run_id, task] is None:
                            continue
                        since, stamp = seen[run_id, task]
                        when = self.kills[task]
                        if when == "predictions":
                            due = self._stamp(day) not in (None, stamp)
                        else:
                            due = time.monotonic() - since >= when
                        if not due:
                            continue
                        # the pid now, from the DB: only a first try still running is killed
                        pid = db.execute(query, {"dag": DAG_ID, "run": run_id, "task": task}).scalar()
                        if pid is not None:
                            try:
                                os.kill(pid, signal.SIGKILL)
                            except ProcessLookupError:
                                pid = None
                        if pid is None:  # a retry, or it finished first: the next instance will do
                            seen[run_id, task] = None
                            continue
                        self.killed[task] = (run_id, day, pid, self._progress(task, day))
                    self.stop.wait(0.01)
        finally:
            engine.dispose()

    def _stamp(self, day: str | None) -> object:
        """The identity of the day's predictions file (a rename replaces it), None when absent."""
        try:
            st = (self.storage / "predictions" / f"ds={day}" / "predictions.parquet").stat()
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns

    def _progress(self, task: str, day: str | None) -> str:
        if task != "publish":
            return ""
        metrics = self.storage / "metrics" / f"ds={day}" / "metrics.json"
        try:
            sha = json.loads(metrics.read_text()).get("predictions_sha256")
        except (OSError, ValueError):
            return "predictions written, no commit marker yet"
        pred = (self.storage / "predictions" / f"ds={day}" / "predictions.parquet").read_bytes()
        return "committed" if sha == hashlib.sha256(pred).hexdigest() else "predictions written, commit marker stale"


def _published(root: Path, day: date) -> dict[str, bytes]:
    rels = [f"predictions/ds={day}/predictions.parquet", f"metrics/ds={day}/metrics.json",
            f"metrics/ds={day}/report.json", f"quarantine/ds={day}/quarantine.parquet"]
    return {rel: (root / rel).read_bytes() for rel in rels}


def _task_log(home: Path, run_id: str, task_id: str, attempt: int) -> str:
    logs = list((home / "logs").glob(f"dag_id=*/run_id={run_id}/task_id={task_id}/attempt={attempt}.log"))
    assert logs, f"no log of {task_id} attempt {attempt} of run {run_id}"
    return logs[0].read_text(errors="replace")


def _log_events(text: str) -> list[dict]:
    """The JSON lines of a task log."""
    events = []
    for line in text.splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return [e for e in events if isinstance(e, dict) and "timestamp" in e]


def _check_rows(storage: Path, source: Path, days: list[date]) -> None:
    """No row lost or doubled, per day: the source's rows of the day = its raw partition = clean +
    quarantined (and the clean report says so); no clean line twice; one prediction per customer
    with a valid sale line by the end of the day, committed by the day's metrics."""
    import pandas as pd
    import pyarrow.dataset as ds

    per_day = pd.read_csv(source, dtype=str, keep_default_na=False)["InvoiceDate"].str[:10].value_counts()
    (base,) = [p.parent for p in (storage / "sources").glob("*/raw")]  # one source in this storage
    history = ds.dataset(base / "clean", format="parquet", partitioning="hive").to_table(
        columns=["customer_id", "quantity", "is_cancellation", "ds"]).to_pandas()
    history["ds"] = history["ds"].astype(str)
    sales = history[~history["is_cancellation"] & (history["quantity"] > 0) & history["customer_id"].notna()]
    for d in days:
        raw = pd.read_parquet(base / "raw" / f"ds={d}" / "raw.parquet")
        clean = pd.read_parquet(base / "clean" / f"ds={d}" / "clean.parquet")
        q = pd.read_parquet(storage / "quarantine" / f"ds={d}" / "quarantine.parquet")
        assert per_day.get(d.isoformat(), 0) == len(raw) == len(clean) + len(q), (d, per_day.get(d.isoformat()), len(raw), len(clean), len(q))
        assert not clean.duplicated().any(), (d, clean[clean.duplicated(keep=False)])
        run_day = json.loads((storage / "runs" / f"ds={d}" / "clean.json").read_text())["run_day"]
        assert (run_day["read"], run_day["clean"], run_day["quarantined"]) == (len(raw), len(clean), len(q)), (d, run_day)
        pred_bytes = (storage / "predictions" / f"ds={d}" / "predictions.parquet").read_bytes()
        pred = pd.read_parquet(io.BytesIO(pred_bytes))
        assert pred["customer_id"].is_unique, (d, pred[pred["customer_id"].duplicated(keep=False)])
        customers = set(sales.loc[sales["ds"] <= d.isoformat(), "customer_id"].tolist())
        assert set(pred["customer_id"].tolist()) == customers, (d, len(pred), len(customers))
        metrics = json.loads((storage / "metrics" / f"ds={d}" / "metrics.json").read_text())
        assert metrics["predictions_sha256"] == hashlib.sha256(pred_bytes).hexdigest(), d
        assert metrics["row_counts"]["customers_scored"] == len(pred) and metrics["row_counts"]["day"] == run_day, d


def test_backfill_survives_a_killed_task_bad_rows_and_a_corrupt_source(tmp_path):
    import pandas as pd

    from airflow_rest import backfill_check, parse_time
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
    killer = Killer(la, storage)
    try:
        la.start()
        killer.start()
        bf = la.backfill(FIRST, LAST, max_active_runs=3)
        states = la.wait_backfill(bf, (LAST - FIRST).days + 1, TIMEOUT_S)
        killer.stop.set()
        killer.join(10)
        tis = la.task_instances(bf)
        assert set(states.values()) == {"success"}, (states, [t for t in tis if t["state"] not in ("success", "skipped")])

        # each killed task was retried and its retry succeeded; train's may instead be skipped,
        # because another day's train fitted and gated the same anchor during the retry delay
        assert killer.error is None, killer.error
        assert set(killer.killed) == set(KILLS), f"not seen inside their stage to be killed: {set(KILLS) - set(killer.killed)}"
        print("killed (run, day, pid, publish progress):", killer.killed)
        for task_id, (run_id, _, _, _) in killer.killed.items():
            tries = [(t["state"], t["try_number"]) for t in la.api.task_instances(DAG_ID, run_id, task_id=task_id)]
            ok = ("success", "skipped") if task_id == "train" else ("success",)
            assert len(tries) == 1 and tries[0][0] in ok and tries[0][1] == 2, (task_id, killer.killed[task_id], tries)
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

        # two manual runs of one day at once: one run of a day at a time (the day's lease)
        before = _published(storage, BAD_DAY)
        runs = [la.trigger({"day": BAD_DAY.isoformat()}, run_id=f"concurrent_{n}__{BAD_DAY}") for n in "ab"]
        run_states = la.wait_runs(runs, TIMEOUT_S)
        extract = {r: la.api.task_instances(DAG_ID, r, task_id="extract")[0] for r in runs}
        # the run whose extract (one instance at a time) came first took the day and kept it
        holders = [r for r in runs if extract[r]["try_number"] == 1]
        assert len(holders) == 1, (run_states, extract)
        holder, waiter = holders[0], next(r for r in runs if r != holders[0])
        assert run_states[holder] == "success", (run_states, extract)
        # the other run's first task found the day taken, named the holder, and was retried
        busy = f"is being processed by run {holder!r}"
        assert busy in _task_log(tmp_path / "airflow", waiter, "extract", 1)
        tries = extract[waiter]["try_number"]
        assert tries >= 2, extract[waiter]
        if run_states[waiter] == "success":
            # its stage work began only once the holder was done: after the holder's publish
            # started (publish releases the lease), the waiter's extract entered its stage
            publish_start = parse_time(la.api.task_instances(DAG_ID, holder, task_id="publish")[0]["start_date"])
            entered = [parse_time(e["timestamp"]) for e in _log_events(_task_log(tmp_path / "airflow", waiter, "extract", tries))
                       if str(e.get("event", "")).startswith("stage extract for day")]
            assert entered and entered[0] > publish_start, (entered, publish_start)
        else:  # only if the holder outlasted the waiter's retries
            assert extract[waiter]["state"] == "failed", (run_states, extract[waiter])
            assert busy in _task_log(tmp_path / "airflow", waiter, "extract", tries)
        assert _published(storage, BAD_DAY) == before, "a rerun of the day changed its published files"
        assert not list(storage.glob("runs/ds=*/lease.json"))
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
    _check_rows(storage, source, days)
    _check_rows(reference, source, days)
