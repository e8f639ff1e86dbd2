"""The page as HTML: one view model per section, built from the page data
(:func:`purchasing_power.ui.page_data.page_data`), and the Jinja2 templates in ``templates/``
that lay them out. Text is escaped by the templates (``autoescape``); the charts arrive as
``Markup`` from :mod:`purchasing_power.ui.charts`. ``None`` prints as nothing."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

from purchasing_power.report import PURCHASE_METRICS, SPEND_METRICS
from purchasing_power.schemas import TIERS
from purchasing_power.ui import TITLE
from purchasing_power.ui.charts import (
    embed_chart,
    history_chart,
    probability_chart,
    quarantine_chart,
    spend_chart,
    tier_chart,
    window_charts,
)
from purchasing_power.ui.fmt import (
    CURVE_ORDER,
    METRIC_LABELS,
    PURCHASE_ORDER,
    SPEND_ORDER,
    STATUS_COLORS,
    TIER_COLORS,
    color,
    data_value,
    f3,
    fmt_metric,
    gbp,
    grouped,
    label,
    order,
    pct,
)
from purchasing_power.ui.page_data import HISTORY_METRICS

TEMPLATES = Path(__file__).resolve().parent / "templates"


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The templates, autoescaped, with the page's number formats as filters."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=lambda v: "" if v is None else v,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(f3=f3, gbp=gbp, pct=pct, grouped=grouped, data_value=data_value, metric=fmt_metric, label=label, color=color)
    return env


# ---------------------------------------------------------------------------------------------
# view models, one per section
# ---------------------------------------------------------------------------------------------
def gate_view(d: dict[str, Any]) -> dict[str, Any]:
    gate = d["gate"]
    status = gate.get("status") or "unknown"
    window = d["evaluation"].get("purchase_window") or {}
    thresholds = gate.get("thresholds") or {}
    return {
        "status": status,
        "color": STATUS_COLORS.get(status, "#555"),
        "promoted": gate.get("promoted"),
        "anchor": gate.get("anchor"),
        "deployed_version": gate.get("deployed_version"),
        "champion_version": gate.get("champion_version"),
        "window_as_of": window.get("as_of"),
        "horizon_days": window.get("horizon_days"),
        "rules": thresholds.get("rules"),
        "min_lift": thresholds.get("min_lift"),
        "reasons": gate.get("reasons") or [],
    }


def metrics_table(block: str, rows: dict[str, dict[str, Any]], columns: tuple[str, ...], preferred: tuple[str, ...]) -> dict[str, Any]:
    """One table of contenders (rows, ``preferred`` first) by metric (columns)."""
    return {
        "block": block,
        "head": [METRIC_LABELS.get(m, m) for m in columns],
        "rows": [{"name": name, "cells": [(m, rows[name].get(m)) for m in columns]} for name in order(rows, preferred)],
    }


def metrics_view(d: dict[str, Any]) -> dict[str, Any]:
    ev = d["evaluation"]
    sw = ev.get("spend_window") or {}
    return {
        "purchase_days": (ev.get("purchase_window") or {}).get("horizon_days"),
        "spend_days": sw.get("horizon_days"),
        "spend_as_of": sw.get("as_of"),
        "purchase": metrics_table("purchase", ev.get("purchase") or {}, PURCHASE_METRICS, PURCHASE_ORDER),
        "spend": metrics_table("spend", ev.get("spend") or {}, SPEND_METRICS, SPEND_ORDER),
    }


def history_view(d: dict[str, Any], metric: str) -> dict[str, Any]:
    return {
        "links": [(k, METRIC_LABELS[k], k == metric) for k in HISTORY_METRICS],
        "statuses": list(STATUS_COLORS.items()),
        "chart": history_chart(d, metric),
    }


def curves_view(d: dict[str, Any]) -> dict[str, Any] | None:
    """The report's windows, or None when D has no ``report.json``."""
    report = d.get("report")
    if not report:
        return None
    windows = []
    for w in report.get("windows") or []:
        names = order(w["contenders"], CURVE_ORDER)
        bad = [n for n, ok in (w.get("matches_gate") or {}).items() if not ok]
        windows.append(
            {
                "id": w["id"],
                "as_of": w["as_of"],
                "title": w["title"],
                "n": w.get("n"),
                "base_rate": w.get("base_rate"),
                "anchor": w.get("anchor"),
                "models": [(n, w["contenders"][n].get("model_version")) for n in names],
                "checked": w["id"] == "evaluation",  # only the gate's window has the gate's numbers
                "mismatch": bad,
                "spend": _realised_spend(w.get("spend")),
                "charts": window_charts(w, names),
            }
        )
    return {"errors": report.get("errors") or [], "windows": windows}


def _realised_spend(s: dict[str, Any] | None) -> dict[str, Any] | None:
    if not s:
        return None
    return {k: s.get(k) for k in ("horizon_days", "normalized_gini", "spearman", "mean_predicted", "mean_actual")}


def predictions_view(d: dict[str, Any]) -> dict[str, Any] | None:
    """Predictions of D, or None when the predictions file is missing."""
    p = d.get("predictions")
    if not p:
        return None
    return {
        "n": p["n"],
        "p_mean": p["p_mean"],
        "spend_total": p["spend_total"],
        "versions": list(p["model_versions"].items()),
        "tiers": [{"tier": t, "color": TIER_COLORS[t], "share": p["tiers"][t]["n"] / p["n"] if p["n"] else None, **p["tiers"][t]} for t in TIERS],
        "tier_chart": tier_chart(p),
        "spend_chart": spend_chart(p),
        "p_chart": probability_chart(p),
    }


def quality_view(d: dict[str, Any]) -> dict[str, Any]:
    q = d["quarantine"]
    rc = d["row_counts"] or {}
    on_day = rc.get("day") or {}
    return {
        "read": on_day.get("read"),
        "clean": on_day.get("clean"),
        "quarantined": on_day.get("quarantined"),
        "source_rows": rc.get("source_rows"),
        "day_rows": sorted(q["day"].items()),
        "volume": (d.get("data_checks") or {}).get("volume"),
        "texts": rc.get("texts_day"),  # the user texts of the day (None without a texts source)
        "texts_rows": sorted((d.get("texts_quarantine") or {}).items()),
        "chart": quarantine_chart(q, d["as_of"]),
    }


def embedding_view(d: dict[str, Any]) -> dict[str, Any]:
    emb = d["embedding"]
    return {
        "run": emb.get("run"),
        "model_id": emb.get("model_id"),
        "revision": emb.get("revision"),
        "rows": emb.get("rows"),
        "empty": emb.get("empty"),
        "chart": embed_chart(emb.get("history") or []),
    }


# ---------------------------------------------------------------------------------------------
def render_page(d: dict[str, Any], metric: str = "roc_auc") -> str:
    """The whole page for the page data ``d``, its history chart showing ``metric``."""
    return environment().get_template("page.html").render(
        title=TITLE,
        as_of=d["as_of"],
        days=d["days"],
        metric=metric,
        model_version=d.get("model_version"),
        source=d.get("source"),
        storage=d["storage"],
        gate=gate_view(d),
        metrics=metrics_view(d),
        history=history_view(d, metric),
        curves=curves_view(d),
        predictions=predictions_view(d),
        quality=quality_view(d),
        embedding=embedding_view(d),
    )


def render_not_found(detail: Any) -> str:
    """The page for a day (or a storage) with nothing published."""
    return environment().get_template("not_found.html").render(title=TITLE, detail=detail)
