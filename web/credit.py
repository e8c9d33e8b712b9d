"""Credit pages: the overview (companies ranked by score with a sparkline, the lists, the
sign-offs waiting), a company's page (its score history and every deduction explained,
cases, violations, trucks, permits, list entries), the list actions of credit officers, the
listing notice (PDF) and the export page. Charts are inline SVG drawn here: no script, no CDN.

Who may do what (web/users.py): everyone who supervises reads (`credit`); credit officers and
admins sign off, reject and remove entries and issue notices (`credit_signoff`), and export
(`credit_export`).
"""

from __future__ import annotations

import datetime as dt

from flask import Blueprint, Response, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from markupsafe import Markup, escape

from credit import exports as credit_exports
from credit import lists as credit_lists
from credit.list_notice import notice_pdf
from credit.scoring import (
    Scheme,
    SchemeError,
    company_standings,
    load_cases,
    score_history,
    score_subject,
)
from web.audit import record
from web.auth import require
from web.db import get_db
from web.params import settings
from web.violation_queries import KIND_LABELS

bp = Blueprint("credit", __name__, url_prefix="/credit")
ENTRY_STATUS = {
    "pending": _l("awaiting sign-off"),
    "active": _l("in force"),
    "rejected": _l("not listed"),
    "removed": _l("removed"),
}


def sparkline(points: list[int], base: int, width: int = 120, height: int = 24) -> Markup:
    """A score trend as a small inline SVG polyline (0 at the bottom, `base` at the top)."""
    if not points:
        return Markup("")
    step = width / max(len(points) - 1, 1)
    coords = " ".join(
        f"{i * step:.1f},{height - 2 - (height - 4) * max(p, 0) / base:.1f}"
        for i, p in enumerate(points)
    )
    colour = "#c62828" if points[-1] < points[0] else "#2e7d32"
    return Markup(
        f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{escape(_("Score trend"))}">'
        f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{coords}"/></svg>'
    )


