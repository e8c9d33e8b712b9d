"""The overview page: the fleet at a glance (violation charts arrive with compliance)."""

from __future__ import annotations

from flask import Blueprint, render_template

from web.auth import require
from web.db import get_db
from web.params import city_tz, settings
from web.queries import local_day_start, overview

bp = Blueprint("overview", __name__)


@bp.route("/")
@require("overview")
def index():
    counts = overview(
        get_db(),
        dark_after_s=settings().thresholds["dark_after_s"],
        day_start=local_day_start(city_tz()),
    )
    return render_template("overview.html", counts=counts)
