"""`muck collect`: the collector process, where ingestion and the compliance rules meet.

This is a composition root (like `muck demo`): telemetry knows nothing of compliance; the
rules reach the collector as after-store hooks.
"""

from __future__ import annotations

import datetime as dt
import signal
import threading
from typing import TYPE_CHECKING

import click

from core.clicontext import MuckContext, pass_ctx

if TYPE_CHECKING:
    from compliance.service import RulesService
    from core.config import Settings


@click.command()
@click.option(
    "--client-id", help="MQTT client id (persistent session key). Default: mqtt.client_id."
)
@click.option(
    "--shared-group",
    help="Subscribe through $share/GROUP/... so several collectors split the load (Mosquitto).",
)
@click.option(
    "--stats",
    "stats_every",
    type=float,
    default=0,
    show_default=True,
    help="Print counters every N seconds (0: only at exit).",
)
@click.option(
    "--metrics-port", type=int, default=0, help="Serve Prometheus metrics on this port (0: off)."
)
@click.option(
    "--no-rules",
    is_flag=True,
    help="Only ingest: do not run the compliance rules and their clock jobs in this process.",
)
@click.option(
    "--no-maintenance",
    is_flag=True,
    help="Do not run the hourly partition maintenance job in this process.",
)
@pass_ctx
def collect(
    mctx: MuckContext,
    client_id: str | None,
    shared_group: str | None,
    stats_every: float,
    metrics_port: int,
    no_rules: bool,
    no_maintenance: bool,
) -> None:
    """Ingest telemetry, status and camera sightings from MQTT, and run the compliance rules.

    Acknowledges each message only after it (and the violations it raised) is committed;
    stops cleanly on Ctrl-C/SIGTERM.
    """
    from telemetry.collector import Collector

    settings = mctx.settings
    if shared_group:
        settings = settings.with_overrides(mqtt={"shared_group": shared_group})
    rules = None
    if not no_rules:
        rules = rules_service(settings)
        rules.start()
    collector = Collector(settings, client_id=client_id, after_store=rules.hooks if rules else ())
    if metrics_port:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, registry=collector.stats.registry)
    scheduler = None if no_maintenance else _start_maintenance(settings)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    click.echo(f"collecting from {settings.mqtt_endpoint().url()} (Ctrl-C to stop)", err=True)
    try:
        collector.run(
            stop.is_set,
            on_tick=(lambda: click.echo(collector.stats.describe(), err=True))
            if stats_every
            else None,
            tick_s=stats_every or 5.0,
        )
    finally:
        if scheduler is not None:
            scheduler.shutdown(wait=False)
        if rules is not None:
            rules.stop()
        click.echo(collector.stats.describe(), err=True)


def rules_service(settings: Settings) -> RulesService:
    """The compliance rules with their clock jobs, the black-truck scan among them (compliance
    never imports black_trucks: the scan joins here). The scan reuses the rules' zone
    catalogue."""
    from black_trucks.scan import SCAN_INTERVAL_S, ScanJob
    from compliance.engine import ComplianceEngine
    from compliance.service import RulesService

    engine = ComplianceEngine(settings)
    scan = ScanJob(settings, engine.zones)
    return RulesService(settings, engine=engine, jobs=[("black-truck scan", scan, SCAN_INTERVAL_S)])


def _start_maintenance(settings):
    """Hourly: create tomorrow's partitions, drop expired ones (APScheduler, own connection)."""
    import logging

    from apscheduler.schedulers.background import BackgroundScheduler

    from core.db import connect_settings
    from telemetry.partitions import maintain

    log = logging.getLogger("muck.maintenance")

    def job() -> None:
        try:
            conn = connect_settings(settings, application_name="muck-maintenance")
            try:
                log.info(maintain(conn, settings).describe())
            finally:
                conn.close()
        except Exception as exc:  # noqa: BLE001 - retried next hour; ingestion goes on
            log.warning("partition maintenance failed: %s", exc)

    scheduler = BackgroundScheduler(timezone="UTC")
    # First run now (a collector started after midnight creates today's partitions at once).
    scheduler.add_job(job, "interval", hours=1, next_run_time=dt.datetime.now(dt.UTC))
    scheduler.start()
    return scheduler
