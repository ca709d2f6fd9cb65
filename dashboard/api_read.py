"""Reading endpoints of ``/api/v1``: anomalies, meters, series, summary, models, alert history."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import StreamingResponse
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dashboard import api_models as m
from dashboard.alerts import alert_json, rule_json
from dashboard.api_models import documented
from dashboard.deps import db_session, get_service, require_principal, require_reader
from dashboard.models import Alert, AlertRule
from dashboard.service import DashboardService
from dashboard.store import SEVERITIES, AnomalyFilter, iter_anomalies, list_anomalies, list_meters, series, summary
from dashboard.timeutil import to_ms
from schemas.limits import MAX_ID_LENGTH

router = APIRouter(prefix="/api/v1", dependencies=[Depends(require_reader)])

MAX_OFFSET = 1_000_000_000
"""Past any real table; a larger offset overflowed the database's integer (found by the fuzz suite)."""

# Columns added later are appended, so a spreadsheet built on the export by position keeps working:
# ``band_residual`` and ``baseline`` came with Anomaly schema version 2.
CSV_COLUMNS = ("timestamp", "meter_id", "feeder_id", "observed", "expected", "lower", "upper", "residual", "score",
               "severity", "kind", "causes", "model_version", "band_residual", "baseline")


def anomaly_filter(
    meter_id: Annotated[str | None, Query(max_length=MAX_ID_LENGTH)] = None,
    feeder_id: Annotated[str | None, Query(max_length=MAX_ID_LENGTH)] = None,
    severity: Annotated[list[str] | None, Query(description="INFO, WARNING, CRITICAL; repeat or comma-separate")] = None,
    since: Annotated[datetime | None, Query(description="ISO 8601; naive means UTC")] = None,
    until: Annotated[datetime | None, Query(description="ISO 8601; naive means UTC")] = None,
    include_suppressed: Annotated[bool, Query(description="Also anomalies operator feedback suppressed "
                                                          "(their suppressed_by says why)")] = False,
) -> AnomalyFilter:
    severities = [s.strip().upper() for value in severity or [] for s in value.split(",") if s.strip()]
    bad = [s for s in severities if s not in SEVERITIES]
    if bad:
        raise HTTPException(422, [{"loc": ["query", "severity"], "type": "enum",
                                   "msg": f"unknown severity {', '.join(bad)}; expected one of {', '.join(SEVERITIES)}"}])
    flt = AnomalyFilter(meter_id=meter_id or None, feeder_id=feeder_id or None, severities=severities,
                        since_ms=to_ms(since) if since else None, until_ms=to_ms(until) if until else None,
                        include_suppressed=include_suppressed)
    if flt.since_ms is not None and flt.until_ms is not None and flt.since_ms > flt.until_ms:
        raise HTTPException(422, [{"loc": ["query", "since"], "type": "value_error",
                                   "msg": "since is after until"}])
    return flt


