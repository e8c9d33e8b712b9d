"""The live map page. Data comes from /api/v1/trucks/live and /api/v1/zones."""

from __future__ import annotations

from flask import Blueprint, render_template, url_for
from flask_babel import gettext as _

from web.auth import require
from web.params import settings

bp = Blueprint("livemap", __name__)


def map_config() -> dict:
    s = settings()
    web = s["web"]
    return {
        "tileUrl": web["tile_url"],
        "tileAttribution": web["tile_attribution"],
        "tileCrs": web["tile_crs"],
        "tileMaxZoom": web["tile_max_zoom"],
        "center": [s.city["center_lat"], s.city["center_lon"]],
        "pollMs": int(web["live_poll_s"] * 1000),
        "darkAfterMs": int(s.thresholds["dark_after_s"] * 1000),
        # Times are shown in the city zone, not the browser's (map_common.js fmtTime).
        "timezone": s.city["timezone"],
        "basemapUrl": url_for("api.basemap"),
        "layerNames": {"tiles": _("Map tiles"), "streets": _("Streets (offline)")},
    }


@bp.route("/map")
@require("map")
def live_map():
    return render_template("livemap.html", config=map_config())
