"""`muck evidence ...`: verify, show and pack the evidence of violations."""

from __future__ import annotations

import getpass
import json
from pathlib import Path

import click

from core.clicontext import format_time, pass_ctx


@click.group("evidence")
def evidence() -> None:
    """Evidence of violations: verify the checksums, show a record, write its PDF pack."""


@evidence.command("verify")
@click.argument("violation_id", type=int, required=False)
@click.option("--all", "every", is_flag=True, help="Verify every record of every violation.")
@pass_ctx
def verify_cmd(mctx, violation_id, every) -> None:
    """Recompute the SHA-256 of the evidence of VIOLATION_ID (every version), or of every
    record with --all; exits 1 when any record does not match."""
    from evidence.integrity import verify

    if (violation_id is None) == (not every):
        raise click.UsageError("give a violation id or --all (not both)")
    conn = mctx.connect()
    try:
        checked, findings = verify(conn, None if every else violation_id)
    finally:
        conn.close()
    if not every and checked == 0:
        raise click.ClickException(f"violation {violation_id} has no evidence records")
    for f in findings:
        click.echo(
            f"MISMATCH violation {f.violation_id} record {f.record_id} (version {f.version}): "
            f"{f.problem}",
            err=True,
        )
    click.echo(f"checked {checked} evidence record(s): {len(findings)} mismatch(es)")
    if findings:
        raise SystemExit(1)


@evidence.command("show")
@click.argument("violation_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the whole record as JSON.")
@pass_ctx
def show_cmd(mctx, violation_id, as_json) -> None:
    """The current evidence of VIOLATION_ID: summary (or --json), checksum, audit trail."""
    from evidence.content import as_dict
    from evidence.store import audit_trail, current_record

    tz = mctx.settings.city["timezone"]
    conn = mctx.connect()
    try:
        with conn.cursor() as cur:
            record = current_record(cur, violation_id)
            trail = audit_trail(cur, violation_id)
        conn.rollback()
    finally:
        conn.close()
    if record is None:
        raise click.ClickException(f"violation {violation_id} has no evidence yet")
    e = record.evidence
    if as_json:
        body = {"record_id": record.id, "version": record.version, "sha256": record.sha256}
        click.echo(json.dumps({**body, "evidence": as_dict(e)}, ensure_ascii=False, indent=2))
        return
    f = e.facts
    click.echo(f"violation    {f.violation_id} {f.kind}/{f.stream} {f.plate} {f.company or ''}")
    click.echo(
        f"episode      {format_time(f.started_at, tz)} .. {format_time(f.ended_at, tz)} ({tz})"
    )
    click.echo(
        f"record       {record.id} version {record.version} "
        f"{'final' if record.final else 'provisional'}, captured "
        f"{format_time(record.captured_at, tz)}"
    )
    click.echo(f"sha256       {record.sha256}")
    click.echo(f"fixes        {len(e.fixes)}{' (truncated)' if e.truncated else ''}")
    click.echo(f"zones        {', '.join(z.code for z in e.zones) or '-'}")
    click.echo(f"permits      {', '.join(p.number for p in e.permits) or '-'}")
    click.echo(f"terminals    {', '.join(t.device_id for t in e.terminals) or '-'}")
    click.echo(f"sightings    {len(e.sightings)}")
    m = e.measured
    click.echo(f"measured     {m.worst_value} {m.unit} vs {json.dumps(e.rule.thresholds)}")
    click.echo(f"legal basis  {e.rule.legal_basis}")
    for row in trail:
        click.echo(f"  {format_time(row['at'], tz)} {row['actor']:<12} {row['action']}")


@evidence.command("pack")
@click.argument("violation_id", type=int)
@click.option("--out", "out", type=click.Path(dir_okay=False), required=True, help="PDF file.")
@pass_ctx
def pack_cmd(mctx, violation_id, out) -> None:
    """Write the evidence pack (PDF) of VIOLATION_ID; the export is audited."""
    from evidence.pack import NoEvidence, export_pdf

    conn = mctx.connect()
    try:
        pdf = export_pdf(conn, mctx.settings, violation_id, f"cli:{getpass.getuser()}", "cli")
    except NoEvidence as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        conn.close()
    Path(out).write_bytes(pdf)
    click.echo(f"wrote {out} ({len(pdf)} bytes)")
