"""Writing endpoints of ``/api/v1`` (all need a token or session): readings ingest, CSV detection,
sensitivity and alert rules. ``GET`` of sensitivity and the example CSV live here too."""

from __future__ import annotations

import json
import logging
import re
import time
from datetime import datetime
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Depends, File, HTTPException, Query, Request, Response, UploadFile
from fastapi import Path as FastApiPath
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from dashboard import api_models as m
from dashboard.alerts import rule_json
from dashboard.api_models import documented
from dashboard.auth import Principal
from dashboard.deps import db_session, get_service, require_json, require_reader, require_writer
from dashboard.detect import EXAMPLE_CSV, DetectTimings, UploadError, detect_upload
from dashboard.models import AlertRule, Reading
from dashboard.readings_sender import raw_text
from dashboard.service import DashboardService
from dashboard.timeutil import now_ms, to_ms
from dashboard.webhooks import DestinationRefused
from schemas.limits import FUTURE_TOLERANCE_MS, MAX_ID_LENGTH, identifier_problem, timestamp_problem

router = APIRouter(prefix="/api/v1")
log = logging.getLogger(__name__)

MAX_READINGS_PER_REQUEST = 50_000
RETRY_AFTER_SECONDS = 10
KAFKA_AWAY = "Kafka did not acknowledge in time (Retry-After)"
"""What a 503 during a broker outage tells the client to wait: librdkafka retries the broker every few seconds."""


# -- POST /readings ------------------------------------------------------------------------
class ReadingIn(BaseModel):
    """One reading as an IoT meter or gateway posts it."""

    meter_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    timestamp: datetime = Field(description="End of the interval, ISO 8601 (naive means UTC); not before 2000-01-01 "
                                            "and at most a day ahead of the server's clock. Epoch numbers are refused.")
    kwh: float = Field(allow_inf_nan=False, description="Energy over the interval, kWh; negative for a net meter "
                                                        "exporting (solar), never NaN or infinite.")
    feeder_id: str | None = Field(None, min_length=1, max_length=MAX_ID_LENGTH, description="Defaults to meter_id.")
    interval_seconds: int = Field(900, gt=0, le=31 * 24 * 3600)

    @field_validator("meter_id", "feeder_id")
    @classmethod
    def _usable_id(cls, value: str | None) -> str | None:
        if value is not None:
            problem = identifier_problem(value)
            if problem is not None:
                raise ValueError(problem)
        return value

    @field_validator("timestamp", mode="before")
    @classmethod
    def _iso_text_only(cls, value: Any) -> Any:
        # pydantic reads numbers (and numeric strings) as epoch seconds or milliseconds: `1` became
        # 1970-01-01T00:00:01. A meter's clock is never sent that way here; refusing it is clearer.
        if not isinstance(value, str) or value.strip().lstrip("+-").replace(".", "", 1).isdigit():
            raise ValueError("must be an ISO 8601 date and time such as 2026-11-25T08:00:00Z; epoch numbers are "
                             "not accepted")
        return value

    @field_validator("timestamp")
    @classmethod
    def _sane_window(cls, value: datetime, info: ValidationInfo) -> datetime:
        context = info.context or {}
        now = context.get("now_ms", now_ms())
        problem = timestamp_problem(to_ms(value), now, context.get("tolerance_ms", FUTURE_TOLERANCE_MS))
        if problem is not None:
            raise ValueError(f"{value.isoformat()} {problem}")
        return value

    def record(self) -> dict[str, Any]:
        """The ``MeterReading`` Avro record."""
        return {"meter_id": self.meter_id, "feeder_id": self.feeder_id or self.meter_id,
                "timestamp": to_ms(self.timestamp), "energy_kwh": float(self.kwh),
                "interval_seconds": int(self.interval_seconds), "voltage_v": None, "power_kw": None,
                "quality_flags": []}


_READING_SCHEMA = ReadingIn.model_json_schema()
"""Inlined in the OpenAPI document: the body is parsed by hand (to answer per item), so FastAPI does not list it."""


def _field_errors(exc: ValidationError) -> list[dict[str, str]]:
    return [{"field": ".".join(str(p) for p in e["loc"]) or "(reading)", "message": e["msg"]} for e in exc.errors()]


