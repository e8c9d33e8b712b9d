"""`muck maintain`."""

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
