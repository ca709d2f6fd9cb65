"""Prometheus metrics of the dashboard (``wattsup_dashboard_*``), one registry per app instance.

A registry per app (not the global one) lets tests build several apps in one process.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class DashboardMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.records_ingested = Counter(
            "wattsup_dashboard_records_ingested_total", "Records stored from Kafka, by topic (re-deliveries excluded).",
            ["topic"], registry=self.registry)
        self.messages_consumed = Counter(
            "wattsup_dashboard_messages_consumed_total", "Kafka messages read by the dashboard's ingest, by topic.",
            ["topic"], registry=self.registry)
        self.records_undecodable = Counter(
            "wattsup_dashboard_records_undecodable_total", "Kafka messages the dashboard could not decode, by topic.",
            ["topic"], registry=self.registry)
        self.records_refused = Counter(
            "wattsup_dashboard_records_refused_total",
            "Decoded records the ingest did not store, by topic and reason (future: stamped beyond now plus the "
            "tolerance, a wrong clock; bad_id: meter or feeder id over the length limit or with control characters).",
            ["topic", "reason"], registry=self.registry)
        self.alerts = Counter(
            "wattsup_dashboard_alerts_total", "Alert decisions and delivery attempts by channel and status (sent, retrying, failed, suppressed).",
            ["channel", "status"], registry=self.registry)
        self.alert_check_failures = Counter(
            "wattsup_dashboard_alert_check_failures_total",
            "Checks of an anomaly against the alert rules that failed (e.g. the database was locked); each is retried.",
            registry=self.registry)
        self.alerts_awaiting_retry = Gauge(
            "wattsup_dashboard_alerts_awaiting_retry",
            "Alert work waiting for a retry: what=check (anomalies not yet checked) or delivery (status retrying).",
            ["what"], registry=self.registry)
        self.http_requests = Counter(
            "wattsup_dashboard_http_requests_total", "HTTP requests by route template and status code.",
            ["route", "status"], registry=self.registry)
        self.sse_clients = Gauge(
            "wattsup_dashboard_sse_clients", "Browsers connected to the live event stream.", registry=self.registry)
        self.detect_seconds = Histogram(
            "wattsup_dashboard_detect_seconds", "Time to parse and score one uploaded CSV.",
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 40, 80), registry=self.registry)
        self.readings_accepted = Counter(
            "wattsup_dashboard_readings_accepted_total", "Readings accepted by POST /api/v1/readings and produced.",
            registry=self.registry)
        self.readings_awaiting_ack = Gauge(
            "wattsup_dashboard_readings_awaiting_ack",
            "Readings of POST /api/v1/readings requests waiting for the broker's acknowledgement.",
            registry=self.registry)
        self.partitions_owned = Gauge(
            "wattsup_dashboard_ingest_partitions_owned",
            "Topic partitions this replica's ingest owns in the dashboard's consumer group (summed over the replicas: "
            "every partition of the anomalies, readings, forecasts and incidents topics).", registry=self.registry)
        self.feed_notifications = Counter(
            "wattsup_dashboard_feed_notifications_total",
            "Notices of stored records received from the database (PostgreSQL LISTEN), by origin: other (stored by "
            "another replica, fanned out to this one's live clients) or self.", ["origin"], registry=self.registry)
        self.incidents_open = Gauge(
            "wattsup_dashboard_incidents_open",
            "Open incidents in the database, by kind and peak severity, counted when scraped (every replica on one "
            "database reports the same fleet-wide figure: take max, not sum, over instances).",
            ["kind", "severity"], registry=self.registry)
        self.readings_rejected = Counter(
            "wattsup_dashboard_readings_rejected_total", "Readings rejected by POST /api/v1/readings (dead-lettered).",
            registry=self.registry)
