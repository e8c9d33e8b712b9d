"""`muck maintain` and `muck bench ingest`."""

from __future__ import annotations

import click

from core.clicontext import MuckContext, pass_ctx


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
@click.option(
    "--registered",
    is_flag=True,
    help="Register the devices as trucks first, so the compliance rules run on every fix.",
)
@click.option("--no-rules", is_flag=True, help="Run the collectors with --no-rules.")
@pass_ctx
def bench_ingest(
    mctx: MuckContext,
    messages: int,
    devices: int,
    publishers: int,
    collectors: int,
    rate: float,
    skip_ceiling: bool,
    registered: bool,
    no_rules: bool,
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
        registered=registered,
        rules=not no_rules,
    )
    click.echo(report)
