"""A small test city for the compliance scenarios, and a fix generator with GPS noise.

Coordinates are local metres east/north of the city centre, turned into WGS-84 with a
local tangent-plane approximation (good to well under a metre over a few km).

    SITE-A (0,0) ──── ROUTE-AB (50 m corridor) ──── DISP-B (5000,0)
    DISP-C (3500,0): a disposal site on the way, not on the permit
    RESTR-1 around (2500,2000): banned at all times
    SPEED-30 around (2500,-2000): 30 km/h
"""

from __future__ import annotations

import datetime as dt
import json
import math
import random
from dataclasses import dataclass, field

import msgspec

from compliance.engine import ComplianceEngine
from geofence.io import parse_zones, read_geojson
from geofence.store import upsert_zones
from permits.io import parse_permits_json
from permits.store import import_permits
from registry.service import bind_terminal, upsert_company, upsert_truck
from telemetry.contract import Topics
from telemetry.ingest import Incoming, Ingestor

LON0, LAT0 = 114.06, 22.55
M_PER_DEG_LAT = 110_574.0
M_PER_DEG_LON = 111_320.0 * math.cos(math.radians(LAT0))
TOPICS = Topics("muck/v1")


def lonlat(x: float, y: float) -> list[float]:
    return [LON0 + x / M_PER_DEG_LON, LAT0 + y / M_PER_DEG_LAT]


def square(cx: float, cy: float, half: float) -> list[list[list[float]]]:
    ring = [
        (cx - half, cy - half),
        (cx + half, cy - half),
        (cx + half, cy + half),
        (cx - half, cy + half),
        (cx - half, cy - half),
    ]
    return [[lonlat(x, y) for x, y in ring]]


def feature(code, kind, geometry, **props):
    return {
        "type": "Feature",
        "geometry": geometry,
        "properties": {"code": code, "kind": kind, "name": code, **props},
    }


ZONES = {
    "type": "FeatureCollection",
    "features": [
        feature("SITE-A", "site", {"type": "Polygon", "coordinates": square(0, 0, 150)}),
        feature("DISP-B", "disposal", {"type": "Polygon", "coordinates": square(5000, 0, 150)}),
        feature("DISP-C", "disposal", {"type": "Polygon", "coordinates": square(3500, 0, 100)}),
        feature(
            "ROUTE-AB",
            "route",
            {"type": "LineString", "coordinates": [lonlat(0, 0), lonlat(5000, 0)]},
            width_m=50,
        ),
        feature(
            "RESTR-1", "restricted", {"type": "Polygon", "coordinates": square(2500, 2000, 300)}
        ),
        feature(
            "SPEED-30",
            "speed",
            {"type": "Polygon", "coordinates": square(2500, -2000, 400)},
            speed_limit_kmh=30,
        ),
    ],
}


@dataclass
class City:
    trucks: dict[str, int]  # device -> truck id
    base_ms: int  # scenario start (device time)


