"""`muck gateway jt808`: the JT/T 808 terminal gateway as a process of its own."""

from __future__ import annotations

import asyncio
import contextlib
import signal

import click

from core.clicontext import MuckContext, pass_ctx


@click.group()
def gateway() -> None:
    """Protocol gateways in front of terminals that do not speak the MQTT contract."""


@gateway.command("jt808")
@click.option(
    "--listen",
    help="HOST:PORT terminals connect to. Default: jt808.listen (0.0.0.0:7611).",
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
    show_default=True,
    help="Serve /metrics (Prometheus) and /healthz on this port (0: off).",
)
@click.option(
    "--uvloop/--no-uvloop",
    default=True,
    show_default=True,
    help="Run on uvloop when it is installed (the standard asyncio loop otherwise).",
)
@pass_ctx
def jt808_cmd(
    mctx: MuckContext, listen: str | None, stats_every: float, metrics_port: int, uvloop: bool
) -> None:
    """Accept JT/T 808 (2013 and 2019) terminals over TCP and publish their fixes on the
    MQTT contract (docs/jt808.md). Needs MUCK_MQTT_URL and MUCK_DATABASE_URL (the registry's
    terminals, the auth codes and the quarantine). A location report is acknowledged to the
    terminal (0x8001) only after the broker's PUBACK."""
    from core.config import ConfigError
    from telemetry.jt808.mapping import FixMapping, MappingError
    from telemetry.jt808.server import parse_listen, raise_open_files_limit, serve

    settings = mctx.settings
    if not settings.database_url:
        raise ConfigError(
            "MUCK_DATABASE_URL is not set: the gateway checks terminals against the registry"
        )
    settings.mqtt_endpoint()
    try:
        FixMapping.from_settings(settings["jt808"])
        address = parse_listen(listen or settings["jt808"]["listen"])
    except (MappingError, ValueError) as exc:
        raise click.BadParameter(str(exc)) from exc
    soft, hard = raise_open_files_limit()
    click.echo(f"open files limit {soft} (hard {hard})")
    runner = asyncio.run
    if uvloop:
        with contextlib.suppress(ImportError):
            import uvloop as _uvloop

            runner = _uvloop.run

    async def main() -> None:
        task = asyncio.ensure_future(
            serve(settings, address, stats_every=stats_every, metrics_port=metrics_port)
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    runner(main())
