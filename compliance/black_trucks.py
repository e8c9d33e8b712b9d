"""Black-truck (黑车) detection from ANPR sightings and from unregistered terminals.

Each camera sighting is classified once (table `sighting_checks`):

- `unregistered_plate`: the plate is neither a registered truck's plate nor its trailer plate;
- `no_valid_permit`: a registered truck with no active permit valid at the sighting time;
- `untracked`: registered and permitted, but no GPS fix of the truck within ±window of the
  sighting and within radius of the camera's site (the zone named by `site_id`: distance to
  the zone's geometry, 0 inside; a camera without a known site is checked on time only);
- `ok`; or `pending` while an `untracked` decision could still be overturned by a fix that
  has not arrived yet: it is decided when seen_at + window + grace has passed.

Reads with confidence below `compliance.anpr_min_confidence` are classified and listed but
flagged `low_confidence`; a plate needs at least one confident read to be a black truck.

The black-truck list (`black_trucks`) has one row per plate, plus one per unregistered device
id whose telemetry was stored with truck_id NULL. Both are recomputed from their evidence, so
the matcher and the scan are idempotent; they run under transaction-level advisory locks, so
concurrent runs queue rather than duplicate work.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import shapely
from psycopg2.extras import execute_values

from compliance.permits import PermitCatalog
from core.db import transaction
from geofence.projection import Projector
from registry.validation import normalise_plate

log = logging.getLogger(__name__)

OUTCOMES = ("ok", "unregistered_plate", "no_valid_permit", "untracked", "pending")
EVIDENCE = ("unregistered_plate", "no_valid_permit", "untracked")
_MATCH_LOCK = 0x6D75636B0001  # advisory lock keys ("muck" + n)
_DEVICE_LOCK = 0x6D75636B0002


@dataclass(frozen=True)
class MatchConfig:
    """Thresholds of the matcher, from the [compliance] section of the settings."""

    window_s: float = 300.0
    radius_m: float = 500.0
    min_confidence: float = 0.8
    grace_s: float = 600.0
    lookback_days: float = 7.0

    @classmethod
    def from_settings(cls, settings: Any) -> MatchConfig:
        section = settings.sections.get("compliance", {}) if settings is not None else {}
        return cls(
            window_s=float(section.get("anpr_match_window_min", 5)) * 60.0,
            radius_m=float(section.get("anpr_match_radius_m", 500.0)),
            min_confidence=float(section.get("anpr_min_confidence", 0.8)),
            grace_s=float(section.get("anpr_pending_grace_min", 10)) * 60.0,
            lookback_days=float(section.get("black_truck_lookback_days", 7)),
        )


@dataclass
class MatchReport:
    examined: int = 0
    changed: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    low_confidence: int = 0
    plates_listed: int = 0

    def describe(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items())) or "none"
        return (
            f"sightings: {self.examined} examined, {self.changed} classified or changed "
            f"({counts}; {self.low_confidence} low confidence); "
            f"{self.plates_listed} plate(s) on the black-truck list updated"
        )


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


@dataclass(frozen=True)
class Check:
    sighting_id: int
    seen_at: dt.datetime
    plate: str
    truck_id: int | None
    outcome: str
    low_confidence: bool
    permit_id: int | None
    nearest_fix_m: float | None
    nearest_fix_at: dt.datetime | None
    detail: str | None

    def values(self) -> tuple:
        return (
            self.sighting_id,
            self.seen_at,
            self.plate,
            self.truck_id,
            self.outcome,
            self.low_confidence,
            self.permit_id,
            self.nearest_fix_m,
            self.nearest_fix_at,
            self.detail,
        )


def _epoch(when: dt.datetime) -> float:
    return when.timestamp()


def _now_dt(now: float | dt.datetime | None) -> dt.datetime:
    if now is None:
        return dt.datetime.now(dt.UTC)
    if isinstance(now, dt.datetime):
        return now
    return dt.datetime.fromtimestamp(float(now), dt.UTC)


_PROJECTORS = threading.local()


def _projector(city: Any) -> Projector:
    """One Projector per city and thread: building one costs ~75 ms of pyproj set-up, which
    was most of a minute's matching; pyproj transformers are not shared between threads."""
    key = tuple(sorted((str(k), str(v)) for k, v in dict(city).items()))
    cache = getattr(_PROJECTORS, "cache", None)
    if cache is None:
        cache = _PROJECTORS.cache = {}
    if key not in cache:
        cache[key] = Projector(city)
    return cache[key]


