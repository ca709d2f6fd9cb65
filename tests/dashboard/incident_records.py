"""Incident and anomaly records as the stream worker writes them, for the dashboard's incident tests."""

from __future__ import annotations

T0 = 1_790_000_000_000
Q = 900_000


def incident(ident: str, meter: str = "M1", feeder: str = "F1", kind: str = "outage", status: str = "open",
             revision: int = 2, readings: int = 1, severity: str = "WARNING") -> dict:
    return {"incident_id": ident, "meter_id": meter, "feeder_id": feeder, "kind": kind, "status": status,
            "event": "closed" if status == "closed" else "opened", "started": T0, "last_seen": T0 + (readings - 1) * Q,
            "ended": T0 + 10 * Q if status == "closed" else None, "closed_by": "recovered" if status == "closed" else None,
            "interval_seconds": 900, "peak_severity": severity, "readings": readings, "energy_delta_kwh": -0.5 * readings,
            "worst_timestamp": T0, "worst_score": 0.8,
            "causes": [{"feature": "zero_surprise", "contribution": 1.0, "text": "no consumption for 1.0 h"}],
            "revision": revision, "updated": T0}


def anomaly(meter: str, i: int, suppressed_by: str | None = None, kind: str = "outage") -> dict:
    return {"meter_id": meter, "feeder_id": "F1", "timestamp": T0 + i * Q, "observed": 0.0, "expected": None,
            "lower": None, "upper": None, "residual": None, "band_residual": None, "baseline": 0.5, "score": 0.8,
            "severity": "WARNING", "kind": kind, "causes": [], "model_version": "test", "detected_at": T0,
            "suppressed_by": suppressed_by}
