"""Airflow 3 plugin: the "Purchasing power" page (what the model predicts and how good it is).

Registered through Airflow's plugin manager (this file is in the plugins folder):

* ``fastapi_apps``: a FastAPI app that the API server mounts at ``/purchasing-power``:

  - ``GET /purchasing-power/?day=YYYY-MM-DD&metric=roc_auc`` the page (server-side HTML and
    inline SVG; no JavaScript library, no CDN, works offline);
  - ``GET /purchasing-power/api/summary?day=...`` the same data as JSON;
  - ``GET /purchasing-power/health``.

* ``external_views``: a "Purchasing power" entry in the UI's Browse menu that shows the page
  inside the Airflow UI (same origin, so the UI's login cookie authenticates it).

Inside the API server every request needs an Airflow user allowed to read the
``purchasing_power_daily`` Dag (the UI's ``_token`` cookie or an ``Authorization: Bearer`` JWT).
``create_app(require_auth=False)`` builds an open app for local use and tests; run this file
(``python plugins/purchasing_power_ui.py --storage data``) to serve that on 127.0.0.1.

The page reads only storage (``PURCHASING_POWER_STORAGE``, default ``./data``): ``metrics/``,
``predictions/``, ``quarantine/`` and ``runs/ds=*/embed.json``, through
``purchasing_power.report.page_data`` (cached by file stamp). Every Airflow component loads
plugins, so importing this file imports nothing Airflow has not loaded already: the FastAPI app is built
on the API server's first request (``LazyApp``), pandas and friends load when a page is rendered.
"""

import html
import json
import math
import os
from datetime import date
from typing import Any, Callable, Iterable, Optional

try:  # the plugin is loaded by Airflow; tests and the __main__ server may run without it
    from airflow.plugins_manager import AirflowPlugin
except ImportError:  # pragma: no cover
    AirflowPlugin = object  # type: ignore[misc,assignment]

URL_PREFIX = "/purchasing-power"
DAG_ID = "purchasing_power_daily"
TITLE = "Purchasing power"

COLORS = {
    "candidate": "#1f77b4",
    "champion": "#d62728",
    "bgnbd": "#2ca02c",
    "recency": "#7f7f7f",
    "published": "#9467bd",
    "bgnbd_gg": "#2ca02c",
    "past_spend": "#7f7f7f",
}
LABELS = {
    "candidate": "candidate",
    "champion": "champion",
    "bgnbd": "BG/NBD",
    "recency": "recency",
    "published": "published",
    "bgnbd_gg": "BG/NBD × Gamma-Gamma",
    "past_spend": "past spend",
}
#: Champion is often the BG/NBD baseline itself: dashed, so the line under it stays visible.
DASHES = {"champion": "7 5"}
TIER_COLORS = {"high": "#1b9e77", "medium": "#d95f02", "low": "#7570b3"}
EMBED_HISTORY_RUNS = 30
STATUS_COLORS = {"promoted": "#2ca02c", "kept_champion": "#ff7f0e", "baseline": "#7f7f7f"}
METRIC_LABELS = {
    "roc_auc": "ROC-AUC",
    "pr_auc": "PR-AUC",
    "lift_at_10pct": "lift@10%",
    "brier": "Brier",
    "ece": "ECE",
    "base_rate": "base rate",
    "n": "n",
    "normalized_gini": "normalized Gini",
    "spearman": "Spearman",
    "decile_mape": "decile MAPE",
    "mean_actual": "mean actual £",
    "mean_predicted": "mean predicted £",
}


# ---------------------------------------------------------------------------------------------
# formatting
# ---------------------------------------------------------------------------------------------
def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def f3(v: Any) -> str:
    """Three decimals, as the page shows metrics (``n/a`` when missing)."""
    return f"{v:.3f}" if num(v) else "n/a"


def fmt_metric(name: str, v: Any) -> str:
    if not num(v):
        return "n/a"
    if name == "n":
        return f"{int(v):,}"
    if name in ("mean_actual", "mean_predicted"):
        return f"{v:,.2f}"
    return f3(v)


def gbp(v: Any) -> str:
    return f"£{v:,.0f}" if num(v) else "n/a"


def pct(v: Any, digits: int = 0) -> str:
    return f"{v:.{digits}%}" if num(v) else "n/a"


def data_value(v: Any) -> str:
    """Full-precision value for data-* attributes (what a test compares against storage)."""
    if v is None:
        return ""
    return repr(float(v)) if isinstance(v, float) else str(v)


def attrs(**kw: Any) -> str:
    return "".join(f' {k.replace("_", "-")}="{esc(v)}"' for k, v in kw.items() if v is not None)


