"""Browser-facing protections: security headers on every response and the cross-site request check.

Both are plain ASGI middleware, so they cover every answer: the API's, the static page's, the
errors Starlette makes itself (404, 413) and the 500 of a failing endpoint.
"""

from __future__ import annotations

import base64
import hashlib
import re
from urllib.parse import urlsplit

from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self'",  # no inline script and no eval: injected markup cannot run
    "style-src 'self'",  # the page styles only from app.css; the charts set styles through the DOM
    "img-src 'self' data: blob:",  # the chart's PNG and the PDF report's image are data/blob URLs
    "font-src 'self'",
    "connect-src 'self'",  # fetch and EventSource to this service only
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",  # no clickjacking of the writing controls
])
"""The page's policy: everything it loads is served by this service (the bundle, app.css, theme-boot.js)."""

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",  # an uploaded or downloaded CSV is never run as script
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers without CSP level 2
    "Referrer-Policy": "same-origin",  # filters in URLs (meter ids) do not leak to other sites
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}
HSTS = "max-age=31536000"
"""Sent only on answers that went out over TLS (directly or through a trusted proxy): a browser that
once reached the dashboard over HTTPS never falls back to plain HTTP for a year."""

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
DEFAULT_PORTS = {"http": 80, "https": 443}


def docs_policy(html: str) -> str:
    """A policy for the API docs page (Swagger UI from its CDN): its inline start-up script by hash only."""
    hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()}'"
                      for body in re.findall(r"<script>(.*?)</script>", html, flags=re.S))
    return ("default-src 'none'; script-src https://cdn.jsdelivr.net " + hashes
            + "; style-src https://cdn.jsdelivr.net; img-src 'self' data: https://fastapi.tiangolo.com; "
              "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


class SecurityHeaders:
    """Add :data:`SECURITY_HEADERS` to every HTTP answer that does not set its own."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        tls = scope.get("scheme") == "https"

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()
                         if k.lower().encode() not in present]
                if tls and b"strict-transport-security" not in present:
                    extra.append((b"strict-transport-security", HSTS.encode()))
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, with_headers)


def _origin_of(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an Origin or Referer value; None if it is not an http(s) URL."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    return parts.scheme, parts.hostname.lower(), port or DEFAULT_PORTS[parts.scheme]


class CrossSiteRequestCheck:
    """Refuse state-changing requests another site could have made a browser send (CSRF), with 403.

    * An ``Origin`` header (every browser sends one with a cross-origin request and with any
      ``fetch`` POST, PUT or DELETE) must be this service's own origin or one in ``allowed_origins``.
    * Without an ``Origin``, a ``Referer`` from another site is refused the same way.
    * A request authenticated by the session cookie alone (no ``Authorization`` header) must show
      where it came from: with neither header it is refused. Scripts and gateways use a bearer
      token, which a browser never attaches on its own, and need neither header.

    The service's own origin is the request's scheme (HTTPS behind a trusted proxy, see
    ``trusted_proxies``) and its ``Host`` header, which a reverse proxy must pass on.
    """

    def __init__(self, app: ASGIApp, allowed_origins: list[str], cookie_name: str) -> None:
        self.app = app
        self.allowed = {o for o in (_origin_of(u) for u in allowed_origins) if o is not None}
        self.cookie = cookie_name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in UNSAFE_METHODS:
            await self.app(scope, receive, send)
            return
        problem = self.problem(scope)
        if problem is None:
            await self.app(scope, receive, send)
            return
        await JSONResponse({"detail": f"cross-site request refused: {problem}"}, status_code=403)(scope, receive, send)

    def problem(self, scope: Scope) -> str | None:
        headers = Headers(scope=scope)
        scheme = scope.get("scheme", "http")
        host = headers.get("host", "")
        own = _origin_of(f"{scheme}://{host}") if host else None
        for name in ("origin", "referer"):
            value = headers.get(name)
            if value is None:
                continue
            origin = _origin_of(value)
            if origin is not None and (origin == own or origin in self.allowed):
                return None
            return f"the {name.title()} {value[:200]!r} is not this dashboard's origin"
        uses_cookie = f"{self.cookie}=" in headers.get("cookie", "") and "authorization" not in headers
        if uses_cookie:
            return "a request made with the session cookie must carry an Origin or Referer header"
        return None
