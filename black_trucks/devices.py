"""Unregistered terminals: telemetry stored with truck_id NULL, summarised per device and
local day (table `unregistered_device_days`), each such device put on the black-truck list.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from psycopg2.extras import execute_values

from black_trucks.sightings import MatchConfig, as_datetime
from black_trucks.store import refresh_device_entries, reopen_handled
from core.db import transaction

log = logging.getLogger(__name__)

_DEVICE_LOCK = 0x6D75636B0002  # advisory lock key ("muck" + n; the matcher takes 1)


@dataclass
class DeviceScanReport:
    fixes: int = 0
    devices: int = 0
    days_changed: int = 0

    def describe(self) -> str:
        return (
            f"unregistered terminals: {self.devices} device(s), {self.fixes} fix(es) in the "
            f"look-back, {self.days_changed} device-day(s) changed"
        )


_DEVICE_CURSOR = "unregistered_devices"
# Batches commit a few seconds after their received_at, much later after a database outage
# (the hourly full pass catches those).
_INCREMENTAL_OVERLAP = dt.timedelta(minutes=10)


def scan_unregistered_devices(
    conn,
    settings: Any,
    since: dt.datetime | None = None,
    *,
    now: float | dt.datetime | None = None,
    zones: Any = None,
    incremental: bool = False,
) -> DeviceScanReport:
    """Summarise telemetry stored with truck_id NULL per device and local day, and list each
    such device as a black truck.

    The local days from `since` (default now - compliance.black_truck_lookback_days) are
    recomputed whole, so late re-uploads within the look-back are counted and repeated runs
    change nothing. `zones` is a loaded `geofence.catalog.ZoneCatalog` (one is loaded when
    omitted) used to name the sites and disposal sites the device's fixes were in.

    `incremental` (the collector's minute job) recomputes only the devices with fixes received
    since the previous pass, less `_INCREMENTAL_OVERLAP` for batches that committed late;
    without it (the first pass, hourly, `muck black-trucks scan`) every device is recomputed,
    which also drops device-days whose fixes are gone.
    """
    config = MatchConfig.from_settings(settings)
    tz = ZoneInfo(settings.city["timezone"])
    now_dt = as_datetime(now)
    if since is None:
        since = now_dt - dt.timedelta(days=config.lookback_days)
    first_day = since.astimezone(tz).date()
    start = dt.datetime.combine(first_day, dt.time(0), tz)
    report = DeviceScanReport()
    with transaction(conn) as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_DEVICE_LOCK,))
        cur.execute("SELECT now()")
        read_at = cur.fetchone()[0]
        only: list[str] | None = None
        if incremental:
            cur.execute(
                "SELECT last_id FROM black_truck_cursors WHERE name = %s", (_DEVICE_CURSOR,)
            )
            row = cur.fetchone()
            if row is not None:
                cur.execute(
                    """SELECT DISTINCT device_id FROM positions
                       WHERE truck_id IS NULL AND fix_time >= %s
                         AND received_at > to_timestamp(%s / 1000.0) - %s""",
                    (start, row[0], _INCREMENTAL_OVERLAP),
                )
                only = [r[0] for r in cur.fetchall()]
        if only == []:
            rows = []
        else:
            cur.execute(
                """SELECT device_id, fix_time, lon, lat FROM positions
                   WHERE truck_id IS NULL AND fix_time >= %s
                     AND (%s::text[] IS NULL OR device_id = ANY(%s::text[]))
                   ORDER BY device_id, fix_time""",
                (start, only, only),
            )
            rows = cur.fetchall()
        cur.execute(
            """INSERT INTO black_truck_cursors (name, last_id) VALUES (%s, %s)
               ON CONFLICT (name) DO UPDATE SET last_id = EXCLUDED.last_id""",
            (_DEVICE_CURSOR, int(read_at.timestamp() * 1000)),
        )
    report.fixes = len(rows)
    days = _device_days(rows, tz, zones, settings, conn)
    report.devices = len({d[0] for d in days})
    with transaction(conn) as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_DEVICE_LOCK,))
        cur.execute(
            """DELETE FROM unregistered_device_days d WHERE d.day >= %s
                 AND (%s::text[] IS NULL OR d.device_id = ANY(%s::text[]))
                 AND (d.device_id, d.day) NOT IN
                     (SELECT * FROM unnest(%s::text[], %s::date[]))
               RETURNING d.device_id""",
            (first_day, only, only, [d[0] for d in days], [d[1] for d in days]),
        )
        deleted = [row[0] for row in cur.fetchall()]
        report.days_changed = len(deleted)
        changed = set(deleted)
        if days:
            upserted = execute_values(
                cur,
                """INSERT INTO unregistered_device_days AS d (device_id, day, first_fix,
                       last_fix, fixes, last_lat, last_lon, sites)
                   VALUES %s
                   ON CONFLICT (device_id, day) DO UPDATE SET
                       first_fix = EXCLUDED.first_fix, last_fix = EXCLUDED.last_fix,
                       fixes = EXCLUDED.fixes, last_lat = EXCLUDED.last_lat,
                       last_lon = EXCLUDED.last_lon, sites = EXCLUDED.sites,
                       scanned_at = now()
                   WHERE (d.first_fix, d.last_fix, d.fixes, d.sites)
                         IS DISTINCT FROM
                         (EXCLUDED.first_fix, EXCLUDED.last_fix, EXCLUDED.fixes, EXCLUDED.sites)
                   RETURNING d.device_id""",
                days,
                template="(%s, %s, %s, %s, %s, %s, %s, %s::text[])",
                fetch=True,
            )
            report.days_changed += len(upserted)
            changed |= {row[0] for row in upserted}
        devices = sorted(changed)
        if devices:
            refresh_device_entries(cur, devices)
            reopen_handled(cur, "device", devices)
    log.info("%s", report.describe())
    return report


def _device_days(rows, tz: ZoneInfo, zones: Any, settings: Any, conn) -> list[tuple]:
    """(device, local day, first, last, count, last lat, last lon, sites) per device-day."""
    if not rows:
        return []
    if zones is None:
        from geofence.catalog import ZoneCatalog

        zones = ZoneCatalog(settings)
        zones.load(conn)
    index = zones.index
    lon = np.array([r[2] for r in rows], dtype=np.float64)
    lat = np.array([r[3] for r in rows], dtype=np.float64)
    t = np.array([r[1].timestamp() for r in rows], dtype=np.float64)
    site_of: dict[int, set[str]] = {}
    if len(index):
        cls = index.classify(lon, lat, t)
        for kind in ("site", "disposal"):
            fix, zone = cls.pairs(kind)
            for f, z in zip(fix.tolist(), zone.tolist(), strict=True):
                site_of.setdefault(f, set()).add(str(index.codes[z]))
    out: dict[tuple[str, dt.date], list[Any]] = {}
    for i, (device, fix_time, lon_i, lat_i) in enumerate(rows):
        key = (device, fix_time.astimezone(tz).date())
        entry = out.get(key)
        if entry is None:
            out[key] = [
                device,
                key[1],
                fix_time,
                fix_time,
                1,
                lat_i,
                lon_i,
                set(site_of.get(i, ())),
            ]
        else:  # rows are in (device, fix_time) order
            entry[3] = fix_time
            entry[4] += 1
            entry[5], entry[6] = lat_i, lon_i
            entry[7] |= site_of.get(i, set())
    return [(*e[:7], sorted(e[7])) for e in out.values()]
