"""Answers that middleware and shared dependencies give, listed in the OpenAPI document too.

FastAPI documents what a route declares; the 401 of a sign-in check, the 415 of the JSON-only
check, the 429 of the rate limit, and the 403 and 413 of the cross-site and body-size middleware
come from elsewhere, so a client generated from the document would not know them. This adds
each to every operation that can give it (found from the route's dependencies and method), with
the ``Detail`` body they all carry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from dashboard.deps import require_json, require_principal, require_reader, require_writer
from dashboard.security import UNSAFE_METHODS

BY_DEPENDENCY: dict[Callable[..., Any], dict[str, str]] = {
    require_reader: {"401": "reads are private (WATTSUP_DASHBOARD_READ_PUBLIC) and no valid token or session "
                            "was given"},
    require_principal: {"401": "no valid token or session"},
    require_writer: {"401": "no valid token or session",
                     "429": "too many writing requests for this token (Retry-After)"},
    require_json: {"415": "the body is not sent as application/json"},
}
FOR_WRITES = {"403": "cross-site request refused (Origin or Referer of another site, or a cookie write "
                     "showing neither)",
              "413": "body over the size limit"}
"""What the middleware answers to any writing request (dashboard/security.py, the body-size limit)."""
DETAIL_SCHEMA = {"$ref": "#/components/schemas/Detail"}


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for dependency in dependant.dependencies:
        if dependency.call is not None:
            yield dependency.call
        yield from _calls(dependency)


def common_answers(route: APIRoute, method: str) -> dict[str, str]:
    """Status code -> description of the answers ``route`` can give through middleware and dependencies."""
    answers: dict[str, str] = {}
    for call in _calls(route.dependant):
        answers.update(BY_DEPENDENCY.get(call, {}))
    if method.upper() in UNSAFE_METHODS:
        answers.update(FOR_WRITES)
    return answers


def document_common_answers(app: FastAPI, routers: list[APIRouter]) -> None:
    """Make ``app.openapi()`` list the common answers of every operation of ``routers`` (the app's
    API routers, included without an extra prefix); what a route documents itself wins."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = generate()
        for route in (r for router in routers for r in router.routes):
            if not isinstance(route, APIRoute) or not route.include_in_schema:
                continue
            for method in route.methods:
                operation = document["paths"].get(route.path_format, {}).get(method.lower())
                if operation is None:
                    continue
                for status, text in common_answers(route, method).items():
                    operation["responses"].setdefault(status, {
                        "description": text, "content": {"application/json": {"schema": DETAIL_SCHEMA}}})
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]
