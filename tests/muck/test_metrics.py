"""`/metrics` and `/healthz` of the real processes: `muck collect --metrics-port` and
`muck web`, scraped over HTTP after real traffic; JSON-lines logs; graceful SIGTERM."""

from __future__ import annotations

import datetime as dt
import json
import signal
import threading
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from core.db import transaction
from registry.service import bind_terminal, upsert_company, upsert_truck
from telemetry.contract import Topics
from tests.conftest import require_mosquitto
from tests.mqtt_helpers import collector_env, count, fix, now_ms, publish, wait_until
from tests.services import MuckProcess, free_port
from tests.telemetry.test_ingest_resilience import publish_paced

T = Topics("muck/v1")
FAST = """
[metrics]
refresh_s = 0.5
[rules.speeding]
min_duration_s = 5.0
"""


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics as {(name, sorted labels): value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def healthz(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_a_running_collector_serves_metrics_and_health(settings, broker, db):
    with transaction(db) as cur:
        truck = upsert_truck(cur, "粤B30001", upsert_company(cur, "测试运输有限公司", None))
        bind_terminal(cur, "MET-1", truck, dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    port = free_port()
    env = collector_env(settings, broker.url, FAST)
    env["MUCK_LOG_FORMAT"] = "json"
    args = [
        "collect",
        "--client-id",
        "metrics-test",
        "--no-maintenance",
        "--metrics-port",
        str(port),
    ]
    with MuckProcess(args, env, ready="subscribed to") as process:
        status, body = healthz(port)
        assert status == 200 and body["mqtt"] == "connected", body
        start = now_ms() - 30_000
        fixes = [(T.telemetry("MET-1"), fix(start + i * 1000, speed=100.0)) for i in range(10)]
        publish(broker.url, fixes)
        publish(broker.url, fixes[:3])  # redelivered: duplicates
        publish(broker.url, [(T.telemetry("MET-1"), b"{not json")])
        assert wait_until(
            lambda: value(scrape(port), "muck_ingest_duplicates_total") == 3, timeout=20
        ), process.output()
        assert wait_until(lambda: value(scrape(port), "muck_trucks_online") == 1, timeout=10)
        samples = scrape(port)
        assert value(samples, "muck_ingest_messages_received_total") == 14
        assert value(samples, "muck_ingest_fixes_stored_total") == 10
        assert value(samples, "muck_ingest_quarantined_total", reason="malformed_json") == 1
        assert value(samples, "muck_ingest_batch_seconds_count") >= 1
        assert value(samples, "muck_violations_raised_total", kind="speeding") == 1
        assert count(db, "SELECT count(*) FROM violations WHERE kind = 'speeding'") == 1
        # the newest fix was 21 s old when it was stored
        assert 15 < value(samples, "muck_ingest_lag_seconds") < 120
        assert value(samples, "muck_ingest_unacknowledged_messages") == 0
        assert value(samples, "muck_job_runs_total", job="fleet gauges") >= 1
        assert value(samples, "muck_job_failures_total", job="fleet gauges") == 0
        assert value(samples, "muck_job_last_finished_timestamp_seconds", job="fleet gauges") > 0
        assert process.stop() == 0, process.output()
    records = [json.loads(line) for line in process.log if line.startswith("{")]
    assert any("connected to" in r["msg"] for r in records), process.output()
    assert all({"ts", "level", "logger", "msg"} <= r.keys() for r in records)
    stopped = [r["msg"] for r in records if r["msg"].startswith("stopped:")]
    assert stopped and "stored=10" in stopped[0], process.output()


def test_collector_health_turns_unhealthy_without_its_broker(settings, db):
    port, dead_broker = free_port(), free_port()
    env = collector_env(settings, f"mqtt://127.0.0.1:{dead_broker}")
    args = [
        "collect",
        "--client-id",
        "metrics-dead",
        "--no-maintenance",
        "--no-rules",
        "--metrics-port",
        str(port),
    ]
    with MuckProcess(args, env, ready="metrics on") as process:
        assert wait_until(lambda: healthz(port)[0] == 503, timeout=10), process.output()
        assert healthz(port)[1]["mqtt"] == "disconnected"


def test_sigterm_commits_and_acknowledges_the_batch_in_hand(settings, broker, db):
    """SIGTERM mid-stream: the collector stores what it has received, acknowledges it and
    exits 0; a second collector on the same session gets only the rest: every message
    stored once, and no redelivered duplicates."""
    require_mosquitto(broker)
    env = collector_env(settings, broker.url)
    messages = [
        (T.telemetry(f"TERM{d:03d}"), fix(now_ms() - 3_600_000 + i * 1000, lat=22.5 + d * 1e-3))
        for i in range(100)
        for d in range(100)
    ]
    args = [
        "collect",
        "--client-id",
        "sigterm-test",
        "--no-maintenance",
        "--no-rules",
        "--no-alerts",
    ]
    first = MuckProcess(args, env, ready="subscribed to")
    # Paced (4 s of traffic): the SIGTERM lands mid-stream; what arrives after it is left
    # unacknowledged for the broker to redeliver to the next collector.
    publisher = threading.Thread(target=publish_paced, args=(broker.url, messages, 2500))
    publisher.start()
    assert wait_until(lambda: count(db, "SELECT count(*) FROM positions") > 500, timeout=60)
    first.proc.send_signal(signal.SIGTERM)
    assert first.proc.wait(30) == 0, first.output()
    at_stop = count(db, "SELECT count(*) FROM positions")
    stopped = [line for line in first.log if "stopped:" in line]
    assert stopped, first.output()
    publisher.join()
    with MuckProcess(args, env, ready="subscribed to") as second:
        assert wait_until(
            lambda: count(db, "SELECT count(*) FROM positions") == len(messages), timeout=90
        ), second.output()
        assert second.stop() == 0
    assert at_stop < len(messages), "SIGTERM came too late to test anything"
    # The first collector acknowledged everything it committed: nothing came back twice.
    assert "duplicates=0" in next(line for line in second.log if "stopped:" in line)


def test_muck_web_serves_health_and_metrics(settings, db):
    with transaction(db) as cur:
        truck = upsert_truck(cur, "粤B30002", None)
        cur.execute(
            """INSERT INTO truck_state (truck_id, device_id, fix_time, received_at, lat, lon)
               VALUES (%s, 'WEB-1', now(), now(), 22.5, 114.0)""",
            (truck,),
        )
    port = free_port()
    env = collector_env(settings, "mqtt://127.0.0.1:1")
    with MuckProcess(["web", "--port", str(port)], env, ready="Running on") as web:
        status, body = healthz(port)
        assert status == 200 and body == {"status": "ok", "database": "ok"}, body
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10).read()
        samples = scrape(port)
        assert value(samples, "muck_trucks_online") == 1, web.output()
        assert (
            value(samples, "muck_web_requests_total", endpoint="health.healthz", status="200") == 1
        )
        assert value(samples, "muck_web_request_seconds_count", endpoint="health.health") == 1


def test_the_grafana_dashboard_plots_only_metrics_the_processes_serve():
    import re
    from pathlib import Path

    from prometheus_client import CollectorRegistry

    import compliance.violations  # noqa: F401 - registers muck_violations_raised
    from core.config import MqttEndpoint, load_settings
    from core.metrics import PROCESS_REGISTRY
    from core.scheduling import Job, JobRunner
    from telemetry.jt808.directory import TerminalDirectory
    from telemetry.jt808.metrics import gateway_registry
    from telemetry.jt808.server import Gateway
    from telemetry.jt808.uplink import MqttUplink
    from telemetry.stats import IngestStats
    from web.health import WEB_REGISTRY

    registry = CollectorRegistry()
    IngestStats(registry)
    JobRunner(None, [Job("j", lambda conn: None, 1)]).register_metrics(registry)
    # A gateway that was never started: its metrics are read from its counters.
    gateway = Gateway(
        load_settings(), MqttUplink(MqttEndpoint("127.0.0.1", 1), "t"), TerminalDirectory("")
    )
    served = set()
    for r in (registry, PROCESS_REGISTRY, WEB_REGISTRY, gateway_registry(gateway)):
        for family in r.collect():
            # Labelled metrics have no samples before their first use: name them by type.
            suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
            served.add(family.name)
            served.update(family.name + x for x in suffixes.get(family.type, ()))
    # Gauges web/health.py reads from the database at scrape time.
    served |= {"muck_trucks_online", "muck_violations_awaiting_review", "muck_replica_lag_seconds"}
    dashboard = json.loads(
        (Path(__file__).parents[2] / "deploy/grafana/muckwatch.json").read_text()
    )
    used = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\bmuck_[a-z0-9_]+", target["expr"])
    }
    assert len(used) >= 15
    assert used - served == set()
