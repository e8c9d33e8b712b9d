"""`muck collect`, `muck maintain` and `muck bench ingest`."""

from __future__ import annotations

import signal
import threading

import click

from core.cli import MuckContext, pass_ctx


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
    no_maintenance: bool,
) -> None:
    """Ingest telemetry, status and camera sightings from MQTT into the database.

    Acknowledges each message only after it is committed; stops cleanly on Ctrl-C/SIGTERM.
    """
    from telemetry.collector import Collector

    settings = mctx.settings
    if shared_group:
        settings = settings.with_overrides(mqtt={"shared_group": shared_group})
    collector = Collector(settings, client_id=client_id)
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
        click.echo(collector.stats.describe(), err=True)


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
    scheduler.add_job(job, "interval", hours=1, next_run_time=None)
    scheduler.start()
    return scheduler


@click.command("maintain")
@pass_ctx
def maintain_cmd(mctx: MuckContext) -> None:
    """Create partitions ahead of time and drop those past retention (run daily from cron
    when no collector runs; `muck collect` does it hourly)."""
    from core.db import connect_settings
    from telemetry.partitions import maintain

    conn = connect_settings(mctx.settings)
    try:
        click.echo(maintain(conn, mctx.settings).describe())
    finally:
        conn.close()


@click.command("ingest")
@click.option(
    "-n", "--messages", type=int, default=300_000, show_default=True, help="Messages to publish."
)
@click.option("--devices", type=int, default=2000, show_default=True, help="Distinct devices.")
@click.option("--publishers", type=int, default=2, show_default=True, help="Publisher processes.")
@click.option(
    "--collectors",
    type=int,
    default=1,
    show_default=True,
    help="Collector processes (>1 uses a shared subscription).",
)
@click.option(
    "--rate", type=float, default=0, help="Target total publish rate (0: as fast as possible)."
)
@click.option("--skip-ceiling", is_flag=True, help="Skip the broker-only ceiling measurement.")
@pass_ctx
def bench_ingest(
    mctx: MuckContext,
    messages: int,
    devices: int,
    publishers: int,
    collectors: int,
    rate: float,
    skip_ceiling: bool,
) -> None:
    """End-to-end ingestion benchmark against MUCK_MQTT_URL and MUCK_DATABASE_URL.

    Publishes from separate processes, runs collectors, and reports stored messages/s,
    publish→commit latency p50/p99, lost and duplicated counts, and the broker's raw ceiling.
    Uses a scratch table-free run: rows are deleted afterwards.
    """
    from telemetry.bench import run_ingest_bench

    report = run_ingest_bench(
        mctx.settings,
        messages=messages,
        devices=devices,
        publishers=publishers,
        collectors=collectors,
        rate=rate,
        qos=1,
        measure_ceiling=not skip_ceiling,
    )
    click.echo(report)
