"""``make bench-backfill``: backfill a whole year of the real UCI data with the real scheduler.

A private Airflow (``tools/localairflow.py``: embedded PostgreSQL, scheduler with the
preloading LocalExecutor, dag-processor, api-server) backfills the days START..END of
``purchasing_power_daily`` (logical date D covers day D; default 2010-12-31..2011-12-09)
over ``../shared/datasets/online_retail.parquet``, from empty storage. Reported into
``bench/results/backfill.json``: wall time (backfill created -> every run finished), runs/min,
per-task p50/p95 durations, how many tasks ran / were skipped, peak memory of the Airflow
processes (RSS sum, and PSS, which counts shared copy-on-write pages once) and of the metadata
PostgreSQL, and, with ``--verify-day``, whether that day's backfilled outputs are byte-identical
to the same day run alone (all stages in one process) on fresh storage.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "include"))
sys.path.append(str(ROOT / "tools"))  # the development tools: metadb, localairflow, airflow_rest

from localairflow import DAG_ID, LocalAirflow, children_by_parent  # noqa: E402

TARGET_S = 30 * 60


def _mem_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in KiB; (0, 0) if it is gone."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


def _postgres_pids(pgdata: Path) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    cmd = fh.read()
            except OSError:
                continue
            if b"postgres" in cmd and str(pgdata).encode() in cmd:
                out.append(int(entry))
    # the postmaster's children (backends) do not carry the data dir on their command line
    children = children_by_parent()
    kids = [k for pid in out for k in children.get(pid, [])]
    return out + kids


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)
    except (OSError, IndexError, ValueError):
        return 0


class MemorySampler(threading.Thread):
    """Peak memory of the Airflow processes: RSS (cheap, /proc/PID/statm) every ``every`` s; PSS
    (shared copy-on-write pages counted once; smaps_rollup walks the page tables, so it costs
    CPU the benchmark would otherwise give the tasks) every ``pss_every`` s."""

    def __init__(self, la: LocalAirflow, every: float = 5.0, pss_every: float = 30.0) -> None:
        super().__init__(daemon=True)
        self.la, self.every, self.pss_every = la, every, pss_every
        self.peak = {"airflow_rss_mb": 0.0, "airflow_pss_mb": 0.0, "postgres_pss_mb": 0.0, "processes": 0,
                     "rss_sampled_every_s": every, "pss_sampled_every_s": pss_every}
        self.stopped = threading.Event()

    def run(self) -> None:
        last_pss = 0.0
        while not self.stopped.is_set():
            pids = self.la.pids()
            self.peak["airflow_rss_mb"] = max(self.peak["airflow_rss_mb"], sum(_rss_kb(p) for p in pids) / 1024)
            self.peak["processes"] = max(self.peak["processes"], len(pids))
            if time.monotonic() - last_pss >= self.pss_every:
                last_pss = time.monotonic()
                pss = sum(_mem_kb(p)[1] for p in pids) / 1024
                pg = sum(_mem_kb(p)[1] for p in _postgres_pids(self.la.home / "pg")) / 1024
                self.peak["airflow_pss_mb"] = max(self.peak["airflow_pss_mb"], pss)
                self.peak["postgres_pss_mb"] = max(self.peak["postgres_pss_mb"], pg)
            self.stopped.wait(self.every)


def cpu_seconds(la: LocalAirflow) -> dict[str, float]:
    """CPU seconds used so far by the services, by kind: each service itself, the executor's
    worker processes (the task supervisors) and the task processes (reaped children of the
    workers: their ``cutime``). Read just before the services stop."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}

    def add(key: str, ticks: int) -> None:
        out[key] = round(out.get(key, 0.0) + ticks / tick, 1)

    roots = {p.pid: name for name, p in la.procs.items()}
    for pid in la.pids():
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        utime, stime, cutime, cstime = (int(fields[i]) for i in (11, 12, 13, 14))
        if pid in roots:
            add(roots[pid], utime + stime)
            if roots[pid] != "scheduler":  # gunicorn/uvicorn or dag-processor children
                add(roots[pid], cutime + cstime)
        elif "LocalExecutor" in cmd or "worker" in cmd:
            add("executor_workers", utime + stime)
            add("tasks", cutime + cstime)
        else:
            add("other", utime + stime + cutime + cstime)
    return out


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return round(values[lo] + (values[hi] - values[lo]) * (k - lo), 3)


def task_summary(tis: list[dict]) -> dict:
    by_task: dict[str, list[dict]] = {}
    for t in tis:
        by_task.setdefault(t["task_id"], []).append(t)
    out = {}
    for task, rows in sorted(by_task.items()):
        ran = [float(r["duration"]) for r in rows if r["duration"] is not None]
        states: dict[str, int] = {}
        for r in rows:
            states[r["state"]] = states.get(r["state"], 0) + 1
        out[task] = {
            "instances": len(rows),
            "states": states,
            "retried": sum(1 for r in rows if (r["try_number"] or 0) > 1),
            "ran": len(ran),
            "p50_s": _pct(ran, 0.5),
            "p95_s": _pct(ran, 0.95),
            "max_s": round(max(ran), 3) if ran else None,
            "total_s": round(sum(ran), 1),
        }
    return out


