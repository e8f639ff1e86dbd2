"""Where a stage's memory peaks: run one stage in this process while a thread samples the
process's resident memory, and print the code that was running each time the peak grew.

    PURCHASING_POWER_STORAGE=.bench/scale/storage-250000 PURCHASING_POWER_FEATURE_SHARDS=4 \\
        .venv/bin/python bench/memory_peak.py evaluate '{"source": "...", "day": "2024-12-21"}'

Each line: the resident memory (MB) when the peak grew by at least ``--step`` MB, the seconds
since the start, and the innermost frames of the project's code (``purchasing_power``) then
running. A development tool (it reads /proc, Linux only); the stages' memory figures themselves
come from ``bench_scale.py`` (``ru_maxrss`` of a fresh process per task).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import traceback

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20


def where(frame, depth: int) -> str:
    frames = [f for f in traceback.extract_stack(frame) if "purchasing_power" in f.filename]
    return " <- ".join(f"{os.path.basename(f.filename)}:{f.lineno} {f.name}" for f in reversed(frames[-depth:]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage")
    ap.add_argument("params", help="the stage's params as JSON (source, day, ...)")
    ap.add_argument("--step", type=float, default=100.0, help="report when the peak grew by this many MB")
    ap.add_argument("--interval", type=float, default=0.02, help="seconds between samples")
    ap.add_argument("--depth", type=int, default=4, help="frames of the project's code per line")
    args = ap.parse_args(argv)

    from purchasing_power.pipeline import run_stage

    main_id = threading.get_ident()
    t0 = time.perf_counter()
    peak = {"mb": rss_mb(), "reported": 0.0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            mb = rss_mb()
            if mb > peak["mb"]:
                peak["mb"] = mb
                if mb - peak["reported"] >= args.step:
                    peak["reported"] = mb
                    frame = sys._current_frames().get(main_id)
                    print(f"{mb:8.0f} MB {time.perf_counter() - t0:7.1f} s  {where(frame, args.depth) if frame else '?'}", flush=True)
            time.sleep(args.interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        run_stage(args.stage, json.loads(args.params))
    finally:
        done.set()
        thread.join()
        print(f"peak {peak['mb']:.0f} MB after {time.perf_counter() - t0:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
