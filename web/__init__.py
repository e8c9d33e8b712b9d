"""The dashboard and the API: a Flask application built by `create_app()`.

Run it with `muck web` (development server) or `gunicorn 'web:create_app()'` (production).
One blueprint per page family: auth, overview, livemap, trucks (track replay), violations,
black_trucks, cases, credit (scores, lists, exports), registry, admin (users, audit log), alerts
(live feed, subscriptions, dead letters), api, health.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

from flask import Flask, request, session
from flask_babel import Babel
from flask_wtf.csrf import CSRFProtect

from core.config import load_settings

HERE = Path(__file__).resolve().parent
LOCALES = ("zh", "en")
csrf = CSRFProtect()


def _select_locale() -> str:
    from flask import current_app

    lang = session.get("lang")
    if lang in LOCALES:
        return lang
    return current_app.config["MUCK_SETTINGS"]["web"]["default_locale"]


def _content_security_policy(tile_url: str, script_extra: str = "") -> str:
    """Scripts and styles only from /static (no inline script: pages pass their data in a
    JSON block, web/static/boot.js), images also from the tile server when one is set.
    `script_extra` (Flask config MUCK_CSP_SCRIPT_EXTRA) is for the browser tests only:
    Playwright evaluates its waiting conditions as strings."""
    from urllib.parse import urlsplit

    images = "'self' data: blob:"
    if tile_url:
        parts = urlsplit(tile_url.replace("{s}", "*"))
        images += f" {parts.scheme}://{parts.netloc}"
    return (
        f"default-src 'self'; script-src 'self'{' ' + script_extra if script_extra else ''}; "
        "style-src 'self'; "
        f"img-src {images}; connect-src 'self'; object-src 'none'; base-uri 'self'; "
        "form-action 'self'; frame-ancestors 'none'"
    )


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the application. `test_config` overrides Flask config keys; it may carry
    `MUCK_SETTINGS` (a core.config.Settings) instead of loading $MUCK_CONFIG."""
    app = Flask(__name__, instance_relative_config=False)
    test_config = dict(test_config or {})
    settings = test_config.pop("MUCK_SETTINGS", None) or load_settings()
    web = settings["web"]
    app.config.update(
        MUCK_SETTINGS=settings,
        DATABASE_URL=settings.database_url,
        # Dashboard and export reads off the primary (web.db.get_read_db); unset: primary.
        DATABASE_REPLICA_URL=os.environ.get("MUCK_DATABASE_REPLICA_URL") or None,
        PERMANENT_SESSION_LIFETIME=dt.timedelta(minutes=web["session_lifetime_min"]),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=web["secure_cookies"],
        MAX_CONTENT_LENGTH=web["max_upload_bytes"] + 65536,
        BABEL_DEFAULT_LOCALE=web["default_locale"],
        BABEL_DEFAULT_TIMEZONE="UTC",
        BABEL_TRANSLATION_DIRECTORIES=str(HERE / "translations"),
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the session
        JSON_AS_ASCII=False,
    )
    app.config.update(test_config)

    from web import db

    db.init_app(app)
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = os.environ.get("MUCK_SECRET_KEY") or db.shared_secret(app)

    Babel(app, locale_selector=_select_locale)
    from web.params import reject_bad_characters

    # Before the CSRF check and every view: bad characters are a 400 on every route.
    app.before_request(reject_bad_characters)
    csrf.init_app(app)

    from web import (
        admin,
        alerts,
        api,
        auth,
        black_trucks,
        cases,
        credit,
        health,
        livemap,
        overview,
        registry_import,
        registry_views,
        trucks,
        violations,
    )

    auth.init_app(app)
    alerts.init_app(app)
    health.init_app(app)
    for module in (
        auth,
        health,
        overview,
        livemap,
        trucks,
        violations,
        black_trucks,
        cases,
        credit,
        registry_views,
        registry_import,
        admin,
        alerts,
        api,
    ):
        app.register_blueprint(module.bp)
    app.register_blueprint(alerts.admin_bp)
    # Token or session auth. The API's POST routes check the CSRF token themselves when the
    # user came from the session cookie (web.api.require_csrf_for_session).
    csrf.exempt(api.bp)

    csp = _content_security_policy(web["tile_url"], app.config.get("MUCK_CSP_SCRIPT_EXTRA", ""))

    @app.after_request
    def _security_headers(response):
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("Content-Security-Policy", csp)
        return response

    from web.times import local_time, zone_label

    # One formatter for every time on every page: `{{ at|localtime }}` or `localtime(at)`,
    # in the city zone with its label (web/times.py).
    app.add_template_filter(local_time, "localtime")
    app.add_template_global(local_time, "localtime")
    app.add_template_global(zone_label, "zone_label")

    @app.context_processor
    def _template_globals():
        from flask_babel import get_locale

        return {"current_locale": str(get_locale()), "request_path": request.path}

    return app
