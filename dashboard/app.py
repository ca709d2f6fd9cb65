"""The dashboard's ASGI app: ``create_app(settings)`` builds it; ``wattsup dashboard`` serves it with uvicorn."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dashboard.auth import SESSION_COOKIE
from dashboard.openapi_answers import document_common_answers
from dashboard.security import CrossSiteRequestCheck, SecurityHeaders, docs_policy
from dashboard.service import DashboardService
from dashboard.settings import DashboardSettings

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
MULTIPART_SLACK_BYTES = 64 * 1024
"""Room for the multipart envelope (boundaries, part headers) around an uploaded file."""
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class BodySizeLimit:
    """Refuse request bodies over a size limit with 413, before they are parsed or spooled.

    ``limits`` maps a path to its byte limit and the message to answer with; every other path gets
    ``default``. A declared ``Content-Length`` over the limit is refused at once; a chunked body is
    counted as it arrives and cut off at the limit.
    """

    def __init__(self, app: ASGIApp, limits: dict[str, tuple[int, str]], default: tuple[int, str]) -> None:
        self.app = app
        self.limits = limits
        self.default = default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        limit, message = self.limits.get(scope["path"], self.default)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await JSONResponse({"detail": message}, status_code=413)(scope, receive, send)
            return
        received = 0
        too_large = False
        response_started = False

        async def counting_receive() -> Message:
            nonlocal received, too_large
            msg = await receive()
            if msg["type"] == "http.request":
                received += len(msg.get("body", b""))
                if received > limit:
                    too_large = True
                    raise _BodyTooLarge()
            return msg

        async def guarded_send(msg: Message) -> None:
            nonlocal response_started
            if too_large:  # whatever the app answers to a cut-off body is replaced by the 413 below
                return
            if msg["type"] == "http.response.start":
                response_started = True
            await send(msg)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not too_large:
                raise
        if too_large and not response_started:
            await JSONResponse({"detail": message}, status_code=413)(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


def _route_template(request: Request) -> str:
    route = request.scope.get("route")
    path = getattr(route, "path", None)
    if path:
        return path
    return "/" if request.url.path == "/" else ("static" if not request.url.path.startswith("/api/") else "unmatched")


def create_app(settings: DashboardSettings | None = None, *, consume: bool | None = None) -> FastAPI:
    """The app for ``settings``; ``consume`` overrides ``settings.consume`` (False for API-only tests)."""
    settings = settings or DashboardSettings()
    service = DashboardService(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.hub.bind(asyncio.get_running_loop())
        service.start(consume)
        try:
            yield
        finally:
            await asyncio.get_running_loop().run_in_executor(None, service.stop)

    app = FastAPI(
        title="WattsUp dashboard API",
        version="1",
        description="Anomalies, readings and forecasts of the meter fleet; ingest, batch detection, sensitivity and "
                    "alert rules. Writing endpoints need `Authorization: Bearer <token>` or a session cookie.",
        openapi_url="/api/v1/openapi.json",
        docs_url=None,  # served below with a policy of its own
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.service = service

    @app.middleware("http")
    async def count_requests(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        try:
            response = await call_next(request)
        except Exception:
            service.metrics.http_requests.labels(route=_route_template(request), status="500").inc()
            raise
        service.metrics.http_requests.labels(route=_route_template(request), status=str(response.status_code)).inc()
        return response

    @app.get("/api/v1/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        """Swagger UI (from its CDN), allowed by a policy that admits its one inline script by hash."""
        html = get_swagger_ui_html(openapi_url=app.openapi_url or "", title=f"{app.title} - docs").body.decode()
        return HTMLResponse(html, headers={"Content-Security-Policy": docs_policy(html)})

    from dashboard.api_events import router as events_router
    from dashboard.api_incidents import router as incidents_router
    from dashboard.api_read import router as read_router
    from dashboard.api_session import router as session_router
    from dashboard.api_write import router as write_router

    app.include_router(session_router)
    app.include_router(read_router)
    app.include_router(write_router)
    app.include_router(incidents_router)
    app.include_router(events_router)
    document_common_answers(app, [session_router, read_router, write_router, events_router])

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> Any:
        """``{"status": "ok"}`` plus what the ingest is doing; 503 while it is failing (it retries)."""
        ingest = service.ingest
        if ingest is not None and ingest.error is not None:
            return JSONResponse({"status": "error", "ingest": "failing", "detail": f"ingest: {ingest.error}"},
                                status_code=503)
        state = "off" if ingest is None else "following" if ingest.assigned.is_set() else "waiting for topics"
        return {"status": "ok", "ingest": state}

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        service.metrics.sse_clients.set(service.hub.clients)
        service.count_open_incidents()
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    if (STATIC_DIR / "index.html").exists():
        app.mount("/", StaticFiles(directory=STATIC_DIR, html=True), name="static")
    else:
        @app.get("/", include_in_schema=False)
        def assets_missing() -> JSONResponse:
            return JSONResponse({"detail": f"the dashboard page is not built: {STATIC_DIR / 'index.html'} does not "
                                           "exist (the API under /api/v1 works)"}, status_code=503)

    app.add_middleware(BodySizeLimit, limits={
        # The multipart envelope around the file gets some slack; the endpoint checks the file itself exactly.
        "/api/v1/detect": (settings.max_upload_bytes + MULTIPART_SLACK_BYTES,
                           f"the uploaded file is larger than the limit of {settings.max_upload_mb:g} MB"),
        "/api/v1/readings": (settings.max_json_body_bytes,
                             f"the request body is larger than the limit of {settings.max_json_body_mb:g} MB"),
    }, default=(settings.max_small_body_bytes,
                f"the request body is larger than the limit of {settings.max_small_body_kb:g} KB"))
    app.add_middleware(CrossSiteRequestCheck, allowed_origins=settings.allowed_origins, cookie_name=SESSION_COOKIE)
    app.add_middleware(SecurityHeaders)
    if settings.trusted_proxies:
        from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxies)
    return app
