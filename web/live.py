"""The live map's data: every truck's latest state, or only what changed since a cursor.

The cursor is the newest `updated_at` (of truck_state, trucks or violations) the client has
seen, in epoch microseconds. `violation` is true while the truck has an open violation (not
dismissed or withdrawn). A delta re-reads `web.live_overlap_s` before the cursor, so a row whose
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
    "violation",
)

# Trucks with an open violation (episode still going, not dismissed or withdrawn): a scan of
# the partial index violations_open_idx, i.e. of the open violations only.
_OPEN = """
    LEFT JOIN (SELECT DISTINCT truck_id FROM violations
               WHERE ended_at IS NULL AND status NOT IN ('dismissed', 'withdrawn')) ov
           ON ov.truck_id = s.truck_id
"""
# Trucks that changed since the cursor: state, registry row, or one of their violations.
_CHANGED = (
    " WHERE s.truck_id IN (SELECT truck_id FROM truck_state WHERE updated_at > %(since)s"
    " UNION SELECT id FROM trucks WHERE updated_at > %(since)s"
    " UNION SELECT truck_id FROM violations WHERE updated_at > %(since)s)"
)

_SELECT_BASE = """
    SELECT s.truck_id, t.plate, t.company_id, t.active, s.lon, s.lat, s.speed_kmh, s.heading,
           s.load::text, s.lid::text, s.lift::text, s.acc,
           (extract(epoch FROM s.fix_time) * 1000)::bigint, s.alarms,
           ov.truck_id IS NOT NULL, greatest(s.updated_at, t.updated_at)
    FROM truck_state s JOIN trucks t ON t.id = s.truck_id
"""
_SELECT = _SELECT_BASE + _OPEN  # noqa: S608 (constant fragments only)
_FULL = _SELECT + " WHERE t.active"
_DELTA = _SELECT + _CHANGED


# The same rows aggregated into column arrays by PostgreSQL: one text value instead of
# 20,000 Python tuples (the WGS-84 fast path; other CRSs convert in numpy).
_AGG_BASE = """
    SELECT count(*), max(greatest(s.updated_at, t.updated_at)),
           json_build_object(
             'id', coalesce(json_agg(s.truck_id), '[]'), 'plate', coalesce(json_agg(t.plate), '[]'),
             'company_id', coalesce(json_agg(t.company_id), '[]'), 'active', coalesce(json_agg(t.active), '[]'),
             'lon', coalesce(json_agg(s.lon), '[]'), 'lat', coalesce(json_agg(s.lat), '[]'),
             'speed', coalesce(json_agg(s.speed_kmh), '[]'), 'heading', coalesce(json_agg(s.heading), '[]'),
             'load', coalesce(json_agg(s.load), '[]'), 'lid', coalesce(json_agg(s.lid), '[]'),
             'lift', coalesce(json_agg(s.lift), '[]'), 'acc', coalesce(json_agg(s.acc), '[]'),
             'fix_ms', coalesce(json_agg((extract(epoch FROM s.fix_time) * 1000)::bigint), '[]'),
             'alarms', coalesce(json_agg(s.alarms), '[]'),
             'violation', coalesce(json_agg(ov.truck_id IS NOT NULL), '[]'))::text,
           array_agg(DISTINCT t.company_id) FILTER (WHERE t.company_id IS NOT NULL)
    FROM truck_state s JOIN trucks t ON t.id = s.truck_id
"""
_AGG = _AGG_BASE + _OPEN  # noqa: S608 (constant fragments only)
_AGG_FULL = _AGG + " WHERE t.active"
_AGG_DELTA = _AGG + _CHANGED


def live_trucks_json(conn, since: int | None, *, overlap_s: float) -> bytes:
    """`live_trucks` for WGS-84 as ready JSON bytes, built by PostgreSQL (same document)."""
    import json

    with conn.cursor() as cur:
        cur.execute("SELECT now()")
        server_now = cur.fetchone()[0]
        if since is None:
            cur.execute(_AGG_FULL)
        else:
            start = cursor_to_time(since) - dt.timedelta(seconds=overlap_s)
            cur.execute(_AGG_DELTA, {"since": start})
        count, top, columns, company_ids = cur.fetchone()
        top = _with_violations(cur, top)
        companies = {}
        if company_ids:
            cur.execute("SELECT id, name FROM companies WHERE id = ANY(%s)", (company_ids,))
            companies = {str(cid): name for cid, name in cur.fetchall()}
    conn.rollback()
    newest = cursor_to_time(since) if since is not None else None
    if top is not None and (newest is None or top > newest):
        newest = top
    if newest is None:
        newest = server_now
    head = {
        "full": since is None,
        "cursor": str(time_to_cursor(newest)),
        "server_ms": int(server_now.timestamp() * 1000),
        "count": count,
        "crs": "wgs84",
        "fields": list(FIELDS),
        "companies": companies,
    }
    text = json.dumps(head, ensure_ascii=False)
    return (text[:-1] + ', "trucks": ' + columns + "}").encode()


def _with_violations(cur, top: dt.datetime | None) -> dt.datetime | None:
    """The cursor also covers violation changes (their updated_at, indexed), so a truck
    whose violation changed is sent once, not on every poll."""
    cur.execute("SELECT max(updated_at) FROM violations")
    vtop = cur.fetchone()[0]
    if vtop is not None and (top is None or vtop > top):
        return vtop
    return top


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
        violations_top = _with_violations(cur, None)
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
    if violations_top is not None and (newest is None or violations_top > newest):
        newest = violations_top
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
