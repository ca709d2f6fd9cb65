"""API tokens and browser sessions.

Tokens are 32 random bytes (URL-safe base64), shown once at creation and stored only as their
SHA-256: with that much entropy a plain hash is as good as a slow one, and a stolen database
holds nothing that authenticates. A browser exchanges a token for a session cookie
(``wattsup_session``), whose value is random and stored hashed the same way.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from dashboard.models import ApiToken, WebSession
from dashboard.timeutil import now_ms

SESSION_COOKIE = "wattsup_session"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the name of the token (directly or through a session)."""

    token_id: int
    name: str


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


class TokenExistsError(ValueError):
    pass


def create_token(sessions: sessionmaker[Session], name: str) -> str:
    """Store a new token called ``name`` and return it (the only time it is ever visible)."""
    name = name.strip()
    if not name:
        raise ValueError("a token needs a non-empty name")
    token = secrets.token_urlsafe(32)
    try:
        with sessions.begin() as session:
            session.add(ApiToken(name=name, token_hash=hash_secret(token), created_at_ms=now_ms()))
    except IntegrityError as exc:
        raise TokenExistsError(f"a token named {name!r} already exists") from exc
    return token


def authenticate_token(session: Session, token: str) -> Principal | None:
    if not token or len(token) > 512:
        return None
    digest = hash_secret(token)
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == digest))
    if row is None or not hmac.compare_digest(row.token_hash, digest):
        return None
    return Principal(row.id, row.name)


def open_session(session: Session, principal: Principal, hours: float) -> str:
    """A new session cookie value for ``principal``; expired sessions are swept on the way."""
    now = now_ms()
    session.execute(delete(WebSession).where(WebSession.expires_at_ms < now))
    value = secrets.token_urlsafe(32)
    session.add(WebSession(session_hash=hash_secret(value), token_id=principal.token_id,
                           expires_at_ms=now + int(hours * 3600 * 1000)))
    return value


def authenticate_session(session: Session, cookie: str) -> Principal | None:
    if not cookie or len(cookie) > 512:
        return None
    digest = hash_secret(cookie)
    row = session.execute(
        select(WebSession, ApiToken).join(ApiToken, ApiToken.id == WebSession.token_id)
        .where(WebSession.session_hash == digest)
    ).first()
    if row is None or row[0].expires_at_ms < now_ms() or not hmac.compare_digest(row[0].session_hash, digest):
        return None
    return Principal(row[1].id, row[1].name)


def close_session(session: Session, cookie: str) -> None:
    if cookie:
        session.execute(delete(WebSession).where(WebSession.session_hash == hash_secret(cookie)))


def list_tokens(sessions: sessionmaker[Session]) -> list[tuple[str, int]]:
    """(name, created_at_ms) of every token; the tokens themselves are not stored."""
    with sessions() as session:
        return [(t.name, t.created_at_ms) for t in session.scalars(select(ApiToken).order_by(ApiToken.name))]


def revoke_token(sessions: sessionmaker[Session], name: str) -> bool:
    """Delete the token called ``name`` and its browser sessions; False if there is none."""
    with sessions.begin() as session:
        token = session.scalar(select(ApiToken).where(ApiToken.name == name))
        if token is None:
            return False
        session.execute(delete(WebSession).where(WebSession.token_id == token.id))
        session.delete(token)
    return True
