"""Meter producers: simulated fleet, CSV replay and the HTTP ingest path write readings to Kafka."""
