"""How the page writes numbers and names: colours and labels of the contenders, tiers and gate
statuses, number formats, and the escaping of text and ``data-*`` attributes in hand-built SVG."""

from __future__ import annotations

import html
import math
from typing import Any, Iterable

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
#: Contender order of the metrics tables, the history chart and the curves (others follow, sorted).
PURCHASE_ORDER = ("candidate", "champion", "bgnbd", "recency")
SPEND_ORDER = ("candidate", "bgnbd_gg", "past_spend")
HISTORY_ORDER = ("candidate", "champion", "bgnbd", "recency", "bgnbd_gg", "past_spend")
CURVE_ORDER = ("candidate", "champion", "bgnbd", "recency", "published")


def color(name: str) -> str:
    return COLORS.get(name, "#333")


def label(name: str) -> str:
    return LABELS.get(name, name)


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def f3(v: Any) -> str:
    """Three decimals, as the page shows metrics (``n/a`` when missing)."""
    return f"{v:.3f}" if num(v) else "n/a"


def fmt_metric(v: Any, name: str) -> str:
    """A metric's value as its table cell shows it: counts grouped, pounds with pence, the rest
    with three decimals."""
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


def grouped(v: Any) -> str:
    """A count with thousands separators."""
    return f"{v:,}"


def short(v: float) -> str:
    """A histogram edge in few characters: 2500 -> 2.5k."""
    return f"{v / 1000:g}k" if v >= 1000 else f"{v:g}"


def data_value(v: Any) -> str:
    """Full-precision value for data-* attributes (what a test compares against storage)."""
    if v is None:
        return ""
    return repr(float(v)) if isinstance(v, float) else str(v)


def attrs(**kw: Any) -> str:
    """`` key="value"`` pairs (underscores become dashes), escaped; None values are left out."""
    return "".join(f' {k.replace("_", "-")}="{esc(v)}"' for k, v in kw.items() if v is not None)


def data_attrs(**kw: Any) -> str:
    """``data-*`` attributes carrying full-precision values (``data_value``)."""
    return attrs(**{f"data_{k}": data_value(v) for k, v in kw.items()})


def order(names: Iterable[str], preferred: tuple[str, ...]) -> list[str]:
    """``names`` with the ``preferred`` ones first, in that order, then the rest sorted."""
    names = list(names)
    return [n for n in preferred if n in names] + sorted(n for n in names if n not in preferred)
