"""Alerts in the dashboard: the live feed (server-sent events, a badge and a sound in the
navigation bar, the list of unread alerts), a user's own subscriptions, and the
administrator's page of every subscription (teams, webhooks, robots) and dead letters.

The stream (`/alerts/stream`) holds a request open: run gunicorn with a threaded or async
worker class (`-k gthread --threads N` with N above the number of open dashboards per
worker, or `-k gevent`); the sync worker would give one dashboard a whole worker. Each
stream ends after `MUCK_ALERT_STREAM_S` seconds (default 300) and the browser reconnects
with `Last-Event-ID`, so nothing is missed and no thread is held forever.
"""

from __future__ import annotations

import json
import select
import time

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
from flask_babel import get_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import SelectField, SelectMultipleField, StringField
from wtforms.validators import Optional
from wtforms.widgets import CheckboxInput, ListWidget

from alerts import outbox
from alerts.fanout import EVENT_LABELS
from alerts.subscriptions import (
    CHANNELS,
    EVENTS,
    SubscriptionError,
    create_subscription,
    list_subscriptions,
    remove_subscription,
)
from compliance.violations import KINDS
from core.db import connect
from web.audit import record
from web.auth import require
from web.db import get_db
from web.forms import ConfirmForm
from web.params import city_tz
from web.users import user_exists
from web.violation_queries import KIND_LABELS

bp = Blueprint("alerts", __name__, url_prefix="/alerts")
admin_bp = Blueprint("alerts_admin", __name__, url_prefix="/admin/alerts")


class _Checkboxes(SelectMultipleField):
    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()


class SubscriptionForm(FlaskForm):
    kinds = _Checkboxes(_l("Violation kinds (none: all)"), validate_choice=False)
    severities = _Checkboxes(_l("Severities (none: both)"), validate_choice=False)
    districts = StringField(_l("District codes, comma separated (empty: all)"), [Optional()])
    companies = SelectMultipleField(_l("Companies (none: all)"), coerce=int, validate_choice=False)
    events = _Checkboxes(_l("Events"), validate_choice=False)


class AdminSubscriptionForm(SubscriptionForm):
    owner_kind = SelectField(_l("Subscriber"), choices=[("team", _l("team")), ("user", _l("user"))])
    owner = StringField(_l("Team or user name"))
    channel = SelectField(_l("Channel"), choices=[(c, c) for c in CHANNELS])
    target = StringField(_l("Webhook URL or apprise URL"), [Optional()])
    secret = StringField(_l("Webhook secret (empty: generated)"), [Optional()])


def _fill_choices(form: SubscriptionForm) -> None:
    form.kinds.choices = [(k, str(KIND_LABELS[k])) for k in KINDS]
    form.severities.choices = [("minor", _("minor")), ("serious", _("serious"))]
    form.events.choices = [(e, _event_label(e)) for e in EVENTS]
    if request.method == "GET" and not form.events.data:
        form.events.data = ["detected"]
    with get_db().cursor() as cur:
        cur.execute("SELECT id, name FROM companies WHERE active ORDER BY name LIMIT 2000")
        form.companies.choices = cur.fetchall()


def _event_label(event: str) -> str:
    labels = EVENT_LABELS.get(event, {"zh": event, "en": event})
    return labels.get(str(get_locale() or "en"), labels["en"])


def _lang() -> str:
    return "zh" if str(get_locale() or "") == "zh" else "en"


def feed_view(item: dict, lang: str) -> dict:
    """What the page and the stream show of one feed alert (local time, labelled)."""
    p = item["payload"]
    v = p["violation"]
    tz = city_tz()
    return {
        "id": item["id"],
        "violation_id": v["id"],
        "url": url_for("violations.show", violation_id=v["id"]),
        "event": p["event_label"] if lang == "zh" else p["event_label_en"],
        "kind": v["kind_label"] if lang == "zh" else v["kind_label_en"],
        "severity": v["severity"],
        "plate": v["plate"],
        "company": v.get("company") or "",
        "at": item["created_at"].astimezone(tz).strftime("%Y-%m-%d %H:%M:%S"),
        "timezone": str(tz.key),
        "read": item["read_at"] is not None,
    }


