"""The overview page: the fleet at a glance, violations per kind over the last 30 days (an
inline SVG bar chart drawn on the server: no script, no CDN) and the top companies."""

from __future__ import annotations

from flask import Blueprint, render_template

from web.auth import require
from web.db import get_read_db
from web.params import city_tz, settings
from web.queries import local_day_start, overview
from web.violation_queries import KIND_LABELS, violation_overview

bp = Blueprint("overview", __name__)


@bp.route("/")
@require("overview")
def index():
    counts = overview(
        get_read_db(),
        dark_after_s=settings().thresholds["dark_after_s"],
        day_start=local_day_start(city_tz()),
    )
    conn = get_read_db()
    with conn.cursor() as cur:
        violations = violation_overview(cur, days=30)
    conn.rollback()
    return render_template(
        "overview.html", counts=counts, violations=violations, kind_labels=KIND_LABELS
    )
