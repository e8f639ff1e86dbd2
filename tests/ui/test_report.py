"""Fast tests of what the page is built from (no pipeline, no browser): the curve maths against
scikit-learn and ``purchasing_power.metrics``, the page data and its file-stamp cache, the
rendered HTML, the plugin's registration, and the page's app served by uvicorn on loopback."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from purchasing_power import report
from purchasing_power.metrics import expected_calibration_error, lift_at, purchase_metrics
from purchasing_power.ui.page_data import SPEND_EDGES, clear_cache, page_data
from purchasing_power.ui.render import render_page

ROOT = Path(__file__).resolve().parents[2]
PLUGIN_FILE = ROOT / "plugins" / "purchasing_power_ui.py"
DAY = date(2024, 6, 30)


def load_plugin():
    spec = importlib.util.spec_from_file_location("purchasing_power_ui_under_test", PLUGIN_FILE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def scores():
    rng = np.random.default_rng(3)
    p = rng.beta(1.2, 6.0, 2000)
    p[:50] = 0.25  # ties
    y = (rng.random(2000) < p).astype(int)
    return y, p


# ---------------------------------------------------------------------------------------------
# curve maths
# ---------------------------------------------------------------------------------------------
def test_curves_reproduce_the_gate_metrics(scores):
    from sklearn.metrics import average_precision_score, roc_auc_score

    y, p = scores
    roc = report.roc_points(y, p)
    assert roc["auc"] == pytest.approx(roc_auc_score(y, p), rel=1e-12)
    assert len(roc["fpr"]) <= report.MAX_CURVE_POINTS and roc["fpr"][0] == 0 and roc["tpr"][-1] == 1
    assert all(b >= a for a, b in zip(roc["fpr"], roc["fpr"][1:]))
    pr = report.pr_points(y, p)
    assert pr["ap"] == pytest.approx(average_precision_score(y, p), rel=1e-12)
    assert pr["recall"][0] == 0 and pr["recall"][-1] == 1
    gains = report.gains_points(y, p)
    i10 = gains["share"].index(0.1)
    assert gains["lift"][i10] == pytest.approx(lift_at(y, p, 0.1), rel=1e-6)
    assert gains["captured"][-1] == pytest.approx(1.0)
    bins = report.calibration_bins(y, p)
    assert sum(b["n"] for b in bins) == len(y)
    ece = sum(b["n"] / len(y) * abs(b["y_rate"] - b["p_mean"]) for b in bins if b["n"])
    assert ece == pytest.approx(expected_calibration_error(y, p), abs=1e-5)
    c = report.contender_curves(y, p, probabilities=True)
    assert c["metrics"] == purchase_metrics(y, p)
    c = report.contender_curves(y, -p, probabilities=False)
    assert c["calibration"] is None and "ece" not in c["metrics"]


def test_one_class_window_has_no_curves():
    y = np.zeros(20, dtype=int)
    c = report.contender_curves(y, np.linspace(0, 1, 20), probabilities=True)
    assert c["roc"] is None and c["pr"] is None and c["gains"] is None and c["metrics"]["roc_auc"] is None


# ---------------------------------------------------------------------------------------------
# page data from a small synthetic storage
# ---------------------------------------------------------------------------------------------
def write_day(root: Path, day: date, *, status: str = "kept_champion", roc: float = 0.81, source: str = "src.parquet", embed: dict | None = None,
              volume: dict | None = None) -> dict:
    metrics = {
        "as_of": day.isoformat(),
        "source": source,
        "model_version": "bgnbd-x",
        "gate": {"anchor": "2024-06-24", "status": status, "promoted": status == "promoted", "reasons": ["r1", "r2"],
                 "thresholds": {"min_lift": 0.0, "rules": "rules"}, "deployed_version": "bgnbd-x", "champion_version": None},
        "evaluation": {
            "anchor": "2024-06-24",
            "purchase_window": {"as_of": "2024-05-25", "horizon_days": 30},
            "spend_window": {"as_of": "2024-03-26", "horizon_days": 90},
            "purchase": {
                "candidate": {"roc_auc": roc, "pr_auc": 0.4, "lift_at_10pct": 3.0, "brier": 0.08, "ece": 0.03, "base_rate": 0.1, "n": 10},
                "bgnbd": {"roc_auc": 0.8, "pr_auc": 0.45, "lift_at_10pct": 3.5, "brier": 0.07, "ece": 0.02, "base_rate": 0.1, "n": 10},
                "recency": {"roc_auc": 0.79, "pr_auc": 0.3, "lift_at_10pct": 2.5, "base_rate": 0.1, "n": 10},
            },
            "spend": {"bgnbd_gg": {"normalized_gini": 0.8, "spearman": 0.4, "decile_mape": 0.5, "mean_actual": 10.0, "mean_predicted": 11.0, "n": 9}},
        },
        "row_counts": {"source_rows": 100, "day": {"read": 5, "clean": 3, "quarantined": 2, "quarantine_reasons": {"missing_customer": 2}},
                       "customers_scored": 6},
        "tier_counts": {"high": 1, "medium": 2, "low": 3},
        "embedding": {"model_id": "m", "revision": "r", "rows": 50, "empty": 1, "unique": 10},
    }
    if volume is not None:
        metrics["data_checks"] = {"volume": volume}
    mdir = root / "metrics" / f"ds={day}"
    mdir.mkdir(parents=True, exist_ok=True)
    (mdir / "metrics.json").write_text(json.dumps(metrics))
    pdir = root / "predictions" / f"ds={day}"
    pdir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        {
            "customer_id": np.arange(6, dtype="int64"),
            "as_of": [day] * 6,
            "p_purchase_30d": [0.9, 0.5, 0.3, 0.05, 0.02, 0.0],
            "expected_spend_90d": [3000.0, 120.0, 60.0, 12.0, 5.0, 0.0],
            "tier": ["high", "medium", "medium", "low", "low", "low"],
            "model_version": "bgnbd-x",
        }
    ).to_parquet(pdir / "predictions.parquet", index=False)
    qdir = root / "quarantine" / f"ds={day}"
    qdir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"reason": ["missing_customer", "missing_customer"], "detail": ["a", "b"]}).to_parquet(qdir / "quarantine.parquet", index=False)
    rdir = root / "runs" / f"ds={day}"
    rdir.mkdir(parents=True, exist_ok=True)
    (rdir / "embed.json").write_text(json.dumps(embed or {"unique": 10, "new": 4, "cached": 6, "rows": 50, "empty": 1, "model_id": "m", "revision": "r"}))
    return metrics


def test_page_data_summarises_storage(tmp_path):
    root = tmp_path / "data"
    write_day(root, DAY - timedelta(days=1), status="promoted", roc=0.75)
    write_day(root, DAY)
    write_day(root, DAY - timedelta(days=2), source="another-source.parquet")  # not in the history
    q_old = root / "quarantine" / f"ds={DAY - timedelta(days=40)}"  # outside the 30-day window
    q_old.mkdir(parents=True)
    pd.DataFrame({"reason": ["zero_quantity"], "detail": ["x"]}).to_parquet(q_old / "quarantine.parquet", index=False)
    clear_cache()
    d = page_data(str(root))
    assert d["as_of"] == DAY.isoformat() and d["days"][0] == DAY.isoformat()
    assert [h["day"] for h in d["history"]] == [(DAY - timedelta(days=1)).isoformat(), DAY.isoformat()]
    assert [h["purchase"]["candidate"]["roc_auc"] for h in d["history"]] == [0.75, 0.81]
    assert d["predictions"]["tiers"]["medium"]["n"] == 2
    assert d["predictions"]["spend_hist"]["counts"]["high"][SPEND_EDGES.index(2500.0)] == 1
    assert d["predictions"]["spend_hist"]["counts"]["low"][:2] == [2, 1]  # 0 and 5 in [0, 10); 12 in [10, 25)
    assert d["quarantine"]["day"] == {"missing_customer": 2}
    # quarantine partitions belong to the storage root: D, D-1 and D-2 count, D-40 is outside the window
    assert d["quarantine"]["window"] == {"missing_customer": 6}
    assert d["embedding"]["run"]["hit_rate"] == pytest.approx(0.6)
    assert d["report"] is None
    with pytest.raises(LookupError):
        page_data(str(root), date(2001, 1, 1))
    with pytest.raises(LookupError):
        page_data(str(tmp_path / "empty"))


def test_page_data_cache_follows_file_changes(tmp_path):
    root = tmp_path / "data"
    write_day(root, DAY)
    clear_cache()
    first = page_data(str(root))
    again = page_data(str(root))
    assert again["predictions"] is first["predictions"]  # parsed once
    path = root / "metrics" / f"ds={DAY}" / "metrics.json"
    m = json.loads(path.read_text())
    m["gate"]["status"] = "promoted"
    path.write_text(json.dumps(m) + " ")  # new size and mtime
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert page_data(str(root))["gate"]["status"] == "promoted"


def test_rendered_page_without_report(tmp_path):
    root = tmp_path / "data"
    m = write_day(root, DAY, embed={"day": DAY.isoformat(), "skipped": "use_text is off"})
    clear_cache()
    html = render_page(page_data(str(root)))
    assert 'data-testid="report-missing"' in html and 'data-testid="embed-skipped"' in html
    assert f'data-status="{m["gate"]["status"]}"' in html
    assert 'data-chart="history"' in html and 'data-chart="tiers"' in html and 'data-chart="quarantine"' in html
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")  # nothing fetched from elsewhere


def test_a_flagged_volume_check_shows_on_the_page(tmp_path):
    from purchasing_power.checks import volume_check

    root = tmp_path / "data"
    flagged = volume_check({DAY - timedelta(days=i): 100 for i in range(1, 30)}, DAY, min_share=0.2, window_days=28)
    write_day(root, DAY, volume=flagged)
    clear_cache()
    html = render_page(page_data(str(root)))
    assert 'data-testid="volume-check" data-status="no_rows" class="warn"' in html
    assert f"Volume flagged (no rows):</b> no rows for {DAY} in the source (trailing median 100 rows a day)" in html
    ok = volume_check({**{DAY - timedelta(days=i): 100 for i in range(1, 30)}, DAY: 95}, DAY, min_share=0.2, window_days=28)
    write_day(root, DAY, volume=ok)
    clear_cache()
    html = render_page(page_data(str(root)))
    assert 'data-status="ok" class="muted"' in html and "Volume flagged" not in html


def test_user_text_counts_and_quarantine_reasons_show_on_the_page(tmp_path):
    root = tmp_path / "data"
    write_day(root, DAY)
    clear_cache()
    assert 'data-testid="texts-quality"' not in render_page(page_data(str(root)))  # no texts source: no section
    metrics = json.loads((root / "metrics" / f"ds={DAY}" / "metrics.json").read_text())
    metrics["row_counts"]["texts_day"] = {"read": 7, "clean": 4, "quarantined": 3}
    (root / "metrics" / f"ds={DAY}" / "metrics.json").write_text(json.dumps(metrics))
    pd.DataFrame({"reason": ["empty_text", "empty_text", "missing_customer"], "detail": ["", "", ""]}).to_parquet(
        root / "quarantine" / f"ds={DAY}" / "texts_quarantine.parquet", index=False)
    clear_cache()
    html = render_page(page_data(str(root)))
    assert 'data-testid="texts-read">7<' in html and 'data-testid="texts-quarantined">3<' in html
    assert '<tr data-reason="empty_text"><td>empty_text</td><td data-value="2">' in html
    assert '<tr data-reason="missing_customer"><td>missing_customer</td><td data-value="1">' in html


# ---------------------------------------------------------------------------------------------
# the plugin's registration, and the app served by uvicorn
# ---------------------------------------------------------------------------------------------
def test_plugin_declares_app_and_view():
    ui = load_plugin()
    plugin = ui.PurchasingPowerPlugin
    assert plugin.name == "purchasing_power_ui"
    assert plugin.fastapi_apps[0]["url_prefix"] == "/purchasing-power"
    assert callable(plugin.fastapi_apps[0]["app"])
    view = plugin.external_views[0]
    assert view["href"].endswith("/purchasing-power/") and view["url_route"] == "purchasing-power"


def test_plugin_import_is_light():
    """Every Airflow component imports the plugin: that must not load pandas, numpy or FastAPI."""
    heavy = ("pandas", "numpy", "pyarrow", "fastapi", "purchasing_power.ui.render")
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('purchasing_power_ui', {str(PLUGIN_FILE)!r})\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT / "include"))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout


def test_standalone_server_on_loopback(tmp_path):
    root = tmp_path / "data"
    write_day(root, DAY)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "include"))
    proc = subprocess.Popen([sys.executable, "-m", "purchasing_power.ui", "--storage", str(root), "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}/purchasing-power"
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2):
                    break
            except OSError:
                assert proc.poll() is None, proc.stdout.read()
                assert time.time() < deadline, "standalone server did not start"
                time.sleep(0.2)
        with urllib.request.urlopen(f"{base}/", timeout=30) as resp:
            body = resp.read().decode()
        assert resp.status == 200 and 'data-testid="gate-status"' in body and "kept_champion" in body
        with urllib.request.urlopen(f"{base}/api/summary?day={DAY}", timeout=30) as resp:
            assert json.load(resp)["tier_counts"] == {"high": 1, "medium": 2, "low": 3}
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{base}/?day=2001-01-01", timeout=30)
        assert err.value.code == 404
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{base}/?day=yesterday", timeout=30)
        assert err.value.code == 400
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_report_day_stage_writes_report_json(tmp_path):
    """The stage form writes metrics/ds=D/report.json and summarises it; a window that cannot be
    computed is reported in ``errors`` instead of failing the run."""
    from purchasing_power.settings import Settings

    root = tmp_path / "data"
    write_day(root, DAY)
    out = report.report_day(Settings(storage=str(root), source="src.parquet"), DAY)
    assert out["report_path"].endswith(f"metrics/ds={DAY}/report.json")
    written = json.loads(Path(out["report_path"]).read_text())
    assert written["as_of"] == DAY.isoformat() and written["windows"] == []
    # the gate window needs the evaluation scores of its anchor, which nothing stored here; the
    # realised window has no earlier published day to show (it reads only the outcome window's
    # clean partitions, never the whole history)
    assert [e.split(":")[:2] for e in out["errors"]] == [["evaluation", " MissingInput"]]
