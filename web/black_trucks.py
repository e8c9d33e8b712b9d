"""Black trucks (黑车): the list kept by the ANPR matcher and the unregistered-device scan,
one page per black truck with its evidence, and "mark as handled" (audited)."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import TextAreaField
from wtforms.validators import DataRequired, Length

from black_trucks.store import handle_black_truck, plate_sightings
from web import violation_queries as vq
from web.audit import record
from web.auth import require
from web.db import get_db
from web.params import page_args

bp = Blueprint("black_trucks", __name__, url_prefix="/black-trucks")


class HandleForm(FlaskForm):
    note = TextAreaField(validators=[DataRequired(), Length(max=2000)])


@bp.route("/")
@require("violations")
def index():
    params, errors = vq.black_truck_params(request.args)
    page = page_args()
    rows, total = [], 0
    if not errors:
        with get_db().cursor() as cur:
            rows, total = vq.list_black_page(cur, params, limit=page.per_page, offset=page.offset)
        get_db().rollback()
    html = render_template(
        "violations/black_list.html",
        rows=rows,
        total=total,
        page=page,
        errors=errors,
        args=request.args,
        reasons=vq.BLACK_REASON_LABELS,
    )
    return html, (400 if errors else 200)


def _show(black_id: int, form: HandleForm, status: int = 200):
    conn = get_db()
    with conn.cursor() as cur:
        bt = vq.get_black_row(cur, black_id)
        if bt is None:
            abort(404, description=f"no black truck {black_id}")
        actions = vq.black_actions(cur, black_id)
        days = vq.device_days(cur, bt["key"]) if bt["kind"] == "device" else []
    conn.rollback()
    sightings = plate_sightings(conn, bt["key"]) if bt["kind"] == "plate" else []
    return (
        render_template(
            "violations/black_show.html",
            bt=bt,
            actions=actions,
            days=days,
            sightings=sightings,
            form=form,
            reasons=vq.BLACK_REASON_LABELS,
        ),
        status,
    )


@bp.route("/<int:black_id>")
@require("violations")
def show(black_id: int):
    return _show(black_id, HandleForm())


@bp.route("/<int:black_id>/handle", methods=["POST"])
@require("enforce")
def handle(black_id: int):
    form = HandleForm()
    if not form.validate_on_submit():
        if form.errors.get("csrf_token"):
            abort(400, description="missing or bad CSRF token")
        return _show(black_id, form, 400)
    conn = get_db()
    with conn.cursor() as cur:
        before = vq.get_black_row(cur, black_id)
    if before is None:
        conn.rollback()
        abort(404, description=f"no black truck {black_id}")
    try:
        with conn.cursor() as cur:
            # Written first in the transaction that handle_black_truck commits.
            record(
                cur,
                "black_truck.handle",
                "black_trucks",
                black_id,
                {k: before[k] for k in ("kind", "key", "status", "handled_by", "handled_note")},
                {
                    "kind": before["kind"],
                    "key": before["key"],
                    "status": "handled",
                    "handled_by": current_user.username,
                    "handled_note": form.note.data.strip(),
                },
            )
        handle_black_truck(
            conn,
            before["key"],
            note=form.note.data,
            actor=current_user.username,
            kind=before["kind"],
        )
    except (ValueError, LookupError) as exc:
        conn.rollback()
        form.note.errors = [*form.note.errors, str(exc)]
        return _show(black_id, form, 400)
    flash(_("Marked as handled."), "ok")
    return redirect(url_for("black_trucks.show", black_id=black_id))
