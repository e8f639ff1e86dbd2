"""Airflow 3 plugin: registers the "Purchasing power" page (:mod:`purchasing_power.ui`).

* ``fastapi_apps``: the page's app (:mod:`purchasing_power.ui.app`), mounted by the API server
  at ``/purchasing-power``; every request needs an Airflow user allowed to read the
  ``purchasing_power_daily`` Dag.
* ``external_views``: a "Purchasing power" entry in the UI's Browse menu that shows the page
  inside the Airflow UI (same origin, so the UI's login cookie authenticates it).

Every Airflow component loads plugins, so importing this file imports nothing Airflow has not
loaded already: the FastAPI app is built on the API server's first request (``LazyApp``), pandas
and friends load when a page is rendered.
"""

from __future__ import annotations

from purchasing_power.ui import TITLE, URL_PREFIX
from purchasing_power.ui.app import LazyApp, external_href

try:  # the plugin is loaded by Airflow; tests may import it without
    from airflow.plugins_manager import AirflowPlugin
except ImportError:  # pragma: no cover
    AirflowPlugin = object  # type: ignore[misc,assignment]


class PurchasingPowerPlugin(AirflowPlugin):
    name = "purchasing_power_ui"
    fastapi_apps = [{"app": LazyApp(require_auth=True), "url_prefix": URL_PREFIX, "name": TITLE}]
    external_views = [
        {
            "name": TITLE,
            "href": external_href(),
            "url_route": "purchasing-power",
            "destination": "nav",
            "category": "browse",
        }
    ]