def history_chart(history: list[tuple[dt.date, int]], base: int, thresholds: dict) -> Markup:
    """The score over the cycle so far, with the list thresholds as dashed lines."""
    width, height, left, bottom = 640, 200, 36, 22
    if not history:
        return Markup("")
    plot_w, plot_h = width - left - 8, height - bottom - 8
    step = plot_w / max(len(history) - 1, 1)

    def y(points: float) -> float:
        return 8 + plot_h * (1 - max(points, 0) / base)

    parts = [
        f'<svg class="chart" id="score-chart" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(_("Score history"))}">'
    ]
    for value in (0, base // 2, base):
        parts.append(
            f'<text x="{left - 4}" y="{y(value) + 4:.1f}" font-size="10" text-anchor="end">{value}</text>'
            f'<line x1="{left}" x2="{width - 8}" y1="{y(value):.1f}" y2="{y(value):.1f}" stroke="#eee"/>'
        )
    colours = {"watch": "#f9a825", "red": "#c62828", "black": "#000"}
    for name in ("watch", "red", "black"):
        value = thresholds.get(name)
        if value is not None:
            parts.append(
                f'<line x1="{left}" x2="{width - 8}" y1="{y(value):.1f}" y2="{y(value):.1f}" '
                f'stroke="{colours[name]}" stroke-dasharray="4 3"/>'
            )
    coords = " ".join(f"{left + i * step:.1f},{y(p):.1f}" for i, (_d, p) in enumerate(history))
    parts.append(f'<polyline fill="none" stroke="#1565c0" stroke-width="2" points="{coords}"/>')
    for i in (0, len(history) - 1):
        anchor = "start" if i == 0 else "end"
        parts.append(
            f'<text x="{left + i * step:.1f}" y="{height - 6}" font-size="10" '
            f'text-anchor="{anchor}">{history[i][0].isoformat()}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


@bp.route("/")
@require("credit")
def index():
    conn = get_db()
    standings = company_standings(conn, settings(), history_days=30)
    base = settings()["credit"]["base_points"]
    in_force = credit_lists.list_entries(conn, status="active")
    pending = credit_lists.list_entries(conn, status="pending")
    with conn.cursor() as cur:
        flags = credit_lists.flagged(cur)
    conn.rollback()
    return render_template(
        "credit/index.html",
        standings=standings,
        sparkline=lambda s: sparkline([p for _d, p in s.history], base),
        flags=flags["companies"],
        in_force=in_force,
        pending=pending,
        lists=credit_lists.LIST_TYPES,
        can_signoff=current_user.can("credit_signoff"),
        demo=any(s.demo for s in standings) or any(e["demo"] for e in in_force + pending),
    )


def _as_of_arg(scheme: Scheme):
    text = (request.args.get("at") or "").strip()
    if not text:
        return None, None
    try:
        return scheme.end_of_day(dt.date.fromisoformat(text)), None
    except ValueError:
        return None, _("%(value)s is not a date (YYYY-MM-DD).", value=text)


@bp.route("/companies/<int:company_id>")
@require("credit")
def company(company_id: int):
    conn = get_db()
    cfg = settings()
    try:
        scheme = Scheme.from_settings(cfg)
    except SchemeError as exc:
        abort(500, description=str(exc))
    with conn.cursor() as cur:
        cur.execute(
            """SELECT id, name, credit_code, credit_code_valid, legal_representative, active
               FROM companies WHERE id = %s""",
            (company_id,),
        )
        row = cur.fetchone()
        if row is None:
            conn.rollback()
            abort(404, description=f"no company {company_id}")
        info = dict(
            zip(
                ("id", "name", "credit_code", "valid", "legal_representative", "active"),
                row,
                strict=True,
            )
        )
        cases = load_cases(cur, company_id=company_id)
        cur.execute(
            """SELECT id, case_no, status, decision_no, decision_date, penalty_category,
                      fine_yuan, withdrawn_reason, demo
               FROM credit_cases WHERE company_id = %s ORDER BY created_at DESC, id DESC""",
            (company_id,),
        )
        all_cases = cur.fetchall()
        cur.execute(
            """SELECT v.id, t.plate, v.kind, v.started_at, v.status, v.severity
               FROM violations v JOIN trucks t ON t.id = v.truck_id
               WHERE v.company_id = %s ORDER BY v.started_at DESC, v.id DESC LIMIT 50""",
            (company_id,),
        )
        violations = cur.fetchall()
        cur.execute(
            "SELECT id, plate, active FROM trucks WHERE company_id = %s ORDER BY plate",
            (company_id,),
        )
        trucks = cur.fetchall()
        cur.execute(
            """SELECT number, valid_from, valid_to, status FROM permits WHERE company_id = %s
               ORDER BY valid_from DESC, number""",
            (company_id,),
        )
        permits = cur.fetchall()
        cur.execute(
            """SELECT permit_no, message, at FROM credit_permit_warnings WHERE company_id = %s
               ORDER BY at DESC LIMIT 20""",
            (company_id,),
        )
        permit_warnings = cur.fetchall()
        flags = credit_lists.flagged(cur)
    conn.rollback()
    as_of, error = _as_of_arg(scheme)
    now = dt.datetime.now(dt.UTC)
    score = score_subject(scheme, cases, "company", company_id, as_of or now)
    today = scheme.local_day(now)
    start, _end = scheme.cycle_of(today)
    days = [start + dt.timedelta(days=n) for n in range((today - start).days + 1)]
    history = score_history(scheme, cases, "company", str(company_id), days)
    truck_scores = {}
    if scheme.score_trucks:
        for tid, _plate, _active in trucks:
            truck_scores[tid] = score_subject(scheme, cases, "truck", tid, as_of or now).score
    entries = credit_lists.list_entries(conn, company_id=company_id)
    thresholds = cfg["credit"]["thresholds"]
    html = render_template(
        "credit/company.html",
        c=info,
        score=score,
        as_of_text=request.args.get("at", ""),
        error=error,
        chart=history_chart(history, scheme.base_points, thresholds),
        cases=all_cases,
        violations=violations,
        trucks=trucks,
        truck_scores=truck_scores,
        truck_flags=flags["trucks"],
        company_flag=flags["companies"].get(company_id),
        permits=permits,
        permit_warnings=permit_warnings,
        entries=entries,
        entry_status=ENTRY_STATUS,
        kind_labels=KIND_LABELS,
        can_signoff=current_user.can("credit_signoff"),
        demo=any(c.demo for c in cases),
    )
    return html, (400 if error else 200)


def _back(default: str):
    target = request.form.get("next") or ""
    return redirect(target if target.startswith("/credit/") else default)


@bp.route("/lists/<int:entry_id>/<action>", methods=["POST"])
@require("credit_signoff")
def list_action(entry_id: int, action: str):
    if action not in ("sign-off", "reject", "remove"):
        abort(404)
    conn = get_db()
    note = (request.form.get("note") or "").strip()
    before = {e["id"]: e for e in credit_lists.list_entries(conn)}.get(entry_id)
    if before is None:
        abort(404, description=f"no list entry {entry_id}")
    try:
        if action == "sign-off":
            credit_lists.sign_off(conn, settings(), entry_id, current_user.username, note or None)
        elif action == "reject":
            credit_lists.reject(conn, entry_id, current_user.username, note)
        else:
            credit_lists.remove(
                conn,
                settings(),
                entry_id,
                current_user.username,
                request.form.get("reason", ""),
                note,
            )
    except credit_lists.ListError as exc:
        flash(str(exc), "error")
        return _back(url_for("credit.index")), 303
    with conn.cursor() as cur:
        record(
            cur,
            f"credit_list.{action.replace('-', '_')}",
            "credit_list_entries",
            entry_id,
            {"status": before["status"]},
            {"note": note} if note else None,
        )
    conn.commit()
    flash(_("Done."), "ok")
    return _back(url_for("credit.index")), 303


@bp.route("/lists/<int:entry_id>/notice.pdf")
@require("credit_signoff")
def notice(entry_id: int):
    conn = get_db()
    data = notice_pdf(conn, settings(), entry_id)
    if data is None:
        abort(404, description=f"no list entry {entry_id}")
    with conn.cursor() as cur:
        record(cur, "credit_list.notice", "credit_list_entries", entry_id, None, None)
    conn.commit()
    return Response(
        data,
        mimetype="application/pdf",
        headers={"Content-Disposition": f'inline; filename="list-notice-{entry_id}.pdf"'},
    )


_MIMES = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "json": "application/json; charset=utf-8",
}


def _download(rec, data: bytes) -> Response:
    return Response(
        data,
        mimetype=_MIMES[rec.format],
        headers={
            "Content-Disposition": f'attachment; filename="{rec.filename}"',
            "X-Content-SHA256": rec.sha256,
        },
    )


@bp.route("/exports", methods=["GET", "POST"])
@require("credit_export")
def exports_page():
    conn = get_db()
    errors = []
    today = dt.date.today()
    form = {
        "kind": request.values.get("kind", "penalties"),
        "from": request.values.get("from", today.replace(month=1, day=1).isoformat()),
        "to": request.values.get("to", today.isoformat()),
        "format": request.values.get("format", "xlsx"),
    }
    if request.method == "POST":
        try:
            start = dt.date.fromisoformat(form["from"])
            end = dt.date.fromisoformat(form["to"])
        except ValueError:
            errors.append(_("From and to must be dates (YYYY-MM-DD)."))
        if not errors:
            try:
                rec, data = credit_exports.export(
                    conn,
                    settings(),
                    form["kind"],
                    start,
                    end,
                    form["format"],
                    current_user.username,
                    via="web",
                )
            except credit_exports.ExportError as exc:
                errors.append(str(exc))
            else:
                with conn.cursor() as cur:
                    record(
                        cur,
                        "credit_export.create",
                        "credit_exports",
                        rec.id,
                        None,
                        {
                            "kind": rec.kind,
                            "format": rec.format,
                            "filter": rec.filter,
                            "rows": rec.row_count,
                            "sha256": rec.sha256,
                        },
                    )
                conn.commit()
                return _download(rec, data)
    html = render_template(
        "credit/exports.html",
        form=form,
        errors=errors,
        exports=credit_exports.list_exports(conn),
    )
    return html, (400 if errors else 200)


@bp.route("/exports/<int:export_id>/download")
@require("credit_export")
def download(export_id: int):
    conn = get_db()
    try:
        found = credit_exports.fetch_export(conn, export_id)
    except credit_exports.ExportTampered as exc:
        abort(409, description=str(exc))
    if found is None:
        abort(404, description=f"no export {export_id}")
    rec, data = found
    with conn.cursor() as cur:
        record(
            cur, "credit_export.download", "credit_exports", export_id, None, {"sha256": rec.sha256}
        )
    conn.commit()
    return _download(rec, data)
