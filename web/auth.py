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
    form = LoginForm()
    status = 200
    if form.validate_on_submit():
        conn = get_db()
        with conn.cursor() as cur:
            user = authenticate(cur, form.username.data.strip(), form.password.data)
            if user is None:
                record(
                    cur,
                    "user.login_failed",
                    "web_users",
                    None,
                    None,
                    {"username": form.username.data.strip()[:64]},
                )
            else:
                record(cur, "user.login", "web_users", user.id, None, None, actor=user)
        conn.commit()
        if user is not None:
            session.clear()
            session.permanent = True  # expires after web.session_lifetime_min
            login_user(user)
            return redirect(_safe_next(request.args.get("next")))
        flash(_("Wrong username or password."), "error")
        status = 401
    elif request.method == "POST":
        status = 400
    return render_template("auth/login.html", form=form), status


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
