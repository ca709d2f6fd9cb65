"""``/api/v1/session``: a browser trades an API token for a session cookie (HttpOnly, SameSite=Strict)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydantic import BaseModel, Field

from dashboard import api_models as m
from dashboard.api_models import documented
from dashboard.auth import SESSION_COOKIE, Principal, authenticate_token, close_session, open_session
from dashboard.deps import current_principal, get_service, require_json
from dashboard.service import DashboardService

router = APIRouter(prefix="/api/v1", tags=["session"])


class SessionIn(BaseModel):
    token: str = Field(min_length=1, max_length=512)


@router.get("/session", summary="Who is logged in, and whether reading is public", **documented(m.SessionState))
def get_session(service: Annotated[DashboardService, Depends(get_service)],
                principal: Annotated[Principal | None, Depends(current_principal)]) -> dict[str, Any]:
    return {"authenticated": principal is not None, "name": principal.name if principal else None,
            "read_public": service.settings.reads_public}


@router.post("/session", summary="Log in with an API token; sets the wattsup_session cookie",
             **documented(m.SessionState, {401: "invalid token"}))
def post_session(request: Request, body: SessionIn, response: Response,
                 service: Annotated[DashboardService, Depends(get_service)],
                 _json: Annotated[None, Depends(require_json)]) -> dict[str, Any]:
    with service.sessions.begin() as session:
        principal = authenticate_token(session, body.token.strip())
        if principal is None:
            raise HTTPException(401, "invalid token", headers={"WWW-Authenticate": "Bearer"})
        cookie = open_session(session, principal, service.settings.session_hours)
    secure = service.settings.cookie_secure
    if secure is None:  # over TLS, directly or as a trusted proxy's X-Forwarded-Proto (see trusted_proxies)
        secure = request.url.scheme == "https"
    response.set_cookie(SESSION_COOKIE, cookie, max_age=int(service.settings.session_hours * 3600), httponly=True,
                        samesite="strict", secure=secure, path="/")
    return {"authenticated": True, "name": principal.name}


@router.delete("/session", summary="Log out", **documented(m.SessionState))
def delete_session(request: Request, response: Response,
                   service: Annotated[DashboardService, Depends(get_service)]) -> dict[str, Any]:
    with service.sessions.begin() as session:
        close_session(session, request.cookies.get(SESSION_COOKIE, ""))
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return {"authenticated": False, "name": None}
