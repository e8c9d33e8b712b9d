"""The live map's data: every truck's latest state, or only what changed since a cursor.

The cursor is the newest `updated_at` (of truck_state or trucks) the client has seen, in
epoch microseconds. A delta re-reads `web.live_overlap_s` before the cursor, so a row whose
transaction started before the previous read but committed after it is not missed; the
client applies rows idempotently (each row is the truck's whole state).
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import numpy as np

from geofence.coords import from_wgs84, normalise_crs

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
FIELDS = (
    "id",
    "plate",
    "company_id",
    "active",
    "lon",
    "lat",
    "speed",
    "heading",
    "load",
    "lid",
    "lift",
    "acc",
    "fix_ms",
    "alarms",
)

_SELECT = """
    SELECT s.truck_id, t.plate, t.company_id, t.active, s.lon, s.lat, s.speed_kmh, s.heading,
           s.load::text, s.lid::text, s.lift::text, s.acc,
           (extract(epoch FROM s.fix_time) * 1000)::bigint, s.alarms,
           greatest(s.updated_at, t.updated_at)
    FROM truck_state s JOIN trucks t ON t.id = s.truck_id
"""
_FULL = _SELECT + " WHERE t.active"
_DELTA = _SELECT + (  # noqa: S608 (constant fragments only)
    " WHERE s.truck_id IN (SELECT truck_id FROM truck_state WHERE updated_at > %(since)s"
    " UNION SELECT id FROM trucks WHERE updated_at > %(since)s)"
)


def cursor_to_time(cursor: int) -> dt.datetime:
    return EPOCH + dt.timedelta(microseconds=cursor)


def time_to_cursor(value: dt.datetime) -> int:
    delta = value - EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def live_trucks(conn, since: int | None, *, overlap_s: float, crs: str = "wgs84") -> dict[str, Any]:
    """Column-oriented snapshot (`since` None) or delta, with the next cursor."""
    with conn.cursor() as cur:
        cur.execute("SELECT now()")
        server_now = cur.fetchone()[0]
        if since is None:
            cur.execute(_FULL)
        else:
            start = cursor_to_time(since) - dt.timedelta(seconds=overlap_s)
            cur.execute(_DELTA, {"since": start})
        rows = cur.fetchall()
        company_ids = sorted({r[2] for r in rows if r[2] is not None})
        companies = {}
        if company_ids:
            cur.execute("SELECT id, name FROM companies WHERE id = ANY(%s)", (company_ids,))
            companies = {str(cid): name for cid, name in cur.fetchall()}
    conn.rollback()
    columns: dict[str, list] = {name: [] for name in FIELDS}
    newest = cursor_to_time(since) if since is not None else None
    if rows:
        cols = list(zip(*rows, strict=True))
        for name, values in zip(FIELDS, cols[: len(FIELDS)], strict=True):
            columns[name] = list(values)
        top = max(cols[-1])
        newest = top if newest is None or top > newest else newest
        if normalise_crs(crs) != "wgs84":
            lon, lat = from_wgs84(np.asarray(columns["lon"]), np.asarray(columns["lat"]), crs)
            columns["lon"], columns["lat"] = lon.round(7).tolist(), lat.round(7).tolist()
    if newest is None:
        newest = server_now
    return {
        "full": since is None,
        "cursor": str(time_to_cursor(newest)),
        "server_ms": int(server_now.timestamp() * 1000),
        "count": len(rows),
        "crs": normalise_crs(crs),
        "fields": list(FIELDS),
        "trucks": columns,
        "companies": companies,
    }


def timed(fn, *args, **kwargs) -> tuple[Any, float]:
    t0 = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - t0