# ---------------------------------------------------------------------------------------------
# SVG charts
# ---------------------------------------------------------------------------------------------
class Plot:
    """A 2-d plot area with linear scales, axes, gridlines and a legend, rendered to SVG."""

    def __init__(
        self,
        chart: str,
        *,
        title: str,
        xlabel: str = "",
        ylabel: str = "",
        x: tuple[float, float] = (0.0, 1.0),
        y: tuple[float, float] = (0.0, 1.0),
        width: int = 380,
        height: int = 280,
        margin: tuple[int, int, int, int] = (30, 14, 44, 50),  # top, right, bottom, left
        legend_at: str = "tl",  # tl, tr, bl, br: the corner the curves leave empty
        **data: Any,
    ) -> None:
        self.chart, self.title, self.xlabel, self.ylabel = chart, title, xlabel, ylabel
        self.x0, self.x1 = x
        self.y0, self.y1 = y
        if self.x1 == self.x0:
            self.x1 = self.x0 + 1
        if self.y1 == self.y0:
            self.y1 = self.y0 + 1
        self.w, self.h = width, height
        self.mt, self.mr, self.mb, self.ml = margin
        self.data = data
        self.legend_at = legend_at
        self.parts: list[str] = []
        self.legend: list[tuple[str, str, str, dict[str, Any]]] = []

    def sx(self, v: float) -> float:
        return self.ml + (v - self.x0) / (self.x1 - self.x0) * (self.w - self.ml - self.mr)

    def sy(self, v: float) -> float:
        return self.h - self.mb - (v - self.y0) / (self.y1 - self.y0) * (self.h - self.mt - self.mb)

    def axes(self, xticks: Iterable[float], yticks: Iterable[float], xfmt=lambda v: f"{v:g}", yfmt=lambda v: f"{v:g}") -> None:
        p = self.parts
        left, right, top, bottom = self.ml, self.w - self.mr, self.mt, self.h - self.mb
        for t in yticks:
            yy = self.sy(t)
            p.append(f'<line class="grid" x1="{left}" x2="{right}" y1="{yy:.1f}" y2="{yy:.1f}"/>')
            p.append(f'<text class="tick" x="{left - 5}" y="{yy + 3.5:.1f}" text-anchor="end">{esc(yfmt(t))}</text>')
        for t in xticks:
            xx = self.sx(t)
            p.append(f'<line class="grid" x1="{xx:.1f}" x2="{xx:.1f}" y1="{top}" y2="{bottom}"/>')
            p.append(f'<text class="tick" x="{xx:.1f}" y="{bottom + 14}" text-anchor="middle">{esc(xfmt(t))}</text>')
        p.append(f'<line class="axis" x1="{left}" x2="{right}" y1="{bottom}" y2="{bottom}"/>')
        p.append(f'<line class="axis" x1="{left}" x2="{left}" y1="{top}" y2="{bottom}"/>')
        if self.xlabel:
            p.append(f'<text class="label" x="{(left + right) / 2:.1f}" y="{self.h - 8}" text-anchor="middle">{esc(self.xlabel)}</text>')
        if self.ylabel:
            p.append(
                f'<text class="label" transform="translate(13,{(top + bottom) / 2:.1f}) rotate(-90)" text-anchor="middle">{esc(self.ylabel)}</text>'
            )

    def path(self, xs: list[float], ys: list[float], *, series: str, color: str, dash: str | None = None, width: float = 2.0, **data: Any) -> None:
        pts = [(self.sx(a), self.sy(b)) for a, b in zip(xs, ys) if num(a) and num(b)]
        if not pts:
            return
        d = "M" + " L".join(f"{a:.1f},{b:.1f}" for a, b in pts)
        dash = dash or DASHES.get(series)
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        self.parts.append(
            f'<path class="series" d="{d}" fill="none" stroke="{color}" stroke-width="{width}"{dash_attr}'
            f'{attrs(data_series=series, data_points=len(pts), **{f"data_{k}": data_value(v) for k, v in data.items()})}/>'
        )

    def ref(self, xs: list[float], ys: list[float], label: str | None = None, *, at_start: bool = False) -> None:
        """A dashed grey reference line (chance, perfect calibration, base rate)."""
        d = "M" + " L".join(f"{self.sx(a):.1f},{self.sy(b):.1f}" for a, b in zip(xs, ys))
        self.parts.append(f'<path class="ref" d="{d}" fill="none"/>')
        if label:
            i, anchor, dx = (0, "start", 4) if at_start else (-1, "end", -2)
            self.parts.append(f'<text class="tick" x="{self.sx(xs[i]) + dx:.1f}" y="{self.sy(ys[i]) - 4:.1f}" text-anchor="{anchor}">{esc(label)}</text>')

    def point(self, xv: float, yv: float, *, color: str, r: float = 3.5, tip: str = "", **data: Any) -> None:
        if not (num(xv) and num(yv)):
            return
        self.parts.append(
            f'<circle cx="{self.sx(xv):.1f}" cy="{self.sy(yv):.1f}" r="{r}" fill="{color}"'
            f'{attrs(**{f"data_{k}": data_value(v) for k, v in data.items()})}><title>{esc(tip)}</title></circle>'
        )

    def add_legend(self, key: str, color: str, text: str, **data: Any) -> None:
        self.legend.append((key, color, text, data))

    def render(self, extra_height: int = 0) -> str:
        legend = []
        lw = (max(len(t) for _, _, t, _ in self.legend) * 5.9 + 22) if self.legend else 0
        lh = len(self.legend) * 15
        if self.legend_at == "out":  # right of the plot area (leave a wide right margin)
            lx, ly = self.w - self.mr + 14, self.mt + 8
        else:
            lx = self.ml + 8 if self.legend_at[1] == "l" else self.w - self.mr - lw - 4
            ly = self.mt + 8 if self.legend_at[0] == "t" else self.h - self.mb - lh - 6
        for i, (key, color, text, data) in enumerate(self.legend):
            yy = ly + i * 15
            legend.append(
                f'<g class="legend-item"{attrs(data_series=key, **{f"data_{k}": data_value(v) for k, v in data.items()})}>'
                f'<rect x="{lx:.1f}" y="{yy:.1f}" width="10" height="10" fill="{color}"/>'
                f'<text class="legend" x="{lx + 14:.1f}" y="{yy + 9:.1f}">{esc(text)}</text></g>'
            )
        legend_bg = ""
        if self.legend:
            legend_bg = f'<rect class="legend-bg" x="{lx - 4:.1f}" y="{ly - 4:.1f}" width="{lw:.0f}" height="{lh + 4}"/>'
        return (
            f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{self.w}" height="{self.h + extra_height}" '
            f'viewBox="0 0 {self.w} {self.h + extra_height}" role="img" aria-label="{esc(self.title)}"'
            f'{attrs(data_chart=self.chart, **{f"data_{k}": data_value(v) for k, v in self.data.items()})}>'
            f'<text class="title" x="{self.ml}" y="18">{esc(self.title)}</text>'
            + "".join(self.parts)
            + legend_bg
            + "".join(legend)
            + "</svg>"
        )


