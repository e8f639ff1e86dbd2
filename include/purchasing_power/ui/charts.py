"""The page's charts, drawn with the :mod:`purchasing_power.ui.svg` kit from the page data
(:func:`purchasing_power.ui.page_data.page_data`): the metric history, the curves of a report
window (ROC, precision-recall, cumulative gains, lift, reliability), the tier and histogram
charts of the predictions, quarantined rows by reason and the embedding cache per run."""

from __future__ import annotations

import json
import math
from datetime import date
from typing import Any, Callable

from markupsafe import Markup

from purchasing_power.schemas import TIERS
from purchasing_power.ui.fmt import (
    DASHES,
    HISTORY_ORDER,
    METRIC_LABELS,
    STATUS_COLORS,
    TIER_COLORS,
    attrs,
    color,
    esc,
    f3,
    label,
    num,
    order,
    short,
)
from purchasing_power.ui.page_data import HISTORY_METRICS, SPEND_EDGES
from purchasing_power.ui.svg import Plot, bar_chart, stacked_columns, ticks

#: The embedding chart shows this many runs up to the page's day.
EMBED_HISTORY_RUNS = 30


def history_chart(d: dict[str, Any], metric: str) -> Markup:
    """One metric of every contender on each published day up to D, with the gate status strip."""
    block, key = HISTORY_METRICS[metric]
    rows = d["history"]
    ords = [date.fromisoformat(r["day"]).toordinal() for r in rows]
    series: dict[str, list[tuple[int, float, str]]] = {}
    for r, o in zip(rows, ords):
        for name, vals in (r.get(block) or {}).items():
            v = vals.get(key)
            if num(v):
                series.setdefault(name, []).append((o, float(v), r["day"]))
    values = [v for s in series.values() for _, v, _ in s]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    pad = max((hi - lo) * 0.15, 0.02 if hi <= 1.5 else 0.2)
    y0, y1 = lo - pad, hi + pad
    x0, x1 = (min(ords), max(ords)) if ords else (0, 1)
    if x0 == x1:
        x0, x1 = x0 - 1, x1 + 1
    name_y = METRIC_LABELS.get(key, key)
    plot = Plot("history", title=f"{name_y} on each day's evaluation window", xlabel="as-of day", ylabel=name_y,
                x=(x0, x1), y=(y0, y1), width=900, height=300, margin=(30, 200, 44, 56), legend_at="out", metric=metric, days=len(rows))
    span = x1 - x0
    xt = sorted(set(ords)) if len(ords) <= 6 else [round(x0 + span * i / 5) for i in range(6)]
    plot.axes(xt, ticks(y0, y1), xfmt=lambda v: date.fromordinal(int(v)).isoformat(), yfmt=lambda v: f"{v:.2f}" if hi <= 5 else f"{v:g}")
    for name in order(series, HISTORY_ORDER):
        pts = series[name]
        c = color(name)
        plot.path([p[0] for p in pts], [p[1] for p in pts], series=name, color=c, dash=DASHES.get(name),
                  values=json.dumps([[p[2], p[1]] for p in pts]))
        for o, v, day in pts:
            plot.point(o, v, color=c, tip=f"{day} {label(name)} {name_y} {v:.3f}", series=name, day=day, value=v)
        plot.add_legend(name, c, f"{label(name)} (last {pts[-1][1]:.3f})", last=pts[-1][1])
    for r, o in zip(rows, ords):  # gate status strip along the top
        st = r.get("status") or "unknown"
        plot.parts.append(
            f'<rect class="status" x="{plot.sx(o) - 4:.1f}" y="{plot.mt - 8}" width="8" height="6" fill="{STATUS_COLORS.get(st, "#555")}"'
            f'{attrs(data_day=r["day"], data_status=st)}><title>{esc(r["day"])}: {esc(st)}</title></rect>'
        )
    if not rows:
        plot.parts.append(f'<text class="empty" x="{plot.w / 2}" y="{plot.h / 2}" text-anchor="middle">no history</text>')
    return plot.render()