def verify_day(day: date, storage: Path, source: str) -> dict:
    """Run ``day`` alone, every stage in this process, on fresh storage; compare the bytes of
    its published files with the backfill's."""
    from purchasing_power.pipeline import run_all

    fresh = Path(tempfile.mkdtemp(prefix="pp-verify-"))
    old = {k: os.environ.get(k) for k in ("PURCHASING_POWER_STORAGE", "PURCHASING_POWER_SOURCE")}
    os.environ.update(PURCHASING_POWER_STORAGE=str(fresh), PURCHASING_POWER_SOURCE=source)
    t = time.perf_counter()
    try:
        run_all({}, day)
    finally:
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    files = {}
    for rel in (f"predictions/ds={day}/predictions.parquet", f"metrics/ds={day}/metrics.json"):
        a, b = storage / rel, fresh / rel
        files[rel] = a.exists() and b.exists() and a.read_bytes() == b.read_bytes()
    shutil.rmtree(fresh, ignore_errors=True)
    return {
        "day": day.isoformat(),
        "single_run_s": round(time.perf_counter() - t, 1),
        "identical": files,
        "all_identical": all(files.values()),
        "not_compared": "metrics/ds=D/report.json: its 'realised' window shows the latest day D' <= D-30 that was "
                        "published, which a lone run on fresh storage does not have (by design)",
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", default=str(ROOT.parent / "shared" / "datasets" / "online_retail.parquet"))
    ap.add_argument("--start", default="2010-12-31", help="first day (= logical date)")
    ap.add_argument("--end", default="2011-12-09", help="last day (= logical date)")
    ap.add_argument("--max-active-runs", type=int, default=4)
    ap.add_argument("--parallelism", type=int, default=4, help="LocalExecutor worker processes")
    ap.add_argument("--gpu-slots", type=int, default=1,
                    help="slots of the gpu pool (embed tasks); this machine has no GPU, so they embed on CPU")
    ap.add_argument("--work", default=str(ROOT / ".bench" / "backfill"), help="wiped first")
    ap.add_argument("--timeout", type=float, default=3 * 3600)
    ap.add_argument("--verify-day", default="2011-06-15", help="a covered day to compare with a single run ('' to skip)")
    ap.add_argument("--executor", default=None, help="executor class (default: the preloading LocalExecutor)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "backfill.json"))
    args = ap.parse_args(argv)

    source = str(Path(args.source).resolve())
    if not Path(source).exists():
        print(f"source not found: {source}", file=sys.stderr)
        return 2
    start, end = date.fromisoformat(args.start), date.fromisoformat(args.end)
    n_runs = (end - start).days + 1
    work = Path(args.work)
    if work.exists():
        import metadb

        metadb.stop(work / "airflow" / "pg")
        shutil.rmtree(work)
    storage = work / "data"
    extra = {
        "PURCHASING_POWER_SOURCE": source,
        "PURCHASING_POWER_STORAGE": str(storage),
        "PURCHASING_POWER_EMBED_DEVICE": os.environ.get("PURCHASING_POWER_EMBED_DEVICE", "auto"),
        "AIRFLOW__CORE__PARALLELISM": str(args.parallelism),
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",  # only the backfill's runs
    }
    kw = {"executor": args.executor} if args.executor else {}
    la = LocalAirflow(work / "airflow", extra_env=extra, **kw)
    t0 = time.monotonic()
    la.migrate(gpu_slots=args.gpu_slots)
    sampler = MemorySampler(la)
    try:
        la.start()
        t_ready = time.monotonic()
        sampler.start()
        last = [""]

        def progress(states: dict[str, str]) -> None:
            counts: dict[str, int] = {}
            for s in states.values():
                counts[s] = counts.get(s, 0) + 1
            line = ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))
            if line != last[0]:
                print(f"[{time.monotonic() - t_ready:7.0f} s] {line}", flush=True)
                last[0] = line

        t_bf = time.monotonic()
        backfill_id = la.backfill(start, end, max_active_runs=args.max_active_runs)
        states = la.wait_backfill(backfill_id, n_runs, args.timeout, poll=5, on_poll=progress)
        wall = time.monotonic() - t_bf
        cpu = cpu_seconds(la)
        tis = la.task_instances(backfill_id)
    finally:
        sampler.stopped.set()
        la.stop()
    counts: dict[str, int] = {}
    for s in states.values():
        counts[s] = counts.get(s, 0) + 1
    result = {
        "what": f"airflow backfill of {DAG_ID}, days (= logical dates) {start}..{end}, "
                f"real scheduler + dag-processor + api-server on the embedded PostgreSQL, from empty storage",
        "source": source,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "executor": la.executor,
        "parallelism": args.parallelism,
        "gpu_pool_slots": args.gpu_slots,
        "max_active_runs": args.max_active_runs,
        "runs": n_runs,
        "run_states": counts,
        "failed_days": sorted(d for d, s in states.items() if s != "success"),
        "wall_s": round(wall, 1),
        "services_start_s": round(t_ready - t0, 1),
        "runs_per_min": round(n_runs / (wall / 60), 2),
        "target_s": TARGET_S,
        "meets_target": wall <= TARGET_S and counts.get("success", 0) == n_runs,
        "peak_memory": {k: round(v, 1) if isinstance(v, float) else v for k, v in sampler.peak.items()},
        "cpu_s": cpu,
        "cpu_s_per_run": round(sum(cpu.values()) / n_runs, 2),
        "tasks": task_summary(tis),
    }
    if args.verify_day and counts.get("success", 0) == n_runs:
        result["verify"] = verify_day(date.fromisoformat(args.verify_day), storage, source)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps({k: result[k] for k in ("wall_s", "runs_per_min", "run_states", "meets_target", "peak_memory", "cpu_s")}, indent=2))
    print(f"wrote {args.out}")
    return 0 if result["meets_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