def validate_readings(body: Any, *, tolerance_ms: int = FUTURE_TOLERANCE_MS
                      ) -> tuple[list[ReadingIn], list[dict[str, Any]], list[Any]]:
    """Valid readings, rejections (index + field errors) and the rejected raw items, in body order.

    ``tolerance_ms`` is how far past the wall clock a timestamp may be (the dashboard's setting).
    """
    context = {"now_ms": now_ms(), "tolerance_ms": tolerance_ms}
    items = body if isinstance(body, list) else [body]
    valid, rejected, raw = [], [], []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            rejected.append({"index": index, "errors": [
                {"field": "(reading)", "message": f"expected a JSON object, got {type(item).__name__}"}]})
            raw.append(item)
            continue
        try:
            valid.append(ReadingIn.model_validate(item, context=context))
        except ValidationError as exc:
            rejected.append({"index": index, "errors": _field_errors(exc)})
            raw.append(item)
    return valid, rejected, raw


MAX_JSON_DEPTH = 8
"""Deepest nesting a readings body may have: a list of flat objects is 2; a few levels of extra (ignored)
metadata fit. Checked on the raw bytes before parsing: 200 KB of ``[`` made the parser (and anything that
walks the result) overflow the stack."""
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_OPENING = np.frombuffer(b"[{", dtype=np.uint8)
_CLOSING = np.frombuffer(b"]}", dtype=np.uint8)


def json_depth(raw: bytes) -> int:
    """The deepest nesting of ``[``/``{`` in a JSON text, brackets inside strings not counted (vectorised)."""
    data = np.frombuffer(_JSON_STRING.sub(b'""', raw), dtype=np.uint8)
    steps = np.isin(data, _OPENING).astype(np.int32) - np.isin(data, _CLOSING).astype(np.int32)
    return int(np.cumsum(steps).max(initial=0))


def check_duplicates(session: Session, valid: list[ReadingIn], indices: list[int]
                     ) -> tuple[list[ReadingIn], list[dict[str, Any]], list[dict[str, Any]]]:
    """Split valid readings by (meter, time): what to send, what repeats, what conflicts.

    Policy (issue 13): within one body the first reading of a meter and time is kept; an exact repeat
    (same kWh) is dropped and listed; a repeat with another value is rejected. Against what the dashboard
    has stored: the same value is listed as ``already stored`` and not sent again (a retry is harmless);
    another value is rejected, because a stored reading is never replaced (it was scored as it was; a
    correction would need a re-score the stream does not do). ``indices`` are the body positions of
    ``valid``. Returns (to send, duplicates, conflicts as rejections).
    """
    duplicates: list[dict[str, Any]] = []
    conflicts: list[dict[str, Any]] = []
    first: dict[tuple[str, int], tuple[int, ReadingIn]] = {}
    for index, reading in zip(indices, valid):
        key = (reading.meter_id, to_ms(reading.timestamp))
        if key not in first:
            first[key] = (index, reading)
            continue
        of, kept = first[key]
        if kept.kwh == reading.kwh:
            duplicates.append({"index": index, "of": of, "action": "dropped", "detail": f"exact repeat of reading {of}"})
        else:
            conflicts.append({"index": index, "errors": [{"field": "kwh", "message": (
                f"same meter and time as reading {of}; reading {of} of this request ({kept.kwh:g} kWh) is kept")}]})
    stored: dict[tuple[str, int], float] = {}
    if first:
        meters = sorted({m for m, _ in first})
        times = [t for _, t in first]
        for chunk in range(0, len(meters), 500):  # bounded IN lists
            rows = session.execute(select(Reading.meter_id, Reading.timestamp_ms, Reading.kwh)
                                   .where(Reading.meter_id.in_(meters[chunk:chunk + 500]))
                                   .where(Reading.timestamp_ms.between(min(times), max(times))))
            stored.update({(m, t): k for m, t, k in rows if (m, t) in first})
    keep: list[ReadingIn] = []
    for key, (index, reading) in first.items():
        if key not in stored:
            keep.append(reading)
        elif stored[key] == reading.kwh:
            duplicates.append({"index": index, "of": None, "action": "already stored",
                               "detail": f"this reading is already stored ({stored[key]:g} kWh)"})
        else:
            conflicts.append({"index": index, "errors": [{"field": "kwh", "message": (
                f"a reading of {stored[key]:g} kWh is already stored for this meter and time; stored readings "
                "are never replaced")}]})
    duplicates.sort(key=lambda d: d["index"])
    conflicts.sort(key=lambda c: c["index"])
    return keep, duplicates, conflicts


