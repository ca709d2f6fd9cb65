"""Incidents and operator feedback in ``/api/v1``: the list (open first), one incident with its anomalies,
and marking one (written to the compacted feedback topic, which every stream worker follows)."""

from __future__ import annotations

import logging
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi import Path as FastApiPath
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from dashboard import api_models as m
from dashboard.api_models import documented
from dashboard.auth import Principal
from dashboard.deps import db_session, get_service, require_json, require_reader, require_writer
from dashboard.service import DashboardService
from dashboard.store import (
    INCIDENT_KINDS,
    IncidentFilter,
    get_incident,
    incident_anomalies,
    incident_json,
    list_incidents,
)
from dashboard.timeutil import iso
from schemas.limits import MAX_ID_LENGTH

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1")

INCIDENT_ID_PATTERN = r"^inc-[0-9a-f]{20}$"
"""Incident ids are derived digests (:func:`detection.incidents.incident_id`): anything else is refused
before it reaches a query, a page or a Kafka key."""
RETRY_AFTER_SECONDS = 10


@router.get("/incidents", summary="List incidents, open ones first, then newest first",
            dependencies=[Depends(require_reader)], **documented(m.IncidentPage))
def get_incidents(
    session: Annotated[Session, Depends(db_session)],
    feeder_id: Annotated[str | None, Query(max_length=MAX_ID_LENGTH)] = None,
    meter_id: Annotated[str | None, Query(max_length=MAX_ID_LENGTH)] = None,
    kind: Annotated[list[str] | None, Query(description="Kinds; repeat or comma-separate")] = None,
    state: Annotated[Literal["open", "closed"] | None, Query(description="open or closed")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> dict[str, Any]:
    kinds = [k.strip() for value in kind or [] for k in value.split(",") if k.strip()]
    bad = [k for k in kinds if k not in INCIDENT_KINDS]
    if bad:
        raise HTTPException(422, [{"loc": ["query", "kind"], "type": "enum",
                                   "msg": f"unknown kind; expected one of {', '.join(INCIDENT_KINDS)}"}])
    items, total = list_incidents(session, IncidentFilter(feeder_id=feeder_id or None, meter_id=meter_id or None,
                                                          kinds=kinds, state=state), limit, offset)
    return {"items": items, "total": total, "limit": limit, "offset": offset}


@router.get("/incidents/{incident_id}", summary="One incident with its anomalous readings",
            dependencies=[Depends(require_reader)], **documented(m.IncidentDetail, {404: "no such incident"}))
def get_one_incident(session: Annotated[Session, Depends(db_session)],
                     incident_id: Annotated[str, FastApiPath(pattern=INCIDENT_ID_PATTERN)]) -> dict[str, Any]:
    row = get_incident(session, incident_id)
    if row is None:
        raise HTTPException(404, "no such incident")
    return {"incident": incident_json(row), "anomalies": incident_anomalies(session, row)}


class FeedbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    verdict: Literal["confirmed", "false_alarm", "expected"]
    days: float | None = Field(7.0, gt=0, le=3650, description="Scope of a false_alarm or expected mark, in days after "
                                                                "the incident; null: until revoked.")
    close: bool | None = Field(None, description="Close the incident; default: yes for false_alarm/expected, no for "
                                                 "confirmed.")
    note: str | None = Field(None, max_length=1000)


def _mark(service: DashboardService, incident: dict[str, Any], body: FeedbackIn, operator: str) -> dict[str, Any]:
    from confluent_kafka import KafkaException

    from detection.feedback import mark_for_incident
    from feedback.topic import publish_mark
    from schemas.serde import make_serde

    kafka = service.settings.kafka
    mark = mark_for_incident(incident, body.verdict, created_at=int(time.time() * 1000), days=body.days,
                             close=body.close, operator=operator, note=body.note)
    try:
        publish_mark(kafka, service.settings.topics, make_serde(kafka.schema_registry_url, **kafka.registry_config()),
                     mark, timeout=service.settings.ingest_ack_timeout_seconds)
    except KafkaException as exc:
        raise HTTPException(503, f"{exc.args[0] if exc.args else exc}; retry",
                            headers={"Retry-After": str(RETRY_AFTER_SECONDS)}) from exc
    log.info("%s marked incident %s as %s", operator, mark.incident_id, mark.verdict)
    return {"meter_id": mark.meter_id, "kind": mark.kind, "verdict": mark.verdict, "incident_id": mark.incident_id,
            "expires_at": iso(mark.expires_at) if mark.expires_at is not None else None,
            "close_incident": mark.close_incident, "revoked": mark.revoked, "operator": mark.operator,
            "note": mark.note}


@router.post("/incidents/{incident_id}/feedback", status_code=202,
             summary="Mark an incident: confirmed, false alarm or expected (written to the feedback topic)",
             **documented(m.FeedbackMarkOut, {404: "no such incident",
                                              503: "Kafka did not acknowledge in time (Retry-After)"}, status=202))
async def post_feedback(incident_id: Annotated[str, FastApiPath(pattern=INCIDENT_ID_PATTERN)], body: FeedbackIn,
                        service: Annotated[DashboardService, Depends(get_service)],
                        principal: Annotated[Principal, Depends(require_writer)],
                        _json: Annotated[None, Depends(require_json)]) -> dict[str, Any]:
    def load() -> dict[str, Any] | None:
        with service.sessions() as session:
            row = get_incident(session, incident_id)
            if row is None:
                return None
            return {"incident_id": row.incident_id, "meter_id": row.meter_id, "feeder_id": row.feeder_id,
                    "kind": row.kind, "started": row.started_ms, "last_seen": row.last_seen_ms}

    incident = await run_in_threadpool(load)
    if incident is None:
        raise HTTPException(404, "no such incident")
    return await run_in_threadpool(_mark, service, incident, body, principal.name)
