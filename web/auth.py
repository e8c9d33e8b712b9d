"""Log-in, log-out, the language switch, and the access checks every other page uses."""

from __future__ import annotations

import functools
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    abort,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import LoginManager, current_user, login_user, logout_user
from flask_wtf import FlaskForm
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, Length

from web import LOCALES
from web.audit import record
from web.db import get_db
from web.users import authenticate, get_user, user_for_token

bp = Blueprint("auth", __name__)
login_manager = LoginManager()


class LoginForm(FlaskForm):
    username = StringField(_l("Username"), validators=[DataRequired(), Length(max=64)])
    password = PasswordField(_l("Password"), validators=[DataRequired(), Length(max=256)])


def _is_api() -> bool:
    return request.path.startswith("/api/")


@login_manager.user_loader
def _load_user(user_id: str):
    if not user_id.isdigit():
        return None
    with get_db().cursor() as cur:
        user = get_user(cur, int(user_id))
    return user if user and user.active else None


@login_manager.request_loader
def _load_from_token(req):
    """Machine clients: `Authorization: Bearer <token>`, on /api/ only."""
    if not req.path.startswith("/api/"):
        return None
    header = req.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        return None
    conn = get_db()
    with conn.cursor() as cur:
        user = user_for_token(cur, header[7:].strip())
    conn.commit()
    if user is not None:
        g.token_auth = True  # no session cookie involved: no CSRF check needed
    return user


@login_manager.unauthorized_handler
def _unauthorized():
    if _is_api():
        return jsonify(error="authentication required: log in or send a Bearer token"), 401
    return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))


def require(permission: str):
    """Log-in required; then the user's role must grant `permission` (else 403)."""

    def decorator(view):
        @functools.wraps(view)
        def wrapped(*args, **kwargs):
            if not current_user.is_authenticated:
                return login_manager.unauthorized()
            if not current_user.can(permission):
                if _is_api():
                    return jsonify(error=f"your role may not use this ({permission})"), 403
                abort(403)
            return view(*args, **kwargs)

        wrapped.permission = permission  # read by the tests that check every route
        return wrapped

    return decorator


def _safe_next(target: str | None) -> str:
    if not target:
        return url_for("overview.index")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return url_for("overview.index")
    return target


@bp.route("/login", methods=["GET", "POST"])
def login():
    from flask import current_app

    from web import throttle

    form = LoginForm()
    status = 200
    if form.validate_on_submit():
        cfg = current_app.config["MUCK_SETTINGS"]["web"]
        username = form.username.data.strip()[:64]
        address = request.remote_addr or "-"
        conn = get_db()
        with conn.cursor() as cur:
            wait = throttle.retry_after(cur, username, address, cfg)
            user = None
            if wait > 0:
                record(
                    cur,
                    "user.login_throttled",
                    "web_users",
                    None,
                    None,
                    {"username": username, "retry_after_s": round(wait)},
                )
            else:
                user = authenticate(cur, username, form.password.data)
                if user is None:
                    throttle.record_failure(cur, username, address, cfg)
                    record(
                        cur, "user.login_failed", "web_users", None, None, {"username": username}
                    )
                else:
                    throttle.clear(cur, username)
                    record(cur, "user.login", "web_users", user.id, None, None, actor=user)
        conn.commit()
        if wait > 0:
            seconds = int(wait) + 1
            flash(_("Too many failed log-ins: try again in %(n)s seconds.", n=seconds), "error")
            page = render_template("auth/login.html", form=form)
            return page, 429, {"Retry-After": str(seconds)}
        if user is not None:
            session.clear()
            session.permanent = True  # expires after web.session_lifetime_min
            login_user(user)
            if user.must_change_password:
                return redirect(url_for("auth.change_password"))
            return redirect(_safe_next(request.args.get("next")))
        flash(_("Wrong username or password."), "error")
        status = 401
    elif request.method == "POST":
        status = 400
    return render_template("auth/login.html", form=form), status


class PasswordChangeForm(FlaskForm):
    current = PasswordField(_l("Current password"), validators=[DataRequired(), Length(max=256)])
    new = PasswordField(_l("New password"), validators=[DataRequired(), Length(max=256)])


@bp.route("/account/password", methods=["GET", "POST"])
def change_password():
    """Any logged-in user changes their password (required after an administrator forced a
    reset: every other page sends them here until they have)."""
    from web.users import UserError, set_password

    if not current_user.is_authenticated:
        return login_manager.unauthorized()
    form = PasswordChangeForm()
    status = 200
    if form.validate_on_submit():
        conn = get_db()
        with conn.cursor() as cur:
            ok = authenticate(cur, current_user.username, form.current.data) is not None
            if ok:
                try:
                    set_password(cur, current_user.id, form.new.data)
                except UserError as exc:
                    form.new.errors.append(str(exc))
                    ok = False
            else:
                form.current.errors.append(_("Wrong password."))
        if ok:
            conn.commit()
            flash(_("Password changed."), "ok")
            return redirect(url_for("overview.index"))
        conn.rollback()
        status = 400
    elif request.method == "POST":
        status = 400
    return render_template("auth/password.html", form=form), status


# Pages a user who must change their password may still open.
_DURING_RESET = {"auth.change_password", "auth.logout", "auth.set_language", "static"}


@bp.route("/logout", methods=["POST"])
def logout():
    if current_user.is_authenticated:
        conn = get_db()
        with conn.cursor() as cur:
            record(cur, "user.logout", "web_users", current_user.id, None, None)
        conn.commit()
    lang = session.get("lang")
    logout_user()
    session.clear()
    if lang:
        session["lang"] = lang
    return redirect(url_for("auth.login"))


@bp.route("/lang/<code>", methods=["POST"])
def set_language(code: str):
    """Switch the interface language (kept in the session, also before logging in)."""
    if code not in LOCALES:
        abort(400, description=f"unknown language {code!r}")
    session["lang"] = code
    return redirect(_safe_next(request.form.get("next")))


def init_app(app) -> None:
    login_manager.init_app(app)
    login_manager.session_protection = "basic"

    @app.before_request
    def _forced_password_change():
        if request.endpoint in _DURING_RESET or request.blueprint == "health":
            return None
        if current_user.is_authenticated and current_user.must_change_password:
            if _is_api():
                return jsonify(error="password reset required: change it at /account/password"), 403
            return redirect(url_for("auth.change_password"))
        return None

    @app.errorhandler(400)
    @app.errorhandler(403)
    @app.errorhandler(404)
    @app.errorhandler(405)
    @app.errorhandler(413)
    def _error(exc):
        if _is_api():
            return jsonify(error=exc.description), exc.code
        return render_template("error.html", error=exc), exc.code

    from flask_wtf.csrf import CSRFError

    @app.errorhandler(CSRFError)
    def _csrf_error(exc):
        if _is_api():
            return jsonify(error=exc.description), 400
        return render_template("error.html", error=exc), 400
