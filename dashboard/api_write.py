"""Writing endpoints of ``/api/v1`` (all need a token or session): readings ingest, CSV detection,
sensitivity and alert rules. ``GET`` of sensitivity and the example CSV live here too."""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, HTTPException, Query, Request, Response, UploadFile
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
from dashboard.models import AlertRule
from dashboard.service import DashboardService
from dashboard.webhooks import DestinationRefused
from dashboard.timeutil import now_ms, to_ms
from schemas.limits import FUTURE_TOLERANCE_MS, MAX_ID_LENGTH, identifier_problem, timestamp_problem

router = APIRouter(prefix="/api/v1")
log = logging.getLogger(__name__)

READINGS_SOURCE = "http:/api/v1/readings"
MAX_READINGS_PER_REQUEST = 50_000


# -- POST /readings ------------------------------------------------------------------------
class ReadingIn(BaseModel):
    """One reading as an IoT meter or gateway posts it."""

    meter_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    timestamp: datetime = Field(description="End of the interval, ISO 8601 (naive means UTC); not before 2000-01-01 "
                                            "and at most a day ahead of the server's clock. Epoch numbers are refused.")
    kwh: float = Field(ge=0, allow_inf_nan=False, description="Energy over the interval, kWh.")
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


def _produce(service: DashboardService, valid: list[ReadingIn], rejected: list[dict[str, Any]],
             raw: list[Any]) -> int:
    """Send the readings and dead letters; returns how many readings the broker did not acknowledge."""
    producer = service.producer()
    with service.produce_lock:  # one request's delivery accounting at a time
        before = producer.summary.failed
        dead_before = producer.summary.dead_letters_failed
        for reading in valid:
            producer.send_reading(reading.record())
        for rejection, item in zip(rejected, raw):
            reason = "; ".join(f"{e['field']}: {e['message']}" for e in rejection["errors"])
            producer.send_dead_letter(READINGS_SOURCE, f"reading {rejection['index']}: {reason}",
                                      raw_text=json.dumps(item, default=str)[:100_000])
        remaining = producer.flush(15.0)
        failed = producer.summary.failed - before + remaining
        if producer.summary.dead_letters_failed > dead_before:
            # The rejected items are then only in this response and the log; the readings may still be fine.
            log.error("%d dead letters for rejected readings could not be written",
                      producer.summary.dead_letters_failed - dead_before)
        return failed


@router.post("/readings", status_code=202, summary="Ingest one reading or a list (JSON); produces to the readings topic",
             response_model=None,
             responses={202: {"model": m.IngestResult, "description": "accepted, with the rejected items"},
                        400: {"model": m.Detail, "description": "not JSON"},
                        401: {"model": m.Detail, "description": "no valid token or session"},
                        413: {"model": m.Detail, "description": "body over the size limit"},
                        422: {"model": m.IngestResult, "description": "every reading invalid"},
                        503: {"model": m.Detail, "description": "Kafka did not acknowledge"}},
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
                 "oneOf": [_READING_SCHEMA, {"type": "array", "items": _READING_SCHEMA}]}}}}})
async def post_readings(request: Request, service: Annotated[DashboardService, Depends(get_service)],
                        principal: Annotated[Principal, Depends(require_writer)],
                        _json: Annotated[None, Depends(require_json)]) -> JSONResponse:
    raw_body = await request.body()
    if not raw_body.strip():
        raise HTTPException(400, "empty body: expected a JSON reading or a JSON list of readings")
    try:
        body = json.loads(raw_body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HTTPException(400, f"the body is not valid JSON: {exc}") from exc
    if not isinstance(body, (dict, list)):
        raise HTTPException(400, f"expected a JSON object or a list of objects, got {type(body).__name__}")
    if isinstance(body, list) and len(body) > MAX_READINGS_PER_REQUEST:
        raise HTTPException(413, f"{len(body)} readings in one request; the limit is {MAX_READINGS_PER_REQUEST}")
    valid, rejected, raw = validate_readings(body, tolerance_ms=service.settings.future_tolerance_ms)
    if not valid and not rejected:
        return JSONResponse({"accepted": 0, "rejected": [], "detail": "the list holds no readings"}, status_code=422)
    failed = await run_in_threadpool(_produce, service, valid, rejected, raw)
    if failed:
        raise HTTPException(503, f"Kafka did not acknowledge {failed} of {len(valid)} readings; retry the request")
    service.metrics.readings_accepted.inc(len(valid))
    service.metrics.readings_rejected.inc(len(rejected))
    return JSONResponse({"accepted": len(valid), "rejected": rejected}, status_code=202 if valid else 422)


# -- POST /detect ---------------------------------------------------------------------------

@router.post("/detect", summary="Detect anomalies in an uploaded readings CSV (timestamp,meter_id,kwh or "
                                "timestamp,consumption)",
             **documented(m.DetectResult, {400: "not a readings CSV", 413: "file over the size limit",
                                           422: "too few readings to learn from (no trained detector)",
                                           429: "upload rate limit"}))
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
    from stream_processors.sensitivity import control_key, publish_sensitivity

    publish_sensitivity(service.settings.kafka, service.settings.topics, value, meter_id)
    payload = None if value is None else json.dumps({"sensitivity": value, "updated_at": time.time()}).encode()
    service.sensitivity_watcher().apply(control_key(meter_id), payload)  # visible at once, not a poll later


@router.get("/sensitivity", summary="Fleet-wide and per-meter sensitivity the stream workers follow",
            dependencies=[Depends(require_reader)], **documented(m.SensitivitySettings))
async def get_sensitivity(service: Annotated[DashboardService, Depends(get_service)]) -> dict[str, Any]:
    return await run_in_threadpool(_sensitivity_json, service)


@router.put("/sensitivity", summary="Set the fleet's or one meter's sensitivity (written to the control topic)",
            **documented(m.SensitivitySettings))
async def put_sensitivity(body: SensitivityIn, service: Annotated[DashboardService, Depends(get_service)],
                          principal: Annotated[Principal, Depends(require_writer)],
                          _json: Annotated[None, Depends(require_json)]) -> dict[str, Any]:
    await run_in_threadpool(_publish, service, body.value, body.meter_id)
    return await run_in_threadpool(_sensitivity_json, service)


@router.delete("/sensitivity/{meter_id}", summary="Remove a meter's sensitivity override",
               **documented(m.SensitivitySettings))
async def delete_sensitivity(meter_id: str, service: Annotated[DashboardService, Depends(get_service)],
                             principal: Annotated[Principal, Depends(require_writer)]) -> dict[str, Any]:
    problem = identifier_problem(meter_id)
    if problem is not None:
        raise HTTPException(422, f"meter_id {problem}")
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


@router.delete("/alert-rules/{rule_id}", status_code=204, summary="Delete an alert rule (its alert history goes too)")
def delete_alert_rule(rule_id: int, session: Annotated[Session, Depends(db_session)],
                      principal: Annotated[Principal, Depends(require_writer)]) -> Response:
    rule = session.scalar(select(AlertRule).where(AlertRule.id == rule_id))
    if rule is None:
        raise HTTPException(404, f"no alert rule {rule_id}")
    session.delete(rule)
    session.commit()
    return Response(status_code=204)
