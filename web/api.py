"""`/api/v1/`: JSON for the dashboard's scripts and for machine clients (Bearer tokens).

Lists are paginated (`page`, `per_page`; the response carries `total` and `next`). The live
endpoint is cursor-based instead: a map needs every truck once, then only changes.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec
import numpy as np
from flask import Blueprint, Response, current_app, g, jsonify, request, url_for
from flask_login import current_user

from geofence.coords import from_wgs84, normalise_crs, to_wgs84
from geofence.io import convert_geometry, export_geojson
from geofence.store import load_districts, load_zones
from web.auth import require
from web.db import get_db, get_read_db
from web.live import LiveCache, live_trucks, live_trucks_json
from web.params import bad, city_tz, int_arg, page_args, settings, time_range
from web.queries import local_day_start, overview, track, truck_detail
from web.times import local_iso

bp = Blueprint("api", __name__, url_prefix="/api/v1")
_encoder = msgspec.json.Encoder()


def _crs() -> str:
    raw = request.args.get("crs") or settings()["web"]["tile_crs"]
    try:
        return normalise_crs(raw)
    except ValueError as exc:
        bad(f"crs: {exc}")


def _paginated(
    items: list[dict[str, Any]], total: int, page, endpoint: str, extra=None, **kw
) -> Any:
    args = {k: v for k, v in request.args.items() if k not in ("page", "per_page")}
    nxt = None
    if page.offset + len(items) < total:
        nxt = url_for(endpoint, **kw, **args, page=page.page + 1, per_page=page.per_page)
    return jsonify(
        items=items,
        page=page.page,
        per_page=page.per_page,
        total=total,
        pages=page.pages(total),
        next=nxt,
        **(extra or {}),
    )


@bp.route("/trucks/live")
@require("map")
def trucks_live():
    """Every active truck's latest state, or (with `since`) only the trucks changed since."""
    raw = request.args.get("since")
    since = None
    if raw:
        if not raw.isdigit() or len(raw) > 19:
            bad("since must be the cursor returned by the previous response")
        since = int(raw)
    crs, overlap = _crs(), settings()["web"]["live_overlap_s"]
    if since is None:
        body = _live_cache().snapshot(get_db(), overlap_s=overlap, crs=crs)
    elif crs == "wgs84":
        body = live_trucks_json(get_db(), since, overlap_s=overlap)
    else:
        body = _encoder.encode(live_trucks(get_db(), since, overlap_s=overlap, crs=crs))
    return Response(body, mimetype="application/json")


def _live_cache() -> LiveCache:
    """This process's snapshot cache (one per app; MUCK_LIVE_REBUILD_S overrides how often
    it is rebuilt from the full query)."""
    cache = current_app.extensions.get("muck_live_cache")
    if cache is None:
        rebuild_s = float(current_app.config.get("MUCK_LIVE_REBUILD_S", 600.0))
        cache = LiveCache(rebuild_s)
        if current_app.extensions.setdefault("muck_live_cache", cache) is cache:
            # kept current between requests (off under the test client: tests truncate
            # tables between requests; MUCK_LIVE_REFRESH_S = 0 turns it off too)
            web = settings()["web"]
            every = float(current_app.config.get("MUCK_LIVE_REFRESH_S", web["live_poll_s"]))
            if every > 0 and not current_app.testing:
                current_app.extensions["muck_live_refresher"] = cache.start_refresher(
                    current_app.config["DATABASE_URL"],
                    every_s=every,
                    overlap_s=web["live_overlap_s"],
                )
        cache = current_app.extensions["muck_live_cache"]
    return cache


_TRUCK_SORT = {
    "plate": "t.plate",
    "id": "t.id",
    "last_report": "s.fix_time DESC NULLS LAST, t.plate",
}


