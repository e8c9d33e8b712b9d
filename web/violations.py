"""Violations for supervisors and enforcement officers: the filtered list (counts by kind,
sort, pages), one violation with its evidence, review actions, and CSV/XLSX exports; the
evidence packs (PDF, and a ZIP of packs for the filtered list; evidence/pack.py).

Review actions go through `compliance.violations.change_status` (it checks transitions and
writes violation_events); the audit_log row is written first in the same transaction, so
both commit together or not at all.
"""

from __future__ import annotations

import csv
import datetime as dt
import io

import msgspec
import numpy as np
from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import force_locale
from flask_babel import gettext as _
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import HiddenField, StringField
from wtforms.validators import Length, Optional

from compliance.violations import (
    CASE_MOVES,
    KINDS,
    STATUSES,
    TRANSITIONS,
    ViolationError,
    change_status,
    get_violation,
)
from credit.cases import (
    CaseError,
    case_of_violation,
    close_case_of_violation,
    open_case_for_violation,
)
from evidence.pack import NoEvidence, export_pdf, export_zip
from evidence.store import page_evidence
from geofence.coords import from_wgs84
from web import violation_queries as vq
from web.audit import record
from web.auth import require
from web.db import get_db, get_read_db
from web.livemap import map_config
from web.params import city_tz, page_args, settings
from web.times import local_time, zone_label

bp = Blueprint("violations", __name__, url_prefix="/violations")

EXPORT_MAX_ROWS = 100_000


class ActionForm(FlaskForm):
    action = HiddenField()
    note = StringField(validators=[Optional(), Length(max=2000)])
    decision_no = StringField(validators=[Optional(), Length(max=200)])


def export_max_rows() -> int:
    return int(current_app.config.get("MUCK_EXPORT_MAX_ROWS", EXPORT_MAX_ROWS))


def apply_action(
    conn, violation_id: int, action: str, note: str | None, decision_no: str | None
) -> str:
    """Run one review action as the current user, audited. Raises ViolationError (refused:
    the message says why) or LookupError (no such violation). `open_case` and `close` go
    through a case (credit/cases.py): `open_case` makes a one-violation case decided with the
    number given, `close` closes the violation's case."""
    note = (note or "").strip() or None
    decision_no = (decision_no or "").strip() or None
    if action not in TRANSITIONS:
        raise ViolationError(f"unknown action {action!r}; expected one of {', '.join(TRANSITIONS)}")
    try:
        with conn.cursor() as cur:
            before = vq.violation_status(cur, violation_id, lock=True)
            if before is None:
                raise LookupError(f"no violation {violation_id}")
            in_case = case_of_violation(cur, violation_id)
            if action == "dismiss" and in_case is not None:
                raise ViolationError(
                    f"cannot dismiss violation {violation_id}: it is in case {in_case.case_no} "
                    f"({in_case.status}); withdraw the case first"
                )
            target = TRANSITIONS[action][1]
            after = {"status": target, "decision_no": decision_no or before["decision_no"]}
            record(
                cur,
                f"violation.{action}",
                "violations",
                violation_id,
                before,
                {**after, "note": note},
            )
            if action in CASE_MOVES:
                user = current_user.username
                if action == "open_case":
                    open_case_for_violation(cur, settings(), violation_id, user, decision_no, note)
                else:
                    close_case_of_violation(cur, violation_id, user, note)
                conn.commit()
                return target
        # change_status re-reads the row (locked above, same transaction), checks the
        # transition, records the violation_event and commits the audit row with it.
        return change_status(conn, violation_id, action, current_user.username, note=note)
    except CaseError as exc:
        conn.rollback()
        raise ViolationError(str(exc)) from None
    except BaseException:
        conn.rollback()
        raise


# ---- list ---------------------------------------------------------------------------------


@bp.route("/")
@require("violations")
def index():
    page = page_args()
    rows, counts = [], vq.Counts(0, {}, set())
    with get_read_db().cursor() as cur:
        f, errors = vq.parse_filters(request.args, cur)
        vq.check_offset(page.offset, errors)
        district_choices = vq.districts(cur)
        if not errors:
            counts = vq.count_by_kind(cur, f)
            rows = vq.list_page(cur, f, limit=page.per_page, offset=page.offset)
    get_read_db().rollback()
    html = render_template(
        "violations/list.html",
        f=f,
        errors=errors,
        rows=rows,
        total=counts.total,
        exact=counts.exact,
        by_kind=counts.by_kind,
        capped=counts.capped,
        page=page,
        kinds=KINDS,
        statuses=STATUSES,
        severities=vq.SEVERITIES,
        sorts=tuple(vq.SORTS),
        labels=_labels(),
        district_choices=district_choices,
    )
    return html, (400 if errors else 200)


def _labels() -> dict:
    return {
        "kind": vq.KIND_LABELS,
        "status": vq.STATUS_LABELS,
        "severity": vq.SEVERITY_LABELS,
        "action": vq.ACTION_LABELS,
    }


# ---- one violation ------------------------------------------------------------------------


