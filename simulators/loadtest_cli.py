"""`muck loadtest`: the command (the work is in simulators.loadtest and loadreport)."""

from __future__ import annotations

import datetime as dt
import signal
import threading
from pathlib import Path

import click

from core.clicontext import MuckContext, pass_ctx


def reproducing_command(options, report: str) -> str:
    """The command line with every effective value, so the report says exactly what ran."""
    parts = [
        "muck loadtest",
        f"--rate {options.rate:g}",
        f"--duration {options.duration_s:g}",
        f"--trucks {options.trucks}",
        f"--publishers {options.publishers}",
        f"--collectors {options.collectors}",
        f"--duplicate-pct {options.duplicate_pct:g}",
        f"--ceiling-messages {options.ceiling_messages}",
        f"--max-p99-ms {options.max_p99_ms:g}",
    ]
    if options.collectors and not options.rules:
        parts.append("--no-rules")
    if options.registered:
        parts.append("--registered")
    if options.lose_pct:
        parts.append(f"--lose-pct {options.lose_pct:g}")
    if options.keep:
        parts.append("--keep")
    if options.reference_database:
        from simulators.loadtest import redact

        parts.append(f"--reference-database {redact(options.reference_database)}")
    if options.kill_collector_at_s is not None:
        parts.append(f"--kill-collector-at {options.kill_collector_at_s:g}")
        parts.append(f"--restart-after {options.restart_after_s:g}")
    parts.append(f"--report {report}")
    return " ".join(parts)


