"""End-to-end time of ``POST /api/v1/detect`` for a large CSV, and where the time goes.

Simulates a fleet (default 105 meters x 99 days of 15-minute readings, about 1,000,000 rows),
writes it as a ``timestamp,meter_id,kwh`` CSV, and uploads it through the dashboard's ASGI app
in-process (multipart parsing, validation, the stream's engine, JSON encoding: everything but
the network). Prints the total and the parse / detect / encode split the endpoint reports in
its ``Server-Timing`` header. ``--model-dir`` scores with a trained model instead of fitting one
on the upload.

    .venv/bin/python bench/dashboard_detect.py [--meters 105] [--days 99] [--model-dir var/models]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from fastapi.testclient import TestClient

from dashboard.app import create_app
from dashboard.auth import create_token
from dashboard.settings import DashboardSettings
from simulation.fleet import FleetConfig, simulate_fleet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--meters", type=int, default=105)
    parser.add_argument("--days", type=float, default=99)
    parser.add_argument("--model-dir", type=Path, default=None, help="Default: none (fit on the upload).")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        fleet = simulate_fleet(FleetConfig(meters=args.meters, days=args.days))
        frame = fleet.readings[["timestamp", "meter_id", "kwh"]]
        csv_bytes = frame.to_csv(index=False, date_format="%Y-%m-%dT%H:%M:%SZ").encode()
        print(f"{len(frame):,} rows, {len(csv_bytes) / 1e6:.1f} MB CSV (made in {time.perf_counter() - t:.1f} s)")
        settings = DashboardSettings(database_url=f"sqlite:///{tmp}/bench.db", consume=False,
                                     model_dir=args.model_dir or Path(tmp) / "no-models", max_upload_mb=200,
                                     detect_rate_per_minute=1000)
        app = create_app(settings)
        with TestClient(app) as client:
            token = create_token(app.state.service.sessions, "bench")
            for _ in range(args.repeat):
                t = time.perf_counter()
                response = client.post("/api/v1/detect", headers={"Authorization": f"Bearer {token}"},
                                       files={"file": ("fleet.csv", csv_bytes, "text/csv")})
                total = time.perf_counter() - t
                response.raise_for_status()
                body = response.json()
                print(f"end to end {total:.2f} s ({len(frame) / total:,.0f} rows/s), response "
                      f"{len(response.content) / 1e6:.1f} MB, {len(body['anomalies'])} anomalies, "
                      f"model {body['model_version']}; server timing: {response.headers['server-timing']}")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak memory of this process (test client, app and the CSV together): {peak:,.0f} MiB")


if __name__ == "__main__":
    main()
