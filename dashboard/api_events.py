"""``GET /api/v1/events``: Server-Sent Events of new anomalies, a key's readings and the summary."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from sse_starlette.sse import EventSourceResponse

from dashboard.deps import get_service, require_reader
from dashboard.service import DashboardService
from schemas.limits import MAX_ID_LENGTH

router = APIRouter(prefix="/api/v1", dependencies=[Depends(require_reader)])


@router.get("/events", summary="Live events (text/event-stream): anomaly, reading (for ?meter_id or ?feeder_id), summary",
            response_class=EventSourceResponse)
async def events(
    request: Request,
    service: Annotated[DashboardService, Depends(get_service)],
    meter_id: Annotated[str | None, Query(max_length=MAX_ID_LENGTH)] = None,
    feeder_id: Annotated[str | None, Query(max_length=MAX_ID_LENGTH)] = None,
) -> EventSourceResponse:
    subscriber = service.hub.subscribe(meter_id=meter_id or None, feeder_id=None if meter_id else feeder_id or None)
    service.metrics.sse_clients.set(service.hub.clients)
    period = service.settings.summary_seconds

    async def stream() -> AsyncIterator[dict[str, Any]]:
        try:
            yield {"event": "summary", "data": json.dumps(await run_in_threadpool(service.cached_summary))}
            next_summary = time.monotonic() + period
            while True:
                timeout = max(next_summary - time.monotonic(), 0.0)
                try:
                    event, data = await asyncio.wait_for(subscriber.queue.get(), timeout=timeout)
                    yield {"event": event, "data": json.dumps(data)}
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        break
                    yield {"event": "summary", "data": json.dumps(await run_in_threadpool(service.cached_summary))}
                    next_summary = time.monotonic() + period
        finally:
            service.hub.unsubscribe(subscriber)
            service.metrics.sse_clients.set(service.hub.clients)

    return EventSourceResponse(stream(), ping=int(service.settings.keepalive_seconds),
                               headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
