"""Summaries of paired-bootstrap metrics for the quality benchmark (bench_quality.py and
quality_user_text.py): per-day intervals, averages over days and paired differences."""

from __future__ import annotations

from typing import Any

import numpy as np


def summarise(boot: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    from purchasing_power.metrics import interval

    out = {}
    for name, metrics in boot.items():
        out[name] = {}
        for k, v in metrics.items():
            lo, hi = interval(v["resamples"])
            out[name][k] = {"value": _f(v["value"]), "ci95": [_f(lo), _f(hi)]}
    return out


def average(days: list[dict[str, Any]], block: str) -> dict[str, dict[str, Any]]:
    """Mean over the days of each contender's metrics; the interval of the mean combines the
    days' bootstrap resamples (independent across days)."""
    from purchasing_power.metrics import interval

    names = [n for n in days[0]["_boot"][block] if all(n in d["_boot"][block] for d in days)]
    out = {}
    for name in names:
        out[name] = {}
        for k in days[0]["_boot"][block][name]:
            vals = [d["_boot"][block][name][k]["value"] for d in days]
            draws = np.mean([d["_boot"][block][name][k]["resamples"] for d in days], axis=0)
            lo, hi = interval(draws)
            out[name][k] = {"value": _f(float(np.mean(vals))), "ci95": [_f(lo), _f(hi)]}
    return out


def paired_difference(days: list[dict[str, Any]], block: str, a: str, b: str | list[str], metric: str) -> dict[str, Any]:
    """Average over days of metric(a) - metric(b) (b: one contender, or the better of several per
    resample), with the paired-bootstrap interval."""
    from purchasing_power.metrics import interval

    def best_of(d: dict[str, Any], key: str) -> np.ndarray | float:
        names = [b] if isinstance(b, str) else b
        vals = [d["_boot"][block][n][metric][key] for n in names if n in d["_boot"][block]]
        return np.max(np.vstack(vals), axis=0) if key == "resamples" else max(vals)

    point = float(np.mean([d["_boot"][block][a][metric]["value"] - best_of(d, "value") for d in days]))
    draws = np.mean([d["_boot"][block][a][metric]["resamples"] - best_of(d, "resamples") for d in days], axis=0)
    lo, hi = interval(draws)
    return {"value": _f(point), "ci95": [_f(lo), _f(hi)]}


def _f(v: Any) -> float | None:
    v = float(v)
    return None if v != v else round(v, 6)


def _cell(m: dict[str, Any] | None, digits: int = 3) -> str:
    if not m or m.get("value") is None:
        return "–"
    lo, hi = m["ci95"]
    ci = f" [{lo:.{digits}f}, {hi:.{digits}f}]" if lo is not None and hi is not None else ""
    return f"{m['value']:.{digits}f}{ci}"
