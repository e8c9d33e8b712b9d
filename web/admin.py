"""Administrator pages: dashboard users and the audit log."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user

from web.auth import require
from web.db import get_db
from web.forms import ConfirmForm, UserForm
from web.params import page_args
from web.users import UserError, create_user, force_password_reset, set_user_active

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.before_request
@require("users")
def _admin_only():
    return None


@bp.route("/users", methods=["GET", "POST"])
def users():
    form = UserForm()
    conn = get_db()
    status = 200
    if request.method == "POST":
        if form.validate_on_submit():
            try:
                with conn.cursor() as cur:
                    create_user(
                        cur,
                        form.username.data,
                        form.password.data,
                        form.role.data,
                        display_name=form.display_name.data or None,
                    )
                conn.commit()
                flash(_("User created."), "ok")
                return redirect(url_for("admin.users"))
            except UserError as exc:
                conn.rollback()
                form.username.errors.append(str(exc))
        status = 400
    with conn.cursor() as cur:
        cur.execute("""SELECT id, username, display_name, role, active, last_login_at
                       FROM web_users ORDER BY username""")
        rows = cur.fetchall()
    return render_template("admin/users.html", rows=rows, form=form, confirm=ConfirmForm()), status


@bp.route("/users/<int:user_id>/active", methods=["POST"])
def user_active(user_id: int):
    if not ConfirmForm().validate_on_submit():
        abort(400, description="missing or bad CSRF token")
    active = request.form.get("active") == "1"
    if user_id == current_user.id and not active:
        flash(_("You cannot deactivate yourself."), "error")
        return redirect(url_for("admin.users"))
    conn = get_db()
    with conn.cursor() as cur:
        user = set_user_active(cur, user_id, active)
    conn.commit()
    if user is None:
        abort(404, description=f"no user {user_id}")
    flash(_("Activated.") if active else _("Deactivated."), "ok")
    return redirect(url_for("admin.users"))


@bp.route("/users/<int:user_id>/force-reset", methods=["POST"])
def user_force_reset(user_id: int):
    """The user must choose a new password before opening any other page."""
    if not ConfirmForm().validate_on_submit():
        abort(400, description="missing or bad CSRF token")
    conn = get_db()
    with conn.cursor() as cur:
        user = force_password_reset(cur, user_id)
    conn.commit()
    if user is None:
        abort(404, description=f"no user {user_id}")
    flash(_("%(user)s must choose a new password.", user=user.username), "ok")
    return redirect(url_for("admin.users"))


@bp.route("/audit")
def audit():
    page = page_args()
    entity = (request.args.get("entity") or "").strip()
    with get_db().cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM audit_log WHERE (%s = '' OR entity = %s)", (entity, entity)
        )
        total = cur.fetchone()[0]
        cur.execute(
            """SELECT at, username, action, entity, entity_id, before, after, remote_addr
               FROM audit_log WHERE (%s = '' OR entity = %s)
               ORDER BY at DESC, id DESC LIMIT %s OFFSET %s""",
            (entity, entity, page.per_page, page.offset),
        )
        rows = cur.fetchall()
    return render_template("admin/audit.html", rows=rows, total=total, page=page, entity=entity)
