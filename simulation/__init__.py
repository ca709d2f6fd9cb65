"""Simulated meter fleets with labelled anomalies: for the demo, training, tests and benchmarks."""
