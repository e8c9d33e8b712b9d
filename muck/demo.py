"""`muck demo`: the whole product on one machine, on embedded services when none are set."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import click

from core.clicontext import MuckContext, pass_ctx


@click.command()
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default="data",
    show_default=True,
    help="Where the embedded database keeps its files.",
)
@click.option(
    "--trucks", type=int, default=50, show_default=True, help="Trucks in the simulated fleet."
)
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
@click.option(
    "--web-port", type=int, default=8000, show_default=True, help="Port of the dashboard."
)
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of the simulated city.")
@click.option(
    "--warm-up",
    type=click.FloatRange(min=0, max=600),
    default=90,
    show_default=True,
    help="The fleet was already on the road this many seconds before the demo: their fixes "
    "arrive at once, then it runs in real time (so the scripted first-minute violations "
    "are already there).",
)
@click.option(
    "--jt808-port",
    type=int,
    default=7611,
    show_default=True,
    help="Port of the demo's JT/T 808 gateway (a free one when taken); real terminals can "
    "connect to it too.",
)
@click.option(
    "--jt808-share",
    type=click.FloatRange(min=0, max=1),
    default=0.25,
    show_default=True,
    help="Share of the fleet's terminals that speak JT/T 808 through the gateway (the rest "
    "publish JSON over MQTT).",
)
@pass_ctx
def demo(
    mctx: MuckContext,
    data_dir: str,
    trucks: int,
    interval: float,
    mqtt_port: int,
    duration: float,
    web_port: int,
    seed: int,
    warm_up: float,
    jt808_port: int,
    jt808_share: float,
) -> None:
    """Run everything: services (embedded if unset), schema, a simulated city (zones,
    companies, trucks, permits) and its fleet in real time, the collector with the rules, and
    the dashboard (development server).

    A few trucks start in the middle of a misbehaviour (unsealed, speeding, off route,
    dumping, a black truck at a gate camera: docs/simulator.md), so violations show within
    the first minute. Prints live counts until Ctrl-C, then stops everything cleanly.
    """
    from alerts.dispatcher import start_dispatcher
    from core.config import load_settings
    from core.db import connect
    from core.embedded import EmbeddedBroker, EmbeddedDatabase
    from core.migrate import migrate
    from core.scheduling import JobRunner
    from credit.demo import demo_cases_job
    from muck.jobs import collector_jobs, rules_service
    from registry.service import RegistryError
    from simulators.city import city_from_settings, install_city
    from simulators.driving import OPENINGS
    from simulators.fleet import Fleet, FleetConfig
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
        # The demo fixes evidence 30 s after an episode ends (a city keeps 120 s, for late
        # re-uploads), so that a new user sees final evidence packs within two minutes.
        # Credit: automatic listings evaluated every 30 s, so the demo's cases (credit/demo.py)
        # show as proposed listings within a minute or two.
        settings = load_settings(mctx.config_path).with_overrides(
            evidence={"final_delay_s": 30}, credit={"listing_every_s": 30}
        )
        conn = connect(settings.database_url)
        applied = migrate(conn, settings)
        click.echo(
            f"schema: {len(applied)} migrations applied; {maintain(conn, settings).describe()}"
        )
        city = city_from_settings(settings, seed, trucks)
        try:
            install_city(conn, settings, city)
        except RegistryError as exc:
            raise click.ClickException(
                f"{exc}: the database already holds a simulated city made with other settings "
                f"(--trucks/--seed); use those again, another --data-dir, or delete {data_dir}"
            ) from None
        click.echo(city.describe())
        password = _demo_admin(conn)

        rules = rules_service(settings)
        rules.start()
        # The demo also confirms a sample of violations and decides cases for them (marked as
        # demo data), so the credit pages have scored companies.
        jobs = JobRunner(settings, [*collector_jobs(settings, rules), demo_cases_job(settings)])
        jobs.start()
        started.append(jobs)
        # Alerts link to the demo's own dashboard.
        dispatcher = start_dispatcher(
            settings.with_overrides(alerts={"public_base_url": f"http://127.0.0.1:{web_port}"})
        )
        if dispatcher is not None:
            started.append(dispatcher)
        collector = Collector(settings, client_id="muck-demo-collector", after_store=rules.hooks)
        collector.start()
        started.append(collector)
        if not collector.wait_connected(15):
            raise click.ClickException(
                f"cannot connect to MQTT at {settings.mqtt_endpoint().safe_url()}"
            )
        gateway, jt808_devices = None, set()
        if jt808_share > 0:
            from telemetry.jt808.server import GatewayThread

            gateway = GatewayThread(settings, ("0.0.0.0", jt808_port))
            try:
                gateway.start()
            except OSError:
                gateway = GatewayThread(settings, ("0.0.0.0", 0))
                gateway.start()
            started.append(gateway)
        fleet = _LiveFleet(
            Fleet(
                city,
                FleetConfig(
                    interval_s=interval,
                    topic_prefix=settings.mqtt["topic_prefix"],
                    opening=OPENINGS,
                ),
                start_ms=int((time.time() - warm_up) * 1000),
                settings=settings,
            ),
            settings,
        )
        if gateway is not None:
            fleet.jt808_port = gateway.port
            fleet.jt808_devices = jt808_devices = _jt808_devices(fleet.fleet, jt808_share)
            click.echo(
                f"JT/T 808 gateway on port {gateway.port}: {len(jt808_devices)} of the fleet's "
                "terminals speak JT/T 808 through it (docs/jt808.md)"
            )
        fleet.start()
        started.append(fleet)
        for agent in fleet.fleet.agents:
            if agent.index in fleet.fleet.openings:
                click.echo(
                    f"  first minute: {agent.truck.plate} {fleet.fleet.openings[agent.index]}"
                )
        web = _DashboardServer(settings, web_port)
        web.start()
        started.append(web)
        click.echo(f"demo running: {trucks} simulated trucks (seed {seed}). Ctrl-C to stop.")
        click.secho(
            f"dashboard: http://127.0.0.1:{web_port}/  (user admin, password {password})",
            bold=True,
        )
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
                f"published={fleet.fleet.published} {collector.stats.describe()} "
                f"trucks_live={live} unregistered_fixes={unregistered} violations={violations}"
            )
            if duration and time.monotonic() - began >= duration:
                break
        conn.close()
    finally:
        # Reverse order of start: dashboard, fleet, collector (writes what it has), rules,
        # broker, database.
        for service in reversed(started):
            service.stop()
        click.echo("demo stopped")


DEMO_PASSWORD = "muckwatch-demo"


class _LiveFleet:
    """The simulator's fleet in real time, published from a thread (demo only)."""

    def __init__(self, fleet, settings) -> None:
        self.fleet = fleet
        self.settings = settings
        self.jt808_port = 0
        self.jt808_devices: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-fleet", daemon=True)

    def _run(self) -> None:
        from simulators.fleet import fast_publisher, run_live

        publisher, publish = fast_publisher(self.settings)
        terminals = None
        if self.jt808_devices:
            from simulators.jt808 import GatewayFleetPublisher
            from telemetry.contract import Topics

            topics = Topics(self.settings.mqtt["topic_prefix"])
            terminals = GatewayFleetPublisher("127.0.0.1", self.jt808_port, topics, publish)
            over_mqtt = publish
            chosen = self.jt808_devices

            def publish(messages: list[tuple[str, bytes]]) -> None:
                jt808, mqtt = [], []
                for message in messages:
                    parsed = topics.parse(message[0])
                    kind, ident = parsed if parsed is not None else ("", "")
                    (jt808 if kind != "sightings" and ident in chosen else mqtt).append(message)
                if mqtt:
                    over_mqtt(mqtt)
                if jt808:
                    terminals(jt808)

        try:
            # As fast as possible up to the present (the warm-up), then in real time: run_live
            # never goes past now.
            run_live(self.fleet, publish, speedup=0, stop=self._stop)
        finally:
            if terminals is not None:
                terminals.close()
            publisher.close()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def _jt808_devices(fleet, share: float) -> set[str]:
    """Every n-th terminal of the fleet (the first-minute trucks stay on MQTT JSON, whose
    timing the first-minute promise was measured with)."""
    candidates = [a.device for a in fleet.agents if a.device and a.index not in fleet.openings]
    if not candidates or share <= 0:
        return set()
    step = max(1, round(1 / share))
    return set(candidates[::step])


def _demo_admin(conn) -> str:
    """An administrator for the demo (a first run only; production uses `muck user create`),
    subscribed to every new violation in the dashboard's live feed."""
    from alerts.subscriptions import create_subscription
    from web.users import create_user

    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM web_users WHERE username = 'admin'")
        if cur.fetchone() is None:
            create_user(cur, "admin", DEMO_PASSWORD, "admin", display_name="演示管理员")
            create_subscription(
                cur, owner_kind="user", owner="admin", channel="feed", created_by="demo"
            )
    conn.commit()
    return DEMO_PASSWORD


class _DashboardServer:
    """The Flask app on werkzeug's development server, in a thread (demo only)."""

    def __init__(self, settings, port: int) -> None:
        from werkzeug.serving import make_server

        from web import create_app

        self.server = make_server(
            "127.0.0.1", port, create_app({"MUCK_SETTINGS": settings}), threaded=True
        )
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
