"""Run every query of the WattsUp Grafana dashboard against a Prometheus and report what each returns.

No Grafana server is needed: the queries are read from the provisioned dashboard JSON and sent to
Prometheus the way Grafana sends them (instant queries, Grafana's variables substituted). Point it
at the compose stack's Prometheus, or at one scraping `wattsup demo` with
deploy/prometheus/prometheus.yml, and it shows which panels have data and how long each query took.
Exit status 1 if any panel returned no series. Usage:

    .venv/bin/python bench/grafana_panels.py [--prometheus http://127.0.0.1:9090] [--rate-interval 1m] [--range 1h]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deploy.grafana.dashboard_model import DASHBOARDS_DIR, load_dashboard, panel_queries  # noqa: E402


def instant_query(base_url: str, expr: str) -> tuple[list[dict], float]:
    url = f"{base_url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    started = time.perf_counter()
    try:
        body = json.loads(urllib.request.urlopen(url, timeout=30).read())
    except urllib.error.HTTPError as exc:
        body = json.loads(exc.read() or b"{}")
    seconds = time.perf_counter() - started
    if body.get("status") != "success":
        raise RuntimeError(f"{body.get('errorType')}: {body.get('error')}")
    data = body["data"]
    return ([{"value": data["result"]}] if data["resultType"] == "scalar" else data["result"]), seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prometheus", default="http://127.0.0.1:9090")
    parser.add_argument("--dashboard", type=Path, default=DASHBOARDS_DIR / "wattsup-overview.json")
    parser.add_argument("--rate-interval", default="1m", help="what $__rate_interval becomes")
    parser.add_argument("--range", default="1h", help="what $__range becomes (the dashboard's time range)")
    args = parser.parse_args()

    dashboard = load_dashboard(args.dashboard)
    queries = panel_queries(dashboard, rate_interval=args.rate_interval, interval="15s", range_=args.range)
    empty = 0
    print(f"{'panel':<44} {'ref':<3} {'series':>6} {'ms':>7}  first value")
    for query in queries:
        try:
            result, seconds = instant_query(args.prometheus.rstrip("/"), query.expr)
        except (OSError, RuntimeError) as exc:
            print(f"{query.panel_title[:44]:<44} {query.ref_id:<3} {'error':>6} {'':>7}  {exc}")
            empty += 1
            continue
        values = [float(r["value"][1]) for r in result]
        finite = [v for v in values if math.isfinite(v)]
        first = f"{finite[0]:.6g}" if finite else ("NaN" if values else "-")
        print(f"{query.panel_title[:44]:<44} {query.ref_id:<3} {len(result):>6} {seconds * 1000:>7.1f}  {first}")
        empty += not finite
    print(f"{len(queries)} queries of {len(dashboard.panels)} panels, {empty} without data")
    return 1 if empty else 0


if __name__ == "__main__":
    raise SystemExit(main())
