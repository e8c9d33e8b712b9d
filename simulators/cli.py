"""`muck simulate`: a seeded synthetic city and a live fleet over MQTT, with ground truth."""

from __future__ import annotations

import signal
import threading
import time

import click

from core.cli import MuckContext, pass_ctx


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
@click.option(
    "--noise-m", type=float, default=10.0, show_default=True, help="GPS noise, σ per axis (m)."
)
@click.option("--drop-pct", type=float, default=0.5, show_default=True, help="Messages lost (%).")
@click.option(
    "--duplicate-pct",
    type=float,
    default=0.5,
    show_default=True,
    help="Messages delivered twice (%).",
)
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
) -> None:
    """Generate the city of SEED, install it, and drive a live fleet against MUCK_MQTT_URL.

    Prints a status line every second; Ctrl-C stops cleanly (buffered fixes are flushed and
    the ground truth written).
    """
    from simulators.city import city_from_settings, install_city
    from simulators.fleet import DEFAULT_RATES, Fleet, FleetConfig, fast_publisher, run_live
    from simulators.groundtruth import write_truth

    settings = mctx.settings
    if trucks < 1:
        raise click.BadParameter("at least one truck", param_hint="--trucks")
    chosen = dict(DEFAULT_RATES)
    for item in rates:
        kind, sep, value = item.partition("=")
        try:
            chosen[kind.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise click.BadParameter(f"{item!r} is not KIND=P", param_hint="--rate")
    try:
        config = FleetConfig(
            interval_s=interval,
            noise_m=noise_m,
            drop_pct=drop_pct,
            duplicate_pct=duplicate_pct,
            coverage_gap_pct=gap_pct,
            rates=chosen,
            topic_prefix=settings.mqtt["topic_prefix"],
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
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
    fleet = Fleet(city, config, start_ms=start_ms)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        publisher, publish = fast_publisher(settings)
    except OSError as exc:
        raise click.ClickException(
            f"cannot connect to MQTT at {settings.mqtt_url}: {exc}"
        ) from None

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
