"""`muck permits ...`, `muck black-trucks ...` and `muck violations ...`."""

from __future__ import annotations

import datetime as dt
import getpass
import json
import sys
from zoneinfo import ZoneInfo

import click

from compliance.violations import KINDS, STATUSES
from core.clicontext import MuckContext, pass_ctx
from core.config import ConfigError


def _connect(mctx: MuckContext):
    from core.db import connect_settings

    try:
        return connect_settings(mctx.settings)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    except Exception as exc:  # psycopg2.OperationalError and friends: no traceback
        raise click.ClickException(f"cannot connect to the database: {exc}".strip()) from None


def parse_time(text: str, tz: str) -> dt.datetime:
    """'now', an ISO time with offset, or a local 'YYYY-MM-DD[ HH:MM[:SS]]' (city time)."""
    text = text.strip()
    if text.lower() == "now":
        return dt.datetime.now(dt.UTC)
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is not a time: use now, YYYY-MM-DD, 'YYYY-MM-DD HH:MM' (local) or ISO "
            "with an offset"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=ZoneInfo(tz))
    return when


def _fmt(when: dt.datetime | None, tz: str) -> str:
    if when is None:
        return "-"
    return when.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M:%S")


def _hours(windows: list[dict]) -> str:
    if not windows:
        return "any time"
    parts = []
    for w in windows:
        days = w.get("days")
        label = "" if days in (None, [1, 2, 3, 4, 5, 6, 7]) else f" days {','.join(map(str, days))}"
        parts.append(f"{w['start']}-{w['end']}{label}")
    return "; ".join(parts)


# ----------------------------------------------------------------------- permits


@click.group()
def permits() -> None:
    """Disposal permits (核准): import, list, show, revoke."""


@permits.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "json"]),
    help="File format; by default from the extension (.csv, .json) or the content.",
)
@click.option("--dry-run", is_flag=True, help="Check the file against the database, store nothing.")
@pass_ctx
def import_cmd(mctx, file, fmt, dry_run) -> None:
    """Import permits from FILE (CSV with English or Chinese headers, or a JSON list),
    upserting by permit number.

    The whole file is checked (form, then companies, plates and zone codes against the
    database) and stored in one transaction: any problem rejects the file, with every
    problem listed by line and field.
    """
    from compliance.permits import PermitImportError, import_permits, read_permits_file

    try:
        records = read_permits_file(file, fmt)
    except PermitImportError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    conn = _connect(mctx)
    try:
        if dry_run:
            from compliance.permits import _resolve

            with conn.cursor() as cur:
                _, errors = _resolve(cur, records)
            conn.rollback()
            if errors:
                raise PermitImportError(errors, file)
            click.echo(f"{file}: {len(records)} valid permits; nothing stored (--dry-run)")
            return
        counts = import_permits(conn, records, source=file)
    except PermitImportError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except Exception as exc:
        click.echo(f"error: {file}: nothing imported: {exc}", err=True)
        sys.exit(1)
    finally:
        conn.close()
    click.echo(f"{file}: {counts['inserted']} inserted, {counts['updated']} updated")


@permits.command("list")
@click.option("--truck", "plate", help="Only permits covering this plate.")
@click.option(
    "--valid-at",
    help="Only permits active and valid at this time: now, YYYY-MM-DD, 'YYYY-MM-DD HH:MM' "
    "(city time) or ISO with an offset.",
)
@pass_ctx
def list_cmd(mctx, plate, valid_at) -> None:
    """List permits: number, status, validity, company, origin site, disposal sites, trucks."""
    from compliance.permits import list_permits

    tz = mctx.settings.city["timezone"]
    when = parse_time(valid_at, tz) if valid_at else None
    conn = _connect(mctx)
    try:
        rows = list_permits(conn, plate=plate, valid_at=when, city_tz=tz)
    finally:
        conn.close()
    for p in rows:
        click.echo(
            f"{p.number}\t{p.status}\t{p.valid_from}..{p.valid_to}\t{p.company}\t"
            f"{p.origin_site} -> {','.join(p.disposal_sites)}\t{len(p.plates)} trucks"
        )
    click.echo(f"{len(rows)} permits", err=True)


