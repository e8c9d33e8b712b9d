"""Every ANPR camera sighting classified once (table `sighting_checks`), and the plates
with black-truck evidence put on the list (`black_trucks.store`).

- `unregistered_plate`: the plate is neither a registered truck's plate nor its trailer plate;
- `no_valid_permit`: a registered truck with no active permit valid at the sighting time;
- `untracked`: registered and permitted, but no GPS fix of the truck within ±window of the
  sighting and within radius of the camera's site (the zone named by `site_id`: distance to
  the zone's geometry, 0 inside; a camera without a known site is checked on time only);
- `ok`; or `pending` while an `untracked` decision could still be overturned by a fix that
  has not arrived yet: it is decided when seen_at + window + grace has passed.

Reads with confidence below `compliance.anpr_min_confidence` are classified and listed but
flagged `low_confidence`; a plate needs at least one confident read to be a black truck.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import shapely
from psycopg2.extras import execute_values

from black_trucks.store import refresh_plate_entries, reopen_handled
from core.db import transaction
from geofence.projection import Projector
from permits.catalog import PermitCatalog
from registry.validation import normalise_plate

log = logging.getLogger(__name__)

OUTCOMES = ("ok", "unregistered_plate", "no_valid_permit", "untracked", "pending")
EVIDENCE = ("unregistered_plate", "no_valid_permit", "untracked")
_MATCH_LOCK = 0x6D75636B0001  # advisory lock key ("muck" + n)


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


def as_datetime(now: float | dt.datetime | None) -> dt.datetime:
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
    now_dt = as_datetime(now)
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
                report.plates_listed += refresh_plate_entries(cur, plates)
                reopen_handled(cur, "plate", plates)
        if len(rows) < batch_size:
            break
    log.info("%s", report.describe())
    return report
