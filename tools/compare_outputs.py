"""Do two revisions of the code publish the same bytes?

Runs ``pipeline.run_all`` for each case (a day of a source) once with the code of a base git
revision and once with the working tree, each on fresh storage, in separate processes on this
machine, and compares the published ``predictions.parquet`` and ``metrics.json`` byte for byte.
Used to show that a refactoring changed no output::

    .venv/bin/python tools/compare_outputs.py --base HEAD~3
    .venv/bin/python tools/compare_outputs.py --base main --case demo:2024-12-31 \
        --case uci:2011-08-31:../shared/datasets/online_retail.parquet

A case is ``name:day[:source]``; without a source the demo generator's file (written once, by
the working tree's generator, and given to both revisions) is used. Exit status 1 when any
file differs; the sha256 of every file is printed (and written as JSON with ``--out``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = (("predictions", "predictions.parquet"), ("metrics", "metrics.json"))
RUN = (
    "import sys; from datetime import date; from purchasing_power.pipeline import run_all; "
    "run_all({'source': sys.argv[1]}, date.fromisoformat(sys.argv[2]))"
)


def _sha(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def run_case(tree: Path, storage: Path, source: str, day: str) -> dict[str, str | None]:
    env = dict(os.environ, PYTHONPATH=str(tree / "include"), PURCHASING_POWER_STORAGE=str(storage))
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", RUN, source, day], env=env, cwd=tree, check=True)
    print(f"  {tree.name}: {time.perf_counter() - t0:.0f} s", flush=True)
    return {f"{ds}/{name}": _sha(storage / ds / f"ds={day}" / name) for ds, name in PUBLISHED}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="git revision to compare the working tree with")
    ap.add_argument("--case", action="append", help="name:day[:source] (default: demo:2024-12-31)")
    ap.add_argument("--work", default=None, help="scratch folder (default: a temporary one, removed)")
    ap.add_argument("--out", default=None, help="write the comparison as JSON here")
    ap.add_argument("--reuse", action="store_true", help="keep a side's results already under --work (e.g. the base's)")
    ap.add_argument("--only", choices=("base", "tree"), default=None, help="run one side only (with --work, for --reuse later)")
    args = ap.parse_args(argv)
    cases = args.case or ["demo:2024-12-31"]
    work = Path(args.work or tempfile.mkdtemp(prefix="pp-compare-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    base_tree = work / "base"
    if base_tree.exists():
        subprocess.run(["git", "worktree", "remove", "--force", str(base_tree)], cwd=ROOT, check=False)
    subprocess.run(["git", "worktree", "add", "--detach", str(base_tree), args.base], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    demo = work / "demo.parquet"
    results: dict[str, object] = {"base": args.base, "cases": {}}
    same = True
    try:
        for case in cases:
            name, day, *rest = case.split(":", 2)
            source = rest[0] if rest else str(demo)
            if not rest and not demo.exists():
                env = dict(os.environ, PYTHONPATH=str(ROOT / "include"))
                subprocess.run([sys.executable, "-m", "purchasing_power.demo", "--out", str(demo)], env=env, check=True)
            source = str(Path(source).resolve()) if "://" not in source else source
            print(f"case {name}: day {day}, source {source}", flush=True)
            got = {}
            for label, tree in (("base", base_tree), ("tree", ROOT)):
                storage, saved = work / name / label, work / name / f"{label}.json"
                if args.only and label != args.only:
                    got[label] = json.loads(saved.read_text()) if saved.exists() else {}
                    continue
                if args.reuse and saved.exists():
                    got[label] = json.loads(saved.read_text())
                    continue
                shutil.rmtree(storage, ignore_errors=True)
                got[label] = run_case(tree, storage, source, day)
                saved.write_text(json.dumps(got[label]))
            keys = [f"{ds}/{n}" for ds, n in PUBLISHED]
            equal = {k: got["base"].get(k) is not None and got["base"].get(k) == got["tree"].get(k) for k in keys}
            same &= all(equal.values())
            results["cases"][name] = {"day": day, "source": source, "sha256": got, "identical": equal}
            for k, ok in equal.items():
                print(f"  {k}: {'identical' if ok else 'DIFFERENT'} ({got['base'].get(k)} vs {got['tree'].get(k)})", flush=True)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(base_tree)], cwd=ROOT, check=False)
    results["identical"] = same
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print("all identical" if same else "outputs differ")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