def build_city(db, settings, *, hours: list[dict] | None = None) -> City:
    zones = parse_zones(read_geojson(json.dumps(ZONES)))
    upsert_zones(db, zones)
    db.commit()
    trucks = {}
    with db.cursor() as cur:
        company = upsert_company(cur, "城市渣土运输公司", "91110000600037341L", "王五")
        for device, plate in (("T1", "粤B10001"), ("T2", "粤B10002")):
            truck = upsert_truck(cur, plate, company)
            bind_terminal(cur, device, truck, dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
            trucks[device] = truck
    db.commit()
    today = dt.date.today()
    permit = {
        "number": "深渣准〔2026〕0001号",
        "company_credit_code": "91110000600037341L",
        "trucks": ["粤B10001"],
        "origin_site": "SITE-A",
        "disposal_sites": ["DISP-B"],
        "routes": ["ROUTE-AB"],
        "valid_from": str(today - dt.timedelta(days=30)),
        "valid_to": str(today + dt.timedelta(days=30)),
    }
    if hours is not None:
        permit["operating_hours"] = hours
    import_permits(db, parse_permits_json(json.dumps([permit], ensure_ascii=False)))
    db.commit()
    # Scenarios run in the recent past (inside the ingest horizon), on a whole minute.
    base = (int(dt.datetime.now(dt.UTC).timestamp()) - 4 * 3600) // 60 * 60
    return City(trucks, base * 1000)


@dataclass
class Trace:
    """Builds a truck's fixes: legs of driving and dwelling, every `interval_s`, with noise."""

    device: str
    t_ms: int
    x: float = 0.0
    y: float = 0.0
    interval_s: float = 10.0
    jitter_m: float = 15.0
    seed: int = 1
    fixes: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def _emit(self, x, y, speed, heading, **state) -> None:
        # Noise of 10-20 m: a Gaussian whose size is drawn per fix.
        sigma = self.rng.uniform(self.jitter_m * 2 / 3, self.jitter_m * 4 / 3) / 1.5
        lon, lat = lonlat(x + self.rng.gauss(0, sigma), y + self.rng.gauss(0, sigma))
        body = {
            "ts": self.t_ms,
            "lat": round(lat, 7),
            "lon": round(lon, 7),
            "speed": round(max(0.0, speed + self.rng.uniform(-1, 1)), 1),
            "heading": int(heading) % 360,
            "acc": True,
        }
        body.update({k: v for k, v in state.items() if v is not None})
        self.fixes.append(body)

    def dwell(self, seconds: float, **state) -> Trace:
        for _ in range(int(seconds // self.interval_s)):
            self._emit(self.x, self.y, 0.0, 0, **state)
            self.t_ms += int(self.interval_s * 1000)
        return self

    def drive(self, x: float, y: float, kmh: float, **state) -> Trace:
        dist = math.hypot(x - self.x, y - self.y)
        steps = max(1, int(round(dist / (kmh / 3.6) / self.interval_s)))
        heading = math.degrees(math.atan2(x - self.x, y - self.y))
        x0, y0 = self.x, self.y
        for k in range(1, steps + 1):
            self.x, self.y = x0 + (x - x0) * k / steps, y0 + (y - y0) * k / steps
            self._emit(self.x, self.y, kmh, heading, **state)
            self.t_ms += int(self.interval_s * 1000)
        return self

    def gap(self, seconds: float) -> Trace:
        self.t_ms += int(seconds * 1000)
        return self

    def messages(self) -> list[Incoming]:
        topic = TOPICS.telemetry(self.device)
        return [Incoming(topic, msgspec.json.encode(f)) for f in self.fixes]


LOADED = {"load": "full", "lid": "closed", "lift": "down"}
EMPTY = {"load": "empty", "lid": "closed", "lift": "down"}


def normal_trip(trace: Trace) -> Trace:
    """Load at SITE-A, drive the approved route, unload at DISP-B, come back empty."""
    trace.dwell(120, **EMPTY).dwell(180, **LOADED)
    trace.drive(2500, 0, 35, **LOADED).drive(4950, 0, 35, **LOADED)
    trace.dwell(60, **LOADED).dwell(60, load="full", lid="open", lift="up")
    trace.dwell(60, **EMPTY)
    trace.drive(2500, 0, 35, **EMPTY).drive(100, 0, 35, **EMPTY)
    return trace


class Pipeline:
    """The real ingestion path (validation, COPY, truck_state) with the rules hooked in."""

    def __init__(self, settings, db) -> None:
        self.settings, self.db = settings, db
        self.engine = ComplianceEngine(settings)
        self.engine.load(db)
        self.ingestor = Ingestor(settings)
        self.writer = self.ingestor.make_writer(db, after_store=[self.engine.after_store])

    def feed(self, messages: list[Incoming], batch_size: int = 25) -> None:
        for i in range(0, len(messages), batch_size):
            with self.db.cursor() as cur:
                batch = self.ingestor.build(messages[i : i + batch_size], cur)
            self.writer.write(batch)


def violations(db, *, include_withdrawn: bool = False) -> list[tuple]:
    with db.cursor() as cur:
        cur.execute(
            """SELECT t.plate, v.kind, v.stream, extract(epoch FROM v.started_at)::bigint,
                      extract(epoch FROM v.ended_at)::bigint, round(v.worst_value::numeric, 1)
               FROM violations v JOIN trucks t ON t.id = v.truck_id
               WHERE %s OR v.status <> 'withdrawn'
               ORDER BY 1, 2, 3, 4""",
            (include_withdrawn,),
        )
        rows = cur.fetchall()
    db.commit()
    return rows


def kinds(db) -> list[str]:
    return [row[1] for row in violations(db)]