class _SiteDistances:
    """Metric distance from WGS-84 points to a zone named by code (0 inside; cached)."""

    def __init__(self, cur, settings: Any) -> None:
        self.cur = cur
        self.projector = _projector(settings.city)
        self.cache: dict[str, tuple[shapely.Geometry, float] | None] = {}

    def _zone(self, code: str) -> tuple[shapely.Geometry, float] | None:
        if code not in self.cache:
            self.cur.execute(
                "SELECT geometry, attributes FROM geofence_zones WHERE code = %s", (code,)
            )
            row = self.cur.fetchone()
            if row is None:
                self.cache[code] = None
            else:
                geometry, attributes = row
                geom = self.projector.geometry(shapely.geometry.shape(geometry))
                radius = float((attributes or {}).get("radius_m", 0.0))
                self.cache[code] = (geom, radius)
        return self.cache[code]

    def known(self, code: str | None) -> bool:
        return bool(code) and self._zone(code) is not None

    def distances(self, code: str, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        geom, radius = self._zone(code)  # type: ignore[misc]
        x, y = self.projector.forward(lon, lat)
        d = shapely.distance(geom, shapely.points(x, y))
        if radius > 0:  # a Point + radius_m zone is a circle
            d = np.maximum(d - radius, 0.0)
        return np.asarray(d, dtype=np.float64)


def _classify(
    rows: Sequence[tuple],
    cur,
    settings: Any,
    config: MatchConfig,
    permits: PermitCatalog,
    now: dt.datetime,
) -> list[Check]:
    """Classify sightings (id, seen_at, plate, site_id, confidence)."""
    plates = sorted({normalise_plate(r[2]) for r in rows})
    cur.execute(
        """SELECT plate, trailer_plate, id FROM trucks
           WHERE plate = ANY(%s) OR trailer_plate = ANY(%s)""",
        (plates, plates),
    )
    truck_by_plate: dict[str, int] = {}
    trailers: dict[str, int] = {}
    for plate, trailer, truck_id in cur.fetchall():
        truck_by_plate[plate] = truck_id
        if trailer:
            trailers.setdefault(normalise_plate(trailer), truck_id)
    sites = _SiteDistances(cur, settings)
    window = dt.timedelta(seconds=config.window_s)
    grace = dt.timedelta(seconds=config.grace_s)

    pre: list[dict[str, Any]] = []
    need_fixes: list[tuple[int, int, dt.datetime]] = []
    for sid, seen_at, plate, site_id, confidence in rows:
        plate = normalise_plate(plate)
        truck_id = truck_by_plate.get(plate, trailers.get(plate))
        item = {
            "sid": sid,
            "seen_at": seen_at,
            "plate": plate,
            "site": site_id,
            "truck_id": truck_id,
            "low": confidence is not None and float(confidence) < config.min_confidence,
            "permit_id": None,
        }
        if truck_id is not None:
            valid = permits.permits_for(truck_id, _epoch(seen_at))
            if valid:
                item["permit_id"] = valid[0].id
                need_fixes.append((sid, truck_id, seen_at))
        pre.append(item)

    fixes: dict[int, list[tuple[dt.datetime, float, float]]] = {}
    if need_fixes:
        cur.execute(
            """SELECT s.id, p.fix_time, p.lon, p.lat
               FROM unnest(%s::bigint[], %s::bigint[], %s::timestamptz[]) AS s(id, truck_id, seen_at)
               JOIN LATERAL (
                   SELECT fix_time, lon, lat FROM positions
                   WHERE truck_id = s.truck_id
                     AND fix_time BETWEEN s.seen_at - %s AND s.seen_at + %s
               ) p ON true""",
            (
                [n[0] for n in need_fixes],
                [n[1] for n in need_fixes],
                [n[2] for n in need_fixes],
                window,
                window,
            ),
        )
        for sid, fix_time, lon, lat in cur.fetchall():
            fixes.setdefault(sid, []).append((fix_time, lon, lat))

    checks: list[Check] = []
    for item in pre:
        nearest_m = nearest_at = None
        detail = None
        if item["truck_id"] is None:
            outcome = "unregistered_plate"
        elif item["permit_id"] is None:
            outcome = "no_valid_permit"
        else:
            found = fixes.get(item["sid"], [])
            site = item["site"]
            if found and sites.known(site):
                lon = np.array([f[1] for f in found])
                lat = np.array([f[2] for f in found])
                d = sites.distances(site, lon, lat)
                best = int(np.argmin(d))
                nearest_m = round(float(d[best]), 1)
                nearest_at = found[best][0]
                tracked = nearest_m <= config.radius_m
            elif found:
                # No site to measure from: a fix in the time window is enough.
                nearest_at = min(found, key=lambda f: abs(f[0] - item["seen_at"]))[0]
                tracked = True
                detail = (
                    f"camera site {site!r} is not a zone: time-only check"
                    if site
                    else "camera has no site: time-only check"
                )
            else:
                tracked = False
            if tracked:
                outcome = "ok"
            else:
                outcome = "pending" if now < item["seen_at"] + window + grace else "untracked"
                if found:
                    detail = (
                        f"nearest fix in ±{config.window_s / 60:g} min is {nearest_m:.0f} m "
                        f"from {site}"
                    )
                else:
                    detail = f"no GPS fix within ±{config.window_s / 60:g} min"
        checks.append(
            Check(
                sighting_id=item["sid"],
                seen_at=item["seen_at"],
                plate=item["plate"],
                truck_id=item["truck_id"],
                outcome=outcome,
                low_confidence=item["low"],
                permit_id=item["permit_id"],
                nearest_fix_m=nearest_m,
                nearest_fix_at=nearest_at,
                detail=detail,
            )
        )
    return checks


_UPSERT_CHECKS = """
    INSERT INTO sighting_checks AS c (sighting_id, seen_at, plate, truck_id, outcome,
        low_confidence, permit_id, nearest_fix_m, nearest_fix_at, detail)
    VALUES %s
    ON CONFLICT (sighting_id) DO UPDATE SET
        seen_at = EXCLUDED.seen_at, plate = EXCLUDED.plate, truck_id = EXCLUDED.truck_id,
        outcome = EXCLUDED.outcome, low_confidence = EXCLUDED.low_confidence,
        permit_id = EXCLUDED.permit_id, nearest_fix_m = EXCLUDED.nearest_fix_m,
        nearest_fix_at = EXCLUDED.nearest_fix_at, detail = EXCLUDED.detail,
        classified_at = CASE WHEN c.outcome = EXCLUDED.outcome THEN c.classified_at
                             ELSE now() END,
        checked_at = now()
    WHERE (c.truck_id, c.outcome, c.low_confidence, c.permit_id, c.nearest_fix_m,
           c.nearest_fix_at, c.detail)
          IS DISTINCT FROM
          (EXCLUDED.truck_id, EXCLUDED.outcome, EXCLUDED.low_confidence, EXCLUDED.permit_id,
           EXCLUDED.nearest_fix_m, EXCLUDED.nearest_fix_at, EXCLUDED.detail)
    RETURNING c.plate
"""

_REFRESH_PLATES = """
    WITH ev AS (
        SELECT c.plate,
               max(c.truck_id) AS truck_id,
               min(c.seen_at) AS first_seen,
               max(c.seen_at) AS last_seen,
               count(*) AS n,
               count(*) FILTER (WHERE NOT c.low_confidence) AS n_confident,
               coalesce(array_agg(DISTINCT s.site_id ORDER BY s.site_id)
                        FILTER (WHERE s.site_id IS NOT NULL), '{}') AS sites,
               array_agg(DISTINCT c.outcome ORDER BY c.outcome) AS reasons,
               max(c.classified_at) AS last_evidence_at
        FROM sighting_checks c JOIN sightings s ON s.id = c.sighting_id
        WHERE c.plate = ANY(%(plates)s)
          AND c.outcome IN ('unregistered_plate', 'no_valid_permit', 'untracked')
        GROUP BY c.plate
        HAVING count(*) FILTER (WHERE NOT c.low_confidence) > 0
    ), gone AS (
        DELETE FROM black_trucks b
        WHERE b.kind = 'plate' AND b.key = ANY(%(plates)s) AND b.status = 'new'
          AND NOT EXISTS (SELECT 1 FROM ev WHERE ev.plate = b.key)
    )
    INSERT INTO black_trucks AS b (kind, key, truck_id, first_seen, last_seen, sightings,
        confident_sightings, sites, reasons, last_evidence_at)
    SELECT 'plate', plate, truck_id, first_seen, last_seen, n, n_confident, sites, reasons,
           last_evidence_at
    FROM ev
    ON CONFLICT (kind, key) DO UPDATE SET
        truck_id = EXCLUDED.truck_id, first_seen = EXCLUDED.first_seen,
        last_seen = EXCLUDED.last_seen, sightings = EXCLUDED.sightings,
        confident_sightings = EXCLUDED.confident_sightings, sites = EXCLUDED.sites,
        reasons = EXCLUDED.reasons, last_evidence_at = EXCLUDED.last_evidence_at,
        updated_at = now()
    WHERE (b.truck_id, b.first_seen, b.last_seen, b.sightings, b.confident_sightings,
           b.sites, b.reasons, b.last_evidence_at)
          IS DISTINCT FROM
          (EXCLUDED.truck_id, EXCLUDED.first_seen, EXCLUDED.last_seen, EXCLUDED.sightings,
           EXCLUDED.confident_sightings, EXCLUDED.sites, EXCLUDED.reasons,
           EXCLUDED.last_evidence_at)
    RETURNING b.id
"""

_REOPEN = """
    WITH reopened AS (
        UPDATE black_trucks SET status = 'new', updated_at = now()
        WHERE kind = %(kind)s AND key = ANY(%(keys)s) AND status = 'handled'
          AND last_evidence_at > handled_at
        RETURNING id
    )
    INSERT INTO black_truck_actions (black_truck_id, action, actor, note)
    SELECT id, 'reopened', 'system', 'new evidence after it was handled' FROM reopened
"""


def match_new_sightings(
    conn,
    settings: Any,
    since: dt.datetime | None = None,
    *,
    now: float | dt.datetime | None = None,
    recheck: bool = False,
    permits: PermitCatalog | None = None,
    batch_size: int = 1000,
) -> MatchReport:
    """Classify the sightings not yet decided (new or `pending`) seen since `since`.

    `since` defaults to now - compliance.black_truck_lookback_days. With `recheck`, every
    sighting since then is classified again (e.g. after permits were imported late or a
    large re-upload arrived); only changed outcomes are written. Idempotent; concurrent runs
    serialise on an advisory lock, batch by batch.
    """
    config = MatchConfig.from_settings(settings)
    now_dt = _now_dt(now)
    if since is None:
        since = now_dt - dt.timedelta(days=config.lookback_days)
    catalog = permits or PermitCatalog(settings)
    catalog.refresh_if_changed(conn)
    report = MatchReport()
    after_id = 0
    while True:
        with transaction(conn) as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_MATCH_LOCK,))
            cur.execute(
                """SELECT s.id, s.seen_at, s.plate, s.site_id, s.confidence
                   FROM sightings s LEFT JOIN sighting_checks c ON c.sighting_id = s.id
                   WHERE s.seen_at >= %(since)s AND s.id > %(after)s
                     AND (%(recheck)s OR c.sighting_id IS NULL OR c.outcome = 'pending')
                   ORDER BY s.id LIMIT %(limit)s""",
                {"since": since, "after": after_id, "recheck": recheck, "limit": batch_size},
            )
            rows = cur.fetchall()
            if not rows:
                break
            after_id = rows[-1][0]
            checks = _classify(rows, cur, settings, config, catalog, now_dt)
            report.examined += len(checks)
            for check in checks:
                report.outcomes[check.outcome] = report.outcomes.get(check.outcome, 0) + 1
                report.low_confidence += check.low_confidence
            changed = execute_values(
                cur, _UPSERT_CHECKS, [c.values() for c in checks], fetch=True, page_size=500
            )
            report.changed += len(changed)
            plates = sorted({row[0] for row in changed})
            if plates:
                cur.execute(_REFRESH_PLATES, {"plates": plates})
                report.plates_listed += len(cur.fetchall())
                cur.execute(_REOPEN, {"kind": "plate", "keys": plates})
        if len(rows) < batch_size:
            break
    log.info("%s", report.describe())
    return report


