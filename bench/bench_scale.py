"""Scale benchmark: seconds and peak RSS per task at 25k / 250k / 1M customers.

For each size it generates a two-year demo source (``purchasing_power.demo``, block by block),
then runs stages of one day, and of the following (ordinary) day on the same storage, the way
Airflow runs tasks: each stage in a fresh Python process
(``pipeline.run_stage``), timed (wall and CPU seconds: CPU time is what to compare when other work
shares the cores), with that process's peak RSS (``ru_maxrss``). Results go to
``bench/results/scale.json``::

    .venv/bin/python bench/bench_scale.py --customers 25000,250000 --stages extract,clean,embed,features

``--stages`` defaults to the stages that need no fitted model (extract, clean, embed, features);
add ``train,evaluate,gate,score,publish`` to run an anchor day end to end. The storage and the
sources live under ``--work`` (default ``.bench/scale``, outside git).

``--snapshot 2024-06-30:5`` also times one training snapshot's features for every customer and
for a training sample of share 2**-5 (what an anchor day computes per snapshot when the training
table would exceed ``training_max_rows``), in one process: the ratio is the sample's saving;
with the whole compact history in memory, and (``--feature-shards`` N > 1) again in a fresh
process one shard at a time from per-shard local files, as train and evaluate build snapshots
with N shards (``history.ShardSpool``; splitting the history timed apart).

``--anchor-day 2024-12-21`` (with ``--day 2024-11-21``, the anchor before it) also runs a later
anchor day on the same storage, the steady state of a deployment: the history is extracted and
the previous anchor's candidates are stored, so the day fits its own anchor only (the first day
on fresh storage extracts the whole history and fits two anchors); the next day then follows it.
``--shard-every-stage`` runs every stage with ``PURCHASING_POWER_FEATURE_SHARDS`` set to
``--feature-shards``, as a sharded deployment does: train and evaluate then build each
snapshot's features shard by shard in-process (less memory).

``--start 2024-01-01`` generates the same customers with one year of history instead of two
(the demo ends 2024-12-31): what an ordinary day costs for the length of the history.
``--lookback 365`` runs every stage with ``PURCHASING_POWER_FEATURE_LOOKBACK_DAYS=365`` (a row of
its own): with both histories, the day's features read the same 365 days of lines.
``--stages ...,features_sharded`` runs only the sharded features tasks (for a size whose
unsharded features task would not fit in memory). ``--feature-shards N`` (N > 1) also runs the day's features the sharded way, as the DAG does
with ``PURCHASING_POWER_FEATURE_SHARDS=N``: ``feature_stats`` and ``feature_part`` of each shard
and the joining ``features``, each in a fresh process (one after the other: on a cluster the
shards' tasks run side by side on several workers), right after the unsharded ``features`` and on
the same storage; it records each task's seconds and peak RSS and whether the joined features
file is byte-identical to the unsharded one; likewise the score step as ``score_part`` of each
shard and the joining ``score``, right after the one-task ``score`` (the staged scores compared
byte for byte).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_START = "2023-01-01"  # the demo generator's: two years of history
MEASURE = """
import json, resource, sys, time
t0 = time.perf_counter()
{body}
_use = resource.getrusage(resource.RUSAGE_SELF)
print("@@" + json.dumps({{"seconds": round(time.perf_counter() - t0, 2), "cpu_seconds": round(_use.ru_utime + _use.ru_stime, 2),
                          "peak_rss_mb": round(_use.ru_maxrss / 1024, 1)}}))
