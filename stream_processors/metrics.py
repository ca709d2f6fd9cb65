"""Prometheus metrics of the stream worker.

Names follow Prometheus conventions (base units, ``_total`` on counters, ``_seconds``); no
meter id ever becomes a label. Two series carry a ``feeder`` label: operators alert per feeder
("no readings from feeder F0042 for 30 minutes", "anomaly rate spike on a feeder"), and a
cooperative has hundreds to a few thousand feeders, a cardinality Prometheus handles; meters
number a hundred times more and never become labels.
Faust's own Prometheus sensor reports milliseconds, so WattsUp exports its own.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, Info

from stream_processors.feeder_metrics import FeederClock

READINGS_PROCESSED = Counter("wattsup_stream_readings_processed_total", "Readings scored by the stream worker.")
MESSAGES_PROCESSED = Counter(
    "wattsup_stream_messages_processed_total", "Readings-topic messages consumed (single readings or head-end batches)."
)
DUPLICATE_READINGS = Counter(
    "wattsup_stream_duplicate_readings_total", "Readings already seen (same meter and timestamp), not scored again."
)
LATE_READINGS = Counter(
    "wattsup_stream_late_readings_total",
    "Readings older than their meter's newest one (not seen before): scored without moving the meter's state.",
)
STALE_READINGS = Counter(
    "wattsup_stream_stale_readings_total",
    "Readings older than every timestamp their meter remembers: too old to judge, not scored.",
)
ANOMALIES = Counter("wattsup_stream_anomalies_total", "Anomalies emitted, by severity.", ["severity"])
DEAD_LETTERS = Counter("wattsup_stream_dead_letters_total", "Records sent to the dead-letter topic, by reason.", ["reason"])
BATCH_SIZE = Histogram(
    "wattsup_stream_batch_readings", "Readings per scored micro-batch.",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000),
)
SCORING_SECONDS = Histogram(
    "wattsup_stream_scoring_seconds", "Time to build features and score one micro-batch.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
EVENT_TIME_LAG = Histogram(
    "wattsup_stream_event_time_lag_seconds", "Wall-clock time at scoring minus the reading's timestamp.",
    buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 6 * 3600, 86400),
)
RECOVERY_SECONDS = Histogram(
    "wattsup_stream_state_read_back_seconds",
    "Time to read back the state and forecast changelogs of the partitions a worker takes over.",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
MODEL_INFO = Info("wattsup_stream_model", "Detector model in use.")
MODEL_RELOADS = Counter("wattsup_stream_model_reloads_total", "Hot reloads of a newer detector version.")
METERS_TRACKED = Gauge("wattsup_stream_meters_tracked", "Meters with state in this worker.")
FEEDERS_TRACKED = Gauge("wattsup_stream_feeders_tracked", "Feeders with state in this worker.")
FORECASTS_TRACKED = Gauge("wattsup_stream_forecasts_tracked", "Meters with a current forecast in this worker.")
PARTITION_RESEEKS = Counter(
    "wattsup_stream_partition_reseeks_total",
    "Readings partitions sought back to their committed offset after Faust stalled on them.",
)
FEEDER_LAST_READING = FeederClock()
"""``wattsup_stream_feeder_last_reading_timestamp_seconds{feeder}``: see :mod:`stream_processors.feeder_metrics`."""
FEEDER_ANOMALIES = Counter("wattsup_stream_feeder_anomalies_total", "Anomalies emitted per feeder.", ["feeder"])
ANOMALIES_ALREADY_EMITTED = Counter(
    "wattsup_stream_anomalies_already_emitted_total",
    "Anomalies not emitted again because a crashed worker had emitted them before its state was saved.",
)
CONTROL_UPDATES = Counter(
    "wattsup_stream_control_updates_total",
    "Control records (sensitivity settings) this worker applied.",
)
ANOMALIES_SUPPRESSED = Counter(
    "wattsup_stream_anomalies_suppressed_total",
    "Anomalies suppressed by operator feedback (still published, with suppressed_by), by kind and reason "
    "(feedback_scope: inside a false-alarm or expected mark's scope; feedback_severity: below the raised severity).",
    ["kind", "reason"],
)
FEEDBACK_MARKS = Counter(
    "wattsup_stream_feedback_marks_applied_total", "Operator feedback records (marks, revocations) this worker applied.",
)
INCIDENTS_OPENED = Counter("wattsup_stream_incidents_opened_total", "Incidents opened, by kind.", ["kind"])
INCIDENTS_CLOSED = Counter(
    "wattsup_stream_incidents_closed_total", "Incidents closed, by kind and by whom (recovered, operator).",
    ["kind", "closed_by"],
)
INCIDENT_DURATION = Histogram(
    "wattsup_stream_incident_duration_seconds",
    "Time from an incident's first anomalous interval to its close (data time), observed when it closes.",
    ["kind"], buckets=(900, 1800, 3600, 2 * 3600, 4 * 3600, 8 * 3600, 86400, 3 * 86400, 7 * 86400),
)
INCIDENTS_TRACKED = Gauge("wattsup_stream_incidents_tracked", "Open incidents in this worker's memory.")
INCIDENT_RECORDS_ALREADY_EMITTED = Counter(
    "wattsup_stream_incident_records_already_emitted_total",
    "Incident records not emitted again because a crashed worker had emitted them before its state was saved.",
)
