"""`muck permits ...`: import, list, show and revoke disposal permits."""

from __future__ import annotations

import json
import sys

import click

from core.clicontext import format_time, parse_time, pass_ctx


def _hours(windows: list[dict]) -> str:
    if not windows:
        return "any time"
    parts = []
    for w in windows:
        days = w.get("days")
        label = "" if days in (None, [1, 2, 3, 4, 5, 6, 7]) else f" days {','.join(map(str, days))}"
        parts.append(f"{w['start']}-{w['end']}{label}")
    return "; ".join(parts)


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
    from permits.io import PermitImportError, read_permits_file
    from permits.store import import_permits

    try:
        records = read_permits_file(file, fmt)
    except PermitImportError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    conn = mctx.connect()
    try:
        if dry_run:
            from permits.store import resolve_records

            with conn.cursor() as cur:
                _, errors = resolve_records(cur, records)
            conn.rollback()
            if errors:
                raise PermitImportError(errors, file)
            click.echo(f"{file}: {len(records)} valid permits; nothing stored (--dry-run)")
            return
        counts = import_permits(conn, records, source=file)
        # The permits are stored: what the hooks say (credit: a blacklisted company) is a
        # warning next to them, never a reason to refuse the file.
        try:
            for warning in mctx.run_hooks(
                "permits.imported", conn, [r.number for r in records], source=file
            ):
                click.echo(warning, err=True)
        except Exception as exc:  # noqa: BLE001 - the permits are stored; say the check failed
            conn.rollback()
            click.echo(f"warning: {file}: the checks after the import failed: {exc}", err=True)
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
    from permits.store import list_permits

    tz = mctx.settings.city["timezone"]
    when = parse_time(valid_at, tz) if valid_at else None
    conn = mctx.connect()
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
    from permits.store import get_permit

    tz = mctx.settings.city["timezone"]
    conn = mctx.connect()
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
        ("status changed", format_time(p.status_changed_at, tz)),
        ("company", f"{p.company} ({p.company_credit_code or 'no credit code'})"),
        ("trucks", ", ".join(p.plates) or "-"),
        ("origin site", p.origin_site),
        ("disposal sites", ", ".join(p.disposal_sites)),
        ("routes", ", ".join(p.routes) or "-"),
        ("operating hours", _hours(p.operating_hours)),
        ("valid", f"{p.valid_from} .. {p.valid_to} (local dates, inclusive)"),
        ("authority", p.authority or "-"),
        ("note", p.note or "-"),
        ("created", format_time(p.created_at, tz)),
        ("updated", format_time(p.updated_at, tz)),
    ]
    for label, value in lines:
        click.echo(f"{label:>16}: {value}")


@permits.command("revoke")
@click.argument("number")
@click.option("--reason", required=True, help="Why the permit is revoked (recorded).")
@pass_ctx
def revoke_cmd(mctx, number, reason) -> None:
    """Revoke permit NUMBER: it is never valid again (re-imports keep the status)."""
    from permits.io import PermitError
    from permits.store import revoke_permit

    conn = mctx.connect()
    try:
        p = revoke_permit(conn, number, reason)
    except PermitError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        conn.close()
    click.echo(f"permit {p.number} revoked: {p.status_reason}")
