"""WattsUp: streaming anomaly detection for smart-meter fleets."""

__version__ = "0.1.0"
