"""`muck device ...`: broker accounts of terminals, cameras and the platform's services.

The password is printed once, on standard output, and never stored: only its hash is kept
(registry/accounts.py). The broker learns of a change at the next `muck broker sync`.
"""

from __future__ import annotations

import click

from core.clicontext import format_time, parse_time, pass_ctx

_AFTER = "then `muck broker sync --reload-pid-file …` (or SIGHUP the broker) to apply it"


@click.group("device")
def device() -> None:
    """Broker accounts of terminals, cameras and services: provision, rotate, revoke, list."""


@device.command("provision")
@click.argument("name")
@click.option(
    "--kind",
    type=click.Choice(["terminal", "camera", "collector", "gateway", "web"]),
    default="terminal",
    show_default=True,
    help="terminal: NAME is its device id; camera: its camera id; the rest are services.",
)
@click.option("--plate", help="Terminals: bind the device to the registered truck with this plate.")
@click.option(
    "--from",
    "valid_from",
    default="now",
    show_default=True,
    help="Start of the truck binding (city time or ISO with offset).",
)
@click.option("--model", help="Terminal model, kept with the binding.")
@pass_ctx
def provision_cmd(mctx, name, kind, plate, valid_from, model) -> None:
    """Create the broker account NAME (and, with --plate, the terminal's binding to its
    truck); print its password once."""
    from registry.accounts import provision

    since = parse_time(valid_from, mctx.settings.city["timezone"])
    made = _in_registry(
        mctx, lambda cur: provision(cur, name, kind, plate=plate, valid_from=since, model=model)
    )
    bound = f", bound to {plate} (terminal binding {made.terminal_id})" if plate else ""
    _print_credentials(made, f"created{bound}")


@device.command("rotate")
@click.argument("name")
@pass_ctx
def rotate_cmd(mctx, name) -> None:
    """Give account NAME a new password (printed once); the old one stops working at the
    next broker sync. Re-activates a revoked account."""
    from registry.accounts import rotate

    _print_credentials(_in_registry(mctx, lambda cur: rotate(cur, name)), "has a new password")


@device.command("revoke")
@click.argument("name")
@pass_ctx
def revoke_cmd(mctx, name) -> None:
    """Revoke account NAME: the broker refuses it after the next sync. The record stays."""
    from registry.accounts import revoke

    changed = _in_registry(mctx, lambda cur: revoke(cur, name))
    click.echo(f"{name} revoked; {_AFTER}" if changed else f"{name} was already revoked")


@device.command("list")
@pass_ctx
def list_cmd(mctx) -> None:
    """Every broker account with its kind and dates (never a password or hash)."""
    from registry.accounts import list_accounts

    conn = mctx.connect()
    try:
        with conn.cursor() as cur:
            rows = list_accounts(cur)
    finally:
        conn.close()
    tz = mctx.settings.city["timezone"]
    for row in rows:
        state = f"revoked {format_time(row['revoked_at'], tz)}" if row["revoked_at"] else "active"
        rotated = f", rotated {format_time(row['rotated_at'], tz)}" if row["rotated_at"] else ""
        click.echo(f"{row['kind']:<9} {row['username']:<24} {state}{rotated}")


def _in_registry(mctx, work):
    """`work(cursor)` in one transaction; a RegistryError becomes the user's message."""
    from core.db import transaction
    from registry.service import RegistryError

    conn = mctx.connect()
    try:
        with transaction(conn) as cur:
            return work(cur)
    except RegistryError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        conn.close()


def _print_credentials(made, what: str) -> None:
    """The password, once, on standard output; what to do next on standard error."""
    click.echo(f"{made.kind} account {made.username} {what}; {_AFTER}", err=True)
    click.echo(f"username: {made.username}")
    click.echo(f"password: {made.password}")
