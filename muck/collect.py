"""`muck collect`: the collector process, where ingestion and the compliance rules meet.

This is a composition root (like `muck demo`): telemetry knows nothing of compliance; the
rules reach the collector as after-store hooks, every package's clock jobs run on one
JobRunner (muck/jobs.py), and the alert dispatcher (alerts/dispatcher.py) runs beside them.
"""

from __future__ import annotations

import signal
import threading

import click

from core.clicontext import MuckContext, pass_ctx


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
    "--no-alerts",
    is_flag=True,
    help="Do not run the alert dispatcher in this process (alerts.enabled = false does the same).",
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
    no_alerts: bool,
    no_maintenance: bool,
) -> None:
    """Ingest telemetry, status and camera sightings from MQTT, and run the compliance rules.

    Acknowledges each message only after it (and the violations it raised) is committed;
    sends the alerts of the violations (fan-out and delivery, docs/alerts.md) from a
    background loop; stops cleanly on Ctrl-C/SIGTERM.
    """
    from alerts.dispatcher import start_dispatcher
    from core.scheduling import JobRunner
    from muck.jobs import collector_jobs, rules_service
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
    jobs = JobRunner(settings, collector_jobs(settings, rules, maintenance=not no_maintenance))
    jobs.start()
    dispatcher = None if no_alerts else start_dispatcher(settings)

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
        jobs.stop()
        if dispatcher is not None:
            dispatcher.stop()
            click.echo(dispatcher.describe(), err=True)
        click.echo(collector.stats.describe(), err=True)
