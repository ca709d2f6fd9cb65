"""``POST /api/v1/detect``: the upload path through the real engine (fitted on the input: no model dir)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def _daily_csv(days: int = 14, spike_at: int = 1100, meters=("M0001", "M0002"), bad_rows: bool = False) -> bytes:
    ts = pd.date_range("2026-10-01", periods=days * 96, freq="15min", tz="UTC")
    rng = np.random.default_rng(7)
    frames = []
    for m in meters:
        kwh = 0.4 + 0.3 * np.sin((np.arange(len(ts)) / 96 - 0.3) * 2 * np.pi).clip(0) + rng.normal(0, 0.03, len(ts))
        if m == meters[0]:
            kwh[spike_at] = 6.0
        frames.append(pd.DataFrame({"timestamp": ts.strftime("%Y-%m-%dT%H:%M:%SZ"), "meter_id": m,
                                    "kwh": kwh.clip(0).round(3)}))
    text = pd.concat(frames).to_csv(index=False)
    if bad_rows:
        text += "2026-10-20T00:00:00Z,M0001,lots\nnot-a-time,M0002,1.0\n2026-10-20T00:15:00Z,M0001,inf\n"
    return text.encode()


def test_good_csv_flags_the_known_spike_and_reports_bad_rows(dash):
    response = dash.client.post("/api/v1/detect", headers=dash.auth,
                                files={"file": ("fleet.csv", _daily_csv(bad_rows=True), "text/csv")})
    assert response.status_code == 200, response.text[:500]
    body = response.json()
    from dashboard.api_models import DetectResult

    DetectResult.model_validate(body)
    assert body["readings"] == 2 * 14 * 96
    assert [r["row"] for r in body["rejected_rows"]] == [2690, 2691, 2692]
    reasons = [r["reason"] for r in body["rejected_rows"]]
    assert "kwh" in reasons[0] and "timestamp" in reasons[1] and "not finite" in reasons[2]
    spike_time = (pd.Timestamp("2026-10-01", tz="UTC") + pd.Timedelta(minutes=15 * 1100)).strftime("%Y-%m-%dT%H:%M:%SZ")
    spikes = [a for a in body["anomalies"] if a["meter_id"] == "M0001" and a["timestamp"] == spike_time]
    assert spikes, [(a["meter_id"], a["timestamp"]) for a in body["anomalies"]][:20]
    spike = spikes[0]
    assert "id" not in spike and spike["observed"] == 6.0 and spike["causes"] and spike["causes"][0]["text"]
    assert spike["severity"] in ("INFO", "WARNING", "CRITICAL")
    assert set(body["series"]) == {"M0001", "M0002"}
    points = body["series"]["M0001"]
    assert len(points) == 14 * 96
    assert set(points[0]) == {"timestamp", "kwh", "baseline", "score", "flag", "severity"}
    at_spike = next(p for p in points if p["timestamp"] == spike_time)
    assert at_spike["flag"] == 1 and at_spike["kwh"] == 6.0
    # The series line is the meter's usual usage: learned from the file, far below the 6 kWh spike.
    assert all(isinstance(p["baseline"], float) for p in points[96:])
    assert 0 < at_spike["baseline"] < 3
    # A file has no forecast: the anomaly carries the baseline, and the forecast fields are null.
    assert spike["baseline"] is not None and 0 < spike["baseline"] < 3
    assert (spike["expected"], spike["lower"], spike["upper"], spike["residual"], spike["band_residual"]) == (None,) * 5
    assert [p["timestamp"] for p in points] == sorted(p["timestamp"] for p in points)
    assert body["model_version"]
    assert "wattsup_dashboard_detect_seconds_count 1.0" in dash.client.get("/metrics").text


def test_single_meter_export_takes_the_meter_id_from_the_file_name(dash):
    ts = pd.date_range("2026-10-01", periods=7 * 96, freq="15min", tz="UTC")
    text = "timestamp,consumption\n" + "".join(f"{t:%Y-%m-%d %H:%M:%S},{0.5 + (i % 96) / 200:.3f}\n"
                                                for i, t in enumerate(ts))
    response = dash.client.post("/api/v1/detect", headers=dash.auth,
                                files={"file": ("house-42.csv", text.encode(), "text/csv")})
    assert response.status_code == 200, response.text[:300]
    assert list(response.json()["series"]) == ["house-42"]


def test_not_a_readings_csv_is_400_naming_the_problem(dash):
    wrong_columns = dash.client.post("/api/v1/detect", headers=dash.auth,
                                     files={"file": ("x.csv", b"name,age\nbob,3\n", "text/csv")})
    assert wrong_columns.status_code == 400 and "unrecognised columns" in wrong_columns.json()["detail"]
    binary = dash.client.post("/api/v1/detect", headers=dash.auth,
                              files={"file": ("x.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "image/png")})
    assert binary.status_code == 400 and "binary" in binary.json()["detail"]
    latin1 = dash.client.post("/api/v1/detect", headers=dash.auth,
                              files={"file": ("x.csv", "timestamp,meter_id,kwh\n2026-01-01,Zähler,1\n".encode("latin-1"),
                                              "text/csv")})
    assert latin1.status_code == 400 and "UTF-8" in latin1.json()["detail"]
    empty = dash.client.post("/api/v1/detect", headers=dash.auth, files={"file": ("x.csv", b"", "text/csv")})
    assert empty.status_code == 400
    all_bad = dash.client.post("/api/v1/detect", headers=dash.auth,
                               files={"file": ("x.csv", b"timestamp,meter_id,kwh\nx,M1,1\ny,M1,2\n", "text/csv")})
    assert all_bad.status_code == 400
    assert "no valid readings" in all_bad.json()["detail"] and len(all_bad.json()["rejected_rows"]) == 2
    missing_file = dash.client.post("/api/v1/detect", headers=dash.auth, data={"other": "x"})
    assert missing_file.status_code == 422 and "file" in missing_file.text


def test_file_over_the_size_limit_is_413_with_a_clear_message(dashboard_factory):
    dash = dashboard_factory(max_upload_mb=0.01)
    response = dash.client.post("/api/v1/detect", headers=dash.auth,
                                files={"file": ("big.csv", _daily_csv(days=5, spike_at=100), "text/csv")})
    assert response.status_code == 413
    assert response.json()["detail"] == "the uploaded file is larger than the limit of 0.01 MB"


def test_chunked_upload_without_length_is_cut_off_at_the_limit(dashboard_factory):
    dash = dashboard_factory(max_upload_mb=0.01)

    def chunks():
        yield b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.csv\"\r\n\r\n"
        for _ in range(100):
            yield b"2026-10-01T00:00:00Z,M1,1.0\n" * 100

    response = dash.client.post("/api/v1/detect", headers={**dash.auth, "Content-Type": "multipart/form-data; boundary=b"},
                                content=chunks())
    assert response.status_code == 413


def test_example_csv_round_trips_through_detect(dash):
    example = dash.client.get("/api/v1/detect/example.csv")
    assert example.status_code == 200 and example.text.startswith("timestamp,meter_id,kwh")
    response = dash.client.post("/api/v1/detect", headers=dash.auth,
                                files={"file": ("example.csv", example.content, "text/csv")})
    assert response.status_code == 200
    assert response.json()["readings"] == 2 * 14 * 96


def test_upload_rate_limit(dashboard_factory):
    dash = dashboard_factory(detect_rate_per_minute=1)
    ok = dash.client.post("/api/v1/detect", headers=dash.auth, files={"file": ("x.csv", b"a,b\n1,2\n", "text/csv")})
    assert ok.status_code == 400
    limited = dash.client.post("/api/v1/detect", headers=dash.auth, files={"file": ("x.csv", b"a,b\n", "text/csv")})
    assert limited.status_code == 429 and "uploads per minute" in limited.json()["detail"]
