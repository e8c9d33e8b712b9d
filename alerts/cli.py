"""`muck alerts`: subscriptions, the dispatcher on its own, dead letters."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable

import click

from core.clicontext import MuckContext, format_time, pass_ctx

# Checks that a user name belongs to a dashboard user. web owns the users and sits above
# alerts, so the composition root (muck/cli.py) hands the check in; without it any name
# is stored.
user_check: Callable[[object, str], bool] | None = None


@click.group()
def alerts() -> None:
    """Alerts: who is told of which violations, and how (docs/alerts.md)."""


@alerts.command()
@click.option("--user", "user", help="Subscribe this dashboard user.")
@click.option("--team", "team", help="Subscribe this team (webhook or group robot only).")
@click.option(
    "--channel",
    type=click.Choice(["feed", "webhook", "wecom", "dingtalk", "email", "apprise"]),
    default="feed",
    show_default=True,
    help="feed (the user's dashboard), webhook (signed JSON POST), or a robot through apprise.",
)
@click.option("--url", "target", default="", help="Webhook URL, or the apprise URL of a robot.")
@click.option("--secret", default="", help="Webhook HMAC secret (generated when left out).")
@click.option("--kind", "kinds", multiple=True, help="Violation kind (repeat; default all).")
@click.option(
    "--severity",
    "severities",
    multiple=True,
    help="notice / minor / serious (default minor and serious).",
)
@click.option("--district", "districts", multiple=True, help="6-digit district code.")
@click.option("--company", "companies", multiple=True, type=int, help="Company id.")
@click.option("--event", "events", multiple=True, help="Violation event (default: detected).")
@pass_ctx
def subscribe(
    mctx: MuckContext,
    user: str | None,
    team: str | None,
    channel: str,
    target: str,
    secret: str,
    kinds: tuple[str, ...],
    severities: tuple[str, ...],
    districts: tuple[str, ...],
    companies: tuple[int, ...],
    events: tuple[str, ...],
) -> None:
    """Subscribe a user or a team to violations."""
    from alerts.subscriptions import SubscriptionError, create_subscription

    if bool(user) == bool(team):
        raise click.UsageError("give exactly one of --user and --team")
    conn = mctx.connect()
    try:
        with conn.cursor() as cur:
            if user and user_check is not None and not user_check(cur, user):
                raise click.ClickException(f"no dashboard user {user!r}")
            try:
                sub = create_subscription(
                    cur,
                    owner_kind="user" if user else "team",
                    owner=user or team or "",
                    channel=channel,
                    target=target,
                    secret=secret,
                    kinds=kinds,
                    severities=severities,
                    districts=districts,
                    company_ids=companies,
                    events=events or None,
                    created_by="cli",
                )
            except SubscriptionError as exc:
                raise click.ClickException(str(exc)) from None
        conn.commit()
    finally:
        conn.close()
    click.echo(f"subscribed {sub.describe()}")
    if channel == "webhook" and not secret:
        click.echo(f"webhook secret (shown once; the receiver verifies with it): {sub.secret}")


@alerts.command("list")
@click.option("--user", help="Only this user's subscriptions.")
@click.option("--team", help="Only this team's subscriptions.")
@click.option("--all", "include_removed", is_flag=True, help="Include removed subscriptions.")
@pass_ctx
def list_cmd(mctx: MuckContext, user: str | None, team: str | None, include_removed: bool):
    """List subscriptions."""
    from alerts.subscriptions import list_subscriptions

    conn = mctx.connect()
    try:
        with conn.cursor() as cur:
            subs = list_subscriptions(
                cur,
                owner_kind="user" if user else "team" if team else None,
                owner=user or team,
                include_removed=include_removed,
            )
        conn.commit()
    finally:
        conn.close()
    for sub in subs:
        click.echo(sub.describe())
    if not subs:
        click.echo("no subscriptions")


@alerts.command()
@click.argument("subscription_id", type=int)
@pass_ctx
def remove(mctx: MuckContext, subscription_id: int) -> None:
    """Remove a subscription (its pending deliveries are cancelled)."""
    from alerts.subscriptions import remove_subscription

    conn = mctx.connect()
    try:
        with conn.cursor() as cur:
            removed = remove_subscription(cur, subscription_id)
        conn.commit()
    finally:
        conn.close()
    if not removed:
        raise click.ClickException(f"no active subscription {subscription_id}")
    click.echo(f"removed subscription {subscription_id}")


@alerts.command()
@click.option("--stats", "stats_every", type=float, default=0, help="Print counters every N s.")
@pass_ctx
def run(mctx: MuckContext, stats_every: float) -> None:
    """Run the dispatcher alone (fan-out and delivery) until Ctrl-C/SIGTERM.

    `muck collect` and `muck demo` already run one; this is for a process of its own.
    """
    from alerts.dispatcher import Dispatcher

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    dispatcher = Dispatcher(mctx.settings)
    thread = threading.Thread(target=dispatcher.run, args=(stop,), daemon=True)
    thread.start()
    click.echo("dispatching alerts (Ctrl-C to stop)", err=True)
    while not stop.wait(stats_every or 3600):
        if stats_every:
            click.echo(dispatcher.describe(), err=True)
    thread.join(15)
    click.echo(dispatcher.describe(), err=True)


@alerts.command()
@pass_ctx
def dead(mctx: MuckContext) -> None:
    """List dead-lettered deliveries (failed max_attempts times), newest first."""
    from alerts.outbox import dead_letters

    conn = mctx.connect()
    tz = mctx.settings.city["timezone"]
    try:
        with conn.cursor() as cur:
            rows = dead_letters(cur)
        conn.commit()
    finally:
        conn.close()
    for r in rows:
        click.echo(
            f"#{r['id']} {format_time(r['created_at'], tz)} violation {r['violation_id']} "
            f"{r['event']} → {r['owner_kind']}:{r['owner']} {r['channel']} "
            f"after {r['attempts']} attempts: {r['last_error']}"
        )
    if not rows:
        click.echo("no dead letters")


@alerts.command()
@click.argument("outbox_id", type=int)
@pass_ctx
def retry(mctx: MuckContext, outbox_id: int) -> None:
    """Send a dead-lettered alert again."""
    from alerts.outbox import retry as retry_delivery

    conn = mctx.connect()
    try:
        with conn.cursor() as cur:
            ok = retry_delivery(cur, outbox_id)
        conn.commit()
    finally:
        conn.close()
    if not ok:
        raise click.ClickException(f"{outbox_id} is not a dead letter")
    click.echo(f"alert {outbox_id} queued again")
