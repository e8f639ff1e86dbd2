"""Command-line helpers used by the Makefile: the run conf, the check that a run really
published its day, and the run summary."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date

from purchasing_power.schemas import TIERS
from purchasing_power.settings import Settings
from purchasing_power.storage import Storage, metrics_path, predictions_path, published_metrics


def summary(day: date, settings: Settings | None = None) -> str:
    settings = settings or Settings.from_env()
    out = Storage.at(settings.storage)
    pred, met = predictions_path(out, day), metrics_path(out, day)
    m = published_metrics(out, day)
    if m is None:
        raise FileNotFoundError(f"{day} is not published: no predictions at {pred} committed by {met}")
    df = out.read_parquet(pred)
    gate = m.get("gate") or {}
    lines = [
        f"predictions : {pred}",
        f"metrics     : {met}",
        f"as of       : {day} (end of day)",
        f"customers   : {len(df):,}",
        "tiers       : " + ", ".join(f"{t}={int((df['tier'] == t).sum()):,}" for t in TIERS),
        f"model       : {m.get('model_version')}",
        f"gate        : {gate.get('status')} (anchor {gate.get('anchor')}, promoted={gate.get('promoted')})",
    ]
    for reason in gate.get("reasons") or []:
        lines.append(f"              - {reason}")
    ev = (m.get("evaluation") or {}).get("purchase") or {}
    window = (m.get("evaluation") or {}).get("purchase_window") or {}
    if ev:
        lines.append(f"evaluation  : purchase in 30 days after {window.get('as_of')}")
        for name, row in ev.items():
            lines.append(
                f"              {name:<10} ROC-AUC={_f(row.get('roc_auc'))} PR-AUC={_f(row.get('pr_auc'))} "
                f"lift@10%={_f(row.get('lift_at_10pct'))}"
            )
    sp = (m.get("evaluation") or {}).get("spend") or {}
    for name, row in sp.items():
        lines.append(f"              {name:<10} spend Gini={_f(row.get('normalized_gini'))} Spearman={_f(row.get('spearman'))}")
    lines.append(f"mean p_purchase_30d={df['p_purchase_30d'].mean():.3f}  total expected_spend_90d=£{df['expected_spend_90d'].sum():,.0f}")
    return "\n".join(lines)


def run_problems(day: date, log_text: str, settings: Settings | None = None) -> list[str]:
    """Why a finished ``airflow dags test`` run (its log ``log_text``) did not produce ``day``'s
    outputs; empty when it did. A run can end "successful" without running a task (a logical
    date before the Dag's start date): only a publish task that succeeded for ``day`` in this
    run, and the day's predictions and metrics in storage, count."""
    problems = []
    start = log_text.rfind("[DAG TEST] starting task_id=publish ")
    if start < 0:
        problems.append("the run never started the publish task (no task may have run at all)")
    else:
        end = log_text.find("[DAG TEST] end task task_id=publish ", start)
        section = log_text[start: end if end >= 0 else len(log_text)]
        if "new_state=success" not in section or f"ds={day.isoformat()}/publish.json" not in section:
            problems.append(f"the publish task of this run did not succeed for {day}")
    settings = settings or Settings.from_env()
    out = Storage.at(settings.storage)
    for path in (predictions_path(out, day), metrics_path(out, day)):
        if not out.exists(path):
            problems.append(f"missing {path}")
    return problems


def _f(v) -> str:
    return "  n/a" if v is None else f"{v:.3f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="purchasing_power.cli")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("summary", help="print where a day's predictions are and what they say")
    s.add_argument("--day", required=True, type=date.fromisoformat)
    k = sub.add_parser("check-run", help="exit 1 unless the run whose log is given published DAY")
    k.add_argument("--day", required=True, type=date.fromisoformat)
    k.add_argument("--log", required=True, help="the output of `airflow dags test`")
    c = sub.add_parser("conf", help="print the run conf JSON for a day (none: a backfill's)/source/column map")
    c.add_argument("--day", default="")
    c.add_argument("--source", default="")
    c.add_argument("--column-map", default="")
    args = ap.parse_args(argv)
    if args.cmd == "summary":
        print(summary(args.day))
    elif args.cmd == "check-run":
        with open(args.log, encoding="utf-8", errors="replace") as fh:
            problems = run_problems(args.day, fh.read())
        if problems:
            print(f"the run did not publish {args.day}:\n  - " + "\n  - ".join(problems), file=sys.stderr)
            return 1
    elif args.cmd == "conf":
        conf = {"day": args.day} if args.day else {}
        if args.source:
            conf["source"] = args.source
        if args.column_map:
            conf["column_map"] = json.loads(args.column_map)
        print(json.dumps(conf))
    return 0


if __name__ == "__main__":
    sys.exit(main())