def bar_chart(
    chart: str,
    title: str,
    bars: list[tuple[str, float, str, str]],
    *,
    width: int = 380,
    label_width: int = 120,
    bar_height: int = 18,
    value_fmt=lambda v: f"{v:,.0f}",
    **data: Any,
) -> str:
    """Horizontal bars: (key, value, color, label) each; the value is printed after the bar."""
    top = 30
    height = top + max(1, len(bars)) * (bar_height + 6) + 8
    vmax = max([v for _, v, _, _ in bars if num(v)] or [1]) or 1
    span = width - label_width - 70
    parts = [f'<text class="title" x="4" y="18">{esc(title)}</text>']
    if not bars:
        parts.append(f'<text class="empty" x="{label_width}" y="{top + 14}">none</text>')
    for i, (key, value, color, label) in enumerate(bars):
        yy = top + i * (bar_height + 6)
        w = max(1.0, span * (value / vmax)) if num(value) and value > 0 else 0.0
        parts.append(
            f'<g class="bar"{attrs(data_key=key, data_value=data_value(value))}>'
            f'<text class="tick" x="{label_width - 6}" y="{yy + bar_height * 0.7:.1f}" text-anchor="end">{esc(label)}</text>'
            f'<rect x="{label_width}" y="{yy}" width="{w:.1f}" height="{bar_height}" fill="{color}"/>'
            f'<text class="value" x="{label_width + w + 5:.1f}" y="{yy + bar_height * 0.7:.1f}">{esc(value_fmt(value))}</text></g>'
        )
    return (
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{esc(title)}"{attrs(data_chart=chart, **{f"data_{k}": data_value(v) for k, v in data.items()})}>'
        + "".join(parts)
        + "</svg>"
    )


def stacked_columns(
    chart: str,
    title: str,
    labels: list[str],
    stacks: dict[str, list[float]],
    colors: dict[str, str],
    *,
    xlabel: str = "",
    ylabel: str = "",
    width: int = 380,
    height: int = 280,
    **data: Any,
) -> str:
    """Vertical stacked columns: one column per label, one segment per stack key."""
    totals = [sum(stacks[k][i] for k in stacks) for i in range(len(labels))]
    ymax = max(totals or [1]) or 1
    rotate = len(labels) > 8  # many columns: slanted labels
    margin = (30, 14, 74 if rotate else 44, 50)
    plot = Plot(chart, title=title, xlabel=xlabel, ylabel=ylabel, x=(0, max(1, len(labels))), y=(0, ymax * 1.3),
                width=width, height=height + (30 if rotate else 0), margin=margin, **data)
    step = _nice_step(ymax * 1.1)
    plot.axes([], [t * step for t in range(int(ymax * 1.1 / step) + 1)], yfmt=lambda v: f"{v:,.0f}")
    col = plot.sx(1) - plot.sx(0)
    bw = min(col * 0.8, 56.0)
    for i, label in enumerate(labels):
        base = 0.0
        x = plot.sx(i) + (col - bw) / 2
        for key, values in stacks.items():
            v = values[i]
            if v > 0:
                y_top, y_bot = plot.sy(base + v), plot.sy(base)
                plot.parts.append(
                    f'<rect class="segment" x="{x:.1f}" y="{y_top:.1f}" width="{bw:.1f}" height="{max(0.5, y_bot - y_top):.1f}" fill="{colors[key]}"'
                    f'{attrs(data_bin=label, data_key=key, data_value=int(v) if float(v).is_integer() else v)}><title>{esc(f"{label}: {key} {v:,.0f}")}</title></rect>'
                )
            base += v
        if totals[i] > 0:
            plot.parts.append(
                f'<text class="value" x="{x + bw / 2:.1f}" y="{plot.sy(totals[i]) - 3:.1f}" text-anchor="middle"'
                f'{attrs(data_bin=label, data_total=int(totals[i]))}>{totals[i]:,.0f}</text>'
            )
        lx, ly = x + bw / 2, plot.h - plot.mb + 14
        turn = f' transform="rotate(-45 {lx:.1f} {ly:.1f})"' if rotate else ""
        plot.parts.append(f'<text class="tick" x="{lx:.1f}" y="{ly:.1f}" text-anchor="{"end" if rotate else "middle"}"{turn}>{esc(label)}</text>')
    plot.legend_at = "tr"
    for key in stacks:
        plot.add_legend(key, colors[key], key)
    return plot.render()


def _nice_step(span: float, target: int = 5) -> float:
    if span <= 0 or not math.isfinite(span):
        return 1.0
    raw = span / target
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def _ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    step = _nice_step(hi - lo, target)
    start = math.ceil(lo / step) * step
    out, v = [], start
    while v <= hi + 1e-12:
        out.append(round(v, 10))
        v += step
    return out


# ---------------------------------------------------------------------------------------------
# page sections
# ---------------------------------------------------------------------------------------------
def _order(names: Iterable[str], preferred: tuple[str, ...]) -> list[str]:
    names = list(names)
    return [n for n in preferred if n in names] + sorted(n for n in names if n not in preferred)


def section_gate(d: dict[str, Any]) -> str:
    gate = d["gate"]
    status = gate.get("status") or "unknown"
    ev = d["evaluation"]
    window = ev.get("purchase_window") or {}
    reasons = "".join(f'<li data-testid="gate-reason">{esc(r)}</li>' for r in gate.get("reasons") or [])
    return f"""
<section id="gate"><h2>Gate verdict</h2>
<div class="verdict">
  <span class="badge" data-testid="gate-status" data-status="{esc(status)}" style="background:{STATUS_COLORS.get(status, '#555')}">{esc(status)}</span>
  <span data-testid="gate-promoted" data-value="{esc(gate.get('promoted'))}">promoted: <b>{esc(gate.get('promoted'))}</b></span>
  <span>anchor <b data-testid="gate-anchor">{esc(gate.get('anchor'))}</b></span>
  <span>deployed <code data-testid="deployed-version">{esc(gate.get('deployed_version'))}</code></span>
  <span>champion <code>{esc(gate.get('champion_version'))}</code></span>
</div>
<p class="muted">Evaluation window: customers as of <b>{esc(window.get('as_of'))}</b>, purchase in the next {esc(window.get('horizon_days'))} days.
Rule: {esc((gate.get('thresholds') or {}).get('rules'))} (min lift {esc((gate.get('thresholds') or {}).get('min_lift'))}).</p>
<ul class="reasons">{reasons}</ul>
</section>"""


