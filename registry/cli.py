"""`muck registry ...`: bulk import and export of companies, trucks and terminal bindings,
and the empty templates with Chinese headers."""

from __future__ import annotations

import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import click

from core.clicontext import pass_ctx
from registry.tables import FORMATS, KINDS

_KIND = click.Choice(KINDS)
_FORMAT = click.Choice(FORMATS)


@click.group()
def registry() -> None:
    """Companies, trucks and terminal bindings in bulk: import, export, templates."""


@registry.command("import")
@click.argument("kind", type=_KIND)
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=_FORMAT, help="File format; by default from the extension.")
@click.option(
    "--skip-bad",
    is_flag=True,
    help="Store the good rows and report the bad ones (by default one bad row stores nothing).",
)
@click.option("--dry-run", is_flag=True, help="Check the file against the registry, store nothing.")
@pass_ctx
def import_cmd(mctx, kind: str, file: str, fmt: str | None, skip_bad: bool, dry_run: bool) -> None:
    """Import KIND (companies, trucks or terminals) from FILE: CSV (UTF-8 with or without
    BOM, or GBK as Excel saves it in China), XLSX or JSON, with the template's Chinese
    headers or the English field names.

    The whole file is checked first, and every bad row is named with its line and column.
    Re-importing updates by credit code, plate, or device id and start; each row is
    reported as created, updated or unchanged. Credit codes that fail their check character
    are stored and flagged. Import companies before trucks, trucks before terminals.
    """
    from registry.bulk import import_rows
    from registry.tables import RegistryFileError, read_rows

    try:
        data = Path(file).read_bytes()
    except OSError as exc:
        click.echo(f"error: {file}: cannot read the file: {exc.strerror or exc}", err=True)
        sys.exit(1)
    tz = ZoneInfo(mctx.settings.city["timezone"])
    conn = mctx.connect()
    try:
        rows = read_rows(kind, data, file, fmt)
        with conn.cursor() as cur:
            report = import_rows(
                cur, kind, rows, tz=tz, skip_bad=skip_bad, dry_run=dry_run, source=file
            )
        if dry_run:
            conn.rollback()
        else:
            conn.commit()
    except RegistryFileError as exc:
        conn.rollback()
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    finally:
        conn.close()
    for problem in report.flagged:
        click.echo(f"flagged: {problem}")
    for problem in report.skipped:
        click.echo(f"skipped: {problem}", err=True)
    click.echo(f"{file}: {report.summary()}")


@registry.command("export")
@click.argument("kind", type=_KIND)
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--format", "fmt", type=_FORMAT, help="File format; by default from the extension.")
@pass_ctx
def export_cmd(mctx, kind: str, file: str, fmt: str | None) -> None:
    """Write every KIND record to FILE ('-': standard output) in the form `muck registry
    import` reads back unchanged."""
    from registry.bulk import export_records
    from registry.tables import write_table

    fmt = fmt or _format_of(file)
    tz = ZoneInfo(mctx.settings.city["timezone"])
    conn = mctx.connect()
    try:
        with conn.cursor() as cur:
            records = export_records(cur, kind, tz)
        conn.rollback()
    finally:
        conn.close()
    _write(file, write_table(kind, records, fmt))
    if file != "-":
        click.echo(f"{file}: {len(records)} {kind}")


@registry.command("template")
@click.argument("kind", type=_KIND)
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--format", "fmt", type=_FORMAT, help="File format; by default from the extension.")
def template_cmd(kind: str, file: str, fmt: str | None) -> None:
    """Write an empty KIND file with the Chinese headers (XLSX: with a sheet explaining every
    column) to FILE."""
    from registry.tables import template

    _write(file, template(kind, fmt or _format_of(file)))


def _format_of(file: str) -> str:
    suffix = Path(file).suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        raise click.BadParameter(
            f"cannot tell the format of {file!r}: give --format {'|'.join(FORMATS)}"
        )
    return suffix


def _write(file: str, data: bytes) -> None:
    if file == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        Path(file).write_bytes(data)
