"""`muck violations ...` and `muck bench rules`."""

from __future__ import annotations

import getpass
import json

import click

from compliance.violations import KINDS, STATUSES
from core.clicontext import format_time, parse_time, pass_ctx

# ---------------------------------------------------------------------------- sweep


@click.command("sweep")
@click.option(
    "--until",
    "until",
    required=True,
    help="End of the window, on device time: now, YYYY-MM-DD, local 'YYYY-MM-DD HH:MM', ISO.",
)
@pass_ctx
def sweep_cmd(mctx, until: str) -> None:
    """Run the going-dark and jump sweeps for a past window ending at UNTIL, on device time:
    after importing a terminal's history or a bureau's back-filled data, when the collector's
    sweeps (on the wall clock) could not judge it.

    Trucks silent at UNTIL, working at their last fix, get a going-dark violation from that
    fix (the rule table of docs/compliance.md applies); trucks with fixes after UNTIL are left
    to the rules, which judged their gaps from the fixes; open going-dark violations that the
    stored fixes show were no silence are withdrawn. Running it again changes nothing.
    """
    from compliance.sweep import sweep_until

    when = parse_time(until, mctx.settings.city["timezone"])
    conn = mctx.connect()
    try:
        counts = sweep_until(conn, mctx.settings, when)
    finally:
        conn.close()
    click.echo(
        f"swept until {format_time(when, mctx.settings.city['timezone'])}: "
        f"{counts['opened']} going dark opened, {counts['withdrawn']} stale withdrawn, "
        f"{counts['jumps']} jumps"
    )


# ----------------------------------------------------------------------- violations


@click.group()
def violations() -> None:
    """Violations found by the rules: list, show, review (evidence: muck evidence)."""


@violations.command("list")
@click.option("--kind", type=click.Choice(KINDS), help="Only this kind of violation.")
@click.option("--status", type=click.Choice(STATUSES), help="Only violations in this status.")
@click.option("--plate", help="Only this truck (plate).")
@click.option(
    "--since", help="Started at or after (now, YYYY-MM-DD, local 'YYYY-MM-DD HH:MM', ISO)."
)
@click.option("--until", help="Started before (same formats).")
@click.option(
    "--limit", type=click.IntRange(min=1, max=10_000), default=50, show_default=True, help="Rows."
)
@pass_ctx
def v_list_cmd(mctx, kind, status, plate, since, until, limit) -> None:
    """Newest violations first, in the city's local time."""
    from compliance.violations import list_violations
    from registry.validation import normalise_plate

    tz = mctx.settings.city["timezone"]
    conn = mctx.connect()
    try:
        rows = list_violations(
            conn,
            kind=kind,
            status=status,
            plate=normalise_plate(plate) if plate else None,
            since=parse_time(since, tz) if since else None,
            until=parse_time(until, tz) if until else None,
            limit=limit,
        )
    finally:
        conn.close()
    for r in rows:
        worst = "" if r.worst_value is None else f"{r.worst_value:.1f} {r.worst_unit}"
        click.echo(
            f"{r.id:>7}  {format_time(r.started_at, tz)}  {format_time(r.ended_at, tz):19}  {r.plate:9}  "
            f"{r.kind:19} {r.severity:7} {r.status:11} {worst}"
        )
    if not rows:
        click.echo("no violations match")


@violations.command("show")
@click.argument("violation_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print everything as JSON.")
@pass_ctx
def v_show_cmd(mctx, violation_id, as_json) -> None:
    """One violation: what, where, the rule and thresholds used, legal basis, evidence, history."""
    from compliance.violations import get_violation

    conn = mctx.connect()
    try:
        found = get_violation(conn, violation_id)
    finally:
        conn.close()
    if found is None:
        raise click.ClickException(f"violation {violation_id} does not exist")
    v, events = found
    if as_json:
        click.echo(json.dumps({"violation": v, "events": events}, ensure_ascii=False, indent=2))
        return
    for key in (
        "id",
        "plate",
        "company",
        "credit_code",
        "kind",
        "stream",
        "severity",
        "status",
        "started_at",
        "ended_at",
        "worst_value",
        "worst_unit",
        "permit_no",
        "zone_code",
        "lat",
        "lon",
        "points",
        "legal_basis",
        "rule_params",
        "decision_no",
    ):
        click.echo(f"{key:12} {v.get(key)}")
    click.echo(f"evidence     muck evidence show {violation_id}")
    for e in events:
        click.echo(f"  {e['at']}  {e['actor']:10} {e['action']:16} {e.get('note') or ''}")


def _review(action: str):
    @pass_ctx
    def command(mctx, violation_id, note, actor) -> None:
        from compliance.violations import ViolationError, change_status

        conn = mctx.connect()
        try:
            status = change_status(
                conn,
                violation_id,
                action,
                actor or getpass.getuser(),
                note=note,
            )
        except ViolationError as exc:
            raise click.ClickException(str(exc)) from None
        finally:
            conn.close()
        click.echo(f"violation {violation_id}: {status}")

    return command


# (open-case and close go through a case: credit/cli.py, added to this group by muck/cli.py)
for _action, _help in (
    ("confirm", "Confirm a new violation after reviewing its evidence."),
    ("dismiss", "Dismiss a violation; --note gives the reason (required)."),
):
    _cmd = _review(_action.replace("-", "_"))
    _cmd.__doc__ = _help
    _cmd = click.option("--by", "actor", help="Who acts; default: the current user name.")(_cmd)
    _cmd = click.option(
        "--note", help="A note recorded with the change (the reason, for dismiss)."
    )(_cmd)
    _cmd = click.argument("violation_id", type=int)(_cmd)
    violations.command(_action)(_cmd)
