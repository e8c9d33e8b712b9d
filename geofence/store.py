"""Zones and ban days in PostgreSQL (tables from geofence/sql/0001_zones.sql)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from typing import Any

from psycopg2.extras import Json

from core.db import transaction
from geofence.model import BanDay, Zone

_COLUMNS = "id, code, kind, name, district, valid_from, valid_to, active, geometry, attributes"


def _json(value: Any) -> Json:
    # round-trip through json so tuples from shapely become lists
    return Json(json.loads(json.dumps(value)))


def upsert_zones(conn, zones: Iterable[Zone]) -> dict[str, int]:
    """Insert or update zones by code, all in one transaction. Returns counts
    {"inserted": n, "updated": m}."""
    counts = {"inserted": 0, "updated": 0}
    with transaction(conn) as cur:
        for zone in zones:
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


def current_version(conn) -> int:
    """The catalogue version (changes with every change to zones or ban days)."""
    with conn.cursor() as cur:
        cur.execute("SELECT version FROM geofence_version WHERE id = 1")
        row = cur.fetchone()
    return int(row[0]) if row else 0
