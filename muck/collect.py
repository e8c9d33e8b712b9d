"""`muck collect`: the collector process, where ingestion and the compliance rules meet.

This is a composition root (like `muck demo`): telemetry knows nothing of compliance; the
rules reach the collector as after-store hooks, every package's clock jobs run on one
JobRunner (muck/jobs.py), and the alert dispatcher (alerts/dispatcher.py) runs beside them.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading

import click

from core.clicontext import MuckContext, pass_ctx

log = logging.getLogger("muck.collect")


@click.command()
@click.option(
    "--client-id",
    help="MQTT client id (persistent session key). Default: mqtt.client_id. `{hostname}` is "
    "replaced by the host (container) name, for replicas started from one definition.",
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
    "--metrics-port",
    type=int,
    default=0,
    envvar="MUCK_METRICS_PORT",
    help="Serve /metrics (Prometheus) and /healthz on this port (0: off). Env: MUCK_METRICS_PORT.",
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
@click.option(
    "--jt808",
    "jt808_listen",
    metavar="HOST:PORT",
    help="Instead of subscribing to the broker, accept JT/T 808 terminals on HOST:PORT in this "
    "process and store their fixes directly: each report is acknowledged after its commit "
    "(docs/jt808.md, 'Direct mode'). MUCK_MQTT_URL is not used.",
)
@click.option(
    "--no-jobs",
    is_flag=True,
    help="Run no clock jobs (and no alert dispatcher): `muck scheduler` runs them once for "
    "every collector.",
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
    jt808_listen: str | None,
    no_jobs: bool,
) -> None:
    """Ingest telemetry, status and camera sightings from MQTT, and run the compliance rules.

    Acknowledges each message only after it (and the violations it raised) is committed;
    sends the alerts of the violations (fan-out and delivery, docs/alerts.md) from a
    background loop; stops cleanly on Ctrl-C/SIGTERM.
    """
    from alerts.dispatcher import start_dispatcher
    from core.metrics import PROCESS_REGISTRY, MetricsServer
    from core.scheduling import JobRunner
    from muck.jobs import collector_jobs, rules_service
    from telemetry.collector import Collector

    settings = mctx.settings
    if client_id and "{hostname}" in client_id:
        client_id = client_id.replace("{hostname}", socket.gethostname())
    if shared_group:
        settings = settings.with_overrides(mqtt={"shared_group": shared_group})
    gateway = None
    if jt808_listen:
        from telemetry.jt808.direct import DirectUplink
        from telemetry.jt808.server import (
            GatewayThread,
            parse_listen,
            raise_open_files_limit,
            tune_garbage_collector,
        )

        try:
            listen = parse_listen(jt808_listen)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--jt808") from None
        raise_open_files_limit()  # each terminal is a socket
        click.echo(tune_garbage_collector(), err=True)
        uplink = DirectUplink(int(settings["jt808"]["max_inflight"]))
        gateway = GatewayThread(settings, listen, uplink=uplink)
    rules = None
    if not no_rules:
        rules = rules_service(settings)
        rules.start()
    collector = Collector(
        settings,
        client_id=client_id,
        after_store=rules.hooks if rules else (),
        subscriber=uplink.feed.bind if gateway else None,
    )
    jobs = JobRunner(
        settings,
        []
        if no_jobs
        else collector_jobs(
            settings,
            rules,
            maintenance=not no_maintenance,
            stats=collector.stats if metrics_port else None,
        ),
    )
    metrics = None
    if metrics_port:
        jobs.register_metrics(collector.stats.registry)
        metrics = MetricsServer(
            metrics_port, [collector.stats.registry, PROCESS_REGISTRY], collector.health
        ).start()
        log.info("metrics on :%d/metrics and /healthz", metrics.port)
    jobs.start()
    dispatcher = None if no_alerts or no_jobs else start_dispatcher(settings)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if gateway is not None:
        port = gateway.start()
        log.info("collecting from JT/T 808 terminals on %s:%d (Ctrl-C to stop)", listen[0], port)
    else:
        log.info("collecting from %s (Ctrl-C to stop)", settings.mqtt_endpoint().safe_url())
    try:
        collector.run(
            stop.is_set,
            on_tick=(lambda: log.info("%s", collector.stats.describe())) if stats_every else None,
            tick_s=stats_every or 5.0,
        )
    finally:
        # Collector.run has stopped the collector: each lane finished and committed its
        # batch, then the batch was acknowledged (what was not committed is redelivered).
        if gateway is not None:
            gateway.stop()
        jobs.stop()
        if metrics is not None:
            metrics.stop()
        if dispatcher is not None:
            dispatcher.stop()
            log.info("%s", dispatcher.describe())
        log.info("stopped: %s", collector.stats.describe())


@click.command("scheduler")
@click.option(
    "--metrics-port",
    type=int,
    default=0,
    envvar="MUCK_METRICS_PORT",
    help="Serve /metrics and /healthz on this port (0: off). Env: MUCK_METRICS_PORT.",
)
@click.option("--no-alerts", is_flag=True, help="Do not run the alert dispatcher here.")
@pass_ctx
def scheduler(mctx: MuckContext, metrics_port: int, no_alerts: bool) -> None:
    """Run every clock job of the platform (partitions, sweeps, fills, black-truck scan,
    evidence capture, fleet gauges) and the alert dispatcher, without ingesting: one of these
    beside any number of `muck collect --no-jobs` collectors (docker-compose.yml)."""
    from alerts.dispatcher import start_dispatcher
    from core.db import connect_settings
    from core.metrics import PROCESS_REGISTRY, MetricsServer
    from core.scheduling import JobRunner
    from muck.jobs import collector_jobs, rules_service
    from telemetry.stats import IngestStats

    settings = mctx.settings
    rules = rules_service(settings)
    rules.start()  # the sweeps and the scan share the rules' zone and permit catalogues
    stats = IngestStats()  # only its fleet gauges are set here
    jobs = JobRunner(settings, collector_jobs(settings, rules, stats=stats))
    metrics = None
    if metrics_port:
        jobs.register_metrics(stats.registry)

        def health() -> tuple[bool, dict]:
            try:
                connect_settings(settings, application_name="muck-scheduler-health").close()
            except Exception as exc:  # noqa: BLE001 - reported as unhealthy
                return False, {"database": type(exc).__name__}
            failing = [n for n, st in jobs.stats.items() if st.last_error and st.failures]
            return True, {"database": "ok", "jobs_with_failures": failing}

        metrics = MetricsServer(metrics_port, [stats.registry, PROCESS_REGISTRY], health).start()
    jobs.start()
    dispatcher = None if no_alerts else start_dispatcher(settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    log.info("scheduler ready: %s", ", ".join(job.name for job in jobs.jobs))
    try:
        while not stop.wait(1.0):
            pass
    finally:
        jobs.stop()
        if dispatcher is not None:
            dispatcher.stop()
        if metrics is not None:
            metrics.stop()
        for name, st in jobs.stats.items():
            log.info("job %s: %d runs, %d failures", name, st.runs, st.failures)