"""
GENERATE = ("from datetime import date; from purchasing_power.demo import write_demo_source; "
            "write_demo_source(sys.argv[1], n_customers=int(sys.argv[2]), start=date.fromisoformat(sys.argv[3]))")
STAGE = "from purchasing_power.pipeline import run_stage; run_stage(sys.argv[1], json.loads(sys.argv[2]))"
SHARD_STEP = ("from purchasing_power.pipeline import run_feature_shard; "
              "run_feature_shard(sys.argv[1], int(sys.argv[3]), json.loads(sys.argv[2]))")
JOIN = "from purchasing_power.pipeline import run_stage; run_stage(sys.argv[1], json.loads(sys.argv[2]), combine=True)"
SCORE_STEP = "from purchasing_power.pipeline import run_score_shard; run_score_shard(int(sys.argv[2]), json.loads(sys.argv[1]))"
# one training snapshot's features: every customer's, then a training sample's (share 2**-level), same
# process; "memory": from the whole compact history in memory, "spool": with N shards one shard at a
# time from the per-shard local files (history.ShardSpool, made first and timed apart)
SNAPSHOT = """
from datetime import date
from purchasing_power.features import build_features
from purchasing_power.history import RunData
from purchasing_power.pipeline import settings_for
from purchasing_power.shards import customer_sample
p = json.loads(sys.argv[1]); snap = date.fromisoformat(sys.argv[2]); level = int(sys.argv[3]); how = sys.argv[4]
shards = int(sys.argv[5]) if how == "spool" else 1
s = settings_for(p, {"feature_shards": shards}); d = RunData.load(s, date.fromisoformat(p["day"]))
t = time.perf_counter(); tx = d.feature_history() if how == "memory" else d.feature_source(); load = time.perf_counter() - t
args = dict(vectors=d.vectors if s.use_text else None, user_texts=(d.texts, d.vectors) if d.user_text else None, shards=shards)
t = time.perf_counter(); n_full = len(build_features(tx, snap, **args)); full = time.perf_counter() - t
t = time.perf_counter()
n_sample = len(build_features(tx, snap, sample=lambda ids: customer_sample(ids, 0.5 ** level, s.seed), **args))
sampled = time.perf_counter() - t
print("##" + json.dumps({"history": how, "shards": shards, "load_seconds": round(load, 2), "snapshot": snap.isoformat(),
                         "share": 0.5 ** level, "customers": n_full, "sampled": n_sample, "full_seconds": round(full, 2),
                         "sample_seconds": round(sampled, 2), "ratio": round(full / sampled, 2)}))
"""


def code_version() -> str:
    """The commit the stages ran on (``+changes``: with uncommitted changes to the package or the benchmark)."""
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("+changes" if git("status", "--porcelain", "--", "include", "bench/bench_scale.py") else "")


def measured_with(earlier: object, stages: list[str]) -> object:
    """A row's ``measured_with``: the code version, or (a re-run of some stages on kept storage,
    ``--reuse-storage``, whose row was measured on other code) which stages ran on which code."""
    now = code_version()
    if earlier is None or earlier == now:
        return now
    versions = dict(earlier) if isinstance(earlier, dict) else {"the row's other stages": earlier}
    versions[", ".join(stages)] = now
    return versions


def sharded_features(params: str, shards: int, storage: Path, env: dict[str, str]) -> dict[str, object]:
    """The day's features as the sharded DAG computes them, each task in a fresh process, after
    the unsharded features stage stored the day's features: per-task seconds and peak RSS, and
    whether the joined file has the very bytes of the unsharded one."""
    import hashlib

    day = json.loads(params)["day"]
    found = list(storage.glob(f"sources/*/features/ds={day}/features-*.parquet"))  # the unsharded stage's, if it ran
    before = hashlib.sha256(found[0].read_bytes()).hexdigest() if found else None
    env = dict(env, PURCHASING_POWER_FEATURE_SHARDS=str(shards))
    out: dict[str, object] = {"shards": shards}
    for step in ("feature_stats", "feature_part"):
        out[step] = [measured(SHARD_STEP, step, params, str(k), env=env) for k in range(shards)]
        print(f"  {step}: {out[step]}", flush=True)
    out["features"] = measured(JOIN, "features", params, env=env)
    tasks = [*out["feature_stats"], *out["feature_part"], out["features"]]
    out["tasks_seconds_total"] = round(sum(t["seconds"] for t in tasks), 2)
    # the elapsed time with one worker slot per shard: the slowest shard of each step, then the join
    out["seconds_with_one_slot_per_shard"] = round(max(t["seconds"] for t in out["feature_stats"])
                                                   + max(t["seconds"] for t in out["feature_part"]) + out["features"]["seconds"], 2)
    out["max_peak_rss_mb"] = max(t["peak_rss_mb"] for t in tasks)
    if before is not None:
        [path] = found
        out["identical_to_unsharded"] = hashlib.sha256(path.read_bytes()).hexdigest() == before
    print(f"  sharded features: {out['features']}, identical: {out.get('identical_to_unsharded')}", flush=True)
    return out


def sharded_score(params: str, shards: int, storage: Path, env: dict[str, str]) -> dict[str, object]:
    """The day's score as the sharded DAG runs it (score_part of each shard, then score joining
    them), each task in a fresh process, after the one-task score staged the day's scores:
    per-task seconds and peak RSS, and whether the joined scores have the one task's bytes."""
    import hashlib

    day = json.loads(params)["day"]
    staged = storage / "scores" / f"ds={day}" / "predictions.parquet"
    before = hashlib.sha256(staged.read_bytes()).hexdigest() if staged.exists() else None
    env = dict(env, PURCHASING_POWER_FEATURE_SHARDS=str(shards))
    out: dict[str, object] = {"shards": shards, "score_part": [measured(SCORE_STEP, params, str(k), env=env) for k in range(shards)]}
    out["score"] = measured(JOIN, "score", params, env=env)
    tasks = [*out["score_part"], out["score"]]
    out["seconds_with_one_slot_per_shard"] = round(max(t["seconds"] for t in out["score_part"]) + out["score"]["seconds"], 2)
    out["max_peak_rss_mb"] = max(t["peak_rss_mb"] for t in tasks)
    if before is not None:
        out["identical_to_one_task"] = hashlib.sha256(staged.read_bytes()).hexdigest() == before
    print(f"  sharded score: {out['score']}, parts {out['score_part']}, identical: {out.get('identical_to_one_task')}", flush=True)
    return out


