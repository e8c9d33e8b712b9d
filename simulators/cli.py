"""`muck simulate`: a seeded synthetic city and a live fleet over MQTT, with ground truth."""

from __future__ import annotations

import signal
import threading
import time

import click

from core.clicontext import MuckContext, pass_ctx
from simulators.loadtest_cli import loadtest  # noqa: F401 - registered by muck.cli


def _transmission_options(*, drop_pct: float, duplicate_pct: float):
    """--noise-m, --drop-pct and --duplicate-pct, with the command's own defaults."""

    def decorate(command):
        command = click.option(
            "--duplicate-pct",
            type=float,
            default=duplicate_pct,
            show_default=True,
            help="Messages delivered twice (%).",
        )(command)
        command = click.option(
            "--drop-pct", type=float, default=drop_pct, show_default=True, help="Messages lost (%)."
        )(command)
        return click.option(
            "--noise-m",
            type=float,
            default=10.0,
            show_default=True,
            help="GPS noise, σ per axis (m).",
        )(command)

    return decorate


def _fleet_config(settings, rates: tuple[str, ...], **options):
    """The fleet's configuration from the command line (`--rate KIND=P` and the rest); a bad
    value is a usage error naming it."""
    from simulators.fleet import FleetConfig

    chosen = _parse_rates(rates)
    try:
        return FleetConfig(
            rates=chosen,
            topic_prefix=settings.mqtt["topic_prefix"],
            timezone=settings.city["timezone"],
            **options,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def _parse_rates(rates: tuple[str, ...]) -> dict[str, float]:
    """`--rate KIND=P` options over the default misbehaviour rates."""
    from simulators.fleet import DEFAULT_RATES

    chosen = dict(DEFAULT_RATES)
    for item in rates:
        kind, sep, value = item.partition("=")
        try:
            chosen[kind.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise click.BadParameter(f"{item!r} is not KIND=P", param_hint="--rate")
    return chosen


@click.command()
@click.option("--trucks", type=int, default=20, show_default=True, help="Trucks in the fleet.")
@click.option(
    "--interval",
    type=int,
    default=10,
    show_default=True,
    help="Simulated seconds between fixes of one truck.",
)
@click.option(
    "--speedup",
    type=float,
    default=1.0,
    show_default=True,
    help="Simulated seconds per real second (0: as fast as possible). Fix times never pass "
    "the real present: a faster run starts in the past.",
)
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of the city and fleet.")
@click.option(
    "--duration",
    type=float,
    default=0,
    help="Simulated seconds to run (0: until Ctrl-C). With --speedup > 1 the run starts this "
    "long before now (one hour when 0).",
)
@_transmission_options(drop_pct=0.5, duplicate_pct=0.5)
@click.option(
    "--gap-pct",
    type=float,
    default=5.0,
    show_default=True,
    help="Loaded trips with a coverage gap whose fixes are re-uploaded as a batch (%).",
)
@click.option(
    "--rate",
    "rates",
    multiple=True,
    metavar="KIND=P",
    help="Probability per loaded trip of injected misbehaviour, e.g. speeding=0.1 "
    "(repeatable; kinds: route_deviation, unsealed_transport, speeding, illegal_dumping, "
    "restricted_zone, unapproved_disposal, going_dark).",
)
@click.option(
    "--truth",
    type=click.Path(dir_okay=False, writable=True),
    help="Write the ground truth (injected misbehaviour) to this JSON file at the end.",
)
@click.option(
    "--no-install",
    is_flag=True,
    help="Do not write the city (zones, registry, permits) into MUCK_DATABASE_URL first.",
)
@click.option(
    "--protocol",
    type=click.Choice(["mqtt", "jt808"]),
    default="mqtt",
    show_default=True,
    help="How the terminals talk: JSON over MQTT, or JT/T 808 (2019) over TCP to a "
    "`muck gateway jt808` (cameras publish over MQTT either way).",
)
@click.option(
    "--gateway",
    "gateway_address",
    default="127.0.0.1:7611",
    show_default=True,
    help="HOST:PORT of the JT/T 808 gateway (with --protocol jt808).",
)
@pass_ctx
def simulate(
    mctx: MuckContext,
    trucks: int,
    interval: int,
    speedup: float,
    seed: int,
    duration: float,
    noise_m: float,
    drop_pct: float,
    duplicate_pct: float,
    gap_pct: float,
    rates: tuple[str, ...],
    truth: str | None,
    no_install: bool,
    protocol: str,
    gateway_address: str,
) -> None:
    """Generate the city of SEED, install it, and drive a live fleet against MUCK_MQTT_URL.

    Prints a status line every second; Ctrl-C stops cleanly (buffered fixes are flushed and
    the ground truth written).
    """
    from simulators.city import city_from_settings, install_city
    from simulators.fleet import Fleet, fast_publisher, run_live
    from simulators.groundtruth import write_truth

    settings = mctx.settings
    if trucks < 1:
        raise click.BadParameter("at least one truck", param_hint="--trucks")
    config = _fleet_config(
        settings,
        rates,
        interval_s=interval,
        noise_m=noise_m,
        drop_pct=drop_pct,
        duplicate_pct=duplicate_pct,
        coverage_gap_pct=gap_pct,
    )
    city = city_from_settings(settings, seed, trucks)
    click.echo(city.describe())
    if not no_install:
        from core.db import connect_settings

        conn = connect_settings(settings)
        try:
            counts = install_city(conn, settings, city)
        finally:
            conn.close()
        click.echo(f"installed: {counts}")
    if duration:
        back = duration
    else:
        back = 3600.0 if speedup == 0 or speedup > 1 else 0.0
    start_ms = int(time.time() * 1000 - back * 1000)
    fleet = Fleet(city, config, start_ms=start_ms, settings=settings)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        publisher, publish = fast_publisher(settings)
    except OSError as exc:
        raise click.ClickException(
            f"cannot connect to MQTT at {settings.mqtt_endpoint().safe_url()}: {exc}"
        ) from None
    if protocol == "jt808":
        from simulators.jt808 import GatewayFleetPublisher
        from telemetry.contract import Topics
        from telemetry.jt808.server import parse_listen

        try:
            host, port = parse_listen(gateway_address)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--gateway") from None
        publish = GatewayFleetPublisher(host, port, Topics(settings.mqtt["topic_prefix"]), publish)

    def status(f: Fleet) -> None:
        sim = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(f.ms(f.t) / 1000))
        counts: dict[str, int] = {}
        for event in f.truth:
            counts[event.kind] = counts.get(event.kind, 0) + 1
        injected = " ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "none"
        click.echo(
            f"\rsim {sim}  trucks={len(f.agents)} published={f.published} "
            f"reuploads={f.reuploads} injected: {injected}   ",
            nl=False,
        )

    try:
        run_live(
            fleet,
            publish,
            speedup=speedup,
            duration_s=duration or None,
            stop=stop,
            status=status,
        )
    finally:
        if protocol == "jt808":
            publish.close()  # type: ignore[attr-defined]
        publisher.close()
        click.echo("")
        if truth:
            write_truth(
                truth,
                fleet.truth,
                seed=seed,
                trucks=trucks,
                interval_s=interval,
                start_ms=fleet.start_ms,
                end_ms=fleet.ms(fleet.t),
            )
            click.echo(f"ground truth: {len(fleet.truth)} events written to {truth}")
    click.echo("simulation stopped")


@click.command()
@click.option("--trucks", type=int, default=100, show_default=True, help="Trucks in the fleet.")
@click.option("--hours", type=float, default=1.0, show_default=True, help="Simulated hours to run.")
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of the city and fleet.")
@click.option(
    "--speedup",
    type=float,
    default=0.0,
    show_default=True,
    help="Simulated seconds per real second (0: as fast as possible).",
)
@click.option(
    "--interval",
    type=int,
    default=10,
    show_default=True,
    help="Simulated seconds between fixes of one truck.",
)
@click.option(
    "--rate",
    "rates",
    multiple=True,
    metavar="KIND=P",
    help="Probability per loaded trip of injected misbehaviour (repeatable; as for simulate).",
)
@_transmission_options(drop_pct=2.0, duplicate_pct=1.0)
@click.option(
    "--transport",
    type=click.Choice(["auto", "broker", "inprocess"]),
    default="auto",
    show_default=True,
    help="broker: publish to MUCK_MQTT_URL and store with the real collector (in this process); "
    "inprocess: the collector's ingestion path without MQTT; auto: broker when reachable.",
)
@click.option(
    "--start",
    "start_at",
    metavar="HH:MM",
    help="Start the simulated day at this city local time (the latest such time that lets the "
    "run end before now). Default: the run ends now.",
)
@click.option(
    "--min-precision",
    type=float,
    default=0.0,
    show_default=True,
    help="Exit 1 when a kind with truth events has a lower precision.",
)
@click.option(
    "--min-recall",
    type=float,
    default=0.0,
    show_default=True,
    help="Exit 1 when a kind with truth events has a lower recall.",
)
@click.option(
    "--report",
    type=click.Path(dir_okay=False, writable=True),
    help="Write the result as Markdown to this file.",
)
@click.option(
    "--in-place",
    is_flag=True,
    help="Install and run in MUCK_DATABASE_URL itself instead of a scratch database next to it "
    "(dropped afterwards).",
)
@pass_ctx
def accuracy(
    mctx: MuckContext,
    trucks: int,
    hours: float,
    seed: int,
    speedup: float,
    interval: int,
    rates: tuple[str, ...],
    noise_m: float,
    drop_pct: float,
    duplicate_pct: float,
    transport: str,
    start_at: str | None,
    min_precision: float,
    min_recall: float,
    report: str | None,
    in_place: bool,
) -> None:
    """Score the compliance rules against the simulator's ground truth.

    Generates the city of SEED, installs it into a scratch database next to
    MUCK_DATABASE_URL's, runs the fleet for HOURS simulated hours through the broker and the
    real collector with the rules (or in process), and matches the violations, terminal
    status and black-truck list to the injected misbehaviour per kind. Ctrl-C stops early and
    scores what ran.
    """
    from simulators.accuracy import (
        broker_reachable,
        prepare_database,
        recent_start_ms,
        run_accuracy,
        scratch_database,
    )
    from simulators.city import city_from_settings

    settings = mctx.settings
    if trucks < 1:
        raise click.BadParameter("at least one truck", param_hint="--trucks")
    if hours <= 0:
        raise click.BadParameter("must be positive", param_hint="--hours")
    if not settings.database_url:
        raise click.UsageError("MUCK_DATABASE_URL is not set")
    config = _fleet_config(
        settings,
        rates,
        interval_s=interval,
        noise_m=noise_m,
        drop_pct=drop_pct,
        duplicate_pct=duplicate_pct,
    )
    start_ms = None
    if start_at:
        try:
            start_ms = recent_start_ms(settings.city["timezone"], start_at, hours * 3600)
        except ValueError:
            raise click.BadParameter(f"{start_at!r} is not HH:MM", param_hint="--start") from None
    if transport == "auto":
        transport = "broker" if broker_reachable(settings) else "inprocess"
        if transport == "inprocess":
            click.echo(
                f"no broker at {settings.mqtt_endpoint().safe_url() if settings.mqtt_url else 'MUCK_MQTT_URL (unset)'}: in process"
            )
    elif transport == "broker" and not broker_reachable(settings):
        raise click.UsageError(f"no MQTT broker reachable at {settings.mqtt_endpoint().safe_url()}")
    city = city_from_settings(settings, seed, trucks)
    click.echo(city.describe())
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }

    def status(fleet, fed: int, duration: int) -> None:
        sim = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(fleet.ms(fleet.t) / 1000))
        click.echo(
            f"\rsim {sim}  {fleet.t / duration * 100:5.1f}%  fixes fed={fed} "
            f"injected={len(fleet.truth)}   ",
            nl=False,
        )

    if in_place:
        from core.db import connect_settings

        name, url, conn = None, settings.database_url, connect_settings(settings)
    else:
        from core.db import drop_database

        name, url = scratch_database(settings.database_url)
        click.echo(f"scratch database {name}")
        conn = None
    try:
        if conn is None:
            conn = prepare_database(url, settings)
        result = run_accuracy(
            settings,
            conn,
            city,
            config,
            hours=hours,
            speedup=speedup,
            stop=stop,
            status=status,
            transport=transport,
            database_url=url,
            start_ms=start_ms,
        )
    except (OSError, TimeoutError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        if conn is not None:
            conn.close()
        if name is not None:
            drop_database(settings.database_url, name)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        click.echo("")
    click.echo(result.table())
    if report:
        with open(report, "w", encoding="utf-8") as fh:
            fh.write(result.markdown())
        click.echo(f"report written to {report}")
    failures = result.failures(min_precision, min_recall)
    for failure in failures:
        click.echo(f"below the floor: {failure}", err=True)
    if failures:
        raise SystemExit(1)
