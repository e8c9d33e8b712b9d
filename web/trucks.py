"""Trucks for supervisors: a searchable list and the track replay page."""

from __future__ import annotations

import datetime as dt

from flask import Blueprint, abort, render_template, request
from werkzeug.exceptions import BadRequest

from credit.lists import SEVERITY, flagged, truck_flag
from web.auth import require
from web.db import get_db
from web.livemap import map_config
from web.params import page_args, time_range, to_local_input
from web.queries import truck_detail

bp = Blueprint("trucks", __name__, url_prefix="/trucks")


@bp.route("/")
@require("map")
def index():
    page = page_args()
    q = (request.args.get("q") or "").strip()
    params = {"q": q, "limit": page.per_page, "offset": page.offset}
    where = "WHERE t.active AND (%(q)s = '' OR t.plate ILIKE '%%' || %(q)s || '%%')"
    with get_db().cursor() as cur:
        cur.execute(f"SELECT count(*) FROM trucks t {where}", params)  # noqa: S608 (fixed text)
        total = cur.fetchone()[0]
        cur.execute(
            f"""SELECT t.id, t.plate, c.name, s.fix_time, s.speed_kmh, s.load::text, t.company_id
                FROM trucks t LEFT JOIN companies c ON c.id = t.company_id
                LEFT JOIN truck_state s ON s.truck_id = t.id {where}
                ORDER BY t.plate LIMIT %(limit)s OFFSET %(offset)s""",  # noqa: S608 (fixed text)
            params,
        )
        rows = cur.fetchall()
        flags = flagged(cur)
    # A truck of a listed company (or a listed truck) carries the list's flag (credit/lists.py).
    lists = {
        row[0]: _worst(flags["trucks"].get(row[0]), flags["companies"].get(row[6])) for row in rows
    }
    return render_template("trucks/list.html", rows=rows, total=total, page=page, q=q, lists=lists)


def _worst(*found: str | None) -> str | None:
    present = [f for f in found if f]
    return max(present, key=SEVERITY.__getitem__) if present else None


@bp.route("/<int:truck_id>/track")
@require("map")
def track_page(truck_id: int):
    """Track replay. Bad dates give the page back with a message (400), never a 500."""
    truck = truck_detail(get_db(), truck_id)
    if truck is None:
        abort(404, description=f"no truck {truck_id}")
    with get_db().cursor() as cur:
        credit_list = truck_flag(cur, truck_id)
    get_db().rollback()
    error = None
    try:
        start, end = time_range()
    except BadRequest as exc:
        error = exc.description
        end = dt.datetime.now(dt.UTC)
        start = end - dt.timedelta(hours=1)
    html = render_template(
        "trucks/track.html",
        truck=truck,
        credit_list=credit_list,
        error=error,
        start_input=to_local_input(start),
        end_input=to_local_input(end),
        start_ms=int(start.timestamp() * 1000),
        end_ms=int(end.timestamp() * 1000),
        config=map_config(),
    )
    return html, (400 if error else 200)
