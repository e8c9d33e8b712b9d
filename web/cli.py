"""`muck web` and `muck user ...`."""

from __future__ import annotations

import sys

import click

from core.clicontext import MuckContext, pass_ctx


@click.command("web")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=int, help="Port to listen on.")
@click.option(
    "--debug", is_flag=True, help="Flask debug mode (reloader, tracebacks): never in production."
)
@pass_ctx
def web_cmd(mctx: MuckContext, host: str, port: int, debug: bool) -> None:
    """Serve the dashboard and API with the development server.

    For production run gunicorn: `gunicorn -w 4 -b 0.0.0.0:8000 'web:create_app()'`.
    """
    from web import create_app

    app = create_app({"MUCK_SETTINGS": mctx.settings})
    app.run(host=host, port=port, debug=debug, use_reloader=debug)


@click.group("user")
def user_cmd() -> None:
    """Dashboard users and API tokens."""


def _conn(mctx: MuckContext):
    from core.db import connect_settings

    return connect_settings(mctx.settings)


def _change(mctx: MuckContext, change):
    """`change(cur)` in one transaction, with its result; a refused change (UserError) is
    printed and exits 1, with nothing stored."""
    from web.users import UserError

    conn = _conn(mctx)
    try:
        with conn.cursor() as cur:
            result = change(cur)
        conn.commit()
        return result
    except UserError as exc:
        conn.rollback()
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    finally:
        conn.close()


@user_cmd.command("create")
@click.argument("username")
@click.option("--role", required=True, help="supervisor, enforcement, credit or admin.")
@click.option("--display-name", help="Name shown in the dashboard.")
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from standard input instead of prompting.",
)
@pass_ctx
def user_create(
    mctx: MuckContext, username: str, role: str, display_name: str | None, password_stdin: bool
) -> None:
    """Create a dashboard user (the password is prompted for, or read with --password-stdin)."""
    from web.users import create_user

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    user = _change(
        mctx,
        lambda cur: create_user(
            cur, username, password, role, display_name=display_name, actor="cli"
        ),
    )
    click.echo(f"created user {user.username} ({user.role})")


@user_cmd.command("token")
@click.argument("username")
@click.option("--name", default="", help="What the token is for (shown in the audit log).")
@pass_ctx
def user_token(mctx: MuckContext, username: str, name: str) -> None:
    """Create an API token for USERNAME and print it once (only its hash is stored)."""
    from web.users import create_token

    click.echo(_change(mctx, lambda cur: create_token(cur, username, name, actor="cli")))


@user_cmd.command("list")
@pass_ctx
def user_list(mctx: MuckContext) -> None:
    """List dashboard users."""
    conn = _conn(mctx)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT username, role, active, last_login_at FROM web_users ORDER BY username"
            )
            for username, role, active, last in cur.fetchall():
                state = "active" if active else "deactivated"
                click.echo(f"{username}\t{role}\t{state}\t{last or '-'}")
    finally:
        conn.close()
