"""`muck gateway jt808`: the JT/T 808 terminal gateway as a process of its own, or as several
processes sharing one port (`--processes N`)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from pathlib import Path

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
    "--processes",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Gateway processes sharing the port (SO_REUSEPORT: the kernel spreads new "
    "connections over them). Each holds as many terminals as its open-files limit allows "
    "and has its own broker session (jt808.client_id-K) and metrics port (--metrics-port + K).",
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
@click.option("--worker", type=int, hidden=True, help="Internal: worker K of --processes.")
@pass_ctx
def jt808_cmd(
    mctx: MuckContext,
    listen: str | None,
    processes: int,
    stats_every: float,
    metrics_port: int,
    uvloop: bool,
    worker: int | None,
) -> None:
    """Accept JT/T 808 (2013 and 2019) terminals over TCP and publish their fixes on the
    MQTT contract (docs/jt808.md). Needs MUCK_MQTT_URL and MUCK_DATABASE_URL (the registry's
    terminals, the auth codes and the quarantine). A location report is acknowledged to the
    terminal (0x8001) only after the broker's PUBACK."""
    from core.config import ConfigError
    from telemetry.jt808.mapping import FixMapping, MappingError
    from telemetry.jt808.server import (
        parse_listen,
        raise_open_files_limit,
        serve,
        tune_garbage_collector,
    )

    settings = mctx.settings
    if not settings.database_url:
        raise ConfigError(
            "MUCK_DATABASE_URL is not set: the gateway checks terminals against the registry"
        )
    settings.mqtt_endpoint()
    try:
        FixMapping.from_settings(settings["jt808"])
    except MappingError as exc:
        raise click.BadParameter(str(exc)) from exc
    try:
        address = parse_listen(listen or settings["jt808"]["listen"])
    except ValueError as exc:
        hint = "--listen" if listen else "jt808.listen"
        raise click.BadParameter(str(exc), param_hint=hint) from exc
    if processes > 1 and worker is None:
        if address[1] == 0:
            raise click.BadParameter("--processes needs a fixed port in --listen")
        sys.exit(_supervise(mctx, address, processes, stats_every, metrics_port, uvloop))
    soft, hard = raise_open_files_limit()
    click.echo(f"open files limit {soft} (hard {hard})")
    click.echo(tune_garbage_collector(), err=True)
    runner = asyncio.run
    if uvloop:
        with contextlib.suppress(ImportError):
            import uvloop as _uvloop

            runner = _uvloop.run
    if worker is not None and metrics_port:
        metrics_port += worker

    async def main() -> None:
        task = asyncio.ensure_future(
            serve(
                settings, address, stats_every=stats_every, metrics_port=metrics_port, worker=worker
            )
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    runner(main())


def _supervise(
    mctx: MuckContext,
    address: tuple[str, int],
    processes: int,
    stats_every: float,
    metrics_port: int,
    uvloop: bool,
) -> int:
    """Start the workers, pass SIGTERM/SIGINT on, and stop them all when one dies (the
    service manager restarts the gateway: a half-running gateway would refuse a share of
    the terminals' connections without anyone noticing)."""
    muck = str(Path(sys.executable).with_name("muck"))
    base = [muck] + (["--config", mctx.config_path] if mctx.config_path else [])
    args = ["gateway", "jt808", "--listen", f"{address[0]}:{address[1]}"]
    args += ["--stats", str(stats_every), "--metrics-port", str(metrics_port)]
    args += [] if uvloop else ["--no-uvloop"]
    workers = [
        subprocess.Popen([*base, *args, "--processes", str(processes), "--worker", str(k)])
        for k in range(processes)
    ]
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True
        for proc in workers:
            if proc.poll() is None:
                proc.terminate()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    while not stopping and all(proc.poll() is None for proc in workers):
        time.sleep(0.5)
    asked_to_stop = stopping
    if not asked_to_stop:
        dead = [k for k, proc in enumerate(workers) if proc.poll() is not None]
        click.echo(f"gateway worker(s) {dead} exited: stopping the others", err=True)
        stop()
    for proc in workers:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    return 0 if asked_to_stop else 1
