"""Zones and ban days in PostgreSQL (tables from geofence/sql/0001_zones.sql)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from typing import Any

from psycopg2.extras import Json

from core.db import transaction
from geofence.model import DISTRICT, BanDay, Zone

_COLUMNS = "id, code, kind, name, district, valid_from, valid_to, active, geometry, attributes"


def _json(value: Any) -> Json:
    # round-trip through json so tuples from shapely become lists
    return Json(json.loads(json.dumps(value)))


def upsert_zones(conn, zones: Iterable[Zone]) -> dict[str, int]:
    """Insert or update zones by code, all in one transaction. Returns counts
    {"inserted": n, "updated": m}. Features of kind `district` in the same file go to the
    district table (`upsert_districts`), in the same transaction."""
    counts = {"inserted": 0, "updated": 0}
    zones = list(zones)
    districts = [z for z in zones if z.kind == DISTRICT]
    with transaction(conn) as cur:
        if districts:
            for key, n in _upsert_districts(cur, districts).items():
                counts[key] += n
        for zone in zones:
            if zone.kind == DISTRICT:
                continue
            cur.execute(
                """INSERT INTO geofence_zones
                       (code, kind, name, district, valid_from, valid_to, active, geometry,
                        attributes)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
                   ON CONFLICT (code) DO UPDATE SET
                       kind = EXCLUDED.kind, name = EXCLUDED.name,
                       district = EXCLUDED.district, valid_from = EXCLUDED.valid_from,
                       valid_to = EXCLUDED.valid_to, active = EXCLUDED.active,
                       geometry = EXCLUDED.geometry, attributes = EXCLUDED.attributes,
                       updated_at = now()
                   RETURNING (xmax = 0)""",
                (
                    zone.code,
                    zone.kind,
                    zone.name,
                    zone.district,
                    zone.valid_from,
                    zone.valid_to,
                    zone.active,
                    _json(zone.geometry),
                    _json(zone.attributes),
                ),
            )
            inserted = cur.fetchone()[0]
            counts["inserted" if inserted else "updated"] += 1
    return counts


def _rings(geometry: dict[str, Any]) -> list[tuple[int, int, str]]:
    """(part, ring, polygon literal) for every ring of a Polygon / MultiPolygon, in the text
    form of PostgreSQL's `polygon` type (passed as a bound value, cast in SQL)."""
    parts = [geometry["coordinates"]] if geometry["type"] == "Polygon" else geometry["coordinates"]
    out = []
    for p, rings in enumerate(parts):
        for r, ring in enumerate(rings):
            points = ",".join(f"({float(x)!r},{float(y)!r})" for x, y, *_ in ring)
            out.append((p, r, f"({points})"))
    return out


def _upsert_districts(cur, districts: list[Zone]) -> dict[str, int]:
    counts = {"inserted": 0, "updated": 0}
    ids, parts, rings, shapes = [], [], [], []
    for d in districts:
        cur.execute(
            """INSERT INTO geofence_districts (code, name, active, geometry)
               VALUES (%s, %s, %s, %s)
               ON CONFLICT (code) DO UPDATE SET name = EXCLUDED.name, active = EXCLUDED.active,
                   geometry = EXCLUDED.geometry, updated_at = now()
               RETURNING id, (xmax = 0)""",
            (d.code, d.name, d.active, _json(d.geometry)),
        )
        did, inserted = cur.fetchone()
        counts["inserted" if inserted else "updated"] += 1
        cur.execute("DELETE FROM geofence_district_rings WHERE district_id = %s", (did,))
        for part, ring, shape in _rings(json.loads(json.dumps(d.geometry))):
            ids.append(did)
            parts.append(part)
            rings.append(ring)
            shapes.append(shape)
    # One statement for every ring (a round trip per ring is slow for detailed boundaries).
    cur.execute(
        """INSERT INTO geofence_district_rings (district_id, part, ring, shape)
           SELECT * FROM unnest(%s::bigint[], %s::int[], %s::int[], %s::polygon[])""",
        (ids, parts, rings, shapes),
    )
    return counts


def upsert_districts(conn, districts: Iterable[Zone]) -> dict[str, int]:
    """Insert or update districts (zones of kind `district`) by code, in one transaction."""
    districts = list(districts)
    if any(d.kind != DISTRICT for d in districts):
        raise ValueError("upsert_districts takes districts only")
    with transaction(conn) as cur:
        return _upsert_districts(cur, districts)