@bp.route("/trucks")
@require("map")
def trucks():
    """Registered trucks with their last report; `q` searches the plate, `company_id` filters."""
    page = page_args(api=True)
    q = (request.args.get("q") or "").strip()
    company = int_arg("company_id", 0, lo=0) or None
    sort = request.args.get("sort") or "plate"
    if sort not in _TRUCK_SORT:
        bad(f"sort must be one of {', '.join(_TRUCK_SORT)}")
    where = """WHERE (%(q)s = '' OR t.plate ILIKE '%%' || %(q)s || '%%')
               AND (%(company)s::bigint IS NULL OR t.company_id = %(company)s)"""
    params = {"q": q, "company": company, "limit": page.per_page, "offset": page.offset}
    with get_db().cursor() as cur:
        cur.execute(f"SELECT count(*) FROM trucks t {where}", params)  # noqa: S608 (fixed text)
        total = cur.fetchone()[0]
        cur.execute(
            f"""SELECT t.id, t.plate, t.plate_color, t.company_id, c.name, t.active,
                       s.fix_time, s.lon, s.lat, s.speed_kmh, s.load::text
                FROM trucks t LEFT JOIN companies c ON c.id = t.company_id
                LEFT JOIN truck_state s ON s.truck_id = t.id {where}
                ORDER BY {_TRUCK_SORT[sort]} LIMIT %(limit)s OFFSET %(offset)s""",  # noqa: S608 (whitelisted)
            params,
        )
        rows = cur.fetchall()
    keys = (
        "id",
        "plate",
        "plate_color",
        "company_id",
        "company",
        "active",
        "last_report",
        "lon",
        "lat",
        "speed",
        "load",
    )
    items = [dict(zip(keys, r, strict=True)) for r in rows]
    for item in items:
        item["last_report"] = local_iso(item["last_report"])
    return _paginated(items, total, page, "api.trucks")


@bp.route("/trucks/<int:truck_id>")
@require("map")
def truck(truck_id: int):
    detail = truck_detail(get_db(), truck_id)
    if detail is None:
        return jsonify(error=f"no truck {truck_id}"), 404
    return jsonify(detail)


@bp.route("/trucks/<int:truck_id>/track")
@require("map")
def truck_track(truck_id: int):
    """Positions of one truck between `from` and `to` (default: the last hour)."""
    start, end = time_range()
    conn = get_db()
    if truck_detail(conn, truck_id) is None:
        return jsonify(error=f"no truck {truck_id}"), 404
    limit = settings()["web"]["track_max_points"]
    payload = track(conn, truck_id, start, end, limit=limit, crs=_crs())
    return Response(_encoder.encode(payload), mimetype="application/json")


@bp.route("/companies")
@require("map")
def companies():
    page = page_args(api=True)
    q = (request.args.get("q") or "").strip()
    where = "WHERE (%(q)s = '' OR name ILIKE '%%' || %(q)s || '%%' OR credit_code = upper(%(q)s))"
    params = {"q": q, "limit": page.per_page, "offset": page.offset}
    with get_db().cursor() as cur:
        cur.execute(f"SELECT count(*) FROM companies {where}", params)  # noqa: S608 (fixed text)
        total = cur.fetchone()[0]
        cur.execute(
            f"""SELECT id, name, credit_code, credit_code_valid, active FROM companies {where}
                ORDER BY name, id LIMIT %(limit)s OFFSET %(offset)s""",  # noqa: S608 (fixed text)
            params,
        )
        keys = ("id", "name", "credit_code", "credit_code_valid", "active")
        items = [dict(zip(keys, r, strict=True)) for r in cur.fetchall()]
    return _paginated(items, total, page, "api.companies")


@bp.route("/districts")
@require("map")
def districts():
    """Active districts (行政区) as a GeoJSON FeatureCollection in `crs` (default the tiles'
    CRS): `code` (行政区划代码) and `name`. Not paginated: a city has a handful."""
    crs = _crs()
    features = []
    for d in load_districts(get_db()):
        geometry = d["geometry"]
        if crs != "wgs84":
            geometry = convert_geometry(geometry, lambda lo, la: from_wgs84(lo, la, crs))
        features.append(
            {
                "type": "Feature",
                "id": d["code"],
                "properties": {"code": d["code"], "name": d["name"]},
                "geometry": geometry,
            }
        )
    get_db().rollback()
    return jsonify(type="FeatureCollection", features=features, crs=crs)