def metrics_table(block: str, rows: dict[str, dict[str, Any]], metrics: tuple[str, ...], preferred: tuple[str, ...]) -> str:
    if not rows:
        return f'<p class="muted" data-testid="{block}-metrics-empty">not evaluated</p>'
    head = "".join(f"<th>{esc(METRIC_LABELS.get(m, m))}</th>" for m in metrics)
    body = []
    for name in _order(rows, preferred):
        cells = "".join(
            f'<td data-metric="{m}" data-contender="{esc(name)}" data-value="{esc(data_value(rows[name].get(m)))}">{fmt_metric(m, rows[name].get(m))}</td>'
            for m in metrics
        )
        dot = f'<span class="dot" style="background:{COLORS.get(name, "#333")}"></span>'
        body.append(f'<tr data-contender="{esc(name)}"><th>{dot}{esc(LABELS.get(name, name))}</th>{cells}</tr>')
    return f'<table class="metrics" data-testid="{block}-metrics"><thead><tr><th></th>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def section_metrics(d: dict[str, Any]) -> str:
    ev = d["evaluation"]
    sw = ev.get("spend_window") or {}
    return f"""
<section id="metrics"><h2>Metrics vs baselines on the evaluation window</h2>
<h3>Purchase in {esc((ev.get('purchase_window') or {}).get('horizon_days'))} days</h3>
{metrics_table('purchase', ev.get('purchase') or {}, ('roc_auc', 'pr_auc', 'lift_at_10pct', 'brier', 'ece', 'base_rate', 'n'), ('candidate', 'champion', 'bgnbd', 'recency'))}
<h3>Spend over {esc(sw.get('horizon_days'))} days (customers as of {esc(sw.get('as_of'))})</h3>
{metrics_table('spend', ev.get('spend') or {}, ('normalized_gini', 'spearman', 'decile_mape', 'mean_actual', 'mean_predicted', 'n'), ('candidate', 'bgnbd_gg', 'past_spend'))}
</section>"""


def history_chart(d: dict[str, Any], metric: str) -> str:
    from purchasing_power.report import HISTORY_METRICS

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
    label = METRIC_LABELS.get(key, key)
    plot = Plot("history", title=f"{label} on each day's evaluation window", xlabel="as-of day", ylabel=label,
                x=(x0, x1), y=(y0, y1), width=900, height=300, margin=(30, 200, 44, 56), legend_at="out", metric=metric, days=len(rows))
    span = x1 - x0
    xt = sorted({o for o in ords}) if len(ords) <= 6 else [round(x0 + span * i / 5) for i in range(6)]
    plot.axes(xt, _ticks(y0, y1), xfmt=lambda v: date.fromordinal(int(v)).isoformat(), yfmt=lambda v: f"{v:.2f}" if hi <= 5 else f"{v:g}")
    for name in _order(series, ("candidate", "champion", "bgnbd", "recency", "bgnbd_gg", "past_spend")):
        pts = series[name]
        color = COLORS.get(name, "#333")
        plot.path([p[0] for p in pts], [p[1] for p in pts], series=name, color=color,
                  values=json.dumps([[p[2], p[1]] for p in pts]))
        for o, v, day in pts:
            plot.point(o, v, color=color, tip=f"{day} {LABELS.get(name, name)} {label} {v:.3f}", series=name, day=day, value=v)
        plot.add_legend(name, color, f"{LABELS.get(name, name)} (last {pts[-1][1]:.3f})", last=pts[-1][1])
    # gate status strip along the top
    for r, o in zip(rows, ords):
        st = r.get("status") or "unknown"
        plot.parts.append(
            f'<rect class="status" x="{plot.sx(o) - 4:.1f}" y="{plot.mt - 8}" width="8" height="6" fill="{STATUS_COLORS.get(st, "#555")}"'
            f'{attrs(data_day=r["day"], data_status=st)}><title>{esc(r["day"])}: {esc(st)}</title></rect>'
        )
    if not rows:
        plot.parts.append(f'<text class="empty" x="{plot.w / 2}" y="{plot.h / 2}" text-anchor="middle">no history</text>')
    return plot.render()


def section_history(d: dict[str, Any], metric: str) -> str:
    from purchasing_power.report import HISTORY_METRICS

    links = " · ".join(
        f'<b>{esc(METRIC_LABELS[k])}</b>' if k == metric else f'<a href="?day={esc(d["as_of"])}&amp;metric={k}">{esc(METRIC_LABELS[k])}</a>'
        for k in HISTORY_METRICS
    )
    legend = " ".join(f'<span class="dot" style="background:{c}"></span>{esc(s)}' for s, c in STATUS_COLORS.items())
    return f"""
<section id="history"><h2>Over time</h2>
<p class="muted">Each published day's gate inputs (the evaluation window of its anchor), up to {esc(d['as_of'])}. Metric: {links}. Gate status strip: {legend}</p>
{history_chart(d, metric)}
</section>"""


def _draw_contenders(plot: Plot, window: dict[str, Any], names: list[str], curve: Callable[[str, dict[str, Any]], Any]) -> str:
    """Draw every contender's curve with its legend entry (first-listed drawn last, on top) and
    render. ``curve(name, contender)`` returns ``(xs, ys, legend text, data, point)`` or None
    when the contender lacks that curve; ``data`` goes on the path and the legend entry,
    ``point`` is an optional ``(x, y, tip)`` marker."""
    for name in reversed(names):
        got = curve(name, window["contenders"][name])
        if got is None:
            continue
        xs, ys, text, data, point = got
        color = COLORS.get(name, "#333")
        plot.path(xs, ys, series=name, color=color, **data)
        if point is not None:
            px, py, tip = point
            plot.point(px, py, color=color, series=name, value=py, tip=tip)
        plot.add_legend(name, color, text, **data)
    plot.legend.reverse()
    return plot.render()