@router.get("/anomalies", summary="List anomalies, newest first", **documented(m.AnomalyPage))
def get_anomalies(
    flt: Annotated[AnomalyFilter, Depends(anomaly_filter)],
    session: Annotated[Session, Depends(db_session)],
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> dict[str, Any]:
    items, total = list_anomalies(session, flt, limit, offset)
    return {"items": items, "total": total, "limit": limit, "offset": offset}


@router.get("/anomalies.csv", summary="Download the matching anomalies as CSV",
            response_class=StreamingResponse, responses={200: {"content": {"text/csv": {}}}})
def get_anomalies_csv(
    flt: Annotated[AnomalyFilter, Depends(anomaly_filter)],
    service: Annotated[DashboardService, Depends(get_service)],
) -> StreamingResponse:
    def rows() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")  # RFC 4180
        writer.writerow(CSV_COLUMNS)
        with service.sessions() as session:
            for n, a in enumerate(iter_anomalies(session, flt), 1):
                writer.writerow([_cell(v) for v in (
                    a["timestamp"], a["meter_id"], a["feeder_id"], a["observed"], a["expected"], a["lower"],
                    a["upper"], a["residual"], a["score"], a["severity"], a["kind"] or "",
                    "; ".join(c["text"] for c in a["causes"]), a["model_version"], a["band_residual"], a["baseline"])])
                if n % 1000 == 0:
                    yield buffer.getvalue()
                    buffer.seek(0)
                    buffer.truncate()
        yield buffer.getvalue()

    return StreamingResponse(rows(), media_type="text/csv",
                             headers={"Content-Disposition": "attachment; filename=anomalies.csv"})


FORMULA_STARTS = ("=", "+", "-", "@")
"""What makes a spreadsheet read a cell as a formula (also after leading spaces or tabs)."""
LINE_BREAKS = re.compile(r"[\r\n\u2028\u2029\x0b\x0c\x85]+")


def _text(value: str) -> str:
    """A text cell a spreadsheet will not run (CSV formula injection): ids come from ingest clients.

    Line breaks become spaces, so no text can start a row of its own (``M7\r=cmd|...``) in a
    reader that splits lines; a cell whose first non-blank character starts a formula, or that
    starts with a tab, gets a leading ``'``, which spreadsheets show as text.
    """
    value = LINE_BREAKS.sub(" ", value)
    if value.lstrip(" \t")[:1] in FORMULA_STARTS or value[:1] == "\t":
        return "'" + value
    return value


def _cell(value: Any) -> Any:
    """Text guarded by :func:`_text`; numbers as they are (a negative residual stays a number); null empty."""
    if value is None:
        return ""
    return _text(value) if isinstance(value, str) else value


@router.get("/meters", summary="Meters with their newest reading and anomalies of the last 24 h",
            **documented(m.MeterList))
def get_meters(session: Annotated[Session, Depends(db_session)],
               feeder_id: Annotated[str | None, Query(max_length=MAX_ID_LENGTH)] = None) -> dict[str, Any]:
    return {"items": list_meters(session, feeder_id or None)}


@router.get("/series", summary="Readings, forecast and anomalies of a meter, or summed readings of a feeder",
            **documented(m.Series))
def get_series(
    session: Annotated[Session, Depends(db_session)],
    meter_id: Annotated[str | None, Query(max_length=MAX_ID_LENGTH)] = None,
    feeder_id: Annotated[str | None, Query(max_length=MAX_ID_LENGTH)] = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> dict[str, Any]:
    if bool(meter_id) == bool(feeder_id):
        raise HTTPException(422, [{"loc": ["query", "meter_id"], "type": "value_error",
                                   "msg": "give exactly one of meter_id or feeder_id"}])
    return series(session, meter_id=meter_id, feeder_id=feeder_id, since_ms=to_ms(since) if since else None,
                  until_ms=to_ms(until) if until else None)


@router.get("/summary", summary="Fleet summary", **documented(m.Summary))
def get_summary(session: Annotated[Session, Depends(db_session)],
                service: Annotated[DashboardService, Depends(get_service)]) -> dict[str, Any]:
    return summary(session, service.current_model_version())


@router.get("/models", summary="Detector versions, newest first", **documented(m.ModelList))
def get_models(service: Annotated[DashboardService, Depends(get_service)]) -> dict[str, Any]:
    return {"items": service.model_versions()}


@router.get("/alert-rules", summary="Alert rules (sign-in needed: they name webhook URLs and e-mail recipients)",
            dependencies=[Depends(require_principal)], **documented(m.RuleList, {401: "not signed in"}))
def get_alert_rules(session: Annotated[Session, Depends(db_session)]) -> dict[str, Any]:
    return {"items": [rule_json(r) for r in session.scalars(select(AlertRule).order_by(AlertRule.id))]}


@router.get("/alerts", summary="Alert history, newest first (sign-in needed)",
            dependencies=[Depends(require_principal)], **documented(m.AlertPage, {401: "not signed in"}))
def get_alerts(session: Annotated[Session, Depends(db_session)],
               service: Annotated[DashboardService, Depends(get_service)],
               limit: Annotated[int, Query(ge=1, le=1000)] = 100,
               offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0) -> dict[str, Any]:
    total = session.scalar(select(func.count()).select_from(Alert)) or 0
    rows = session.scalars(select(Alert).order_by(Alert.id.desc()).limit(limit).offset(offset))
    return {"items": [alert_json(a) for a in rows], "total": int(total), "limit": limit, "offset": offset,
            "checks_awaiting_retry": service.alerts.checks_awaiting_retry}