@bp.route("/basemap")
@require("map")
def basemap():
    """The offline base layer (streets, water, green areas) meeting `bbox` (west,south,east,
    north in `crs`, default the tiles' CRS) as GeoJSON, for `zoom`: only the classes drawn at
    that zoom, simplified to half a pixel, at most web.basemap_max_features (`truncated`)."""
    from geofence.basemap import features_in

    crs = _crs()
    zoom = int_arg("zoom", 12, lo=0, hi=22)
    raw = request.args.get("bbox") or ""
    try:
        w, s, e, n = (float(v) for v in raw.split(","))
    except ValueError:
        bad("bbox must be west,south,east,north in degrees, e.g. 114.0,22.5,114.1,22.6")
    if not all(math.isfinite(v) for v in (w, s, e, n)) or not (
        -180 <= w < e <= 180 and -90 <= s < n <= 90
    ):
        bad("bbox must be west,south,east,north with west < east and south < north, in range")
    if crs != "wgs84":  # the box of the viewport's corners, in WGS-84 (offsets are ~500 m)
        lon, lat = to_wgs84(np.array([w, e, w, e]), np.array([s, s, n, n]), crs)
        w, e, s, n = float(lon.min()), float(lon.max()), float(lat.min()), float(lat.max())
    limit = int(settings()["web"]["basemap_max_features"])
    features, truncated = features_in(get_db(), (w, s, e, n), zoom, limit=limit)
    if crs != "wgs84":
        for feature in features:
            feature["geometry"] = convert_geometry(
                feature["geometry"], lambda lo, la: from_wgs84(lo, la, crs)
            )
    return jsonify(
        type="FeatureCollection", features=features, zoom=zoom, truncated=truncated, crs=crs
    )


@bp.route("/zones")
@require("map")
def zones():
    """Active zones as a GeoJSON FeatureCollection (in `crs`, default the tiles' CRS), paginated."""
    page = page_args(api=True)
    kind = request.args.get("kind") or None
    if kind and kind not in ("site", "disposal", "route", "restricted", "speed"):
        bad("kind must be one of site, disposal, route, restricted, speed")
    crs = _crs()
    all_zones = load_zones(
        get_db(), kind=kind, district=request.args.get("district") or None, active_only=True
    )
    chosen = all_zones[page.offset : page.offset + page.per_page]
    collection = export_geojson(chosen, crs=crs)
    for feature, zone in zip(collection["features"], chosen, strict=True):
        feature["id"] = zone.id
    nxt = None
    if page.offset + len(chosen) < len(all_zones):
        args = {k: v for k, v in request.args.items() if k not in ("page", "per_page")}
        nxt = url_for("api.zones", **args, page=page.page + 1, per_page=page.per_page)
    collection.update(
        page=page.page,
        per_page=page.per_page,
        total=len(all_zones),
        pages=page.pages(len(all_zones)),
        next=nxt,
        crs=crs,
    )
    return jsonify(collection)


# ---- violations and black trucks ------------------------------------------------------------


@bp.route("/violations")
@require("violations")
def violations():
    """Violations, filtered like the list page (`from`, `to`, `kind`, `status`, `severity`,
    `company`, `company_id`, `plate`, `district`, `zone`, `sort`, `dir`), paginated; with
    the counts by kind for the whole filter."""
    from web import violation_queries as vq

    page = page_args(api=True)
    conn = get_read_db()
    with conn.cursor() as cur:
        f, errors = vq.parse_filters(request.args, cur)
        vq.check_offset(page.offset, errors)
        if errors:
            conn.rollback()
            bad("; ".join(errors.values()))
        counts = vq.count_by_kind(cur, f)
        rows = vq.list_page(cur, f, limit=page.per_page, offset=page.offset)
    conn.rollback()
    items = [vq.json_row(r) for r in rows]
    total = counts.total
    if not counts.exact and len(items) == page.per_page:
        total = max(total, page.offset + len(items) + 1)  # a lower bound: there is a next page
    extra = {
        "counts_by_kind": counts.by_kind,
        "total_exact": counts.exact,
        "counts_capped": sorted(counts.capped),
    }
    return _paginated(items, total, page, "api.violations", extra=extra)


@bp.route("/violations/<int:violation_id>")
@require("violations")
def violation(violation_id: int):
    """One violation with its evidence fixes and its events (history), oldest first."""
    from compliance.violations import get_violation
    from evidence.store import page_evidence
    from web.violation_queries import iso as vq_iso

    conn = get_db()
    found = get_violation(conn, violation_id)
    if found is None:
        return jsonify(error=f"no violation {violation_id}"), 404
    detail, events = found
    with conn.cursor() as cur:
        page = page_evidence(cur, settings(), detail)
    conn.rollback()
    record = page.record if page.final else None
    status = {
        "final": page.final,
        "final_due_at": vq_iso(page.final_due_at),
        "captured_at": vq_iso(record.captured_at) if record else None,
        "sha256": record.sha256 if record else None,
        "version": record.version if record else None,
        "pdf": url_for("api.violation_evidence_pdf", violation_id=violation_id) if record else None,
        "json": url_for("api.violation_evidence", violation_id=violation_id) if record else None,
    }
    fixes = [msgspec.to_builtins(fx) for fx in page.fixes]
    return jsonify({**detail, "evidence": fixes, "evidence_status": status, "events": events})