def load_districts(conn, *, active_only: bool = True) -> list[dict[str, Any]]:
    """Districts as {id, code, name, active, geometry} (WGS-84 GeoJSON), by code."""
    with conn.cursor() as cur:
        cur.execute(
            """SELECT id, code, name, active, geometry FROM geofence_districts
               WHERE active OR NOT %s ORDER BY code""",
            (active_only,),
        )
        return [
            {"id": i, "code": c, "name": n, "active": a, "geometry": g}
            for i, c, n, a, g in cur.fetchall()
        ]


def district_at(conn, lon: float, lat: float) -> str | None:
    """Code of the active district containing the point, or None."""
    with conn.cursor() as cur:
        cur.execute("SELECT geofence_district_at(%s, %s)", (lon, lat))
        return cur.fetchone()[0]


def _zone(row: tuple) -> Zone:
    zid, code, kind, name, district, vfrom, vto, active, geometry, attributes = row
    return Zone(
        code=code,
        kind=kind,
        name=name,
        geometry=geometry,
        district=district,
        valid_from=vfrom,
        valid_to=vto,
        active=active,
        attributes=attributes or {},
        id=zid,
    )


def load_zones(
    conn, *, kind: str | None = None, district: str | None = None, active_only: bool = False
) -> list[Zone]:
    where = []
    params: list[Any] = []
    if kind:
        where.append("kind = %s")
        params.append(kind)
    if district:
        where.append("district = %s")
        params.append(district)
    if active_only:
        where.append("active")
    clause = ("WHERE " + " AND ".join(where)) if where else ""
    with conn.cursor() as cur:
        cur.execute(f"SELECT {_COLUMNS} FROM geofence_zones {clause} ORDER BY code", params)  # noqa: S608 (fixed fragments only)
        return [_zone(row) for row in cur.fetchall()]


def load_ban_days(conn) -> list[BanDay]:
    with conn.cursor() as cur:
        cur.execute(
            """SELECT b.id, b.day, z.code, b.start_time, b.end_time, b.reason
               FROM geofence_ban_days b LEFT JOIN geofence_zones z ON z.id = b.zone_id
               ORDER BY b.day, b.id"""
        )
        return [
            BanDay(day=day, zone_code=code, start=start, end=end, reason=reason, id=bid)
            for bid, day, code, start, end, reason in cur.fetchall()
        ]


def add_ban_day(
    conn,
    day: dt.date,
    *,
    zone_code: str | None = None,
    start: dt.time | None = None,
    end: dt.time | None = None,
    reason: str = "",
) -> int:
    """Record an extra ban day (all restricted zones when zone_code is None)."""
    if (start is None) != (end is None):
        raise ValueError("give both start and end, or neither (whole day)")
    with transaction(conn) as cur:
        zone_id = None
        if zone_code is not None:
            cur.execute("SELECT id, kind FROM geofence_zones WHERE code = %s", (zone_code,))
            row = cur.fetchone()
            if row is None:
                raise ValueError(f"no zone with code {zone_code!r}")
            if row[1] != "restricted":
                raise ValueError(f"zone {zone_code!r} is a {row[1]}, not a restricted zone")
            zone_id = row[0]
        cur.execute(
            """INSERT INTO geofence_ban_days (day, zone_id, start_time, end_time, reason)
               VALUES (%s, %s, %s, %s, %s) RETURNING id""",
            (day, zone_id, start, end, reason),
        )
        return cur.fetchone()[0]


def set_active(conn, code: str, active: bool) -> bool:
    with transaction(conn) as cur:
        cur.execute(
            "UPDATE geofence_zones SET active = %s, updated_at = now() WHERE code = %s",
            (active, code),
        )
        return cur.rowcount == 1


def delete_zone(conn, code: str) -> bool:
    with transaction(conn) as cur:
        cur.execute("DELETE FROM geofence_zones WHERE code = %s", (code,))
        return cur.rowcount == 1


def districts_version(conn) -> int:
    """Changes whenever a district is added or changed (µs of its newest update); 0 if none."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT (extract(epoch FROM max(updated_at)) * 1e6)::bigint FROM geofence_districts"
        )
        row = cur.fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def current_version(conn) -> int:
    """The catalogue version (changes with every change to zones or ban days)."""
    with conn.cursor() as cur:
        cur.execute("SELECT version FROM geofence_version WHERE id = 1")
        row = cur.fetchone()
    return int(row[0]) if row else 0
