"""Read queries shared by pages and the API (parameters always bound, never formatted in)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np

from geofence.coords import from_wgs84, normalise_crs
from web.times import local_iso

TRACK_FIELDS = ("t_ms", "lon", "lat", "speed", "heading", "load", "lid", "lift", "alarms")


# A truck's last fix as the map and the truck pages show it (columns of truck_state).
LAST_FIX_FIELDS = ("lon", "lat", "speed", "heading", "load", "lid", "lift", "acc")


def truck_detail(conn, truck_id: int) -> dict[str, Any] | None:
    with conn.cursor() as cur:
        cur.execute(
            """SELECT t.id, t.plate, t.plate_color, t.trailer_plate, t.active, t.company_id,
                      c.name, s.device_id, s.fix_time, s.lon, s.lat, s.speed_kmh, s.heading,
                      s.load::text, s.lid::text, s.lift::text, s.acc, s.alarms
               FROM trucks t LEFT JOIN companies c ON c.id = t.company_id
               LEFT JOIN truck_state s ON s.truck_id = t.id WHERE t.id = %s""",
            (truck_id,),
        )
        row = cur.fetchone()
    if row is None:
        return None
    keys = (
        "id",
        "plate",
        "plate_color",
        "trailer_plate",
        "active",
        "company_id",
        "company",
        "device_id",
        "fix_time",
        *LAST_FIX_FIELDS,
        "alarms",
    )
    out = dict(zip(keys, row, strict=True))
    out["fix_time"] = local_iso(out["fix_time"])
    return out


def track(
    conn, truck_id: int, start: dt.datetime, end: dt.datetime, *, limit: int, crs: str = "wgs84"
) -> dict[str, Any]:
    """Positions of one truck in [start, end), oldest first, at most `limit` (then truncated)."""
    with conn.cursor() as cur:
        cur.execute(
            """SELECT (extract(epoch FROM fix_time) * 1000)::bigint, lon, lat, speed_kmh, heading,
                      load::text, lid::text, lift::text, alarms
               FROM positions WHERE truck_id = %s AND fix_time >= %s AND fix_time < %s
               ORDER BY fix_time LIMIT %s""",
            (truck_id, start, end, limit + 1),
        )
        rows = cur.fetchall()
    truncated = len(rows) > limit
    rows = rows[:limit]
    columns: dict[str, list] = {name: [] for name in TRACK_FIELDS}
    if rows:
        for name, values in zip(TRACK_FIELDS, zip(*rows, strict=True), strict=True):
            columns[name] = list(values)
        if normalise_crs(crs) != "wgs84":
            lon, lat = from_wgs84(np.asarray(columns["lon"]), np.asarray(columns["lat"]), crs)
            columns["lon"], columns["lat"] = lon.round(7).tolist(), lat.round(7).tolist()
    return {
        "truck_id": truck_id,
        "from": local_iso(start),
        "to": local_iso(end),
        "count": len(rows),
        "truncated": truncated,
        "crs": normalise_crs(crs),
        "fields": list(TRACK_FIELDS),
        "points": columns,
    }


def overview(conn, *, dark_after_s: int, day_start: dt.datetime) -> dict[str, Any]:
    """Counts for the overview page: fleet online/dark, today's fixes, quarantine by reason."""
    with conn.cursor() as cur:
        cur.execute(
            """SELECT count(*) FILTER (WHERE t.active),
                      count(s.truck_id) FILTER (WHERE t.active
                          AND s.fix_time > now() - make_interval(secs => %s)),
                      count(s.truck_id) FILTER (WHERE t.active
                          AND s.fix_time <= now() - make_interval(secs => %s)),
                      count(*) FILTER (WHERE t.active AND s.truck_id IS NULL)
               FROM trucks t LEFT JOIN truck_state s ON s.truck_id = t.id""",
            (dark_after_s, dark_after_s),
        )
        registered, online, dark, never = cur.fetchone()
        cur.execute(
            """SELECT count(*), count(DISTINCT device_id) FILTER (WHERE truck_id IS NULL)
               FROM positions WHERE fix_time >= %s""",
            (day_start,),
        )
        fixes_today, unknown_devices = cur.fetchone()
        cur.execute(
            """SELECT reason, count(*) FROM quarantine WHERE received_at >= %s
               GROUP BY reason ORDER BY count(*) DESC, reason""",
            (day_start,),
        )
        quarantine = [{"reason": r, "count": n} for r, n in cur.fetchall()]
        cur.execute("SELECT count(*) FROM companies WHERE active")
        companies = cur.fetchone()[0]
    conn.rollback()
    return {
        "trucks_registered": registered,
        "trucks_online": online,
        "trucks_dark": dark,
        "trucks_never_reported": never,
        "companies": companies,
        "fixes_today": fixes_today,
        "unregistered_devices_today": unknown_devices,
        "quarantine_today": quarantine,
        "day_start": local_iso(day_start),
        "dark_after_s": dark_after_s,
    }


def local_day_start(tz) -> dt.datetime:
    now = dt.datetime.now(tz)
    return now.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(dt.UTC)


def list_rows(cur, sql_select, sql_count, params: dict[str, Any], page) -> tuple[list, int]:
    cur.execute(sql_count, params)
    total = cur.fetchone()[0]
    cur.execute(sql_select, {**params, "limit": page.per_page, "offset": page.offset})
    return cur.fetchall(), total
