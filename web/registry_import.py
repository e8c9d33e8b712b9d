"""Bulk registry files in the dashboard, for administrators: upload companies, trucks or
terminal bindings (CSV, XLSX, JSON), download the empty templates with Chinese headers, and
export the registry in the same formats.

`registry.bulk` checks and stores (it owns every registry write); this blueprint reads the
upload, shows every bad row on the page, and records one audit row per stored import.
"""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo

from flask import Blueprint, Response, abort, render_template, request
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import BooleanField

from registry.bulk import export_records, import_rows
from registry.tables import FORMATS, KINDS, RegistryFileError, read_rows, template, write_table
from web.audit import record
from web.auth import require
from web.db import get_db
from web.params import settings

bp = Blueprint("registry_import", __name__, url_prefix="/registry")

TITLES = {
    "companies": _l("Import companies"),
    "trucks": _l("Import trucks"),
    "terminals": _l("Import terminal bindings"),
}
_MEDIA = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "json": "application/json",
}


class RegistryUploadForm(FlaskForm):
    file = FileField(_l("File (CSV, XLSX or JSON)"), validators=[FileRequired()])
    skip_bad = BooleanField(_l("Store the good rows and list the bad ones"))
    dry_run = BooleanField(_l("Only check, store nothing"))


@bp.before_request
@require("registry")
def _admin_only():
    return None


def _format() -> str:
    fmt = request.args.get("format", "csv")
    if fmt not in FORMATS:
        abort(400, description=f"format must be one of {', '.join(FORMATS)}")
    return fmt


def _download(kind: str, fmt: str, data: bytes, stem: str) -> Response:
    return Response(
        data,
        mimetype=_MEDIA[fmt],
        headers={"Content-Disposition": f"attachment; filename={stem}-{kind}.{fmt}"},
    )


def _read_upload(upload, limit: int) -> bytes | None:
    """The uploaded bytes, or None when the file is larger than `limit`."""
    data = upload.stream.read(limit + 1)
    return None if len(data) > limit else data


def _import_page(kind: str):
    form = RegistryUploadForm()
    errors: list[str] = []
    report = None
    status = 200
    if request.method == "POST":
        if form.validate_on_submit():
            errors, report = _import(kind, form)
        status = 400 if (errors or form.errors) else 200
    return render_template(
        "registry/import.html",
        kind=kind,
        title=TITLES[kind],
        form=form,
        import_errors=errors,
        report=report,
        formats=FORMATS,
    ), status


def _import(kind: str, form):
    limit = settings()["web"]["max_upload_bytes"]
    upload = form.file.data
    name = Path(upload.filename or "upload").name[-200:]
    data = _read_upload(upload, limit)
    if data is None:
        return [_("The file is larger than %(n)s bytes.", n=limit)], None
    tz = ZoneInfo(settings().city["timezone"])
    conn = get_db()
    try:
        rows = read_rows(kind, data, name)
        with conn.cursor() as cur:
            report = import_rows(
                cur,
                kind,
                rows,
                tz=tz,
                skip_bad=form.skip_bad.data,
                dry_run=form.dry_run.data,
                source=name,
            )
            if not form.dry_run.data:
                record(
                    cur,
                    f"{kind}.import",
                    kind,
                    None,
                    None,
                    {
                        "file": name,
                        "created": report.created,
                        "updated": report.updated,
                        "unchanged": report.unchanged,
                        "skipped": report.skipped,
                        "flagged": report.flagged,
                    },
                )
    except RegistryFileError as exc:
        conn.rollback()
        return exc.errors, None
    if form.dry_run.data:
        conn.rollback()
    else:
        conn.commit()
    return [], report


def _template(kind: str):
    fmt = _format()
    return _download(kind, fmt, template(kind, fmt), "template")


def _export(kind: str):
    fmt = _format()
    tz = ZoneInfo(settings().city["timezone"])
    with get_db().cursor() as cur:
        records = export_records(cur, kind, tz)
    get_db().rollback()
    return _download(kind, fmt, write_table(kind, records, fmt), "registry")


# One rule per kind (not a <kind> converter), so that every page is a plain address in the
# route list the role tests walk.
for _kind in KINDS:
    bp.add_url_rule(
        f"/{_kind}/import",
        f"import_{_kind}",
        lambda kind=_kind: _import_page(kind),
        methods=["GET", "POST"],
    )
    bp.add_url_rule(f"/{_kind}/template", f"template_{_kind}", lambda kind=_kind: _template(kind))
    bp.add_url_rule(f"/{_kind}/export", f"export_{_kind}", lambda kind=_kind: _export(kind))
