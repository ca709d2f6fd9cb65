"""Prometheus configuration for WattsUp, and a local Prometheus runner for tests and benchmarks."""