def roc_chart(window: dict[str, Any], names: list[str]) -> str:
    plot = Plot("roc", title="ROC curve", xlabel="false positive rate", ylabel="true positive rate", legend_at="br", window=window["id"])
    plot.axes(_ticks(0, 1), _ticks(0, 1))
    plot.ref([0, 1], [0, 1], "chance")

    def curve(name: str, c: dict[str, Any]) -> Any:
        roc = c.get("roc")
        if not roc:
            return None
        return roc["fpr"], roc["tpr"], f"{LABELS.get(name, name)} AUC {roc['auc']:.3f}", {"auc": roc["auc"]}, None

    return _draw_contenders(plot, window, names, curve)


def pr_chart(window: dict[str, Any], names: list[str]) -> str:
    base = window.get("base_rate")
    plot = Plot("pr", title="Precision-recall", xlabel="recall", ylabel="precision", legend_at="tr", window=window["id"], base_rate=base)
    plot.axes(_ticks(0, 1), _ticks(0, 1))
    if num(base):
        plot.ref([0, 1], [base, base], f"base rate {base:.3f}", at_start=True)

    def curve(name: str, c: dict[str, Any]) -> Any:
        pr = c.get("pr")
        if not pr:
            return None
        return pr["recall"], pr["precision"], f"{LABELS.get(name, name)} AP {pr['ap']:.3f}", {"ap": pr["ap"]}, None

    return _draw_contenders(plot, window, names, curve)


def gains_chart(window: dict[str, Any], names: list[str]) -> str:
    plot = Plot("gains", title="Cumulative gains", xlabel="share of customers, by score", ylabel="share of buyers found", legend_at="br", window=window["id"])
    plot.axes(_ticks(0, 1), _ticks(0, 1), xfmt=lambda v: f"{v:.0%}", yfmt=lambda v: f"{v:.0%}")
    plot.ref([0, 1], [0, 1], "random")

    def curve(name: str, c: dict[str, Any]) -> Any:
        g = c.get("gains")
        if not g:
            return None
        captured10 = g["captured"][g["share"].index(0.1)]
        text = f"{LABELS.get(name, name)} top 10 %: {captured10:.1%}"
        return [0.0, *g["share"]], [0.0, *g["captured"]], text, {"captured10": captured10}, None

    return _draw_contenders(plot, window, names, curve)


def lift_chart(window: dict[str, Any], names: list[str]) -> str:
    lifts = [v for n in names if window["contenders"][n].get("gains") for v in window["contenders"][n]["gains"]["lift"] if num(v)]
    top = max(lifts or [2.0]) * 1.1
    plot = Plot("lift", title="Lift", xlabel="share of customers, by score", ylabel="lift (× base rate)", x=(0, 1), y=(0, top), legend_at="tr", window=window["id"])
    plot.axes(_ticks(0, 1), _ticks(0, top), xfmt=lambda v: f"{v:.0%}")
    plot.ref([0, 1], [1, 1], "no lift", at_start=True)

    def curve(name: str, c: dict[str, Any]) -> Any:
        g = c.get("gains")
        if not g:
            return None
        lift10 = c["metrics"].get("lift_at_10pct")
        label = LABELS.get(name, name)
        point = (0.1, lift10, f"{label} lift@10% {lift10:.3f}") if num(lift10) else None
        return g["share"], g["lift"], f"{label} lift@10% {f3(lift10)}", {"lift10": lift10}, point

    return _draw_contenders(plot, window, names, curve)


def calibration_chart(window: dict[str, Any], names: list[str]) -> str:
    plot = Plot("calibration", title="Reliability (calibration)", xlabel="mean predicted probability", ylabel="observed purchase rate", legend_at="tl", window=window["id"])
    plot.axes(_ticks(0, 1), _ticks(0, 1))
    plot.ref([0, 1], [0, 1], "perfect")
    for name in reversed(names):  # first-listed drawn last, on top
        c = window["contenders"][name]
        bins = c.get("calibration")
        if not bins:
            continue
        color = COLORS.get(name, "#333")
        filled = [b for b in bins if b["n"]]
        ece = c["metrics"].get("ece")
        plot.path([b["p_mean"] for b in filled], [b["y_rate"] for b in filled], series=name, color=color, ece=ece,
                  bins=json.dumps([[b["lo"], b["n"], b["p_mean"], b["y_rate"]] for b in filled]))
        for b in filled:
            plot.point(b["p_mean"], b["y_rate"], color=color, r=2.5 + min(4.0, math.sqrt(b["n"]) / 4), series=name, n=b["n"],
                       tip=f"{LABELS.get(name, name)} [{b['lo']:.1f}, {b['hi']:.1f}): n={b['n']}, predicted {b['p_mean']:.3f}, observed {b['y_rate']:.3f}")
        plot.add_legend(name, color, f"{LABELS.get(name, name)} ECE {f3(ece)} Brier {f3(c['metrics'].get('brier'))}", ece=ece)
    plot.legend.reverse()
    return plot.render()