@bp.before_request
@require("alerts")
def _signed_in():
    return None


@bp.route("/")
def index():
    unread_only = request.args.get("unread") == "1"
    with get_db().cursor() as cur:
        items = outbox.feed_items(cur, current_user.username, unread_only=unread_only)
        unread = outbox.feed_unread(cur, current_user.username)
    lang = _lang()
    return render_template(
        "alerts/feed.html",
        items=[feed_view(i, lang) for i in items],
        unread=unread,
        unread_only=unread_only,
        confirm=ConfirmForm(),
        timezone=str(city_tz().key),
    )


@bp.route("/read", methods=["POST"])
def mark_read():
    if not ConfirmForm().validate_on_submit():
        abort(400, description="missing or bad CSRF token")
    ids = None
    if request.form.get("all") != "1":
        try:
            ids = [int(i) for i in request.form.getlist("id")]
        except ValueError:
            abort(400, description="alert ids are numbers")
    conn = get_db()
    with conn.cursor() as cur:
        outbox.mark_read(cur, current_user.username, ids)
    conn.commit()
    target = request.form.get("next") or ""
    return redirect(target if target.startswith("/alerts/") else url_for("alerts.index"))


@bp.route("/stream")
def stream():
    """Server-sent events: `alert` for each new feed alert of the logged-in user (with the
    unread count), a comment every 15 s to keep proxies from closing the connection."""
    username = current_user.username
    app = current_app._get_current_object()
    lang = _lang()
    max_s = float(app.config.get("MUCK_ALERT_STREAM_S", 300))
    raw = request.headers.get("Last-Event-ID") or request.args.get("after") or ""
    after = int(raw) if raw.isdigit() else None

    def events():
        conn = connect(app.config["DATABASE_URL"], application_name="muck-web-alerts")
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute("LISTEN alert_feed")
                last = after if after is not None else outbox.latest_feed_id(cur, username)
                yield f"retry: 3000\nevent: count\ndata: {outbox.feed_unread(cur, username)}\n\n"
                deadline = time.monotonic() + max_s
                while True:
                    items = outbox.feed_items(cur, username, after_id=last, limit=50)
                    if items:
                        unread = outbox.feed_unread(cur, username)
                        with app.test_request_context(), app.app_context():
                            views = [feed_view(i, lang) for i in items]
                        for view in views:
                            last = view["id"]
                            data = json.dumps({**view, "unread": unread}, ensure_ascii=False)
                            yield f"id: {last}\nevent: alert\ndata: {data}\n\n"
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return
                    if select.select([conn], [], [], min(15.0, left))[0]:
                        conn.poll()
                        conn.notifies.clear()
                    else:
                        yield ": keep-alive\n\n"
        finally:
            conn.close()

    return Response(
        events(),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _store(form: SubscriptionForm, **owner) -> bool:
    """Create the subscription from the form; False (with the message) when refused."""
    conn = get_db()
    districts = [d for d in (form.districts.data or "").replace("，", ",").split(",")]
    try:
        with conn.cursor() as cur:
            sub = create_subscription(
                cur,
                kinds=form.kinds.data,
                severities=form.severities.data,
                districts=districts,
                company_ids=form.companies.data,
                events=form.events.data or ["detected"],
                created_by=current_user.username,
                **owner,
            )
            record(
                cur,
                "alert_subscription.create",
                "alert_subscriptions",
                sub.id,
                None,
                {
                    "owner": f"{sub.owner_kind}:{sub.owner}",
                    "channel": sub.channel,
                    "target": sub.target,
                    "kinds": sub.kinds,
                    "severities": sub.severities,
                    "districts": sub.districts,
                    "company_ids": sub.company_ids,
                    "events": sub.events,
                },
            )
        conn.commit()
    except SubscriptionError as exc:
        conn.rollback()
        flash(str(exc), "error")
        return False
    if sub.channel == "webhook" and not owner.get("secret"):
        flash(_("Webhook secret (shown once): %(secret)s", secret=sub.secret), "ok")
    flash(_("Subscribed."), "ok")
    return True


def _remove(subscription_id: int, owner: str | None) -> None:
    if not ConfirmForm().validate_on_submit():
        abort(400, description="missing or bad CSRF token")
    conn = get_db()
    with conn.cursor() as cur:
        if not remove_subscription(cur, subscription_id, owner=owner):
            conn.rollback()
            abort(404, description=f"no subscription {subscription_id}")
        record(
            cur,
            "alert_subscription.remove",
            "alert_subscriptions",
            subscription_id,
            {"active": True},
            {"active": False},
        )
    conn.commit()
    flash(_("Subscription removed."), "ok")


@bp.route("/subscriptions", methods=["GET", "POST"])
def subscriptions():
    """The user's own subscriptions: to their live feed."""
    form = SubscriptionForm()
    _fill_choices(form)
    status = 200
    if request.method == "POST":
        if form.validate_on_submit() and _store(
            form, owner_kind="user", owner=current_user.username, channel="feed"
        ):
            return redirect(url_for("alerts.subscriptions"))
        status = 400
    with get_db().cursor() as cur:
        subs = list_subscriptions(cur, owner_kind="user", owner=current_user.username)
    return render_template(
        "alerts/subscriptions.html", subs=subs, form=form, confirm=ConfirmForm(), admin=False
    ), status


@bp.route("/subscriptions/<int:subscription_id>/remove", methods=["POST"])
def remove_own(subscription_id: int):
    _remove(subscription_id, current_user.username)
    return redirect(url_for("alerts.subscriptions"))


@admin_bp.before_request
@require("alerts_admin")
def _admin_only():
    return None


@admin_bp.route("/", methods=["GET", "POST"])
def admin():
    form = AdminSubscriptionForm()
    _fill_choices(form)
    status = 200
    if request.method == "POST":
        ok = form.validate_on_submit()
        if ok and form.owner_kind.data == "user":
            with get_db().cursor() as cur:
                if not user_exists(cur, (form.owner.data or "").strip()):
                    flash(_("No such user."), "error")
                    ok = False
        if ok and _store(
            form,
            owner_kind=form.owner_kind.data,
            owner=form.owner.data,
            channel=form.channel.data,
            target=form.target.data or "",
            secret=form.secret.data or "",
        ):
            return redirect(url_for("alerts_admin.admin"))
        status = 400
    with get_db().cursor() as cur:
        subs = list_subscriptions(cur)
        dead = outbox.dead_letters(cur)
        counts = outbox.count_by_status(cur)
    return render_template(
        "alerts/admin.html",
        subs=subs,
        dead=dead,
        counts=counts,
        form=form,
        confirm=ConfirmForm(),
        admin=True,
        timezone=str(city_tz().key),
    ), status


@admin_bp.route("/subscriptions/<int:subscription_id>/remove", methods=["POST"])
def remove_any(subscription_id: int):
    _remove(subscription_id, None)
    return redirect(url_for("alerts_admin.admin"))


@admin_bp.route("/dead/<int:outbox_id>/retry", methods=["POST"])
def retry(outbox_id: int):
    if not ConfirmForm().validate_on_submit():
        abort(400, description="missing or bad CSRF token")
    conn = get_db()
    with conn.cursor() as cur:
        if not outbox.retry(cur, outbox_id):
            conn.rollback()
            abort(404, description=f"{outbox_id} is not a dead letter")
        record(
            cur, "alert.retry", "alert_outbox", outbox_id, {"status": "dead"}, {"status": "pending"}
        )
    conn.commit()
    flash(_("Queued again."), "ok")
    return redirect(url_for("alerts_admin.admin"))


def init_app(app) -> None:
    """The unread count in every page's navigation bar."""

    @app.context_processor
    def _alert_badge():
        if not (current_user.is_authenticated and current_user.can("alerts")):
            return {"alert_unread": None}
        with get_db().cursor() as cur:
            return {"alert_unread": outbox.feed_unread(cur, current_user.username)}

    @app.template_filter("subscription_owner")
    def _owner(sub) -> str:
        return sub.owner if sub.owner_kind == "user" else f"{_('team')} {sub.owner}"