# ------------------------------------------------------------ unregistered terminals


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
    now_dt = _now_dt(now)
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
            cur.execute("SELECT last_id FROM compliance_cursors WHERE name = %s", (_DEVICE_CURSOR,))
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
            """INSERT INTO compliance_cursors (name, last_id) VALUES (%s, %s)
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
            cur.execute(
                """WITH ev AS (
                       SELECT device_id, min(first_fix) AS first_seen,
                              max(last_fix) AS last_seen, sum(fixes)::int AS n,
                              coalesce((SELECT array_agg(DISTINCT s ORDER BY s)
                                        FROM unregistered_device_days d2, unnest(d2.sites) s
                                        WHERE d2.device_id = d.device_id), '{}') AS sites
                       FROM unregistered_device_days d
                       WHERE device_id = ANY(%(keys)s) GROUP BY device_id
                   ), gone AS (
                       DELETE FROM black_trucks b
                       WHERE b.kind = 'device' AND b.key = ANY(%(keys)s) AND b.status = 'new'
                         AND NOT EXISTS (SELECT 1 FROM ev WHERE ev.device_id = b.key)
                   )
                   INSERT INTO black_trucks AS b (kind, key, first_seen, last_seen, sightings,
                       confident_sightings, sites, reasons, last_evidence_at)
                   SELECT 'device', device_id, first_seen, last_seen, n, n, sites,
                          '{unregistered_device}', last_seen
                   FROM ev
                   ON CONFLICT (kind, key) DO UPDATE SET
                       first_seen = EXCLUDED.first_seen, last_seen = EXCLUDED.last_seen,
                       sightings = EXCLUDED.sightings,
                       confident_sightings = EXCLUDED.confident_sightings,
                       sites = EXCLUDED.sites, last_evidence_at = EXCLUDED.last_evidence_at,
                       updated_at = now()
                   WHERE (b.first_seen, b.last_seen, b.sightings, b.sites)
                         IS DISTINCT FROM
                         (EXCLUDED.first_seen, EXCLUDED.last_seen, EXCLUDED.sightings,
                          EXCLUDED.sites)""",
                {"keys": devices},
            )
            cur.execute(_REOPEN, {"kind": "device", "keys": devices})
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


# ----------------------------------------------------------------- list and handling


@dataclass(frozen=True)
class BlackTruck:
    id: int
    kind: str
    key: str
    truck_id: int | None
    first_seen: dt.datetime
    last_seen: dt.datetime
    sightings: int
    confident_sightings: int
    sites: tuple[str, ...]
    reasons: tuple[str, ...]
    status: str
    handled_by: str | None
    handled_at: dt.datetime | None
    handled_note: str | None


_BT_COLUMNS = """id, kind, key, truck_id, first_seen, last_seen, sightings, confident_sightings,
    sites, reasons, status, handled_by, handled_at, handled_note"""


def _bt(row: tuple) -> BlackTruck:
    values = list(row)
    values[8] = tuple(values[8])
    values[9] = tuple(values[9])
    return BlackTruck(*values)


def list_black_trucks(
    conn, *, status: str | None = None, kind: str | None = None, limit: int | None = None
) -> list[BlackTruck]:
    """The black-truck list, most recently seen first."""
    with conn.cursor() as cur:
        cur.execute(
            f"""SELECT {_BT_COLUMNS} FROM black_trucks
                WHERE (%(status)s::text IS NULL OR status = %(status)s)
                  AND (%(kind)s::text IS NULL OR kind = %(kind)s)
                ORDER BY last_seen DESC, id LIMIT %(limit)s""",  # noqa: S608 (fixed columns)
            {"status": status, "kind": kind, "limit": limit},
        )
        rows = [_bt(row) for row in cur.fetchall()]
    conn.commit()
    return rows


def get_black_truck(conn, key: str, kind: str = "plate") -> BlackTruck | None:
    key = normalise_plate(key) if kind == "plate" else key.strip()
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT {_BT_COLUMNS} FROM black_trucks WHERE kind = %s AND key = %s",  # noqa: S608 (fixed columns)
            (kind, key),
        )
        row = cur.fetchone()
    conn.commit()
    return _bt(row) if row else None


@dataclass(frozen=True)
class SightingEvidence:
    sighting_id: int
    seen_at: dt.datetime
    camera_id: str
    site_id: str | None
    direction: str | None
    confidence: float | None
    image_ref: str | None
    outcome: str
    low_confidence: bool
    nearest_fix_m: float | None
    detail: str | None


def plate_sightings(conn, plate: str, *, evidence_only: bool = True) -> list[SightingEvidence]:
    """Every classified sighting of a plate (black-truck outcomes only by default)."""
    with conn.cursor() as cur:
        cur.execute(
            """SELECT s.id, s.seen_at, s.camera_id, s.site_id, s.direction, s.confidence,
                      s.image_ref, c.outcome, c.low_confidence, c.nearest_fix_m, c.detail
               FROM sighting_checks c JOIN sightings s ON s.id = c.sighting_id
               WHERE c.plate = %s
                 AND (NOT %s OR c.outcome IN ('unregistered_plate', 'no_valid_permit',
                                              'untracked'))
               ORDER BY s.seen_at, s.id""",
            (normalise_plate(plate), evidence_only),
        )
        rows = [SightingEvidence(*row) for row in cur.fetchall()]
    conn.commit()
    return rows


def handle_black_truck(conn, key: str, *, note: str, actor: str, kind: str = "plate") -> BlackTruck:
    """Mark a black truck handled (who, when, note); the action is kept in
    black_truck_actions. New evidence classified later reopens it (status back to new)."""
    if not note or not note.strip():
        raise ValueError("a note is required to handle a black truck")
    if not actor or not actor.strip():
        raise ValueError("the handling officer (actor) is required")
    key = normalise_plate(key) if kind == "plate" else key.strip()
    with transaction(conn) as cur:
        cur.execute(
            """UPDATE black_trucks SET status = 'handled', handled_by = %s, handled_at = now(),
                      handled_note = %s, updated_at = now()
               WHERE kind = %s AND key = %s RETURNING id""",
            (actor.strip(), note.strip(), kind, key),
        )
        row = cur.fetchone()
        if row is None:
            raise LookupError(f"{key!r} is not on the black-truck list")
        cur.execute(
            """INSERT INTO black_truck_actions (black_truck_id, action, actor, note)
               VALUES (%s, 'handled', %s, %s)""",
            (row[0], actor.strip(), note.strip()),
        )
    found = get_black_truck(conn, key, kind)
    assert found is not None
    return found


def scan(
    conn,
    settings: Any,
    *,
    now: float | dt.datetime | None = None,
    zones: Any = None,
    incremental: bool = False,
) -> tuple[MatchReport, DeviceScanReport]:
    """Both detections once: sightings, then unregistered terminals (`muck black-trucks scan`).
    `zones`: a loaded ZoneCatalog to reuse (building one is expensive); `incremental`: see
    `scan_unregistered_devices`."""
    started = time.perf_counter()
    match = match_new_sightings(conn, settings, now=now)
    devices = scan_unregistered_devices(
        conn, settings, now=now, zones=zones, incremental=incremental
    )
    log.debug("black-truck scan took %.2f s", time.perf_counter() - started)
    return match, devices
