"""FastAPI dependencies: the service, who is calling, and the read/write permission checks."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import Depends, HTTPException, Request, status
from sqlalchemy.orm import Session

from dashboard.auth import SESSION_COOKIE, Principal, authenticate_session, authenticate_token
from dashboard.service import DashboardService


def get_service(request: Request) -> DashboardService:
    return request.app.state.service


def db_session(service: DashboardService = Depends(get_service)) -> Iterator[Session]:
    with service.sessions() as session:
        yield session


def current_principal(request: Request, service: DashboardService = Depends(get_service)) -> Principal | None:
    """The caller from ``Authorization: Bearer <token>`` or the session cookie; None if neither is valid."""
    header = request.headers.get("authorization", "")
    with service.sessions.begin() as session:
        if header:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer":
                return None
            return authenticate_token(session, token.strip())
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie:
            return authenticate_session(session, cookie)
    return None


def _unauthorized(request: Request, what: str) -> HTTPException:
    given = bool(request.headers.get("authorization") or request.cookies.get(SESSION_COOKIE))
    detail = (f"invalid or expired credentials: {what} needs a valid API token or session"
              if given else f"authentication required: {what} needs an API token "
                            "(Authorization: Bearer <token>) or a session (POST /api/v1/session)")
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"})


def require_reader(request: Request, service: DashboardService = Depends(get_service),
                   principal: Principal | None = Depends(current_principal)) -> Principal | None:
    if service.settings.reads_public or principal is not None:
        return principal
    raise _unauthorized(request, "reading (reads are private: see WATTSUP_DASHBOARD_READ_PUBLIC)")


def require_principal(request: Request, principal: Principal | None = Depends(current_principal)) -> Principal:
    """Any signed-in caller, whatever ``read_public`` says: for what reveals alert destinations."""
    if principal is None:
        raise _unauthorized(request, "alert rules and alert history (they name webhook and e-mail destinations)")
    return principal


def require_json(request: Request) -> None:
    """415 unless the body is declared JSON: a cross-site form can send text/plain without a preflight."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not (media_type.startswith("application/") and media_type.endswith("+json")):
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                            f"the body must be sent as Content-Type: application/json, not {media_type or 'nothing'!r}")


def require_writer(request: Request, service: DashboardService = Depends(get_service),
                   principal: Principal | None = Depends(current_principal)) -> Principal:
    if principal is None:
        raise _unauthorized(request, "writing")
    retry = service.write_limiter.allow(f"token:{principal.name}")
    if retry is not None:
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS,
                            f"rate limit of {service.settings.ingest_rate_per_minute} writing requests per minute "
                            f"reached for token {principal.name!r}; retry in {retry:.0f} s",
                            headers={"Retry-After": str(max(1, round(retry)))})
    return principal
