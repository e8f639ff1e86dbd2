"""A small chart kit that writes inline SVG: a 2-d plot with linear scales, axes, gridlines and
a legend (``Plot``), horizontal bars (``bar_chart``) and stacked columns (``stacked_columns``).

Every chart is returned as ``Markup`` (ready for the templates). Each drawn element carries its
numbers as full-precision ``data-*`` attributes next to the rounded text, so a test reads what
was drawn; the styling comes from the page's stylesheet (classes ``grid``, ``axis``, ``ref``,
``tick``, ``label``, ``title``, ``legend``, ``value``, ``empty``)."""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable

from markupsafe import Markup

from purchasing_power.ui.fmt import attrs, data_attrs, esc, num


def _g(v: float) -> str:
    return f"{v:g}"


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
        legend_at: str = "tl",  # tl, tr, bl, br: the corner the curves leave empty; out: right of the plot
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

    def axes(self, xticks: Iterable[float], yticks: Iterable[float], xfmt: Callable[[float], str] = _g, yfmt: Callable[[float], str] = _g) -> None:
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
        """One series as a polyline through its finite points; ``data`` goes on the path."""
        pts = [(self.sx(a), self.sy(b)) for a, b in zip(xs, ys) if num(a) and num(b)]
        if not pts:
            return
        d = "M" + " L".join(f"{a:.1f},{b:.1f}" for a, b in pts)
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        self.parts.append(
            f'<path class="series" d="{d}" fill="none" stroke="{color}" stroke-width="{width}"{dash_attr}'
            f"{data_attrs(series=series, points=len(pts), **data)}/>"
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
            f"{data_attrs(**data)}><title>{esc(tip)}</title></circle>"
        )

    def add_legend(self, key: str, color: str, text: str, **data: Any) -> None:
        self.legend.append((key, color, text, data))

    def render(self, extra_height: int = 0) -> Markup:
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
                f'<g class="legend-item"{data_attrs(series=key, **data)}>'
                f'<rect x="{lx:.1f}" y="{yy:.1f}" width="10" height="10" fill="{color}"/>'
                f'<text class="legend" x="{lx + 14:.1f}" y="{yy + 9:.1f}">{esc(text)}</text></g>'
            )
        legend_bg = ""
        if self.legend:
            legend_bg = f'<rect class="legend-bg" x="{lx - 4:.1f}" y="{ly - 4:.1f}" width="{lw:.0f}" height="{lh + 4}"/>'
        return Markup(
            f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{self.w}" height="{self.h + extra_height}" '
            f'viewBox="0 0 {self.w} {self.h + extra_height}" role="img" aria-label="{esc(self.title)}"'
            f"{data_attrs(chart=self.chart, **self.data)}>"
            f'<text class="title" x="{self.ml}" y="18">{esc(self.title)}</text>'
            + "".join(self.parts)
            + legend_bg
            + "".join(legend)
            + "</svg>"
        )


def _thousands(v: float) -> str:
    return f"{v:,.0f}"


def bar_chart(
    chart: str,
    title: str,
    bars: list[tuple[str, float, str, str]],
    *,
    width: int = 380,
    label_width: int = 120,
    bar_height: int = 18,
    value_fmt: Callable[[float], str] = _thousands,
    **data: Any,
) -> Markup:
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
            f'<g class="bar"{data_attrs(key=key, value=value)}>'
            f'<text class="tick" x="{label_width - 6}" y="{yy + bar_height * 0.7:.1f}" text-anchor="end">{esc(label)}</text>'
            f'<rect x="{label_width}" y="{yy}" width="{w:.1f}" height="{bar_height}" fill="{color}"/>'
            f'<text class="value" x="{label_width + w + 5:.1f}" y="{yy + bar_height * 0.7:.1f}">{esc(value_fmt(value))}</text></g>'
        )
    return Markup(
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{esc(title)}"{data_attrs(chart=chart, **data)}>'
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
) -> Markup:
    """Vertical stacked columns: one column per label, one segment per stack key."""
    totals = [sum(stacks[k][i] for k in stacks) for i in range(len(labels))]
    ymax = max(totals or [1]) or 1
    rotate = len(labels) > 8  # many columns: slanted labels
    margin = (30, 14, 74 if rotate else 44, 50)
    plot = Plot(chart, title=title, xlabel=xlabel, ylabel=ylabel, x=(0, max(1, len(labels))), y=(0, ymax * 1.3),
                width=width, height=height + (30 if rotate else 0), margin=margin, **data)
    step = nice_step(ymax * 1.1)
    plot.axes([], [t * step for t in range(int(ymax * 1.1 / step) + 1)], yfmt=_thousands)
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
                f"{attrs(data_bin=label, data_total=int(totals[i]))}>{totals[i]:,.0f}</text>"
            )
        lx, ly = x + bw / 2, plot.h - plot.mb + 14
        turn = f' transform="rotate(-45 {lx:.1f} {ly:.1f})"' if rotate else ""
        plot.parts.append(f'<text class="tick" x="{lx:.1f}" y="{ly:.1f}" text-anchor="{"end" if rotate else "middle"}"{turn}>{esc(label)}</text>')
    plot.legend_at = "tr"
    for key in stacks:
        plot.add_legend(key, colors[key], key)
    return plot.render()


def nice_step(span: float, target: int = 5) -> float:
    """A round tick step (1, 2, 2.5 or 5 times a power of ten) giving about ``target`` ticks."""
    if span <= 0 or not math.isfinite(span):
        return 1.0
    raw = span / target
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    """Round tick positions from ``lo`` to ``hi``."""
    step = nice_step(hi - lo, target)
    start = math.ceil(lo / step) * step
    out, v = [], start
    while v <= hi + 1e-12:
        out.append(round(v, 10))
        v += step
    return out