def section_curves(d: dict[str, Any]) -> str:
    report = d.get("report")
    if not report:
        return f"""
<section id="curves"><h2>Curves</h2>
<p class="warn" data-testid="report-missing">No curves for {esc(d['as_of'])}: <code>metrics/ds={esc(d['as_of'])}/report.json</code> is missing.
It is written after publish; for an earlier day run <code>python -m purchasing_power.report --day {esc(d['as_of'])}</code>.</p></section>"""
    out = ['<section id="curves"><h2>Curves</h2>']
    for err in report.get("errors") or []:
        out.append(f'<p class="warn">report error: {esc(err)}</p>')
    if not report.get("windows"):
        out.append('<p class="muted">No window with outcomes yet.</p>')
    for w in report.get("windows") or []:
        names = _order(w["contenders"], ("candidate", "champion", "bgnbd", "recency", "published"))
        matches = w.get("matches_gate") or {}
        bad = [n for n, ok in matches.items() if not ok]
        note = ""
        if w["id"] == "evaluation":
            note = (f'<p class="warn" data-testid="curves-mismatch">Recomputed metrics differ from the gate\'s for: {esc(", ".join(bad))}</p>'
                    if bad else '<p class="muted" data-testid="curves-match">Scores recomputed from the stored features and models; every contender reproduces the gate\'s metrics.</p>')
        spend = ""
        if w.get("spend"):
            s = w["spend"]
            spend = (f'<p class="muted" data-testid="realised-spend">Realised {esc(s.get("horizon_days"))}-day spend: normalized Gini {f3(s.get("normalized_gini"))}, '
                     f'Spearman {f3(s.get("spearman"))}, mean predicted £{fmt_metric("mean_predicted", s.get("mean_predicted"))} vs actual £{fmt_metric("mean_actual", s.get("mean_actual"))}.</p>')
        out.append(
            f'<div class="window" data-window="{esc(w["id"])}" data-as-of="{esc(w["as_of"])}" data-n="{esc(w.get("n"))}">'
            f'<h3>{esc(w["title"])}</h3>'
            f'<p class="muted">{esc(w.get("n"))} customers, base rate {f3(w.get("base_rate"))}'
            + (f', anchor {esc(w.get("anchor"))}' if w.get("anchor") else "")
            + "; models: "
            + "; ".join(f"{esc(LABELS.get(n, n))} = <code>{esc(w['contenders'][n].get('model_version'))}</code>" for n in names)
            + f"</p>{note}{spend}"
            f'<div class="grid">{roc_chart(w, names)}{pr_chart(w, names)}{gains_chart(w, names)}{lift_chart(w, names)}{calibration_chart(w, names)}</div></div>'
        )
    out.append("</section>")
    return "".join(out)


