"""`muck black-trucks ...`: scan, list, show and handle black trucks."""

from __future__ import annotations

import getpass

import click

from core.clicontext import format_time, pass_ctx


@click.group("black-trucks")
def black_trucks() -> None:
    """Black trucks (黑车): ANPR sightings and unregistered terminals."""


@black_trucks.command("scan")
@click.option(
    "--recheck",
    is_flag=True,
    help="Classify every sighting in the look-back again (after late permits or re-uploads).",
)
@pass_ctx
def scan_cmd(mctx, recheck) -> None:
    """Classify new sightings and summarise unregistered terminals once."""
    from black_trucks.devices import scan_unregistered_devices
    from black_trucks.sightings import match_new_sightings

    conn = mctx.connect()
    try:
        match = match_new_sightings(conn, mctx.settings, recheck=recheck)
        devices = scan_unregistered_devices(conn, mctx.settings)
    finally:
        conn.close()
    click.echo(match.describe())
    click.echo(devices.describe())


@black_trucks.command("list")
@click.option(
    "--status", type=click.Choice(["new", "handled"]), help="Only black trucks in this status."
)
@click.option(
    "--kind",
    type=click.Choice(["plate", "device"]),
    help="plate: seen by cameras; device: telemetry from an unregistered terminal.",
)
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True, help="Rows.")
@pass_ctx
def bt_list_cmd(mctx, status, kind, limit) -> None:
    """List black trucks, most recently seen first."""
    from black_trucks.store import list_black_trucks

    tz = mctx.settings.city["timezone"]
    conn = mctx.connect()
    try:
        rows = list_black_trucks(conn, status=status, kind=kind, limit=limit)
    finally:
        conn.close()
    for b in rows:
        handled = (
            f"\t{b.handled_by} {format_time(b.handled_at, tz)}" if b.status == "handled" else ""
        )
        click.echo(
            f"{b.key}\t{b.kind}\t{b.status}\t{format_time(b.first_seen, tz)}\t{format_time(b.last_seen, tz)}\t"
            f"{b.sightings}\t{','.join(b.reasons)}\t{','.join(b.sites) or '-'}{handled}"
        )
    click.echo(f"{len(rows)} black trucks", err=True)


@black_trucks.command("show")
@click.argument("key")
@click.option("--device", is_flag=True, help="KEY is an unregistered device id, not a plate.")
@pass_ctx
def bt_show_cmd(mctx, key, device) -> None:
    """Show black truck KEY (a plate) with every sighting and its image reference."""
    from black_trucks.store import get_black_truck, plate_sightings

    tz = mctx.settings.city["timezone"]
    conn = mctx.connect()
    try:
        b = get_black_truck(conn, key, "device" if device else "plate")
        evidence = plate_sightings(conn, key) if b and not device else []
    finally:
        conn.close()
    if b is None:
        raise click.ClickException(f"{key!r} is not on the black-truck list")
    click.echo(f"{b.key} ({b.kind}) {b.status}: {', '.join(b.reasons)}")
    click.echo(
        f"  seen {format_time(b.first_seen, tz)} .. {format_time(b.last_seen, tz)}, {b.sightings} times"
    )
    click.echo(f"  sites: {', '.join(b.sites) or '-'}")
    if b.status == "handled":
        click.echo(
            f"  handled by {b.handled_by} at {format_time(b.handled_at, tz)}: {b.handled_note}"
        )
    for e in evidence:
        flag = " LOW-CONFIDENCE" if e.low_confidence else ""
        click.echo(
            f"  {format_time(e.seen_at, tz)}\t{e.camera_id}\t{e.site_id or '-'}\t{e.outcome}{flag}\t"
            f"{e.image_ref or '-'}\t{e.detail or ''}"
        )


@black_trucks.command("handle")
@click.argument("key")
@click.option("--note", required=True, help="What was done (recorded with who and when).")
@click.option("--by", "actor", help="Who handled it; default: the current user name.")
@click.option("--device", is_flag=True, help="KEY is an unregistered device id, not a plate.")
@pass_ctx
def handle_cmd(mctx, key, note, actor, device) -> None:
    """Mark black truck KEY (a plate, or a device id with --device) handled."""
    from black_trucks.store import handle_black_truck

    conn = mctx.connect()
    try:
        b = handle_black_truck(
            conn,
            key,
            note=note,
            actor=actor or getpass.getuser(),
            kind="device" if device else "plate",
        )
    except (LookupError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        conn.close()
    click.echo(f"{b.key} handled by {b.handled_by}")