@bp.route("/violations/<int:violation_id>/evidence")
@require("evidence")
def violation_evidence(violation_id: int):
    """The evidence record in force (canonical content as JSON, its checksum), audited;
    404 until the violation has one."""
    from evidence.pack import NoEvidence, export_json
    from web.violation_queries import iso as vq_iso

    try:
        record, content = export_json(get_db(), violation_id, current_user.username)
    except NoEvidence as exc:
        return jsonify(error=str(exc)), 404
    return jsonify(
        violation_id=violation_id,
        record_id=record.id,
        version=record.version,
        final=record.final,
        captured_at=vq_iso(record.captured_at),
        sha256=record.sha256,
        # the exact text the checksum is over: sha256(content_text) == sha256
        content_text=record.content,
        evidence=content,
    )


@bp.route("/violations/<int:violation_id>/evidence.pdf")
@require("evidence")
def violation_evidence_pdf(violation_id: int):
    """The evidence pack (PDF), audited."""
    from web.violations import pdf_response

    return pdf_response(violation_id, "api")


@bp.route("/violations/evidence.zip")
@require("evidence")
def violations_evidence_zip():
    """A ZIP of evidence packs for the filtered list (the list's filters), at most
    evidence.zip_max violations; 400 with the reason past that."""
    from web.violations import zip_ids, zip_response

    ids, refused = zip_ids(request.args)
    if refused is not None:
        bad(str(refused))
    return zip_response(ids, "api")


@bp.route("/violations/<int:violation_id>/actions", methods=["POST"])
@require("enforce")
def violation_action(violation_id: int):
    """confirm / dismiss (`note` required) / open_case (`decision_no` required) / close, as
    JSON or form fields. With a session cookie the CSRF token is required (X-CSRFToken)."""
    from compliance.violations import TRANSITIONS, ViolationError
    from web import csrf
    from web.violations import apply_action

    if not g.get("token_auth"):
        csrf.protect()
    body = request.get_json(silent=True) if request.is_json else request.form
    if not isinstance(body, dict) and not hasattr(body, "get"):
        bad("the body must be a JSON object or form fields")
    body = body or {}
    action = str(body.get("action") or "")
    note = body.get("note")
    decision_no = body.get("decision_no")
    for name, value in (("note", note), ("decision_no", decision_no)):
        if value is not None and not isinstance(value, str):
            bad(f"{name} must be a string")
    if action not in TRANSITIONS:
        bad(f"action must be one of {', '.join(TRANSITIONS)}")
    if action == "dismiss" and not (note or "").strip():
        bad("a dismissal needs a reason (note)")
    if action == "open_case" and not (decision_no or "").strip():
        bad("opening a case needs the decision document number (decision_no)")
    try:
        status = apply_action(get_db(), violation_id, action, note, decision_no)
    except LookupError:
        return jsonify(error=f"no violation {violation_id}"), 404
    except ViolationError as exc:
        return jsonify(error=str(exc)), 409
    return jsonify(id=violation_id, action=action, status=status)


@bp.route("/black-trucks")
@require("violations")
def black_trucks():
    """The black-truck list (`status` new/handled, `kind` plate/device, `q`), newest first."""
    from web import violation_queries as vq

    params, errors = vq.black_truck_params(request.args)
    if errors:
        bad("; ".join(errors.values()))
    page = page_args(api=True)
    conn = get_db()
    with conn.cursor() as cur:
        rows, total = vq.list_black_page(cur, params, limit=page.per_page, offset=page.offset)
    conn.rollback()
    items = [vq.json_row(r) for r in rows]
    return _paginated(items, total, page, "api.black_trucks")


@bp.route("/overview")
@require("overview")
def overview_counts():
    web = settings()
    return jsonify(
        overview(
            get_read_db(),
            dark_after_s=web.thresholds["dark_after_s"],
            day_start=local_day_start(city_tz()),
        )
    )


@bp.route("/me")
@require("overview")
def me():
    return jsonify(id=current_user.id, username=current_user.username, role=current_user.role)


@bp.route("/openapi.json")
@require("overview")
def openapi():
    from web.openapi import document

    return jsonify(document(current_app))
