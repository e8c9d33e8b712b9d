"""`muck bench jt808`: the figures docs/performance.md quotes come from a working benchmark
(a tiny run here: a few idle terminals, a few reporting ones, every acknowledged report
stored, and the run's rows removed afterwards)."""

from __future__ import annotations

import pytest

from bench.jt808 import run_jt808_bench
from tests.conftest import require_mosquitto
from tests.mqtt_helpers import clear_retained, count


@pytest.mark.parametrize("direct", [False, True], ids=["broker", "direct"])
def test_tiny_run_holds_the_terminals_and_stores_every_acknowledged_report(
    settings, broker, db, direct
):
    require_mosquitto(broker)
    report = run_jt808_bench(
        settings,
        idle=30,
        clients=2,
        report_terminals=10,
        report_s=1.0,
        window=4,
        hold_s=0.5,
        direct=direct,
    )
    assert report.idle_connected == 30
    assert report.rss_after_mb >= report.rss_before_mb > 0
    assert report.acked > 10
    assert report.stored == report.acked  # acknowledged only after the broker had it
    clear_retained(broker.url)  # the gateway's retained statuses, for later tests' collectors
    assert "reports/s end to end into the database" in str(report)
    assert count(db, "SELECT count(*) FROM jt808_terminals") == 0
    assert count(db, "SELECT count(*) FROM terminals") == 0


def test_steady_fleet_reports_on_the_clock_and_every_report_is_stored(settings, broker, db):
    require_mosquitto(broker)
    report = run_jt808_bench(
        settings,
        idle=20,
        clients=2,
        report_terminals=0,
        report_s=2.0,
        window=1,
        hold_s=0.5,
        rate=5.0,
    )
    assert report.idle_connected == 20
    # 20 terminals at 5/s for 2 s, each on its own tick: about 200 reports, all acknowledged.
    assert 150 <= report.steady_sent <= 220
    assert report.steady_acked == report.steady_sent
    assert report.steady_stored == report.steady_acked
    assert 0 < report.steady_latency_ms["p50"] <= report.steady_latency_ms["max"]
    assert report.steady_gateway_cpu_s > 0
    assert report.gateway_refused == 0  # read from the gateway's own counters at its stop
    clear_retained(broker.url)
    assert "steady fleet: 20 terminals at 5 report/s" in str(report)
    assert count(db, "SELECT count(*) FROM positions") == 0  # the run's rows removed