def measured(body: str, *args: str, env: dict[str, str]) -> dict[str, float]:
    """Run ``body`` in a fresh interpreter; its wall and CPU seconds and peak RSS (and what it printed
    after ``##`` as JSON)."""
    proc = subprocess.run([sys.executable, "-c", MEASURE.format(body=body), *args], env=env, cwd=ROOT,
                          capture_output=True, text=True)
    if proc.returncode != 0 and "purchasing_power.errors.NothingToDo" in proc.stderr:  # Airflow skips the task
        return {"skipped": proc.stderr.strip().splitlines()[-1][-300:]}
    if proc.returncode != 0:
        raise RuntimeError(f"failed ({proc.returncode}): {proc.stderr[-3000:]}")
    line = next(ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith("@@"))
    extra = [json.loads(ln[2:]) for ln in proc.stdout.splitlines() if ln.startswith("##")]
    return {**json.loads(line[2:]), **(extra[-1] if extra else {})}


def run_day(n: int, day: str, stages: list[str], source: Path, storage: Path, env: dict[str, str],
            shards: int) -> dict[str, object]:
    """Seconds and peak RSS of the stages of one day on a size's storage (``shards`` > 1: the
    features and score steps also the sharded way, :func:`sharded_features`, :func:`sharded_score`)."""
    out: dict[str, object] = {"day": day, "stages": {}}
    params = json.dumps({"source": str(source), "day": day})
    for stage in stages:
        if stage == "features_sharded":
            out["features_sharded"] = sharded_features(params, shards, storage, env)
            continue
        if stage in ("evaluate", "gate") and "skipped" in out["stages"].get("train", {}):
            out["stages"][stage] = {"skipped": "the anchor is decided (train skipped)"}
            continue
        print(f"{n:,} customers, {day}: {stage} ...", flush=True)
        try:
            out["stages"][stage] = measured(STAGE, stage, params, env=env)
        except RuntimeError as exc:
            out["stages"][stage] = {"error": str(exc)[-500:]}
            break
        print(f"  {out['stages'][stage]}", flush=True)
        if stage == "features" and shards > 1:
            out["features_sharded"] = sharded_features(params, shards, storage, env)
        if stage == "score" and shards > 1 and "skipped" not in out["stages"][stage]:
            out["score_sharded"] = sharded_score(params, shards, storage, env)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--customers", default="25000,250000,1000000")
    ap.add_argument("--stages", default="extract,clean,embed,features")
    ap.add_argument("--start", default=DEFAULT_START, help="the demo history's first day (it ends 2024-12-31): one year or two")
    ap.add_argument("--day", default="2024-12-15", help="the day the stages run for (the demo ends 2024-12-31)")
    ap.add_argument("--next-day", action="store_true", default=True,
                    help="then run the same stages for the following (ordinary) day on the same storage (default)")
    ap.add_argument("--no-next-day", dest="next_day", action="store_false")
    ap.add_argument("--feature-shards", type=int, default=4, help="also run the sharded features tasks with N shards (1: not)")
    ap.add_argument("--snapshot", default="",
                    help="SNAPSHOT:LEVEL: time one training snapshot's features for every customer and for a training "
                         "sample of share 2**-LEVEL in one process (after the stages; needs the day's clean history)")
    ap.add_argument("--shard-every-stage", action="store_true",
                    help="run every stage with PURCHASING_POWER_FEATURE_SHARDS=--feature-shards, as a sharded deployment "
                         "does (train and evaluate then build each snapshot's features shard by shard in-process)")
    ap.add_argument("--anchor-day", default="",
                    help="after the first day, run the stages for this later anchor day on the same storage (the "
                         "steady state: history extracted, the previous anchor fitted), then its next day")
    ap.add_argument("--lookback", type=int, default=None,
                    help="run every stage with PURCHASING_POWER_FEATURE_LOOKBACK_DAYS=N (default: the setting's default); "
                         "a row of its own, on storage of its own")
    ap.add_argument("--work", default=str(ROOT / ".bench" / "scale"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "scale.json"))
    ap.add_argument("--reuse-storage", action="store_true",
                    help="run --stages on the storage an earlier run of the size left (e.g. only features again), "
                         "keeping that row's other figures (with --append)")
    ap.add_argument("--append", action="store_true",
                    help="keep the rows of other sizes already in --out (a size run again replaces its row)")
    args = ap.parse_args(argv)
    work = Path(args.work).resolve()
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "include"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    sizes = [int(c) for c in args.customers.split(",")]
    kept = json.loads(Path(args.out).read_text())["results"] if args.append and Path(args.out).exists() else []

    def ident(r: dict) -> tuple:  # a row: its size, the history's first day and the feature lookback (None: the default)
        return r["customers"], r.get("history_from", DEFAULT_START), r.get("feature_lookback_days")

    results = [r for r in kept if ident(r) not in {(n, args.start, args.lookback) for n in sizes}]
    for n in sizes:
        tag = f"{n}" if args.start == DEFAULT_START else f"{n}-from-{args.start}"
        source = work / f"demo-{tag}.parquet"
        source.parent.mkdir(parents=True, exist_ok=True)
        row: dict[str, object] = {"customers": n, "history_from": args.start, "day": args.day}
        if args.lookback is not None:
            row["feature_lookback_days"] = args.lookback
        earlier = [r for r in kept if ident(r) == (n, args.start, args.lookback)]
        if args.reuse_storage and earlier:  # re-measure some stages; keep the row's other figures
            row = earlier[0]
        if not source.exists():
            row["generate"] = measured(GENERATE, str(source), str(n), args.start, env=env)
        row["source_mb"] = round(source.stat().st_size / 2**20, 1)
        import pyarrow.parquet as pq

        row["lines"] = pq.ParquetFile(source).metadata.num_rows
        storage = work / (f"storage-{tag}" if args.lookback is None else f"storage-{tag}-lb{args.lookback}")
        if not args.reuse_storage:
            shutil.rmtree(storage, ignore_errors=True)  # a fresh deployment: the first day extracts and cleans the whole history
        stage_env = dict(env, PURCHASING_POWER_STORAGE=str(storage))
        if args.lookback is not None:
            stage_env["PURCHASING_POWER_FEATURE_LOOKBACK_DAYS"] = str(args.lookback)
        params = json.dumps({"source": str(source), "day": args.day})
        row.setdefault("stages", {})
        row["measured_at"] = time.strftime("%Y-%m-%d %H:%M")
        row["measured_with"] = measured_with(row.get("measured_with") if args.reuse_storage else None, stages)
        if args.shard_every_stage:
            stage_env["PURCHASING_POWER_FEATURE_SHARDS"] = str(args.feature_shards)
            row["every_stage_sharded"] = args.feature_shards
        first = run_day(n, args.day, stages, source, storage, stage_env, args.feature_shards)
        row["stages"].update(first["stages"])
        if "features_sharded" in first:
            row["features_sharded"] = first["features_sharded"]
        if args.snapshot:
            snap, level = args.snapshot.split(":")
            print(f"{n:,} customers: snapshot {snap}, every customer and a sample of 2**-{level} ...", flush=True)
            row["training_snapshot"] = measured(SNAPSHOT, params, snap, level, "memory", env=stage_env)
            print(f"  {row['training_snapshot']}", flush=True)
            if args.feature_shards > 1:
                row["training_snapshot_spooled"] = measured(SNAPSHOT, params, snap, level, "spool", str(args.feature_shards),
                                                            env=stage_env)
                print(f"  {row['training_snapshot_spooled']}", flush=True)
        if args.anchor_day and "error" not in json.dumps(row["stages"]):
            # a later anchor day on the same storage: the history is extracted and the previous
            # anchor's candidates are stored, so the day fits only its own anchor
            row["anchor_day"] = run_day(n, args.anchor_day, stages, source, storage, stage_env, args.feature_shards)
        last = row["anchor_day"] if args.anchor_day else row
        if args.next_day and "error" not in json.dumps(last["stages"]):
            from datetime import date, timedelta

            nxt = (date.fromisoformat(last["day"]) + timedelta(days=1)).isoformat()
            row["next_day"] = run_day(n, nxt, stages, source, storage, stage_env, args.feature_shards)
        results.append(row)
        results.sort(key=lambda r: (r["customers"], r.get("history_from", DEFAULT_START), r.get("feature_lookback_days") or 0))
        Path(args.out).write_text(json.dumps({"machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                                              "measured_at": time.strftime("%Y-%m-%d %H:%M"), "results": results}, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