# ---------------------------------------------------------------------------------------------
# curves of one report window
# ---------------------------------------------------------------------------------------------
def _draw_contenders(plot: Plot, window: dict[str, Any], names: list[str], curve: Callable[[str, dict[str, Any]], Any]) -> Markup:
    """Draw every contender's curve with its legend entry (first-listed drawn last, on top) and
    render. ``curve(name, contender)`` returns ``(xs, ys, legend text, data, point)`` or None
    when the contender lacks that curve; ``data`` goes on the path and the legend entry,
    ``point`` is an optional ``(x, y, tip)`` marker."""
    for name in reversed(names):
        got = curve(name, window["contenders"][name])
        if got is None:
            continue
        xs, ys, text, data, point = got
        c = color(name)
        plot.path(xs, ys, series=name, color=c, dash=DASHES.get(name), **data)
        if point is not None:
            px, py, tip = point
            plot.point(px, py, color=c, series=name, value=py, tip=tip)
        plot.add_legend(name, c, text, **data)
    plot.legend.reverse()
    return plot.render()


def _summary_curve(block: str, x: str, y: str, stat: str, word: str) -> Callable[[str, dict[str, Any]], Any]:
    """The ``curve`` of :func:`_draw_contenders` for a curve stored as ``contender[block]`` with
    coordinate lists ``x``, ``y`` and a summary number ``stat`` (legend: ``word`` and the number)."""

    def curve(name: str, c: dict[str, Any]) -> Any:
        got = c.get(block)
        if not got:
            return None
        return got[x], got[y], f"{label(name)} {word} {got[stat]:.3f}", {stat: got[stat]}, None

    return curve


def roc_chart(window: dict[str, Any], names: list[str]) -> Markup:
    plot = Plot("roc", title="ROC curve", xlabel="false positive rate", ylabel="true positive rate", legend_at="br", window=window["id"])
    plot.axes(ticks(0, 1), ticks(0, 1))
    plot.ref([0, 1], [0, 1], "chance")
    return _draw_contenders(plot, window, names, _summary_curve("roc", "fpr", "tpr", "auc", "AUC"))


def pr_chart(window: dict[str, Any], names: list[str]) -> Markup:
    base = window.get("base_rate")
    plot = Plot("pr", title="Precision-recall", xlabel="recall", ylabel="precision", legend_at="tr", window=window["id"], base_rate=base)
    plot.axes(ticks(0, 1), ticks(0, 1))
    if num(base):
        plot.ref([0, 1], [base, base], f"base rate {base:.3f}", at_start=True)
    return _draw_contenders(plot, window, names, _summary_curve("pr", "recall", "precision", "ap", "AP"))


def gains_chart(window: dict[str, Any], names: list[str]) -> Markup:
    plot = Plot("gains", title="Cumulative gains", xlabel="share of customers, by score", ylabel="share of buyers found", legend_at="br", window=window["id"])
    plot.axes(ticks(0, 1), ticks(0, 1), xfmt=lambda v: f"{v:.0%}", yfmt=lambda v: f"{v:.0%}")
    plot.ref([0, 1], [0, 1], "random")

    def curve(name: str, c: dict[str, Any]) -> Any:
        g = c.get("gains")
        if not g:
            return None
        captured10 = g["captured"][g["share"].index(0.1)]
        text = f"{label(name)} top 10 %: {captured10:.1%}"
        return [0.0, *g["share"]], [0.0, *g["captured"]], text, {"captured10": captured10}, None

    return _draw_contenders(plot, window, names, curve)


def lift_chart(window: dict[str, Any], names: list[str]) -> Markup:
    lifts = [v for n in names if window["contenders"][n].get("gains") for v in window["contenders"][n]["gains"]["lift"] if num(v)]
    top = max(lifts or [2.0]) * 1.1
    plot = Plot("lift", title="Lift", xlabel="share of customers, by score", ylabel="lift (× base rate)", x=(0, 1), y=(0, top), legend_at="tr", window=window["id"])
    plot.axes(ticks(0, 1), ticks(0, top), xfmt=lambda v: f"{v:.0%}")
    plot.ref([0, 1], [1, 1], "no lift", at_start=True)

    def curve(name: str, c: dict[str, Any]) -> Any:
        g = c.get("gains")
        if not g:
            return None
        lift10 = c["metrics"].get("lift_at_10pct")
        point = (0.1, lift10, f"{label(name)} lift@10% {lift10:.3f}") if num(lift10) else None
        return g["share"], g["lift"], f"{label(name)} lift@10% {f3(lift10)}", {"lift10": lift10}, point

    return _draw_contenders(plot, window, names, curve)


