"""Deployment: the local Kafka launcher, Prometheus and Grafana configuration, container files."""
