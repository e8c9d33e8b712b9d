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


@click.group("broker")
def broker() -> None:
    """The MQTT broker's accounts: write its password and ACL files from the registry."""


@broker.command("sync")
@click.option(
    "--passwords",
    "password_file",
    envvar="MUCK_BROKER_PASSWORD_FILE",
    required=True,
    type=click.Path(dir_okay=False),
    help="Mosquitto password_file to write. Env: MUCK_BROKER_PASSWORD_FILE.",
)
@click.option(
    "--acl",
    "acl_file",
    envvar="MUCK_BROKER_ACL_FILE",
    required=True,
    type=click.Path(dir_okay=False),
    help="Mosquitto acl_file to write. Env: MUCK_BROKER_ACL_FILE.",
)
@click.option(
    "--accounts-from-env",
    is_flag=True,
    help="First create (or re-password) the service accounts collector, gateway and web from "
    "MUCK_BROKER_COLLECTOR_PASSWORD, MUCK_BROKER_GATEWAY_PASSWORD, MUCK_BROKER_WEB_PASSWORD "
    "(those set).",
)
@click.option(
    "--reload-pid-file",
    type=click.Path(dir_okay=False),
    help="Send SIGHUP to the broker whose pid is in this file, so it re-reads both files.",
)
@pass_ctx
def broker_sync(mctx, password_file, acl_file, accounts_from_env, reload_pid_file) -> None:
    """Write the broker's password file (PBKDF2-SHA512 hashes) and ACL from the active
    broker accounts (`muck device …`); revoked accounts are left out."""
    import os
    from pathlib import Path

    from registry.accounts import ensure_service
    from registry.service import RegistryError
    from telemetry.broker_auth import SERVICE_ENV, sync
    from telemetry.contract import Topics

    reload_pid = None
    if reload_pid_file:
        try:
            reload_pid = int(Path(reload_pid_file).read_text().strip())
        except (OSError, ValueError) as exc:
            raise click.ClickException(f"{reload_pid_file}: no broker pid: {exc}") from None
    conn = mctx.connect()
    try:
        with conn.cursor() as cur:
            if accounts_from_env:
                for var, (name, kind) in SERVICE_ENV.items():
                    if os.environ.get(var):
                        if ensure_service(cur, name, kind, os.environ[var]):
                            click.echo(f"service account {name} set from {var}", err=True)
            report = sync(
                cur,
                Topics(mctx.settings.mqtt["topic_prefix"]),
                Path(password_file),
                Path(acl_file),
                reload_pid=reload_pid,
            )
        conn.commit()
    except RegistryError as exc:
        raise click.ClickException(str(exc)) from None
    except ProcessLookupError:
        raise click.ClickException(f"no broker runs with the pid in {reload_pid_file}") from None
    finally:
        conn.close()
    click.echo(report.describe())


@broker.command("cert")
@click.option(
    "--dir",
    "folder",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder for ca.crt, ca.key, server.crt, server.key (the broker's cafile/certfile/keyfile).",
)
@click.option(
    "--host",
    "hosts",
    multiple=True,
    default=["localhost"],
    show_default=True,
    help="Name or IP address terminals use to reach the broker (repeat for several).",
)
@click.option(
    "--days", type=int, default=825, show_default=True, help="Validity of the certificates."
)
@click.option("--if-missing", is_flag=True, help="Do nothing when server.crt exists already.")
def broker_cert(folder: str, hosts: tuple[str, ...], days: int, if_missing: bool) -> None:
    """Make a private CA and a server certificate for the broker's TLS listener (openssl).

    For a bureau without its own PKI: give ca.crt to the terminal vendor. A certificate from
    the bureau's CA replaces these files (same names)."""
    from pathlib import Path

    from telemetry.broker_auth import CertificateError, make_self_signed

    out = Path(folder)
    if if_missing and (out / "server.crt").exists():
        click.echo(f"{out / 'server.crt'} exists; nothing made")
        return
    try:
        make_self_signed(out, list(hosts), days=days)
    except CertificateError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"made {out}/ca.crt and server.crt/.key for {', '.join(hosts)} ({days} days)")
