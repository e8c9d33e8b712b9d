"""`muck`: the one command-line entry. Each package contributes its own subcommands."""

from __future__ import annotations

import sys

import click

from core.clicontext import MuckContext, pass_ctx
from core.config import ConfigError
from core.logs import configure_logging


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    envvar="MUCK_CONFIG",
    type=click.Path(dir_okay=False),
    help="City settings file (TOML) overriding core/defaults.toml. Env: MUCK_CONFIG.",
)
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    envvar="MUCK_LOG_FORMAT",
    show_default=True,
    help="json: one JSON object per log line (ts, level, logger, msg). Env: MUCK_LOG_FORMAT.",
)
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, verbose: bool, log_format: str) -> None:
    """MuckWatch: supervision platform for construction-waste (渣土) trucks.

    Services are chosen by MUCK_DATABASE_URL (postgresql://...) and MUCK_MQTT_URL
    (mqtt://user:pass@host:port). `muck demo` runs everything on embedded services when
    they are unset.
    """
    configure_logging(verbose=verbose, fmt=log_format)
    ctx.obj = MuckContext(config_path)
    _add_hooks(ctx.obj)


def _add_hooks(mctx: MuckContext) -> None:
    """Packages lower on the data path never import the ones above: the root connects them.
    A permit imported for a blacklisted company is stored with a warning from credit."""

    def blacklist_warnings(conn, permit_numbers, source=""):
        from credit.lists import permit_import_warnings

        return permit_import_warnings(conn, permit_numbers, source=source)

    mctx.add_hook("permits.imported", blacklist_warnings)


@cli.command()
@pass_ctx
def migrate(mctx: MuckContext) -> None:
    """Create or upgrade the database schema (idempotent), and create partitions ahead."""
    from core.db import connect_settings
    from core.migrate import migrate as run_migrations
    from telemetry.partitions import maintain

    conn = connect_settings(mctx.settings)
    try:
        applied = run_migrations(conn, mctx.settings)
        report = maintain(conn, mctx.settings)
    finally:
        conn.close()
    for name in applied:
        click.echo(f"applied {name}")
    if not applied:
        click.echo("schema is up to date")
    click.echo(report.describe())


@cli.command("config")
@pass_ctx
def show_config(mctx: MuckContext) -> None:
    """Print the effective settings and where they came from."""
    settings = mctx.settings
    click.echo("# sources: " + ", ".join(settings.source))
    for section, values in settings.sections.items():
        click.echo(f"[{section}]")
        for key, value in values.items():
            click.echo(f"{key} = {value!r}")
    click.echo(f"# MUCK_DATABASE_URL={'set' if settings.database_url else 'unset'}")
    mqtt_url = settings.mqtt_endpoint().safe_url() if settings.mqtt_url else "unset"
    click.echo(f"# MUCK_MQTT_URL={mqtt_url}")


@cli.group()
def bench() -> None:
    """Benchmarks that measure the speed goals (figures go to docs/performance.md)."""


def _register_subcommands() -> None:
    import alerts.cli
    from bench.cli import (
        bench_alerts,
        bench_geofence,
        bench_ingest,
        bench_jt808,
        bench_rules,
        bench_web,
        bench_webhook,
    )
    from black_trucks.cli import black_trucks
    from compliance.cli import sweep_cmd, violations
    from credit.cli import case_group, violation_close, violation_open_case
    from credit.commands import credit, export_group
    from evidence.cli import evidence
    from geofence.cli import city, zones
    from muck.collect import collect, scheduler
    from muck.demo import demo
    from permits.cli import permits
    from registry.cli import registry
    from registry.device_cli import device
    from simulators.cli import accuracy, loadtest, simulate
    from telemetry.cli import broker, maintain_cmd
    from telemetry.jt808.cli import gateway
    from web.cli import user_cmd, web_cmd
    from web.users import user_exists

    # alerts stores subscribers by name; the users are web's (see alerts/cli.py).
    alerts.cli.user_check = user_exists

    cli.add_command(collect)
    cli.add_command(scheduler)
    cli.add_command(maintain_cmd)
    cli.add_command(device)
    cli.add_command(broker)
    cli.add_command(demo)
    cli.add_command(zones)
    cli.add_command(city)
    cli.add_command(web_cmd)
    cli.add_command(user_cmd)
    cli.add_command(permits)
    cli.add_command(registry)
    cli.add_command(black_trucks)
    cli.add_command(violations)
    # a violation's case actions go through a case (credit is above compliance)
    violations.add_command(violation_open_case)
    violations.add_command(violation_close)
    cli.add_command(case_group)
    cli.add_command(sweep_cmd)
    cli.add_command(evidence)
    cli.add_command(credit)
    cli.add_command(export_group)
    cli.add_command(alerts.cli.alerts)
    cli.add_command(simulate)
    cli.add_command(accuracy)
    cli.add_command(loadtest)
    cli.add_command(gateway)
    bench.add_command(bench_ingest)
    bench.add_command(bench_geofence)
    bench.add_command(bench_rules)
    bench.add_command(bench_web)
    bench.add_command(bench_alerts)
    bench.add_command(bench_webhook)
    bench.add_command(bench_jt808)


def main() -> None:
    _register_subcommands()
    try:
        cli(standalone_mode=True)
    except ConfigError as exc:
        click.echo(f"configuration error: {exc}", err=True)
        sys.exit(2)