def _evidence_view(violation: dict, page) -> dict:
    """The evidence fixes for the table (local time) and the map (tiles' CRS), with the
    indices of the first and last fix inside the episode; `page`: evidence.store.PageEvidence
    (the frozen record once final, else the fixes straight from positions)."""
    fixes = [msgspec.to_builtins(fx) for fx in page.fixes]
    end = violation.get("ended_at")
    times = [dt.datetime.fromisoformat(fx["t"]) for fx in fixes]
    inside = [i for i, fx in enumerate(fixes) if fx["in_episode"]]
    crs = settings()["web"]["tile_crs"]
    lons = [fx.get("lon") for fx in fixes]
    lats = [fx.get("lat") for fx in fixes]
    if fixes and crs != "wgs84":
        lon, lat = from_wgs84(np.asarray(lons, float), np.asarray(lats, float), crs)
        lons, lats = lon.round(7).tolist(), lat.round(7).tolist()
    record = page.record if page.final else None
    return {
        "rows": [{**fx, "local": local_time(t)} for fx, t in zip(fixes, times, strict=True)],
        "final": page.final,
        "due": local_time(page.final_due_at) if page.final_due_at else None,
        # due and still not final: the capture job (muck collect) is behind or not running
        "overdue": page.final_due_at is not None
        and page.final_due_at < dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1),
        "record": record,
        "captured": local_time(record.captured_at) if record else None,
        "map": {
            "lat": lats,
            "lon": lons,
            "start": inside[0] if inside else None,
            "end": inside[-1] if inside and end is not None else None,
            "crs": crs,
        },
    }


@bp.route("/<int:violation_id>", methods=["GET"])
@require("violations")
def show(violation_id: int):
    return _show(violation_id)


def _show(violation_id: int, form_errors: dict | None = None, status: int = 200):
    conn = get_db()
    found = get_violation(conn, violation_id)
    if found is None:
        abort(404, description=f"no violation {violation_id}")
    violation, events = found
    with conn.cursor() as cur:
        district = vq.district_name(cur, violation.get("district_code")) or vq.zone_district(
            cur, violation.get("zone_code")
        )
        page = page_evidence(cur, settings(), violation)
        in_case = case_of_violation(cur, violation_id)
    conn.rollback()
    evidence = _evidence_view(violation, page)
    available = [a for a, (src, _t) in TRANSITIONS.items() if violation["status"] in src]
    return (
        render_template(
            "violations/show.html",
            v=violation,
            events=events,
            district=district,
            evidence=evidence,
            available=available,
            all_actions=tuple(TRANSITIONS),
            form=ActionForm(),
            form_errors=form_errors or {},
            in_case=in_case,
            labels=_labels(),
            config=map_config(),
        ),
        status,
    )


@bp.route("/<int:violation_id>/action", methods=["POST"])
@require("enforce")
def action(violation_id: int):
    form = ActionForm()
    if not form.validate_on_submit():
        if form.errors.get("csrf_token"):
            abort(400, description="missing or bad CSRF token")
        name = next(iter(form.errors))
        return _show(violation_id, {"_": f"{name}: {form.errors[name][0]}"}, 400)
    act = form.action.data or ""
    try:
        target = apply_action(get_db(), violation_id, act, form.note.data, form.decision_no.data)
    except LookupError:
        abort(404, description=f"no violation {violation_id}")
    except ViolationError as exc:
        return _show(violation_id, {act if act in TRANSITIONS else "_": str(exc)}, 400)
    flash(
        _("Violation %(id)s: %(status)s.", id=violation_id, status=vq.STATUS_LABELS[target]), "ok"
    )
    return redirect(url_for("violations.show", violation_id=violation_id))


# ---- exports ------------------------------------------------------------------------------

EXPORT_HEADERS = {
    "id": "编号",
    "started_at": "开始时间",
    "ended_at": "结束时间",
    "plate": "车牌号码",
    "company": "运输企业",
    "credit_code": "统一社会信用代码",
    "kind": "违规类型",
    "severity": "严重程度",
    "status": "状态",
    "zone_code": "区域编码",
    "district": "行政区",
    "worst_value": "最严重值",
    "worst_unit": "单位",
    "points": "记分",
    "permit_no": "核准编号",
    "decision_no": "行政处罚决定书文号",
    "legal_basis": "处罚依据",
    "lat": "纬度",
    "lon": "经度",
    "truck_id": "车辆编号",
    "company_id": "企业编号",
}


def _export_table():
    """(headers, rows) of the filtered list, or a redirect back with the message."""
    limit = export_max_rows()
    with get_read_db().cursor() as cur:
        f, errors = vq.parse_filters(request.args, cur)
        if errors:
            get_read_db().rollback()
            abort(400, description="; ".join(errors.values()))
        rows = vq.export_rows(cur, f, limit=limit)
    get_read_db().rollback()
    if len(rows) > limit:
        flash(
            _(
                "More than %(n)s violations match: narrow the filter (e.g. a shorter time "
                "range) and export again.",
                n=f"{limit:,}",
            ),
            "error",
        )
        args = {k: v for k, v in request.args.items() if v}
        return None, redirect(url_for("violations.index", **args))
    columns = list(EXPORT_HEADERS)
    out = []
    with force_locale("zh"):
        for row in rows:
            values = []
            for col in columns:
                value = row[col]
                if col in ("started_at", "ended_at"):
                    value = local_time(value, label=False)  # the header names the zone
                elif col == "kind":
                    value = str(vq.KIND_LABELS.get(value, value))
                elif col == "status":
                    value = str(vq.STATUS_LABELS.get(value, value))
                elif col == "severity":
                    value = str(vq.SEVERITY_LABELS.get(value, value))
                if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
                    value = "'" + value  # never a formula in Excel
                values.append("" if value is None else value)
            out.append(values)
    _audit_export(f, len(out))
    return ([_export_header(c) for c in columns], out), None


