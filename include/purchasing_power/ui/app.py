"""The page's FastAPI app, mounted by the API server at ``URL_PREFIX``:

- ``GET /?day=YYYY-MM-DD&metric=roc_auc``: the page (server-side HTML and inline SVG; no
  JavaScript library, no CDN, works offline);
- ``GET /api/summary?day=...``: the same data as JSON;
- ``GET /health``.

Inside the API server every request needs an Airflow user allowed to read the ``DAG_ID`` Dag
(the UI's ``_token`` cookie or an ``Authorization: Bearer`` JWT); a browser that is not signed in
is sent to Airflow's login page. ``create_app(require_auth=False)`` builds an open app for local
use and tests (``python -m purchasing_power.ui``).

The page reads only storage (``PURCHASING_POWER_STORAGE``, default ``./data``) through
:func:`purchasing_power.ui.page_data.page_data`. Importing this module loads only the standard
library: FastAPI is imported when the app is built (``LazyApp``: on the API server's first
request), pandas and the templates when a page is rendered.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the route functions' annotations
# (``Request``, ``Query``) at run time, and those names are imported inside ``create_app``.
import json
import math
from datetime import date
from typing import Any, Optional

from purchasing_power.ui import DAG_ID, TITLE, URL_PREFIX


def storage_root(explicit: str | None) -> str:
    """``explicit``, else ``PURCHASING_POWER_STORAGE`` (read now, not at import), else ``./data``."""
    if explicit:
        return explicit
    from purchasing_power.settings import default_storage

    return default_storage()


async def authorize(request: Any) -> None:
    """An authenticated Airflow user allowed to read the ``DAG_ID`` Dag; raises 401/403."""
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


def parse_day_param(day: Optional[str]) -> Optional[date]:
    """The ``day`` query parameter: None when absent, 400 unless strictly ``YYYY-MM-DD``."""
    if not day:
        return None
    from fastapi import HTTPException

    from purchasing_power.calendar import parse_day

    try:
        return parse_day(day)
    except ValueError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from None


def json_safe(obj: Any) -> Any:
    """NaN and infinities become null (JSON has no such numbers)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def create_app(storage: Optional[str] = None, *, require_auth: bool = True) -> Any:
    """The page's FastAPI app. ``storage``: the storage root (default: ``PURCHASING_POWER_STORAGE``
    at request time). ``require_auth``: check the Airflow user (only inside the API server)."""
    from fastapi import FastAPI, HTTPException, Query, Request
    from fastapi.responses import HTMLResponse, RedirectResponse, Response
    from starlette.concurrency import run_in_threadpool

    app = FastAPI(title=TITLE, docs_url=None, redoc_url=None, openapi_url=None)

    async def guard(request: Request) -> Optional[Response]:
        if not require_auth:
            return None
        try:
            await authorize(request)
        except HTTPException as exc:
            if exc.status_code == 401 and "text/html" in request.headers.get("accept", ""):
                from airflow.api_fastapi.app import get_auth_manager

                return RedirectResponse(get_auth_manager().get_url_login(next_url=str(request.url)), status_code=307)
            raise
        return None

    def load(day: Optional[str]) -> dict[str, Any]:
        from purchasing_power.ui.page_data import page_data

        try:
            return page_data(storage_root(storage), parse_day_param(day))
        except LookupError as exc:
            raise HTTPException(status_code=404, detail=str(exc)) from None

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/", response_class=HTMLResponse)
    async def page(request: Request, day: Optional[str] = Query(None), metric: str = Query("roc_auc")) -> Response:
        from purchasing_power.ui.page_data import HISTORY_METRICS
        from purchasing_power.ui.render import render_not_found, render_page

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
            return HTMLResponse(render_not_found(exc.detail), status_code=404)
        html_text = await run_in_threadpool(render_page, data, metric)
        return HTMLResponse(html_text, headers={"Cache-Control": "no-store"})

    @app.get("/api/summary")
    async def summary(request: Request, day: Optional[str] = Query(None)) -> Response:
        denied = await guard(request)
        if denied is not None:
            return denied
        data = await run_in_threadpool(load, day)
        return Response(json.dumps(json_safe(data), default=str), media_type="application/json")

    return app


def external_href() -> str:
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

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)