@permits.command("show")
@click.argument("number")
@click.option("--json", "as_json", is_flag=True, help="Print the permit as JSON.")
@pass_ctx
def show_cmd(mctx, number, as_json) -> None:
    """Show permit NUMBER in full."""
    from compliance.permits import get_permit

    tz = mctx.settings.city["timezone"]
    conn = _connect(mctx)
    try:
        p = get_permit(conn, number)
    finally:
        conn.close()
    if p is None:
        raise click.ClickException(f"no permit numbered {number!r}")
    if as_json:
        data = {
            "number": p.number,
            "company": p.company,
            "company_credit_code": p.company_credit_code,
            "trucks": list(p.plates),
            "origin_site": p.origin_site,
            "disposal_sites": list(p.disposal_sites),
            "routes": list(p.routes),
            "operating_hours": p.operating_hours,
            "valid_from": p.valid_from.isoformat(),
            "valid_to": p.valid_to.isoformat(),
            "status": p.status,
            "status_reason": p.status_reason,
            "authority": p.authority,
            "note": p.note,
        }
        click.echo(json.dumps(data, ensure_ascii=False, indent=1))
        return
    lines = [
        ("number", p.number),
        ("status", p.status + (f" ({p.status_reason})" if p.status_reason else "")),
        ("status changed", _fmt(p.status_changed_at, tz)),
        ("company", f"{p.company} ({p.company_credit_code or 'no credit code'})"),
        ("trucks", ", ".join(p.plates) or "-"),
        ("origin site", p.origin_site),
        ("disposal sites", ", ".join(p.disposal_sites)),
        ("routes", ", ".join(p.routes) or "-"),
        ("operating hours", _hours(p.operating_hours)),
        ("valid", f"{p.valid_from} .. {p.valid_to} (local dates, inclusive)"),
        ("authority", p.authority or "-"),
        ("note", p.note or "-"),
        ("created", _fmt(p.created_at, tz)),
        ("updated", _fmt(p.updated_at, tz)),
    ]
    for label, value in lines:
        click.echo(f"{label:>16}: {value}")


@permits.command("revoke")
@click.argument("number")
@click.option("--reason", required=True, help="Why the permit is revoked (recorded).")
@pass_ctx
def revoke_cmd(mctx, number, reason) -> None:
    """Revoke permit NUMBER: it is never valid again (re-imports keep the status)."""
    from compliance.permits import PermitError, revoke_permit

    conn = _connect(mctx)
    try:
        p = revoke_permit(conn, number, reason)
    except PermitError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        conn.close()
    click.echo(f"permit {p.number} revoked: {p.status_reason}")


# ------------------------------------------------------------------ black trucks


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
    from compliance.black_trucks import match_new_sightings, scan_unregistered_devices

    conn = _connect(mctx)
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
    from compliance.black_trucks import list_black_trucks

    tz = mctx.settings.city["timezone"]
    conn = _connect(mctx)
    try:
        rows = list_black_trucks(conn, status=status, kind=kind, limit=limit)
    finally:
        conn.close()
    for b in rows:
        handled = f"\t{b.handled_by} {_fmt(b.handled_at, tz)}" if b.status == "handled" else ""
        click.echo(
            f"{b.key}\t{b.kind}\t{b.status}\t{_fmt(b.first_seen, tz)}\t{_fmt(b.last_seen, tz)}\t"
            f"{b.sightings}\t{','.join(b.reasons)}\t{','.join(b.sites) or '-'}{handled}"
        )
    click.echo(f"{len(rows)} black trucks", err=True)


