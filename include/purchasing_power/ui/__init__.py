"""The Airflow "Purchasing power" page: what the model predicts and how good it is.

- :mod:`.page_data`: the live summaries of the published files, cached by file stamp;
- :mod:`.svg`: the chart kit (plots, bars, stacked columns) rendered to inline SVG;
- :mod:`.charts`: the page's charts, drawn with the kit from the page data;
- :mod:`.render`: the per-section view models and the Jinja2 templates in ``templates/``;
- :mod:`.app`: the FastAPI app (auth, day parsing, the HTML page and its JSON twin) and
  ``LazyApp``, which ``plugins/purchasing_power_ui.py`` registers with Airflow;
- ``python -m purchasing_power.ui``: the page without Airflow, on loopback.

Importing this package (or :mod:`.app`) loads nothing beyond the standard library: every Airflow
component loads the plugin, and only the API server ever serves the page.
"""

from __future__ import annotations

#: The page's name: the plugin's app and menu entry, and the page heading.
TITLE = "Purchasing power"
#: Where the API server mounts the page's app.
URL_PREFIX = "/purchasing-power"
#: A user must be allowed to read this Dag to see the page.
DAG_ID = "purchasing_power_daily"