def section_predictions(d: dict[str, Any]) -> str:
    from purchasing_power.report import SPEND_EDGES, TIERS

    p = d.get("predictions")
    if not p:
        return '<section id="predictions"><h2>Predictions</h2><p class="warn">predictions file missing</p></section>'
    tiers = p["tiers"]
    bars = [(t, tiers[t]["n"], TIER_COLORS[t], t) for t in TIERS]
    tier_svg = bar_chart("tiers", "Customers by tier", bars, label_width=70, total=p["n"])
    rows = "".join(
        f'<tr data-tier="{t}"><th><span class="dot" style="background:{TIER_COLORS[t]}"></span>{t}</th>'
        f'<td data-field="n" data-value="{tiers[t]["n"]}">{tiers[t]["n"]:,}</td>'
        f'<td>{pct(tiers[t]["n"] / p["n"] if p["n"] else None)}</td>'
        f'<td data-field="spend_sum" data-value="{esc(data_value(tiers[t]["spend_sum"]))}">{gbp(tiers[t]["spend_sum"])}</td>'
        f'<td>{gbp(tiers[t]["spend_min"])} – {gbp(tiers[t]["spend_max"])}</td>'
        f'<td>{gbp(tiers[t]["spend_median"])}</td>'
        f'<td data-field="p_mean" data-value="{esc(data_value(tiers[t]["p_mean"]))}">{f3(tiers[t]["p_mean"])}</td></tr>'
        for t in TIERS
    )
    table = (
        '<table class="metrics" data-testid="tier-table"><thead><tr><th>tier</th><th>customers</th><th>share</th>'
        "<th>expected spend 90 d</th><th>range</th><th>median</th><th>mean p(purchase 30 d)</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )
    edges = list(SPEND_EDGES)
    labels = [f"{_short(edges[i])}–{_short(edges[i + 1])}" if i + 1 < len(edges) else f"≥{_short(edges[i])}" for i in range(len(edges))]
    counts = {t: p["spend_hist"]["counts"][t] for t in TIERS}
    last = max([i for i in range(len(labels)) if any(counts[t][i] for t in TIERS)] or [0])
    spend_svg = stacked_columns(
        "spend-hist", "Expected 90-day spend (GBP), by tier", labels[: last + 1], {t: counts[t][: last + 1] for t in TIERS}, TIER_COLORS,
        xlabel="expected_spend_90d (£)", ylabel="customers", width=560, total=p["n"],
    )
    p_labels = [f"{i / 10:.1f}" for i in range(10)]
    p_svg = stacked_columns(
        "p-hist", "Purchase probability (30 days), by tier", p_labels, {t: p["p_hist"]["counts"][t] for t in TIERS}, TIER_COLORS,
        xlabel="p_purchase_30d (bin start)", ylabel="customers", width=420, total=p["n"],
    )
    versions = ", ".join(f"<code>{esc(k)}</code> ({v:,})" for k, v in p["model_versions"].items())
    return f"""
<section id="predictions"><h2>Predictions as of {esc(d['as_of'])}</h2>
<p class="muted"><b data-testid="customers-scored" data-value="{p['n']}">{p['n']:,}</b> customers scored by {versions};
mean p(purchase in 30 days) <b data-testid="p-mean" data-value="{esc(data_value(p['p_mean']))}">{f3(p['p_mean'])}</b>;
total expected 90-day spend <b data-testid="spend-total" data-value="{esc(data_value(p['spend_total']))}">{gbp(p['spend_total'])}</b>.</p>
<div class="grid">{tier_svg}{table}</div>
<div class="grid">{spend_svg}{p_svg}</div>
</section>"""


def _short(v: float) -> str:
    return f"{v / 1000:g}k" if v >= 1000 else f"{v:g}"


def section_quality(d: dict[str, Any]) -> str:
    q = d["quarantine"]
    day_counts = q["day"]
    bars = [(r, n, "#c0392b", r) for r, n in q["window"].items()]
    svg = bar_chart(
        "quarantine", f"Quarantined rows by reason, {q['window_start']} – {d['as_of']}", bars, width=560, label_width=290,
        value_fmt=lambda v: f"{v:,}", window_days=q["window_days"], total=sum(q["window"].values()),
    )
    day_rows = "".join(f'<tr data-reason="{esc(r)}"><td>{esc(r)}</td><td data-value="{n}">{n:,}</td></tr>' for r, n in sorted(day_counts.items()))
    rc = (d["row_counts"] or {}).get("day") or {}
    return f"""
<section id="quality"><h2>Data quality</h2>
<p class="muted">Rows of {esc(d['as_of'])}: read <b data-testid="rows-read">{esc(rc.get('read'))}</b>, clean <b data-testid="rows-clean">{esc(rc.get('clean'))}</b>,
quarantined <b data-testid="rows-quarantined">{esc(rc.get('quarantined'))}</b>; source rows {esc((d['row_counts'] or {}).get('source_rows'))}.</p>
<div class="grid">{svg}
<table class="metrics" data-testid="quarantine-day"><thead><tr><th>reason ({esc(d['as_of'])})</th><th>rows</th></tr></thead>
<tbody>{day_rows or '<tr><td colspan="2" class="muted">none</td></tr>'}</tbody></table></div>
</section>"""


def section_embedding(d: dict[str, Any]) -> str:
    emb = d["embedding"]
    run = emb.get("run")
    hist = (emb.get("history") or [])[-EMBED_HISTORY_RUNS:]
    one_year = len({h["day"][:4] for h in hist}) <= 1
    labels = [h["day"][5:] if one_year else h["day"] for h in hist]
    svg = stacked_columns(
        "embed-cache", f"Distinct product texts per run (last {len(hist)}): from cache vs newly embedded", labels,
        {"cached": [h["cached"] for h in hist], "new": [h["new"] for h in hist]}, {"cached": "#2ca02c", "new": "#ff7f0e"},
        xlabel="run day", ylabel="distinct texts", width=560, days=len(hist),
    )
    if run and run.get("skipped"):
        head = f'<p class="muted" data-testid="embed-skipped">Embedding skipped on {esc(d["as_of"])}: {esc(run["skipped"])}.</p>'
    elif run:
        head = (f'<p class="big"><b data-testid="embed-hit-rate" data-value="{esc(data_value(run["hit_rate"]))}">{pct(run["hit_rate"], 1)}</b> '
                f'cache hit rate on {esc(d["as_of"])}: <span data-testid="embed-cached">{run["cached"]:,}</span> of '
                f'<span data-testid="embed-unique">{run["unique"]:,}</span> distinct texts were cached, '
                f'<span data-testid="embed-new">{run["new"]:,}</span> embedded'
                + (f' on {esc(run.get("device"))}' if run.get("device") else "")
                + f'. Model <code>{esc(emb.get("model_id"))}</code> @ <code>{esc(emb.get("revision"))}</code>; {esc(emb.get("rows"))} rows, {esc(emb.get("empty"))} without text.</p>')
    else:
        head = f'<p class="muted" data-testid="embed-missing">No embed report for {esc(d["as_of"])} (runs/ds={esc(d["as_of"])}/embed.json).</p>'
    return f'<section id="embedding"><h2>Embedding cache</h2>{head}{svg}</section>'


CSS = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1a1a1a;background:#fff}
header{padding:14px 24px;border-bottom:1px solid #ddd;display:flex;gap:24px;align-items:center;flex-wrap:wrap}
header h1{font-size:20px;margin:0}
main{padding:8px 24px 40px;max-width:1300px}
section{margin:18px 0 8px;border-top:1px solid #eee}
h2{font-size:17px;margin:14px 0 6px}h3{font-size:14px;margin:12px 0 4px}
.muted{color:#555}.warn{color:#9c2a00;background:#fff4e5;padding:6px 10px;border-radius:4px}
.badge{color:#fff;padding:3px 10px;border-radius:12px;font-weight:600}
.verdict{display:flex;gap:18px;align-items:center;flex-wrap:wrap}
.reasons{margin:6px 0 0 0;padding-left:20px;color:#333}
table.metrics{border-collapse:collapse;margin:4px 0 8px;font-variant-numeric:tabular-nums}
table.metrics th,table.metrics td{padding:3px 10px;border-bottom:1px solid #eee;text-align:right}
table.metrics th:first-child,table.metrics td:first-child{text-align:left}
.dot{display:inline-block;width:10px;height:10px;border-radius:5px;margin-right:6px;vertical-align:baseline}
.grid{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-start}
svg.chart{background:#fcfcfc;border:1px solid #e6e6e6;border-radius:4px}
svg .grid{stroke:#ececec}svg .axis{stroke:#888}svg .ref{stroke:#aaa;stroke-dasharray:4 3}
svg .tick{font-size:10px;fill:#555}svg .label{font-size:11px;fill:#333}svg .title{font-size:12px;font-weight:600;fill:#222}
svg .legend{font-size:10.5px;fill:#222}svg .legend-bg{fill:#fff;opacity:.85}svg .value{font-size:10px;fill:#222}svg .empty{font-size:12px;fill:#888}
.big{font-size:15px}code{font-size:12px}
form{margin:0}select,button{font:inherit}
"""


def render_page(d: dict[str, Any], metric: str = "roc_auc") -> str:
    options = "".join(f'<option value="{esc(x)}"{" selected" if x == d["as_of"] else ""}>{esc(x)}</option>' for x in d["days"])
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{TITLE} — {esc(d['as_of'])}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,"><style>{CSS}</style></head>
<body data-as-of="{esc(d['as_of'])}">
<header><h1>{TITLE}</h1>
<form method="get" action="" data-testid="day-form"><label>as of <select name="day" data-testid="day-select" onchange="this.form.submit()">{options}</select></label>
<input type="hidden" name="metric" value="{esc(metric)}"><noscript><button type="submit">show</button></noscript></form>
<span class="muted">model <code data-testid="model-version">{esc(d.get('model_version'))}</code> · source <code>{esc(d.get('source'))}</code></span>
</header>
<main>
{section_gate(d)}
{section_metrics(d)}
{section_history(d, metric)}
{section_curves(d)}
{section_predictions(d)}
{section_quality(d)}
{section_embedding(d)}
<p class="muted">Read from <code>{esc(d['storage'])}</code>: metrics/, predictions/, quarantine/, runs/ds=*/embed.json and metrics/ds=*/report.json (curves).
<a href="api/summary?day={esc(d['as_of'])}">JSON</a></p>
</main></body></html>"""


# ---------------------------------------------------------------------------------------------
# the FastAPI app
# ---------------------------------------------------------------------------------------------
def _storage_root(explicit: str | None) -> str:
    if explicit:
        return explicit
    from purchasing_power.settings import default_storage

    return default_storage()


async def _authorize(request) -> None:
    """An authenticated Airflow user allowed to read the purchasing_power_daily Dag; raises 401/403."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails
    from airflow.api_fastapi.core_api import security

    user = None
    header = request.headers.get("authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else None
    if token is None:
        marker = getattr(security, "USER_INJECTED_BY_TRUSTED_MIDDLEWARE", None)
        if marker is not None and getattr(request.state, "user_authenticated_via", None) is marker:
            user = getattr(request.state, "user", None)
        token = request.cookies.get(COOKIE_NAME_JWT_TOKEN)
    if user is None:
        user = await security.resolve_user_from_token(token)
    if not get_auth_manager().is_authorized_dag(method="GET", details=DagDetails(id=DAG_ID), user=user):
        from fastapi import HTTPException

        raise HTTPException(status_code=403, detail=f"not allowed to read Dag {DAG_ID}")


def _parse_day(day: Optional[str]) -> Optional[date]:
    if not day:
        return None
    from fastapi import HTTPException

    from purchasing_power.storage import parse_day

    try:
        return parse_day(day)
    except ValueError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from None


def create_app(storage: Optional[str] = None, *, require_auth: bool = True) -> Any:
    """The page's FastAPI app. ``storage``: the storage root (default: ``PURCHASING_POWER_STORAGE``
    at request time). ``require_auth``: check the Airflow user (only inside the API server)."""
    from fastapi import FastAPI, HTTPException, Query, Request
    from fastapi.responses import HTMLResponse, RedirectResponse, Response

    app = FastAPI(title=TITLE, docs_url=None, redoc_url=None, openapi_url=None)

    async def guard(request: Request) -> Optional[Response]:
        if not require_auth:
            return None
        try:
            await _authorize(request)
        except HTTPException as exc:
            if exc.status_code == 401 and "text/html" in request.headers.get("accept", ""):
                from airflow.api_fastapi.app import get_auth_manager

                return RedirectResponse(get_auth_manager().get_url_login(next_url=str(request.url)), status_code=307)
            raise
        return None

    def load(day: Optional[str]) -> dict[str, Any]:
        from purchasing_power.report import page_data

        try:
            return page_data(_storage_root(storage), _parse_day(day))
        except LookupError as exc:
            raise HTTPException(status_code=404, detail=str(exc)) from None

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/", response_class=HTMLResponse)
    async def page(request: Request, day: Optional[str] = Query(None), metric: str = Query("roc_auc")) -> Response:
        from starlette.concurrency import run_in_threadpool

        from purchasing_power.report import HISTORY_METRICS

        denied = await guard(request)
        if denied is not None:
            return denied
        if metric not in HISTORY_METRICS:
            raise HTTPException(status_code=400, detail=f"metric must be one of {list(HISTORY_METRICS)}")
        try:
            data = await run_in_threadpool(load, day)
        except HTTPException as exc:
            if exc.status_code != 404:
                raise
            body = f"<!doctype html><title>{TITLE}</title><h1>{TITLE}</h1><p data-testid='not-found'>{esc(exc.detail)}</p>"
            return HTMLResponse(body, status_code=404)
        html_text = await run_in_threadpool(render_page, data, metric)
        return HTMLResponse(html_text, headers={"Cache-Control": "no-store"})

    @app.get("/api/summary")
    async def summary(request: Request, day: Optional[str] = Query(None)) -> Response:
        from starlette.concurrency import run_in_threadpool

        denied = await guard(request)
        if denied is not None:
            return denied
        data = await run_in_threadpool(load, day)
        return Response(json.dumps(_json_safe(data), default=str), media_type="application/json")

    return app


def _json_safe(obj: Any) -> Any:
    """NaN and infinities become null (JSON has no such numbers)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def _external_href() -> str:
    """The page's URL path, under ``[api] base_url``'s path when Airflow is served below one."""
    try:
        from urllib.parse import urlsplit

        from airflow.configuration import conf

        base = urlsplit(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")
    except Exception:  # pragma: no cover - config not readable: serve at the root
        base = ""
    return f"{base}{URL_PREFIX}/"


class LazyApp:
    """ASGI app that builds the FastAPI app on its first request. Every Airflow component loads
    plugins (scheduler, dag processor, workers); only the API server ever calls this, so the
    others never import FastAPI or build routes for it."""

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self._app: Any = None

    @property
    def app(self) -> Any:
        if self._app is None:
            self._app = create_app(**self.kwargs)
        return self._app

    async def __call__(self, scope, receive, send) -> None:
        await self.app(scope, receive, send)


app = LazyApp(require_auth=True)


class PurchasingPowerPlugin(AirflowPlugin):
    name = "purchasing_power_ui"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": TITLE}]
    external_views = [
        {
            "name": TITLE,
            "href": _external_href(),
            "url_route": "purchasing-power",
            "destination": "nav",
            "category": "browse",
        }
    ]


def main(argv: list[str] | None = None) -> int:
    """Serve the page without Airflow auth on 127.0.0.1 (local use and tests)."""
    import argparse
    import sys
    from pathlib import Path

    ap = argparse.ArgumentParser(description="Serve the Purchasing power page (no auth) on loopback.")
    ap.add_argument("--storage", default=None, help="storage root (default: PURCHASING_POWER_STORAGE or ./data)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8765)
    args = ap.parse_args(argv)
    include = str(Path(__file__).resolve().parents[1] / "include")
    if include not in sys.path:
        sys.path.insert(0, include)
    import uvicorn

    from fastapi import FastAPI

    root = FastAPI()
    root.mount(URL_PREFIX, create_app(args.storage and os.path.abspath(args.storage), require_auth=False))
    print(f"http://{args.host}:{args.port}{URL_PREFIX}/", flush=True)
    uvicorn.run(root, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