@black_trucks.command("show")
@click.argument("key")
@click.option("--device", is_flag=True, help="KEY is an unregistered device id, not a plate.")
@pass_ctx
def bt_show_cmd(mctx, key, device) -> None:
    """Show black truck KEY (a plate) with every sighting and its image reference."""
    from compliance.black_trucks import get_black_truck, plate_sightings

    tz = mctx.settings.city["timezone"]
    conn = _connect(mctx)
    try:
        b = get_black_truck(conn, key, "device" if device else "plate")
        evidence = plate_sightings(conn, key) if b and not device else []
    finally:
        conn.close()
    if b is None:
        raise click.ClickException(f"{key!r} is not on the black-truck list")
    click.echo(f"{b.key} ({b.kind}) {b.status}: {', '.join(b.reasons)}")
    click.echo(f"  seen {_fmt(b.first_seen, tz)} .. {_fmt(b.last_seen, tz)}, {b.sightings} times")
    click.echo(f"  sites: {', '.join(b.sites) or '-'}")
    if b.status == "handled":
        click.echo(f"  handled by {b.handled_by} at {_fmt(b.handled_at, tz)}: {b.handled_note}")
    for e in evidence:
        flag = " LOW-CONFIDENCE" if e.low_confidence else ""
        click.echo(
            f"  {_fmt(e.seen_at, tz)}\t{e.camera_id}\t{e.site_id or '-'}\t{e.outcome}{flag}\t"
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
    from compliance.black_trucks import handle_black_truck

    conn = _connect(mctx)
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


# ----------------------------------------------------------------------- violations


@click.group()
def violations() -> None:
    """Violations found by the rules: list, show the evidence, review."""


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
    conn = _connect(mctx)
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
            f"{r.id:>7}  {_fmt(r.started_at, tz)}  {_fmt(r.ended_at, tz):19}  {r.plate:9}  "
            f"{r.kind:19} {r.severity:7} {r.status:11} {worst}"
        )
    if not rows:
        click.echo("no violations match")


@violations.command("show")
@click.argument("violation_id", type=int)
@click.option(
    "--json", "as_json", is_flag=True, help="Print everything as JSON (evidence included)."
)
@pass_ctx
def v_show_cmd(mctx, violation_id, as_json) -> None:
    """One violation: what, where, the rule and thresholds used, legal basis, evidence, history."""
    from compliance.violations import get_violation

    conn = _connect(mctx)
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
    click.echo(f"evidence     {len(v.get('evidence') or [])} fixes (--json for all)")
    for e in events:
        click.echo(f"  {e['at']}  {e['actor']:10} {e['action']:16} {e.get('note') or ''}")


def _review(action: str):
    @pass_ctx
    def command(mctx, violation_id, note, actor, decision_no=None) -> None:
        from compliance.violations import ViolationError, change_status

        conn = _connect(mctx)
        try:
            status = change_status(
                conn,
                violation_id,
                action,
                actor or getpass.getuser(),
                note=note,
                decision_no=decision_no,
            )
        except ViolationError as exc:
            raise click.ClickException(str(exc)) from None
        finally:
            conn.close()
        click.echo(f"violation {violation_id}: {status}")

    return command


for _action, _help in (
    ("confirm", "Confirm a new violation after reviewing its evidence."),
    ("dismiss", "Dismiss a violation; --note gives the reason (required)."),
    ("open-case", "Open a case for a confirmed violation; --decision-no is required."),
    ("close", "Close the case of a violation."),
):
    _cmd = _review(_action.replace("-", "_"))
    _cmd.__doc__ = _help
    _cmd = click.option("--by", "actor", help="Who acts; default: the current user name.")(_cmd)
    _cmd = click.option(
        "--note", help="A note recorded with the change (the reason, for dismiss)."
    )(_cmd)
    if _action == "open-case":
        _cmd = click.option(
            "--decision-no", help="Penalty decision document number (行政处罚决定书文号)."
        )(_cmd)
    _cmd = click.argument("violation_id", type=int)(_cmd)
    violations.command(_action)(_cmd)
