"""Command-line helpers used by the Makefile: run summary and day arithmetic."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date, timedelta

from purchasing_power.schemas import TIERS
from purchasing_power.settings import Settings
from purchasing_power.storage import Storage, metrics_path, predictions_path


def summary(day: date, settings: Settings | None = None) -> str:
    settings = settings or Settings.from_env()
    out = Storage.at(settings.storage)
    pred, met = predictions_path(out, day), metrics_path(out, day)
    if not out.exists(pred):
        raise FileNotFoundError(f"no predictions for {day} at {pred}")
    df = out.read_parquet(pred)
    m = out.read_json(met)
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


def _f(v) -> str:
    return "  n/a" if v is None else f"{v:.3f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="purchasing_power.cli")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("summary", help="print where a day's predictions are and what they say")
    s.add_argument("--day", required=True, type=date.fromisoformat)
    n = sub.add_parser("next-day", help="print DAY + 1 (the logical date of the run that covers DAY)")
    n.add_argument("day", type=date.fromisoformat)
    c = sub.add_parser("conf", help="print the run conf JSON for a day/source/column map")
    c.add_argument("--day", required=True)
    c.add_argument("--source", default="")
    c.add_argument("--column-map", default="")
    args = ap.parse_args(argv)
    if args.cmd == "summary":
        print(summary(args.day))
    elif args.cmd == "next-day":
        print((args.day + timedelta(days=1)).isoformat())
    elif args.cmd == "conf":
        conf = {"day": args.day}
        if args.source:
            conf["source"] = args.source
        if args.column_map:
            conf["column_map"] = json.loads(args.column_map)
        print(json.dumps(conf))
    return 0


if __name__ == "__main__":
    sys.exit(main())