@click.command()
@click.option("--rate", type=float, help="Target messages/s in total (duplicates included).")
@click.option("--duration", type=float, help="Seconds to publish for.")
@click.option("--trucks", type=int, default=2000, show_default=True, help="Distinct devices.")
@click.option("--publishers", type=int, default=2, show_default=True, help="Publisher processes.")
@click.option(
    "--collectors",
    type=int,
    default=0,
    show_default=True,
    help="Collector processes to start for the run (0: use the collectors already running "
    "against MUCK_DATABASE_URL). More than one share a subscription.",
)
@click.option("--no-rules", is_flag=True, help="Start the --collectors with --no-rules.")
@click.option(
    "--registered",
    is_flag=True,
    help="Register the load's devices as trucks of a scratch company first, so the "
    "compliance rules run on every fix (removed afterwards).",
)
@click.option(
    "--duplicate-pct",
    type=float,
    default=1.0,
    show_default=True,
    help="Publish this % of messages a second time (exact copies: must be stored once).",
)
@click.option(
    "--lose-pct",
    type=float,
    default=0.0,
    show_default=True,
    help="Self-check: publish this % of messages to a topic nobody stores; the run must "
    "report them lost.",
)
@click.option(
    "--ceiling-messages",
    type=int,
    default=200_000,
    show_default=True,
    help="Messages for the broker-only ceiling measured before the load (0: skip it).",
)
@click.option(
    "--max-p99-ms",
    type=float,
    default=2000.0,
    show_default=True,
    help="Latency p99 above which the verdict fails.",
)
@click.option(
    "--drain",
    type=float,
    default=120.0,
    show_default=True,
    help="Longest wait (s) for the collectors to catch up after publishing.",
)
@click.option(
    "--report",
    "report_dir",
    type=click.Path(file_okay=False, writable=True),
    help="Folder for report.md and the plots (default: loadtest-<UTC time>).",
)
@click.option("--keep", is_flag=True, help="Keep the load's rows (default: delete them).")
@click.option(
    "--reference-database",
    metavar="URL",
    help="A copy of the database (same zones and permits): one more collector with a "
    "subscription of its own stores the same stream there, and the run compares rows and "
    "standing violations with it (needs --collectors).",
)
@click.option(
    "--kill-collector-at",
    type=float,
    metavar="SECONDS",
    help="SIGKILL the first collector this many seconds into publishing (needs --collectors).",
)
@click.option(
    "--restart-after",
    type=float,
    default=5.0,
    show_default=True,
    help="Seconds after --kill-collector-at to start it again with the same client id.",
)
@click.option(
    "--yes",
    is_flag=True,
    help="Run even though the database has registered trucks (a production database).",
)
@click.option(
    "--clean",
    is_flag=True,
    help="Only remove what earlier load tests left (rows of LT-* devices, scratch "
    "companies, broker sessions of --collectors) and exit.",
)
@pass_ctx
def loadtest(
    mctx: MuckContext,
    rate: float | None,
    duration: float | None,
    trucks: int,
    publishers: int,
    collectors: int,
    no_rules: bool,
    registered: bool,
    duplicate_pct: float,
    lose_pct: float,
    ceiling_messages: int,
    max_p99_ms: float,
    drain: float,
    report_dir: str | None,
    keep: bool,
    reference_database: str | None,
    kill_collector_at: float | None,
    restart_after: float,
    yes: bool,
    clean: bool,
) -> None:
    """Drive the running platform at RATE messages/s for DURATION seconds and account for
    every message.

    Publishes from several processes to MUCK_MQTT_URL (each fix carries its device's
    sequence number and its publish time), lets the collectors store into
    MUCK_DATABASE_URL, then reports publish and stored rate, publish→stored latency
    p50/p95/p99, lost and duplicated messages, the CPU of every process (publishers,
    collectors, Mosquitto, PostgreSQL backends) and the broker's raw ceiling, in a folder
    with report.md and PNG plots. A live status line shows progress; Ctrl-C stops
    publishing, waits for the collectors to catch up (Ctrl-C again: don't) and still writes
    the report. Exits 1 when the verdict fails, 130 when interrupted.
    """
    from core.db import connect_settings
    from simulators.loadtest import (
        LoadtestError,
        LoadtestOptions,
        clean_leftovers,
        real_trucks,
        run_loadtest,
    )

    settings = mctx.settings
    if not settings.database_url:
        raise click.UsageError("MUCK_DATABASE_URL is not set")
    if not settings.mqtt_url:
        raise click.UsageError("MUCK_MQTT_URL is not set")
    if clean:
        counts = clean_leftovers(settings)
        click.echo(
            f"removed {counts['fixes']:,} fixes of load-test devices and "
            f"{counts['companies']} scratch companies; forgot the --collectors sessions"
        )
        return
    if rate is None or duration is None:
        raise click.UsageError("--rate and --duration are required (or --clean)")
    options = LoadtestOptions(
        rate=rate,
        duration_s=duration,
        trucks=trucks,
        publishers=publishers,
        collectors=collectors,
        rules=not no_rules,
        registered=registered,
        duplicate_pct=duplicate_pct,
        lose_pct=lose_pct,
        ceiling_messages=ceiling_messages,
        drain_s=drain,
        max_p99_ms=max_p99_ms,
        keep=keep,
        config_path=mctx.config_path,
        reference_database=reference_database,
        kill_collector_at_s=kill_collector_at,
        restart_after_s=restart_after,
    )
    try:
        options.check()
    except LoadtestError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        conn = connect_settings(settings, application_name="muck-loadtest")
    except Exception as exc:  # noqa: BLE001 - any connection failure is the user's to fix
        raise click.ClickException(f"cannot connect to the database: {exc}") from None
    try:
        trucks_there = real_trucks(conn)
    finally:
        conn.close()
    if trucks_there and not yes:
        raise click.UsageError(
            f"the database has {trucks_there:,} registered trucks: it looks like a production "
            "database. The load test writes rows of its own devices (LT-<run>-nnnnn) and "
            "deletes them afterwards; pass --yes to run anyway (docs/simulator.md, 'Load test', "
            "says how to clean up)."
        )
    folder = Path(report_dir or "loadtest-" + dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S"))
    stop, abort = threading.Event(), threading.Event()

    def on_signal(*_):
        if stop.is_set():
            abort.set()
            click.echo("\nnot waiting for the collectors any longer", err=True)
        else:
            stop.set()
            click.echo(
                "\nstopping: waiting for the collectors to catch up (Ctrl-C again: don't)",
                err=True,
            )

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    width = [0]

    def status(line: str) -> None:
        if not line.startswith("["):  # a phase, not the live line: a line of its own
            click.echo(("\n" if width[0] else "") + line, err=True)
            width[0] = 0
            return
        width[0] = max(width[0], len(line))
        click.echo("\r" + line.ljust(width[0]), nl=False, err=True)

    try:
        result = run_loadtest(
            settings,
            options,
            work_dir=folder,
            command=reproducing_command(options, str(folder)),
            stop=stop,
            abort=abort,
            status=status,
        )
    except LoadtestError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        click.echo("", err=True)
    from simulators.loadreport import summary_rows, write_report

    path = write_report(result, folder)
    for name, value in summary_rows(result):
        click.echo(f"{name:>26}: {value.replace('**', '')}")
    by_role = result.cpu_by_role()
    window = max(result.cpu_window_s, 1e-9)
    click.echo(
        f"{'CPU (cores busy)':>26}: "
        + ", ".join(f"{role} {cpu / window:.2f}" for role, cpu in by_role.items())
        + f"; whole machine {result.machine_cpu_s / window:.2f}"
    )
    for note in result.notes:
        click.echo(f"{'note':>26}: {note}")
    click.echo(result.verdict_line())
    click.echo(f"report: {path}")
    if result.interrupted:
        raise SystemExit(130)
    if not result.verdict()[0]:
        raise SystemExit(1)
