"""`muck demo`: the whole product on one machine, on embedded services when none are set."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import click

from core.cli import MuckContext, pass_ctx


@click.command()
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default="data",
    show_default=True,
    help="Where the embedded database keeps its files.",
)
@click.option("--trucks", type=int, default=50, show_default=True, help="Trucks in the demo fleet.")
@click.option(
    "--interval",
    type=float,
    default=5.0,
    show_default=True,
    help="Seconds between fixes of one truck.",
)
@click.option(
    "--mqtt-port",
    type=int,
    default=18830,
    show_default=True,
    help="Port of the embedded MQTT broker.",
)
@click.option(
    "--duration", type=float, default=0, help="Stop after this many seconds (0: run until Ctrl-C)."
)
@pass_ctx
def demo(
    mctx: MuckContext, data_dir: str, trucks: int, interval: float, mqtt_port: int, duration: float
) -> None:
    """Run everything: services (embedded if unset), schema, collector and a demo fleet.

    Prints live counts until Ctrl-C, then stops everything cleanly.
    """
    from compliance.service import RulesService
    from core.config import load_settings
    from core.db import connect
    from core.embedded import EmbeddedBroker, EmbeddedDatabase
    from core.migrate import migrate
    from simulators.minimal_fleet import MinimalFleet, register_fleet
    from telemetry.collector import Collector
    from telemetry.partitions import maintain

    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    started: list = []
    try:
        if not os.environ.get("MUCK_DATABASE_URL"):
            database = EmbeddedDatabase(Path(data_dir).resolve() / "postgres")
            click.echo(f"starting embedded PostgreSQL in {database.data_dir} ...")
            os.environ["MUCK_DATABASE_URL"] = database.start()
            started.append(database)
        if not os.environ.get("MUCK_MQTT_URL"):
            broker = EmbeddedBroker(mqtt_port)
            click.echo(f"starting embedded MQTT broker on port {mqtt_port} ...")
            os.environ["MUCK_MQTT_URL"] = broker.start()
            started.append(broker)
        settings = load_settings(mctx.config_path)
        conn = connect(settings.database_url)
        applied = migrate(conn, settings)
        click.echo(
            f"schema: {len(applied)} migrations applied; {maintain(conn, settings).describe()}"
        )
        devices = register_fleet(conn, trucks)

        rules = RulesService(settings)
        rules.start()
        started.append(rules)
        collector = Collector(settings, client_id="muck-demo-collector", after_store=rules.hooks)
        collector.start()
        if not collector.wait_connected(15):
            raise click.ClickException(f"cannot connect to MQTT at {settings.mqtt_url}")
        fleet = MinimalFleet(
            settings.mqtt_endpoint(),
            devices,
            center=(settings.city["center_lon"], settings.city["center_lat"]),
            interval_s=interval,
            topic_prefix=settings.mqtt["topic_prefix"],
        )
        fleet.start()
        click.echo(f"demo running: {trucks} trucks + 1 unregistered terminal. Ctrl-C to stop.")
        click.echo("(the dashboard arrives with the web issue; live counts below)")
        began = time.monotonic()
        while not stop.wait(2.0):
            with conn.cursor() as cur:
                cur.execute(
                    """SELECT (SELECT count(*) FROM truck_state),
                              (SELECT count(*) FROM positions WHERE truck_id IS NULL),
                              (SELECT count(*) FROM violations WHERE status <> 'withdrawn')"""
                )
                live, unregistered, violations = cur.fetchone()
            conn.commit()
            click.echo(
                f"published={fleet.published} {collector.stats.describe()} "
                f"trucks_live={live} unregistered_fixes={unregistered} violations={violations}"
            )
            if duration and time.monotonic() - began >= duration:
                break
        fleet.stop()
        collector.stop()
        conn.close()
    finally:
        for service in reversed(started):
            service.stop()
        click.echo("demo stopped")