def _export_header(column: str) -> str:
    """The Chinese header; time columns name the city zone (`开始时间 (UTC+8)`)."""
    head = EXPORT_HEADERS[column]
    return f"{head} ({zone_label()})" if column in ("started_at", "ended_at") else head


def _audit_export(f: vq.Filters, n: int) -> None:
    conn = get_db()
    with conn.cursor() as cur:
        record(
            cur,
            "violations.export",
            "violations",
            None,
            None,
            {"format": request.path.rsplit(".", 1)[-1], "rows": n, "filters": f.raw},
        )
    conn.commit()


def _filename(ext: str) -> str:
    stamp = dt.datetime.now(city_tz()).strftime("%Y%m%d-%H%M")
    return f"violations-{stamp}.{ext}"


@bp.route("/export.csv")
@require("enforce")
def export_csv():
    table, refused = _export_table()
    if refused is not None:
        return refused
    headers, rows = table
    buf = io.StringIO()
    buf.write("\ufeff")  # BOM: Excel then reads the file as UTF-8 (Chinese stays readable)
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(headers)
    writer.writerows(rows)
    return Response(
        buf.getvalue().encode("utf-8"),
        mimetype="text/csv; charset=utf-8",
        headers={"Content-Disposition": f"attachment; filename={_filename('csv')}"},
    )


@bp.route("/export.xlsx")
@require("enforce")
def export_xlsx():
    from openpyxl import Workbook

    table, refused = _export_table()
    if refused is not None:
        return refused
    headers, rows = table
    wb = Workbook(write_only=True)
    ws = wb.create_sheet("违规记录")
    ws.append(headers)
    for row in rows:
        ws.append(row)
    buf = io.BytesIO()
    wb.save(buf)
    return Response(
        buf.getvalue(),
        mimetype="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        headers={"Content-Disposition": f"attachment; filename={_filename('xlsx')}"},
    )


# ---- evidence packs -----------------------------------------------------------------------


def zip_max() -> int:
    return int(current_app.config.get("MUCK_EVIDENCE_ZIP_MAX", settings()["evidence"]["zip_max"]))


def pdf_response(violation_id: int, via: str) -> Response:
    """The evidence pack of one violation (audited); 404 when there is none yet."""
    conn = get_db()
    if get_violation(conn, violation_id) is None:
        abort(404, description=f"no violation {violation_id}")
    try:
        pdf = export_pdf(conn, settings(), violation_id, current_user.username, via)
    except NoEvidence as exc:
        abort(404, description=str(exc))
    return Response(
        pdf,
        mimetype="application/pdf",
        headers={"Content-Disposition": f"attachment; filename=evidence-{violation_id}.pdf"},
    )


def zip_ids(args) -> tuple[list[int] | None, str | None]:
    """The ids of the filtered list for a ZIP of packs, or the message saying why not."""
    limit = zip_max()
    with get_db().cursor() as cur:
        f, errors = vq.parse_filters(args, cur)
        if errors:
            get_db().rollback()
            return None, "; ".join(errors.values())
        rows = vq.export_rows(cur, f, limit=limit)
    get_db().rollback()
    if len(rows) > limit:
        return None, _(
            "More than %(n)s violations match: a ZIP of evidence packs holds at most %(n)s; "
            "narrow the filter (e.g. a shorter time range) and download again.",
            n=f"{limit:,}",
        )
    return [int(r["id"]) for r in rows], None


def zip_response(ids: list[int], via: str) -> Response:
    data, _missing = export_zip(get_db(), settings(), ids, current_user.username, via)
    stamp = dt.datetime.now(city_tz()).strftime("%Y%m%d-%H%M")
    return Response(
        data,
        mimetype="application/zip",
        headers={"Content-Disposition": f"attachment; filename=evidence-{stamp}.zip"},
    )


@bp.route("/<int:violation_id>/evidence.pdf")
@require("evidence")
def evidence_pdf(violation_id: int):
    return pdf_response(violation_id, "web")


@bp.route("/evidence.zip")
@require("evidence")
def evidence_zip():
    ids, refused = zip_ids(request.args)
    if refused is not None:
        if not current_user.can("violations"):  # a credit officer has no list to go back to
            abort(400, description=refused)
        flash(refused, "error")
        args = {k: v for k, v in request.args.items() if v}
        return redirect(url_for("violations.index", **args))
    return zip_response(ids, "web")