@router.post("/readings", status_code=202, summary="Ingest one reading or a list (JSON); produces to the readings topic",
             response_model=None,
             responses={202: {"model": m.IngestResult, "description": "accepted, with the rejected items"},
                        400: {"model": m.Detail, "description": "not JSON"},
                        401: {"model": m.Detail, "description": "no valid token or session"},
                        413: {"model": m.Detail, "description": "body over the size limit"},
                        415: {"model": m.Detail, "description": "not sent as application/json"},
                        422: {"model": m.IngestResult, "description": "every reading invalid"},
                        503: {"model": m.Detail, "description": "Kafka did not acknowledge (Retry-After)"}},
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
                 "oneOf": [_READING_SCHEMA, {"type": "array", "items": _READING_SCHEMA}]}}}}})
async def post_readings(request: Request, service: Annotated[DashboardService, Depends(get_service)],
                        principal: Annotated[Principal, Depends(require_writer)],
                        _json: Annotated[None, Depends(require_json)]) -> JSONResponse:
    raw_body = await request.body()
    if not raw_body.strip():
        raise HTTPException(400, "empty body: expected a JSON reading or a JSON list of readings")
    depth = await run_in_threadpool(json_depth, raw_body)
    if depth > MAX_JSON_DEPTH:
        raise HTTPException(400, f"the body is nested {depth} levels deep; a reading or a list of readings is nested "
                                 f"at most {MAX_JSON_DEPTH}")
    try:
        body = json.loads(raw_body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HTTPException(400, f"the body is not valid JSON: {exc}") from exc
    if not isinstance(body, (dict, list)):
        raise HTTPException(400, f"expected a JSON object or a list of objects, got {type(body).__name__}")
    if isinstance(body, list) and len(body) > MAX_READINGS_PER_REQUEST:
        raise HTTPException(413, f"{len(body)} readings in one request; the limit is {MAX_READINGS_PER_REQUEST}")
    valid, rejected, _raw = validate_readings(body, tolerance_ms=service.settings.future_tolerance_ms)
    if not valid and not rejected:
        return JSONResponse({"accepted": 0, "rejected": [], "duplicates": [], "detail": "the list holds no readings"},
                            status_code=422)
    items = body if isinstance(body, list) else [body]
    bad = {r["index"] for r in rejected}
    indices = [i for i in range(len(items)) if i not in bad]

    def duplicates_of() -> tuple[list[ReadingIn], list[dict[str, Any]], list[dict[str, Any]]]:
        with service.sessions() as session:
            return check_duplicates(session, valid, indices)

    send, duplicates, conflicts = await run_in_threadpool(duplicates_of)
    rejected = sorted(rejected + conflicts, key=lambda r: r["index"])
    letters = [("reading {}: {}".format(r["index"], "; ".join(f"{e['field']}: {e['message']}" for e in r["errors"])),
                raw_text(items[r["index"]])) for r in rejected]
    # Validated (and de-duplicated) before Kafka is touched: a batch of only invalid readings is answered at
    # once, its dead letters queued without waiting, even while the broker is away.
    sender = service.reading_sender()
    service.metrics.readings_awaiting_ack.inc(len(send))
    try:
        failed = await sender.send([r.record() for r in send], letters)
    finally:
        service.metrics.readings_awaiting_ack.dec(len(send))
    if failed:
        raise HTTPException(503, f"Kafka did not acknowledge {failed} of {len(send)} readings within "
                                 f"{service.settings.ingest_ack_timeout_seconds:g} s; retry the request (a reading "
                                 "already stored is reported as such, never stored twice)",
                            headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
    service.metrics.readings_accepted.inc(len(send))
    service.metrics.readings_rejected.inc(len(rejected))
    answer = {"accepted": len(send), "rejected": rejected, "duplicates": duplicates}
    return JSONResponse(answer, status_code=202 if send or duplicates else 422)


# -- POST /detect ---------------------------------------------------------------------------

@router.post("/detect", summary="Detect anomalies in an uploaded readings CSV (timestamp,meter_id,kwh or "
                                "timestamp,consumption)",
             **documented(m.DetectResult, {413: "file over the size limit", 429: "upload rate limit"},
                          refusals={400: (m.DetectRefusal, "not a readings CSV"),
                                    422: (m.DetectRefusal, "too few readings to learn from (no trained detector)")}))
async def post_detect(
    service: Annotated[DashboardService, Depends(get_service)],
    principal: Annotated[Principal, Depends(require_writer)],
    file: Annotated[UploadFile, File(description="The CSV file")],
    sensitivity: Annotated[float, Query(ge=0.1, le=10)] = 1.0,
) -> Response:
    retry = service.detect_limiter.allow(f"token:{principal.name}")
    if retry is not None:
        raise HTTPException(429, f"rate limit of {service.settings.detect_rate_per_minute} uploads per minute reached "
                                 f"for token {principal.name!r}; retry in {retry:.0f} s",
                            headers={"Retry-After": str(max(1, round(retry)))})
    data = await file.read(service.settings.max_upload_bytes + 1)
    if len(data) > service.settings.max_upload_bytes:
        raise HTTPException(413, f"the uploaded file is larger than the limit of {service.settings.max_upload_mb:g} MB")
    if not data or data.isspace():
        raise HTTPException(400, "the uploaded file is empty")
    timings = DetectTimings()
    try:
        async with service.detect_slots:
            started = time.perf_counter()
            model = await run_in_threadpool(service.model_cache.get)
            body = await run_in_threadpool(detect_upload, data, file.filename, model, sensitivity, timings)
    except UploadError as exc:
        return JSONResponse({"detail": str(exc), "rejected_rows": exc.rejected_rows[:1000]}, status_code=exc.status)
    service.metrics.detect_seconds.observe(time.perf_counter() - started)
    return Response(body, media_type="application/json", headers={
        "Server-Timing": f"parse;dur={timings.parse_seconds * 1000:.0f}, detect;dur={timings.detect_seconds * 1000:.0f}, "
                         f"encode;dur={timings.encode_seconds * 1000:.0f}"})


@router.get("/detect/example.csv", summary="A small example upload (two meters, two weeks, one spike)",
            dependencies=[Depends(require_reader)])
def get_example_csv() -> FileResponse:
    return FileResponse(EXAMPLE_CSV, media_type="text/csv", filename="example.csv")


# -- sensitivity ---------------------------------------------------------------------------
class SensitivityIn(BaseModel):
    value: float = Field(ge=0.1, le=10, allow_inf_nan=False, description="1 is the calibrated default; 2 flags more.")
    meter_id: str | None = Field(None, min_length=1, max_length=MAX_ID_LENGTH, description="Only this meter; null = fleet.")


def _sensitivity_json(service: DashboardService) -> dict[str, Any]:
    watcher = service.sensitivity_watcher()
    return {"fleet": watcher.fleet, "meters": dict(sorted(watcher.per_meter.items()))}


def _publish(service: DashboardService, value: float | None, meter_id: str | None) -> None:
    """Write the setting to the control topic and apply it here at once; 503 if the broker does not take it
    within ``ingest_ack_timeout_seconds``."""
    from confluent_kafka import KafkaException

    from foundation.sensitivity import control_key, publish_sensitivity

    try:
        payload = publish_sensitivity(service.settings.kafka, service.settings.topics, value, meter_id,
                                      timeout=service.settings.ingest_ack_timeout_seconds)
    except KafkaException as exc:
        raise HTTPException(503, f"{exc.args[0] if exc.args else exc}; retry",
                            headers={"Retry-After": str(RETRY_AFTER_SECONDS)}) from exc
    service.sensitivity_watcher().apply(control_key(meter_id), payload)  # visible at once, not a poll later


@router.get("/sensitivity", summary="Fleet-wide and per-meter sensitivity the stream workers follow",
            dependencies=[Depends(require_reader)], **documented(m.SensitivitySettings))
async def get_sensitivity(service: Annotated[DashboardService, Depends(get_service)]) -> dict[str, Any]:
    return await run_in_threadpool(_sensitivity_json, service)


@router.put("/sensitivity", summary="Set the fleet's or one meter's sensitivity (written to the control topic)",
            **documented(m.SensitivitySettings, {503: KAFKA_AWAY}))
async def put_sensitivity(body: SensitivityIn, service: Annotated[DashboardService, Depends(get_service)],
                          principal: Annotated[Principal, Depends(require_writer)],
                          _json: Annotated[None, Depends(require_json)]) -> dict[str, Any]:
    await run_in_threadpool(_publish, service, body.value, body.meter_id)
    return await run_in_threadpool(_sensitivity_json, service)


@router.delete("/sensitivity/{meter_id}", summary="Remove a meter's sensitivity override",
               **documented(m.SensitivitySettings, {503: KAFKA_AWAY}))
async def delete_sensitivity(meter_id: str, service: Annotated[DashboardService, Depends(get_service)],
                             principal: Annotated[Principal, Depends(require_writer)]) -> dict[str, Any]:
    problem = identifier_problem(meter_id)
    if problem is not None:
        raise HTTPException(422, [{"loc": ["path", "meter_id"], "type": "value_error", "msg": f"meter_id {problem}"}])
    await run_in_threadpool(_publish, service, None, meter_id)
    return await run_in_threadpool(_sensitivity_json, service)


# -- alert rules -----------------------------------------------------------------------------
class QuietHours(BaseModel):
    start: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="HH:MM in the server's alert time zone")
    end: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")


class AlertRuleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128)
    min_severity: Literal["INFO", "WARNING", "CRITICAL"] = "WARNING"
    meter_id: str | None = Field(None, min_length=1, max_length=MAX_ID_LENGTH)
    feeder_id: str | None = Field(None, min_length=1, max_length=MAX_ID_LENGTH)
    quiet_hours: QuietHours | None = None
    webhook_url: str | None = Field(None, max_length=2000, pattern=r"^https?://[^\s/$.?#][^\s]*$")
    email_to: str | None = Field(None, max_length=320, pattern=r"^[^@\s,;<>]+@[^@\s,;<>]+\.[^@\s,;<>]+$")
    enabled: bool = True

    @model_validator(mode="after")
    def _has_channel(self) -> AlertRuleIn:
        if not self.webhook_url and not self.email_to:
            raise ValueError("give webhook_url, email_to or both: a rule needs somewhere to send alerts")
        return self


