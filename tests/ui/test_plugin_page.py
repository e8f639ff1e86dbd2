"""The "Purchasing power" page as a person uses it: a real ``airflow api-server`` loads the plugin
from this project's plugins folder, a headless Chromium signs in through Airflow's login form,
opens the page and reads the charts; every number shown must equal what the pipeline stored.

Data: the real pipeline (every stage) for two days of a 400-customer demo source, so that the
later day has history, a closed realised window and a cache-hit embed run. About 1-2 minutes.
The full-page screenshot goes to the test's tmp folder, or to docs/ui.png (the README's) with
``UPDATE_UI_SCREENSHOT=1``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from datetime import date, timedelta
from pathlib import Path

import pytest

from ui_support import (  # noqa: F401  (fixtures)
    D_PREV,
    DAY,
    DOCS,
    OUTSIDER,
    OUTSIDER_PASSWORD,
    PASSWORD,
    USER,
    airflow_home,
    api_server,
    browser,
    demo,
)

PAGE = "/purchasing-power/"
DAG_ID = "purchasing_power_daily"
CONTENDERS = ("candidate", "champion", "bgnbd", "recency")


def close(a, b, tol: float = 1e-9) -> bool:
    return math.isclose(float(a), float(b), rel_tol=tol, abs_tol=1e-12)


def f3(v) -> str:
    return f"{v:.3f}"


# ---------------------------------------------------------------------------------------------
# fixtures: one signed-in browser page for the module
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def session(browser, api_server, tmp_path_factory):
    """A browser context signed in through the Airflow login form; records console errors and
    any request that leaves the API server (the page must work offline)."""
    context = browser.new_context(viewport={"width": 1300, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    foreign: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))

    def guard(route):
        if route.request.url.startswith(api_server.url) or route.request.url.startswith("data:"):
            return route.continue_()
        foreign.append(route.request.url)
        return route.abort()

    context.route("**/*", guard)
    sign_in(page, api_server.url, USER, PASSWORD)
    page.wait_for_selector("svg[data-chart=history]")
    shots = tmp_path_factory.mktemp("ui_screens")
    yield {"page": page, "errors": errors, "foreign": foreign, "url": api_server.url, "shots": shots}
    context.close()


def sign_in(page, url: str, username: str, password: str) -> None:
    """Not signed in, the plugin sends the browser to Airflow's login form, which comes back to
    the page once the user signed in."""
    page.goto(url + PAGE)
    page.wait_for_url("**/auth/login**", timeout=60_000)
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.locator("button[type=submit]").click()
    page.wait_for_url(f"{url}{PAGE}**", timeout=60_000)


def open_day(session, day: date | None = None, metric: str | None = None):
    page = session["page"]
    q = []
    if day:
        q.append(f"day={day}")
    if metric:
        q.append(f"metric={metric}")
    page.goto(session["url"] + PAGE + ("?" + "&".join(q) if q else ""))
    page.wait_for_selector("svg[data-chart=history]")
    return page


def data_of(page, selector: str) -> list[dict]:
    """The dataset (data-* attributes) and text of every element matching ``selector``."""
    return page.eval_on_selector_all(selector, "els => els.map(e => ({...e.dataset, text: e.textContent.trim(), tag: e.tagName}))")


def chart_box(page, selector: str, min_width: int = 250, min_height: int = 60) -> dict:
    loc = page.locator(selector)
    assert loc.count() == 1, f"expected one {selector}, found {loc.count()}"
    loc.scroll_into_view_if_needed()
    assert loc.is_visible(), f"{selector} is not visible"
    box = loc.bounding_box()
    assert box and box["width"] > min_width and box["height"] > min_height, f"{selector} is not drawn: {box}"
    return box


# ---------------------------------------------------------------------------------------------
# the server side: plugin registration and access control
# ---------------------------------------------------------------------------------------------
def test_plugin_is_registered_by_airflow(api_server):
    import httpx

    token = api_server.token()
    plugins = httpx.get(f"{api_server.url}/api/v2/plugins", headers={"Authorization": f"Bearer {token}"}, timeout=30).json()["plugins"]
    ours = [p for p in plugins if p["name"] == "purchasing_power_ui"]
    assert ours, f"plugin not loaded; plugins: {[p['name'] for p in plugins]}"
    p = ours[0]
    assert p["source"].endswith("purchasing_power_ui.py")
    assert [a["url_prefix"] for a in p["fastapi_apps"]] == ["/purchasing-power"]
    assert p["external_views"][0]["href"] == PAGE and p["external_views"][0]["url_route"] == "purchasing-power"
    errors = httpx.get(f"{api_server.url}/api/v2/plugins/importErrors", headers={"Authorization": f"Bearer {token}"}, timeout=30).json()
    assert errors["total_entries"] == 0, errors


def test_page_needs_an_airflow_user(api_server):
    import httpx

    with httpx.Client(base_url=api_server.url, follow_redirects=False, timeout=30) as c:
        assert c.get("/purchasing-power/api/summary").status_code == 401
        c.cookies.set("_token", "not-a-jwt")
        assert c.get("/purchasing-power/api/summary").status_code in (401, 403)
        c.cookies.clear()
        r = c.get(PAGE, headers={"Accept": "text/html"})
        assert r.status_code == 307 and "/auth/login" in r.headers["location"]
        assert c.get("/purchasing-power/health").status_code == 200
        token = api_server.token()
        r = c.get("/purchasing-power/api/summary", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200 and r.json()["as_of"] == DAY.isoformat()


def test_signed_in_user_without_access_to_the_dag_gets_403_and_nothing_else(api_server, browser, demo):
    """A user Airflow authenticates but does not let read the Dag: the page and its JSON answer
    403 with one and the same body whatever is asked (a published day, a missing one, a bad
    parameter), so nothing leaks: no metric, no day, no storage path."""
    import httpx

    token = api_server.token(OUTSIDER, OUTSIDER_PASSWORD)
    denied = {"detail": f"not allowed to read Dag {DAG_ID}"}
    queries = ["", f"?day={DAY}", f"?day={D_PREV}", "?day=2099-01-01", "?day=not-a-day", "?metric=roc_auc", "?metric=nope"]
    with httpx.Client(base_url=api_server.url, follow_redirects=False, timeout=30) as bearer, httpx.Client(
        base_url=api_server.url, follow_redirects=False, timeout=30, cookies={"_token": token}
    ) as cookie:
        auth = {"Authorization": f"Bearer {token}"}
        # Airflow itself knows the user (not 401) and refuses them the Dag
        assert bearer.get(f"/api/v2/dags/{DAG_ID}", headers=auth).status_code == 403
        for path in (PAGE, "/purchasing-power/api/summary"):
            for q in queries:
                for client, headers in ((bearer, auth), (cookie, {})):
                    for accept in ("text/html", "application/json"):
                        r = client.get(path + q, headers={**headers, "Accept": accept})
                        assert r.status_code == 403, (path, q, accept, r.status_code, r.text[:300])
                        assert r.json() == denied, (path, q, accept, r.text[:300])
                        assert str(demo.storage) not in r.text and "roc_auc" not in r.text and str(DAY) not in r.text
        assert bearer.get("/purchasing-power/health").status_code == 200  # the only open route

    # as a person: signs in through Airflow's login form, lands on the page, reads only the refusal
    context = browser.new_context()
    try:
        page = context.new_page()
        sign_in(page, api_server.url, OUTSIDER, OUTSIDER_PASSWORD)
        response = page.goto(f"{api_server.url}{PAGE}?day={DAY}")
        assert response.status == 403
        assert json.loads(page.locator("body").inner_text()) == denied
        assert page.locator("svg").count() == 0
    finally:
        context.close()


def test_summary_api_matches_storage(api_server, demo):
    import httpx

    token = api_server.token()
    for day in demo.days:
        r = httpx.get(f"{api_server.url}/purchasing-power/api/summary", params={"day": day.isoformat()},
                      headers={"Authorization": f"Bearer {token}"}, timeout=60)
        assert r.status_code == 200, r.text
        data, m = r.json(), demo.metrics(day)
        assert data["gate"] == m["gate"] and data["evaluation"] == m["evaluation"] and data["tier_counts"] == m["tier_counts"]
        assert data["report"]["as_of"] == day.isoformat()
    r = httpx.get(f"{api_server.url}/purchasing-power/api/summary", params={"day": "2001-01-01"},
                  headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert r.status_code == 404


# ---------------------------------------------------------------------------------------------
# the page in the browser
# ---------------------------------------------------------------------------------------------
def test_gate_verdict_and_metrics_tables(session, demo):
    page = open_day(session)
    m = demo.metrics(DAY)
    assert page.locator("body").get_attribute("data-as-of") == DAY.isoformat()
    assert page.get_by_test_id("day-select").input_value() == DAY.isoformat()
    status = page.get_by_test_id("gate-status")
    assert status.is_visible() and status.inner_text() == m["gate"]["status"]
    assert page.get_by_test_id("gate-promoted").get_attribute("data-value") == str(m["gate"]["promoted"])
    assert page.get_by_test_id("gate-anchor").inner_text() == m["gate"]["anchor"]
    assert page.get_by_test_id("deployed-version").inner_text() == m["gate"]["deployed_version"]
    assert page.get_by_test_id("model-version").inner_text() == m["model_version"]
    assert [r.strip() for r in page.get_by_test_id("gate-reason").all_inner_texts()] == m["gate"]["reasons"]

    cells = data_of(page, "table[data-testid=purchase-metrics] td[data-metric]")
    purchase = m["evaluation"]["purchase"]
    assert {c["contender"] for c in cells} == set(purchase)
    checked = 0
    for c in cells:
        want = purchase[c["contender"]].get(c["metric"])
        if want is None:
            assert c["text"] == "n/a" and c["value"] == "", c
            continue
        assert close(c["value"], want), c
        assert c["text"] == (f"{want:,}" if c["metric"] == "n" else f3(want)), c
        checked += 1
    assert checked >= 20
    spend = m["evaluation"]["spend"]
    cells = data_of(page, "table[data-testid=spend-metrics] td[data-metric]")
    assert {c["contender"] for c in cells} == set(spend)
    for c in cells:
        assert close(c["value"], spend[c["contender"]][c["metric"]]), c


def test_history_chart(session, demo):
    page = open_day(session)
    chart_box(page, "svg[data-chart=history]")
    assert page.locator("svg[data-chart=history]").get_attribute("data-days") == str(len(demo.days))
    points = data_of(page, "svg[data-chart=history] circle")
    for day in demo.days:
        m = demo.metrics(day)
        for name, row in m["evaluation"]["purchase"].items():
            got = [p for p in points if p["series"] == name and p["day"] == day.isoformat()]
            assert len(got) == 1 and close(got[0]["value"], row["roc_auc"]), (day, name, got)
    strip = {s["day"]: s["status"] for s in data_of(page, "svg[data-chart=history] rect.status")}
    assert strip == {d.isoformat(): demo.metrics(d)["gate"]["status"] for d in demo.days}
    # another metric through the page's own link
    page.get_by_role("link", name="PR-AUC").click()
    page.wait_for_url("**metric=pr_auc**")
    points = data_of(page, "svg[data-chart=history] circle[data-series=candidate]")
    assert [close(p["value"], demo.metrics(date.fromisoformat(p["day"]))["evaluation"]["purchase"]["candidate"]["pr_auc"]) for p in points] == [True] * len(demo.days)


def test_report_is_deterministic(demo):
    """report.json, like metrics.json, depends only on data and settings: a rerun writes the same bytes."""
    assert "REPORT_RERUN_IDENTICAL True" in demo.log, demo.log[-2000:]
    report = json.loads((demo.storage / "metrics" / f"ds={DAY}" / "report.json").read_text())
    assert report["errors"] == [] and [w["id"] for w in report["windows"]] == ["evaluation", "realised"]


def test_evaluation_window_curves_reproduce_the_gate(session, demo):
    page = open_day(session)
    m = demo.metrics(DAY)
    purchase = m["evaluation"]["purchase"]
    win = "[data-window=evaluation]"
    assert page.locator(f"div.window{win}").get_attribute("data-as-of") == m["evaluation"]["purchase_window"]["as_of"]
    assert page.get_by_test_id("curves-match").is_visible()
    for chart, attr, metric in (("roc", "auc", "roc_auc"), ("pr", "ap", "pr_auc"), ("lift", "lift10", "lift_at_10pct"), ("calibration", "ece", "ece")):
        sel = f"svg[data-chart={chart}]{win}"
        chart_box(page, sel)
        series = {s["series"]: s for s in data_of(page, f"{sel} path.series")}
        legend = {s["series"]: s["text"] for s in data_of(page, f"{sel} g.legend-item")}
        expected = {k for k, v in purchase.items() if v.get(metric) is not None}
        assert set(series) == expected, (chart, series.keys())
        for name in expected:
            want = purchase[name][metric]
            assert close(series[name][attr], want), (chart, name, series[name][attr], want)
            assert f3(want) in legend[name], (chart, name, legend[name])
            assert int(series[name]["points"]) >= (2 if chart == "calibration" else 5), (chart, name)
    # gains: the top-10 % capture is lift@10% x 10 %
    gains = {s["series"]: s for s in data_of(page, f"svg[data-chart=gains]{win} path.series")}
    for name, row in purchase.items():
        # curve points are stored with 6 decimals
        assert abs(float(gains[name]["captured10"]) - row["lift_at_10pct"] * round(0.1 * row["n"]) / row["n"]) < 1e-6, name
    # the reliability diagram's bins hold every customer of the window
    for name, row in purchase.items():
        if row.get("ece") is None:
            continue
        bins = json.loads(page.locator(f"svg[data-chart=calibration]{win} path[data-series={name}]").get_attribute("data-bins"))
        assert sum(b[1] for b in bins) == row["n"]


def test_realised_window_of_published_predictions(session, demo):
    """DAY's page shows how D_PREV's published predictions turned out, computed here from the
    clean history independently of the report code."""
    import numpy as np
    import pandas as pd
    from sklearn.metrics import average_precision_score, roc_auc_score

    from purchasing_power.history import load_clean_history

    pred = pd.read_parquet(demo.storage / "predictions" / f"ds={D_PREV}" / "predictions.parquet")
    tx = load_clean_history(demo.settings(), DAY)
    start = pd.Timestamp(D_PREV + timedelta(days=1))
    window = tx[(tx["invoice_ts"] >= start) & (tx["invoice_ts"] < start + pd.Timedelta(days=30))]
    per_day = window.groupby(["customer_id", window["invoice_ts"].dt.normalize()])["line_value"].sum()
    buyers = set(per_day[per_day > 0].index.get_level_values(0))
    y = pred["customer_id"].isin(buyers).to_numpy().astype(int)
    p = pred["p_purchase_30d"].to_numpy()

    page = open_day(session)
    win = "[data-window=realised]"
    assert page.locator(f"div.window{win}").get_attribute("data-as-of") == D_PREV.isoformat()
    assert int(page.locator(f"div.window{win}").get_attribute("data-n")) == len(pred)
    roc = data_of(page, f"svg[data-chart=roc]{win} path.series")
    pr = data_of(page, f"svg[data-chart=pr]{win} path.series")
    assert [s["series"] for s in roc] == ["published"]
    assert close(roc[0]["auc"], roc_auc_score(y, p)), (roc[0]["auc"], roc_auc_score(y, p))
    assert close(pr[0]["ap"], average_precision_score(y, p))
    assert close(page.locator(f"svg[data-chart=pr]{win}").get_attribute("data-base-rate"), y.mean())
    bins = json.loads(page.locator(f"svg[data-chart=calibration]{win} path[data-series=published]").get_attribute("data-bins"))
    idx = np.minimum((p * 10).astype(int), 9)
    for lo, n, p_mean, y_rate in bins:
        b = int(round(lo * 10))
        assert n == int((idx == b).sum()) and close(y_rate, y[idx == b].mean(), 1e-5), (lo, n, y_rate)
    for chart in ("roc", "pr", "gains", "lift", "calibration"):
        chart_box(page, f"svg[data-chart={chart}]{win}")


def test_predictions_tiers_and_spend_distribution(session, demo):
    import numpy as np
    import pandas as pd

    from purchasing_power.ui.page_data import SPEND_EDGES

    page = open_day(session)
    pred = pd.read_parquet(demo.storage / "predictions" / f"ds={DAY}" / "predictions.parquet")
    m = demo.metrics(DAY)
    counts = pred["tier"].value_counts().to_dict()
    assert counts == m["tier_counts"]
    chart_box(page, "svg[data-chart=tiers]")
    bars = {b["key"]: int(b["value"]) for b in data_of(page, "svg[data-chart=tiers] g.bar")}
    assert bars == counts
    assert {b["key"]: b["text"] for b in data_of(page, "svg[data-chart=tiers] g.bar")} == {k: f"{k}{v:,}" for k, v in counts.items()}
    assert int(page.get_by_test_id("customers-scored").get_attribute("data-value")) == len(pred)
    assert close(page.get_by_test_id("spend-total").get_attribute("data-value"), pred["expected_spend_90d"].sum(), 1e-9)
    assert close(page.get_by_test_id("p-mean").get_attribute("data-value"), pred["p_purchase_30d"].mean(), 1e-9)
    rows = {r["tier"]: r for r in data_of(page, "table[data-testid=tier-table] tr[data-tier]")}
    for tier, g in pred.groupby("tier"):
        cells = {c["field"]: c for c in data_of(page, f"table[data-testid=tier-table] tr[data-tier={tier}] td[data-field]")}
        assert int(cells["n"]["value"]) == len(g) and close(cells["spend_sum"]["value"], g["expected_spend_90d"].sum())
        assert tier in rows
    # spend histogram, stacked by tier
    chart_box(page, "svg[data-chart=spend-hist]")
    segs = data_of(page, "svg[data-chart=spend-hist] rect.segment")
    edges = np.array(SPEND_EDGES)
    for tier, g in pred.groupby("tier"):
        want = np.bincount(np.searchsorted(edges, g["expected_spend_90d"].to_numpy(), side="right") - 1, minlength=len(edges))
        got = {s["bin"]: int(s["value"]) for s in segs if s["key"] == tier}
        assert sum(got.values()) == len(g) == int(want.sum()), tier
        assert sorted(got.values()) == sorted(int(v) for v in want if v), tier
    assert sum(int(s["value"]) for s in segs) == len(pred)
    p_segs = data_of(page, "svg[data-chart=p-hist] rect.segment")
    assert sum(int(s["value"]) for s in p_segs) == len(pred)


def test_quarantine_and_embedding_cache(session, demo):
    import pandas as pd

    page = open_day(session)
    m = demo.metrics(DAY)
    window: dict[str, int] = {}
    for i in range(30):
        f = demo.storage / "quarantine" / f"ds={DAY - timedelta(days=i)}" / "quarantine.parquet"
        if f.exists():
            for reason, n in pd.read_parquet(f, columns=["reason"])["reason"].value_counts().items():
                window[reason] = window.get(reason, 0) + int(n)
    assert window, "the demo source has bad rows: the 30-day window cannot be empty"
    chart_box(page, "svg[data-chart=quarantine]")
    bars = {b["key"]: int(b["value"]) for b in data_of(page, "svg[data-chart=quarantine] g.bar")}
    assert bars == window
    day_rows = {r["reason"]: int(r["text"].split()[-1].replace(",", "")) for r in data_of(page, "table[data-testid=quarantine-day] tr[data-reason]")}
    assert day_rows == m["row_counts"]["day"]["quarantine_reasons"]
    assert page.get_by_test_id("rows-read").inner_text() == str(m["row_counts"]["day"]["read"])
    assert page.get_by_test_id("rows-quarantined").inner_text() == str(m["row_counts"]["day"]["quarantined"])
    volume = m["data_checks"]["volume"]  # the day's volume check, as publish recorded it
    shown = page.get_by_test_id("volume-check")
    assert shown.get_attribute("data-status") == volume["status"] and volume["message"] in shown.inner_text()

    runs = {d: json.loads((demo.storage / "runs" / f"ds={d}" / "embed.json").read_text()) for d in demo.days}
    e = runs[DAY]
    rate = e["cached"] / e["unique"]
    hit = page.get_by_test_id("embed-hit-rate")
    assert close(hit.get_attribute("data-value"), rate) and hit.inner_text() == f"{rate:.1%}"
    assert page.get_by_test_id("embed-cached").inner_text() == f"{e['cached']:,}"
    assert page.get_by_test_id("embed-new").inner_text() == f"{e['new']:,}"
    chart_box(page, "svg[data-chart=embed-cache]")
    segs = data_of(page, "svg[data-chart=embed-cache] rect.segment")
    for d, r in runs.items():
        got = {s["key"]: int(s["value"]) for s in segs if s["bin"] == d.isoformat()[5:]}
        want = {k: r[k] for k in ("cached", "new") if r[k]}
        assert got == want, (d, got, want)


def test_day_selector(session, demo):
    page = open_day(session)
    page.get_by_test_id("day-select").select_option(D_PREV.isoformat())
    page.wait_for_url(f"**day={D_PREV}**")
    page.wait_for_selector("svg[data-chart=history]")
    m = demo.metrics(D_PREV)
    assert page.locator("body").get_attribute("data-as-of") == D_PREV.isoformat()
    assert page.get_by_test_id("gate-status").inner_text() == m["gate"]["status"]
    # as of D_PREV there is no later day and no closed realised window yet
    assert page.locator("svg[data-chart=history]").get_attribute("data-days") == "1"
    assert page.locator("div.window[data-window=realised]").count() == 0
    tiers = {b["key"]: int(b["value"]) for b in data_of(page, "svg[data-chart=tiers] g.bar")}
    assert tiers == m["tier_counts"]


def test_page_inside_the_airflow_ui(session, demo):
    """The external view: Browse → Purchasing power shows the page in the Airflow UI."""
    page = session["page"]
    page.goto(session["url"] + "/")
    page.get_by_role("button", name="Browse").click()
    page.get_by_role("menuitem", name="Purchasing power").click()
    page.wait_for_url("**/plugin/purchasing-power**")
    frame = page.frame_locator("iframe").first
    status = frame.get_by_test_id("gate-status")
    status.wait_for(timeout=60_000)
    assert status.inner_text() == demo.metrics(DAY)["gate"]["status"]


def test_screenshot_and_no_errors(session, demo):
    session["errors"].clear()
    session["foreign"].clear()
    page = open_day(session)
    for chart in ("history", "roc", "pr", "gains", "lift", "calibration", "tiers", "spend-hist", "p-hist", "quarantine", "embed-cache"):
        assert page.locator(f"svg[data-chart={chart}]").first.is_visible(), chart
    shot = session["shots"] / "ui.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 50_000
    if os.environ.get("UPDATE_UI_SCREENSHOT"):
        DOCS.mkdir(exist_ok=True)
        shutil.copyfile(shot, DOCS / "ui.png")
    assert session["foreign"] == [], f"the page requested outside the API server: {session['foreign']}"
    assert session["errors"] == [], f"browser console errors: {session['errors']}"
