"""Rules on frames built in memory: the test city of tests/compliance/city.py as zones and
permits in catalogues without a database, noise-free fixes as columns, and the engine's own
batch path (`ComplianceEngine.evaluate`: frame → condition streams → episode detector →
episodes → carry) fed one batch after another as a collector feeds it.

    frames = Frames()                                   # the test city, T1's permit
    track = Track(T1, BASE, x=1000).leg(60, kmh=35, **LOADED).leg(30, kmh=46, **LOADED)
    frames.feed(track)
    assert frames.kinds() == ["speeding"]

Times are device times in epoch seconds; BASE is a Tuesday 10:00 in the city's time zone.
A `Track` leg's first and last fixes are exactly `seconds` apart, so a condition that holds
over one whole leg lasts exactly that long (the rules count from first to last fix).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import numpy as np

from compliance.carry import Carry, CarryCache, decode_state
from compliance.engine import ComplianceEngine
from compliance.frame import FixColumns
from compliance.rules.base import Rule
from compliance.violations import EpisodeRow, _final
from core.config import Settings, load_settings
from geofence.catalog import ZoneCatalog
from geofence.io import parse_zones, read_geojson
from geofence.model import BanDay, Zone
from permits.catalog import PermitCatalog
from permits.store import PermitRow
from tests.compliance.city import ZONES, lonlat

R = TypeVar("R", bound=Rule)

T1, T2 = 1, 2  # truck ids: T1 holds the city's permit, T2 none
SETTINGS = load_settings()
TZ = ZoneInfo(SETTINGS.city["timezone"])
DAY = dt.date(2026, 3, 10)  # a Tuesday


def local(hhmm: str, day: dt.date = DAY) -> float:
    """Epoch seconds of a local wall-clock time in the city."""
    hour, minute = (int(part) for part in hhmm.split(":"))
    return dt.datetime.combine(day, dt.time(hour, minute), TZ).timestamp()


BASE = local("10:00")


def city_zones(*features: dict[str, Any]) -> list[Zone]:
    """The test city's zones (tests/compliance/city.py), validated as an import validates
    them; `features` (GeoJSON, see city.feature) are added, or replace the city's zone of
    the same code."""
    codes = {f["properties"]["code"] for f in features}
    kept = [f for f in ZONES["features"] if f["properties"]["code"] not in codes]
    collection = {"type": "FeatureCollection", "features": [*kept, *features]}
    return parse_zones(read_geojson(json.dumps(collection)))


CITY = city_zones()


def permit(
    *,
    id: int = 1,
    trucks: Sequence[int] = (T1,),
    origin_site: str = "SITE-A",
    disposal_sites: Sequence[str] = ("DISP-B",),
    routes: Sequence[str] = ("ROUTE-AB",),
    valid_from: dt.date = DAY - dt.timedelta(days=30),
    valid_to: dt.date = DAY + dt.timedelta(days=30),
    status: str = "active",
    operating_hours: Sequence[dict[str, Any]] = (),
) -> PermitRow:
    """A permit as the store gives it; by default the city's: T1 from SITE-A along ROUTE-AB
    to DISP-B, valid for a month either side of DAY, at any hour."""
    created = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    return PermitRow(
        id=id,
        number=f"深渣准〔2026〕{id:04d}号",
        company_id=1,
        company="城市渣土运输公司",
        company_credit_code="91110000600037341L",
        origin_site=origin_site,
        valid_from=valid_from,
        valid_to=valid_to,
        operating_hours=list(operating_hours),
        status=status,
        status_reason=None if status == "active" else "test",
        status_changed_at=None,
        authority=None,
        note=None,
        created_at=created,
        updated_at=created,
        disposal_sites=tuple(disposal_sites),
        routes=tuple(routes),
        truck_ids=tuple(trucks),
        plates=tuple(f"粤B1000{t}" for t in trucks),
    )


@dataclass
class Track:
    """One truck's fixes, without noise: legs of fixes every `every_s`, moving in a straight
    line to the leg's end point (the reported speed is the leg's `kmh`, whatever the
    distance). State keywords are stored values: load, lid, lift (city.LOADED, city.EMPTY),
    acc (ignition; default on) and alarms."""

    truck: int
    t: float  # the next fix's time
    x: float = 0.0  # local metres east and north of the city centre (city.lonlat)
    y: float = 0.0
    every_s: float = 1.0
    rows: list[tuple] = field(default_factory=list)

    def leg(
        self,
        seconds: float,
        to: tuple[float, float] | None = None,
        *,
        kmh: float = 0.0,
        acc: bool | None = True,
        alarms: list[str] | None = None,
        load: str | None = None,
        lid: str | None = None,
        lift: str | None = None,
    ) -> Track:
        """Fixes from now to `seconds` later (both included), ending at `to` (default: here)."""
        steps = int(round(seconds / self.every_s))
        x0, y0 = self.x, self.y
        x1, y1 = to if to is not None else (x0, y0)
        for k in range(steps + 1):
            share = (k + 1) / (steps + 1)
            self.x, self.y = x0 + (x1 - x0) * share, y0 + (y1 - y0) * share
            lon, lat = lonlat(self.x, self.y)
            t = self.t + k * self.every_s
            self.rows.append((self.truck, t, lon, lat, kmh, lid, lift, load, acc, alarms))
        self.t += (steps + 1) * self.every_s
        return self

    def at(self, x: float, y: float) -> Track:
        """Move to (x, y) without a fix on the way (the next leg starts there)."""
        self.x, self.y = x, y
        return self

    def gap(self, seconds: float) -> Track:
        """The next fix comes `seconds` after the last one (instead of `every_s`)."""
        self.t += seconds - self.every_s
        return self

    @property
    def last_t(self) -> float:
        return self.rows[-1][1]


_CATALOGS: dict[tuple, ZoneCatalog] = {}


def zone_catalog(
    zones: Sequence[Zone], ban_days: Iterable[BanDay], settings: Settings
) -> ZoneCatalog:
    """`ZoneCatalog.from_zones`, built once per set of zones (an index is immutable, and
    building one costs tens of milliseconds, most of it the projection)."""
    ban_days = tuple(ban_days)
    key = (json.dumps([z.to_feature() for z in zones], sort_keys=True), ban_days, id(settings))
    if key not in _CATALOGS:
        catalog = ZoneCatalog.from_zones(zones, ban_days, settings)
        assert not catalog.index.skipped, catalog.index.skipped
        _CATALOGS[key] = catalog
    return _CATALOGS[key]


class Frames:
    """The compliance engine over in-memory catalogues, fed batch after batch.

    Each batch goes through `ComplianceEngine.evaluate` from the carry the previous batches
    left, kept per truck in a `CarryCache` as the engine keeps it. With `stored=True` the
    carry is written to its stored form (a rule snapshot, as `rule_snapshots` holds it) and
    read back before every batch, as after a restart or in a replay."""

    def __init__(
        self,
        zones: Iterable[Zone] | None = None,
        permits: Iterable[PermitRow] | None = None,
        *,
        ban_days: Iterable[BanDay] = (),
        settings: Settings = SETTINGS,
        stored: bool = False,
    ) -> None:
        self.engine = ComplianceEngine(
            settings,
            zones=zone_catalog(CITY if zones is None else list(zones), ban_days, settings),
            permits=PermitCatalog.from_rows([permit()] if permits is None else permits, settings),
        )
        self.cache = CarryCache(self.engine.layout)
        self.stored = stored
        self.episodes: list[EpisodeRow] = []

    def rule(self, kind: type[R]) -> R:
        """The engine's instance of a rule (its thresholds, as read from the settings)."""
        (found,) = (rule for rule in self.engine.rules if isinstance(rule, kind))
        return found

    def feed(self, *tracks: Track, cuts: Sequence[int] = ()) -> Frames:
        """The tracks' fixes in time order, in batches that start at the fix positions
        `cuts` (none: one batch)."""
        rows = sorted((row for track in tracks for row in track.rows), key=lambda r: (r[1], r[0]))
        bounds = [0, *sorted(cuts), len(rows)]
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            if hi > lo:
                self.batch(FixColumns.from_rows(rows[lo:hi]))
        return self

    def batch(self, cols: FixColumns) -> list[EpisodeRow]:
        """Evaluate one batch from the trucks' carry; its episodes."""
        engine = self.engine
        trucks = np.unique(cols.truck_id)
        slots = self.cache.rows(trucks.tolist())
        before = self.cache.table.take(slots)
        # Fixes at or before a truck's checkpoint are replayed by the engine, not evaluated:
        # these tests feed fixes in time order only.
        assert (cols.t > before.last[np.searchsorted(trucks, cols.truck_id), 0]).all()
        if self.stored:
            texts = before.encode(np.arange(len(before)), engine.layout, with_position=True)
            before = Carry.from_states([decode_state(text) for text in texts], engine.layout)
        outcome = engine.evaluate(cols, before)
        self.cache.table.put(slots, outcome.carry)
        self.episodes += outcome.episodes
        return outcome.episodes

    def violations(self) -> list[EpisodeRow]:
        """One row per violation, as the violation writer merges the reports of an episode
        (qualified, then ended) into one, in (truck, kind, stream, start) order."""
        return [row for _, row in sorted(_final(self.episodes).items())]

    def kinds(self) -> list[str]:
        return [row.kind for row in self.violations()]