@router.post("/alert-rules", status_code=201, summary="Create an alert rule", **documented(m.Rule, status=201))
def post_alert_rule(body: AlertRuleIn, session: Annotated[Session, Depends(db_session)],
                    service: Annotated[DashboardService, Depends(get_service)],
                    principal: Annotated[Principal, Depends(require_writer)],
                    _json: Annotated[None, Depends(require_json)]) -> dict[str, Any]:
    if body.webhook_url:
        try:
            service.alerts.webhooks.check(body.webhook_url)
        except DestinationRefused as exc:
            raise HTTPException(422, [{"loc": ["body", "webhook_url"], "type": "value_error", "msg": str(exc)}]) from exc
    rule = AlertRule(name=body.name, min_severity=body.min_severity, meter_id=body.meter_id, feeder_id=body.feeder_id,
                     quiet_start=body.quiet_hours.start if body.quiet_hours else None,
                     quiet_end=body.quiet_hours.end if body.quiet_hours else None,
                     webhook_url=body.webhook_url, email_to=body.email_to, enabled=body.enabled,
                     created_at_ms=now_ms())
    session.add(rule)
    session.commit()
    return rule_json(rule)


@router.delete("/alert-rules/{rule_id}", status_code=204, summary="Delete an alert rule (its alert history goes too)",
               responses={404: {"model": m.Detail, "description": "no such rule"}})
def delete_alert_rule(rule_id: Annotated[int, FastApiPath(ge=1, le=2**31 - 1)],
                      session: Annotated[Session, Depends(db_session)],
                      principal: Annotated[Principal, Depends(require_writer)]) -> Response:
    rule = session.scalar(select(AlertRule).where(AlertRule.id == rule_id))
    if rule is None:
        raise HTTPException(404, f"no alert rule {rule_id}")
    session.delete(rule)
    session.commit()
    return Response(status_code=204)