def calibration_chart(window: dict[str, Any], names: list[str]) -> Markup:
    plot = Plot("calibration", title="Reliability (calibration)", xlabel="mean predicted probability", ylabel="observed purchase rate", legend_at="tl", window=window["id"])
    plot.axes(ticks(0, 1), ticks(0, 1))
    plot.ref([0, 1], [0, 1], "perfect")
    for name in reversed(names):  # first-listed drawn last, on top
        c = window["contenders"][name]
        bins = c.get("calibration")
        if not bins:
            continue
        filled = [b for b in bins if b["n"]]
        ece = c["metrics"].get("ece")
        plot.path([b["p_mean"] for b in filled], [b["y_rate"] for b in filled], series=name, color=color(name), dash=DASHES.get(name), ece=ece,
                  bins=json.dumps([[b["lo"], b["n"], b["p_mean"], b["y_rate"]] for b in filled]))
        for b in filled:
            plot.point(b["p_mean"], b["y_rate"], color=color(name), r=2.5 + min(4.0, math.sqrt(b["n"]) / 4), series=name, n=b["n"],
                       tip=f"{label(name)} [{b['lo']:.1f}, {b['hi']:.1f}): n={b['n']}, predicted {b['p_mean']:.3f}, observed {b['y_rate']:.3f}")
        plot.add_legend(name, color(name), f"{label(name)} ECE {f3(ece)} Brier {f3(c['metrics'].get('brier'))}", ece=ece)
    plot.legend.reverse()
    return plot.render()


def window_charts(window: dict[str, Any], names: list[str]) -> list[Markup]:
    """The five curve charts of one report window, in page order."""
    return [chart(window, names) for chart in (roc_chart, pr_chart, gains_chart, lift_chart, calibration_chart)]


# ---------------------------------------------------------------------------------------------
# predictions, data quality, embedding cache
# ---------------------------------------------------------------------------------------------
def tier_chart(p: dict[str, Any]) -> Markup:
    bars = [(t, p["tiers"][t]["n"], TIER_COLORS[t], t) for t in TIERS]
    return bar_chart("tiers", "Customers by tier", bars, label_width=70, total=p["n"])


def spend_chart(p: dict[str, Any]) -> Markup:
    """Expected 90-day spend by ``SPEND_EDGES`` bin, stacked by tier; empty top bins are cut."""
    edges = list(SPEND_EDGES)
    labels = [f"{short(edges[i])}–{short(edges[i + 1])}" if i + 1 < len(edges) else f"≥{short(edges[i])}" for i in range(len(edges))]
    counts = {t: p["spend_hist"]["counts"][t] for t in TIERS}
    last = max([i for i in range(len(labels)) if any(counts[t][i] for t in TIERS)] or [0])
    return stacked_columns(
        "spend-hist", "Expected 90-day spend (GBP), by tier", labels[: last + 1], {t: counts[t][: last + 1] for t in TIERS}, TIER_COLORS,
        xlabel="expected_spend_90d (£)", ylabel="customers", width=560, total=p["n"],
    )


def probability_chart(p: dict[str, Any]) -> Markup:
    p_labels = [f"{i / 10:.1f}" for i in range(10)]
    return stacked_columns(
        "p-hist", "Purchase probability (30 days), by tier", p_labels, {t: p["p_hist"]["counts"][t] for t in TIERS}, TIER_COLORS,
        xlabel="p_purchase_30d (bin start)", ylabel="customers", width=420, total=p["n"],
    )


def quarantine_chart(q: dict[str, Any], as_of: str) -> Markup:
    bars = [(r, n, "#c0392b", r) for r, n in q["window"].items()]
    return bar_chart(
        "quarantine", f"Quarantined rows by reason, {q['window_start']} – {as_of}", bars, width=560, label_width=290,
        value_fmt=lambda v: f"{v:,}", window_days=q["window_days"], total=sum(q["window"].values()),
    )


def embed_chart(history: list[dict[str, Any]]) -> Markup:
    """Cached vs newly embedded distinct texts of the last ``EMBED_HISTORY_RUNS`` runs (month-day
    labels when they all fall in one year)."""
    hist = history[-EMBED_HISTORY_RUNS:]
    one_year = len({h["day"][:4] for h in hist}) <= 1
    labels = [h["day"][5:] if one_year else h["day"] for h in hist]
    return stacked_columns(
        "embed-cache", f"Distinct product texts per run (last {len(hist)}): from cache vs newly embedded", labels,
        {"cached": [h["cached"] for h in hist], "new": [h["new"] for h in hist]}, {"cached": "#2ca02c", "new": "#ff7f0e"},
        xlabel="run day", ylabel="distinct texts", width=560, days=len(hist),
    )
