"""`muck zones ...`"""

import click


@click.group()
def zones() -> None:
    """Import, export and inspect geofence zones."""


@click.command("geofence")
def bench_geofence() -> None:
    """Benchmark zone classification and route distances."""
    raise click.ClickException("not built yet")
