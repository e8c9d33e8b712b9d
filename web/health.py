"""`/health`, `/healthz` and `/metrics`: the routes without log-in, for load balancers and
monitoring.

`/healthz` is 200 while the database answers (and, with a replica configured, reports its
lag; a replica far behind makes it 503 so the operator hears of it). `/metrics` is the web
app's Prometheus endpoint: requests by endpoint and status with their latency, and gauges
read from the database when scraped (trucks online, open violations by kind, replica lag).
Under gunicorn with several workers set PROMETHEUS_MULTIPROC_DIR (an empty folder) so the
request counters of every worker are added up; otherwise each scrape sees one worker's.
With MUCK_METRICS_TOKEN set, `/metrics` asks for `Authorization: Bearer <token>`.
"""

from __future__ import annotations

import hmac
import os
import time

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily

from web.db import get_db

bp = Blueprint("health", __name__)

WEB_REGISTRY = CollectorRegistry()
REQUESTS = Counter(
    "muck_web_requests",
    "Dashboard and API requests, by endpoint and status",
    ["endpoint", "status"],
    registry=WEB_REGISTRY,
)
LATENCY = Histogram(
    "muck_web_request_seconds",
    "Dashboard and API request time, by endpoint",
    ["endpoint"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=WEB_REGISTRY,
)


def _database_ok() -> tuple[bool, str]:
    try:
        conn = get_db()
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            cur.fetchone()
        conn.rollback()
    except Exception as exc:  # the database is the only dependency worth reporting
        return False, type(exc).__name__
    return True, "ok"


@bp.route("/health")
def health():
    ok, state = _database_ok()
    if not ok:
        return jsonify(status="error", database=state), 503
    return jsonify(status="ok", database="ok")


@bp.route("/healthz")
def healthz():
    from web.db import replica_status

    ok, state = _database_ok()
    body = {"database": state}
    replica = replica_status()
    if replica is not None:
        body["replica"] = replica
        ok = ok and replica["state"] == "ok"
    body["status"] = "ok" if ok else "unhealthy"
    return jsonify(body), 200 if ok else 503


class _DatabaseGauges:
    """Gauges read from the database at scrape time, so every worker reports the same."""

    def collect(self):
        from web.db import replica_status

        settings = current_app.config["MUCK_SETTINGS"]
        online = GaugeMetricFamily(
            "muck_trucks_online", "Trucks whose latest fix was received recently"
        )
        open_by_kind = GaugeMetricFamily(
            "muck_violations_awaiting_review",
            "Violations of the last 7 days not reviewed yet, by kind",
            labels=["kind"],
        )
        conn = get_db()
        with conn.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM truck_state WHERE received_at > now() - %s * interval '1 s'",
                (float(settings["metrics"]["online_window_s"]),),
            )
            online.add_metric([], cur.fetchone()[0])
            cur.execute(
                """SELECT kind, count(*) FROM violations
                   WHERE status = 'new' AND started_at > now() - interval '7 days'
                   GROUP BY kind"""
            )
            for kind, n in cur.fetchall():
                open_by_kind.add_metric([kind], n)
        conn.rollback()
        families = [online, open_by_kind]
        replica = replica_status()
        if replica is not None and replica.get("lag_s") is not None:
            lag = GaugeMetricFamily(
                "muck_replica_lag_seconds", "How far the read replica is behind the primary"
            )
            lag.add_metric([], replica["lag_s"])
            families.append(lag)
        return families


@bp.route("/metrics")
def metrics():
    token = os.environ.get("MUCK_METRICS_TOKEN")
    if token:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return Response("metrics need the bearer token\n", 401, mimetype="text/plain")
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        counters = CollectorRegistry()
        multiprocess.MultiProcessCollector(counters)
    else:
        counters = WEB_REGISTRY
    gauges = CollectorRegistry()
    gauges.register(_DatabaseGauges())
    body = generate_latest(counters) + generate_latest(gauges)
    return Response(body, mimetype=CONTENT_TYPE_LATEST)


def init_app(app: Flask) -> None:
    @app.before_request
    def _started() -> None:
        g.request_started = time.perf_counter()

    @app.after_request
    def _count(response):
        started = g.get("request_started")
        if started is not None:
            endpoint = request.endpoint or "unmatched"
            REQUESTS.labels(endpoint, str(response.status_code)).inc()
            LATENCY.labels(endpoint).observe(time.perf_counter() - started)
        return response
