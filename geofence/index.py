"""In-memory geofence evaluation: which zones contain each fix, and how far each fix is from
its approved route, for large batches at once.

`GeofenceIndex` is the front door (see docs/geofence.md). It loads the zones, projects
their geometries once into the city's metric projection, and delegates:

- `geofence.batch`: the fixes of a call, projected once for both lookups (fixes outside the
  lon/lat box of every zone are never projected);
- `geofence.grid`: the uniform grid of the area zones (sites, disposal sites, restricted and
  speed zones) and the `Classification` of fixes into zones;
- `geofence.schedule`: validity dates, weekly windows and ban days on those pairs;
- `geofence.routes`: the per-route segment grids and point-to-segment distances.

Zone indexes are positions in `GeofenceIndex.zones`. Within each kind, zones are ordered by
area (smallest first), so "the" site of a fix inside nested sites is the most specific one.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import shapely

from geofence.batch import Batch, as_float, project
from geofence.grid import AreaGrid, Classification
from geofence.model import (
    DISPOSAL,
    KIND_CODE,
    RESTRICTED,
    ROAD_CLASSES,
    ROUTE,
    SITE,
    SPEED,
    BanDay,
    Zone,
)
from geofence.projection import Projector
from geofence.routes import RouteGrid
from geofence.schedule import ZoneSchedule
from geofence.timewin import LocalClock, to_epoch_seconds

# What other packages import from here; the constants and Classification live in
# geofence.model and geofence.grid.
__all__ = [
    "DISPOSAL",
    "KIND_CODE",
    "RESTRICTED",
    "ROUTE",
    "SITE",
    "SPEED",
    "Classification",
    "Evaluation",
    "GeofenceConfig",
    "GeofenceIndex",
]


@dataclass(frozen=True)
class GeofenceConfig:
    zone_cell_m: float = 50.0
    max_zone_cells: int = 4_000_000
    route_cell_m: float = 25.0
    route_distance_cap_m: float = 100.0
    max_zone_distance_km: float = 300.0
    circle_segments: int = 32
    #: km/h per road class, for speed zones that name a `road_class` instead of a limit
    #: (from `[thresholds] speed_limit_<class>_kmh`)
    road_class_limits: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Any) -> GeofenceConfig:
        section = dict(settings.sections.get("geofence", {})) if settings is not None else {}
        known = {
            k: section[k]
            for k in cls.__dataclass_fields__
            if k in section and k != "road_class_limits"
        }
        thresholds = dict(settings.sections.get("thresholds", {})) if settings is not None else {}
        limits = {
            road_class: float(thresholds[f"speed_limit_{road_class}_kmh"])
            for road_class in ROAD_CLASSES
            if f"speed_limit_{road_class}_kmh" in thresholds
        }
        return cls(**known, road_class_limits=limits)


@dataclass
class ProjectedZones:
    """The index's zones as its grids build from them, by zone index."""

    zones: list[Zone]
    prepared: np.ndarray  # projected geometry per zone, prepared for GEOS
    lonlat_bounds: dict[str, tuple[float, float, float, float]]  # by zone code
    geom_keys: dict[str, str]  # geometry digest by zone code, for build-cache keys
    crs_key: str  # the projection, for build-cache keys
    #: cached(key, build, *args): the per-zone build product from the previous index's
    #: cache, else build(*args)
    cached: Callable[..., Any]


@dataclass
class Evaluation:
    classification: Classification
    route_distance_m: np.ndarray | None


class GeofenceIndex:
    """Immutable evaluator over a set of zones. Build it with `GeofenceIndex(zones, ...)` or
    get the current one from `ZoneCatalog.index`."""

    def __init__(
        self,
        zones: Iterable[Zone],
        ban_days: Iterable[BanDay] = (),
        *,
        city: dict[str, Any] | None = None,
        config: GeofenceConfig | None = None,
        version: int | None = None,
        cache: dict | None = None,
    ) -> None:
        city = city or {"timezone": "Asia/Shanghai", "center_lon": 114.06, "center_lat": 22.55}
        self.config = config or GeofenceConfig()
        self.version = version
        self.projector = Projector(city)
        self.clock = LocalClock(city.get("timezone", "Asia/Shanghai"))
        self.skipped: list[tuple[str, str]] = []  # (code, reason) of zones not loaded
        # Per-zone build products keyed by geometry and parameters: pass the previous index's
        # `build_cache` to rebuild only the zones that changed.
        self._old_cache = cache or {}
        self.build_cache: dict = {}
        self.cache_hits = 0
        self._crs_key = self.projector.crs.to_wkt()

        prepared = self._project_zones([z for z in zones if z.active])
        # order: area kinds by area ascending, then routes
        prepared.sort(key=lambda item: (KIND_CODE[item[0].kind], item[2]))
        self.zones: list[Zone] = [item[0] for item in prepared]
        self.codes = np.array([z.code for z in self.zones], dtype=object)
        self._code_index = {z.code: i for i, z in enumerate(self.zones)}
        self.ids = np.array([-1 if z.id is None else z.id for z in self.zones], dtype=np.int64)
        self._id_index = {int(z.id): i for i, z in enumerate(self.zones) if z.id is not None}
        self.kind = np.array([KIND_CODE[z.kind] for z in self.zones], dtype=np.int8)
        class_limits = self.config.road_class_limits
        self.speed_limit_kmh = np.array(
            [
                float(
                    z.attributes.get(
                        "speed_limit_kmh",
                        class_limits.get(z.attributes.get("road_class", ""), np.inf),
                    )
                )
                for z in self.zones
            ]
        )
        self.width_m = np.array([z.width_m for z in self.zones], dtype=np.float64)
        self.schedule = ZoneSchedule(
            self.zones, self.kind, self._code_index, list(ban_days), self.clock
        )
        # projected geometries by zone index, prepared for GEOS (both lookups share them)
        self._prepared = np.array([item[1] for item in prepared], dtype=object)
        if len(self._prepared):
            shapely.prepare(self._prepared)
        parts = ProjectedZones(
            self.zones,
            self._prepared,
            self._lonlat_bounds,
            self._geom_keys,
            self._crs_key,
            self._cached,
        )
        self.area_grid = AreaGrid(
            parts,
            np.flatnonzero(self.kind != ROUTE),
            cell_m=self.config.zone_cell_m,
            max_cells=self.config.max_zone_cells,
        )
        self.route_grid = RouteGrid(
            parts,
            np.flatnonzero(self.kind == ROUTE),
            self.width_m,
            cell_m=self.config.route_cell_m,
            cap_m=self.config.route_distance_cap_m,
        )

    # ------------------------------------------------------------------ building

    def _cached(self, key: tuple, build: Callable[..., Any], *args: Any) -> Any:
        """A per-zone build product from the previous index's cache, else build(*args)."""
        item = self._old_cache.get(key)
        self.cache_hits += item is not None
        if item is None:
            item = build(*args)
        self.build_cache[key] = item
        return item

    def _project_zones(self, zones: list[Zone]) -> list[tuple[Zone, shapely.Geometry, float]]:
        out = []
        self._lonlat_bounds: dict[str, tuple[float, float, float, float]] = {}
        self._geom_keys: dict[str, str] = {}
        for zone in zones:
            radius = float(zone.attributes.get("radius_m", 0.0))
            key = (
                "zone",
                _geometry_digest(zone.geometry),
                zone.kind == "route",
                radius,
                self.config.circle_segments,
                self.config.max_zone_distance_km,
                self._crs_key,
            )
            item = self._cached(key, self._project_zone, zone, radius)
            if isinstance(item, str):
                self.skipped.append((zone.code, item))
                continue
            projected, area, lonlat = item
            self._lonlat_bounds[zone.code] = lonlat
            self._geom_keys[zone.code] = key[1]
            out.append((zone, projected, area))
        return out

    def _project_zone(self, zone: Zone, radius: float):
        """(projected geometry, area, lon/lat bounds), or the reason it cannot be used."""
        try:
            geom = shapely.geometry.shape(zone.geometry)
            lon0, lat0, lon1, lat1 = geom.bounds
            if not all(map(math.isfinite, (lon0, lat0, lon1, lat1))) or lon1 - lon0 > 180:
                raise ValueError("geometry has invalid coordinates or crosses the antimeridian")
            projected = self.projector.geometry(geom)
            if zone.geometry.get("type") == "Point":
                projected = projected.buffer(radius, quad_segs=self.config.circle_segments)
            bounds = np.asarray(projected.bounds)
            if not np.isfinite(bounds).all() or projected.is_empty:
                raise ValueError("geometry does not project into the city's CRS")
            if np.abs(bounds).max() > self.config.max_zone_distance_km * 1000.0 * 1.5:
                raise ValueError("zone lies too far from the city centre")
            if zone.kind != "route" and not projected.is_valid:
                projected = shapely.make_valid(projected)
                if not isinstance(projected, shapely.Polygon | shapely.MultiPolygon):
                    projected = shapely.unary_union(
                        [g for g in shapely.get_parts(projected) if g.area > 0]
                    )
            bounds = np.asarray(projected.bounds)
            if not np.isfinite(bounds).all() or projected.is_empty:
                raise ValueError("geometry does not project into the city's CRS")
        except (ValueError, KeyError, TypeError, shapely.errors.ShapelyError) as exc:
            return str(exc)
        area = float(projected.area) if zone.kind != "route" else 0.0
        return projected, area, (lon0, lat0, lon1, lat1)

    # ------------------------------------------------------------------ lookups

    def __len__(self) -> int:
        return len(self.zones)

    @property
    def valid_from_s(self) -> np.ndarray:
        """Per zone: local midnight starting its first valid day (epoch s; int64 min if none)."""
        return self.schedule.valid_from_s

    @property
    def valid_to_s(self) -> np.ndarray:
        """Per zone: local midnight ending its last valid day (epoch s; int64 max if none)."""
        return self.schedule.valid_to_s

    def zone_index(self, codes: str | Sequence[str] | np.ndarray) -> np.ndarray | int:
        """Zone index for each code (-1 when unknown, inactive or not loaded)."""
        if isinstance(codes, str):
            return self._code_index.get(codes, -1)
        return np.array([self._code_index.get(c, -1) for c in codes], dtype=np.int32)

    def zone_index_by_id(self, ids: Any) -> np.ndarray:
        """Zone index for each database id (geofence_zones.id); -1 when not loaded."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        return np.array([self._id_index.get(int(i), -1) for i in ids], dtype=np.int32)

    def memory_bytes(self) -> int:
        """Bytes of the numeric arrays of the index and its parts (each array counted once:
        the parts share some of the index's per-zone arrays)."""
        arrays = {
            id(value): value
            for part in (self, self.schedule, self.area_grid, self.route_grid)
            for value in vars(part).values()
            if isinstance(value, np.ndarray) and value.dtype != object
        }
        return sum(value.nbytes for value in arrays.values())

    # ------------------------------------------------------------------ evaluation

    def _batch(self, lon: Any, lat: Any) -> Batch:
        boxes = [b for b in (self.area_grid.lonlat_box, self.route_grid.lonlat_box) if b]
        return project(self.projector, boxes, lon, lat)

    def classify(self, lon: Any, lat: Any, t: Any) -> Classification:
        """Zones containing each fix. lon/lat: WGS-84 arrays; t: epoch seconds (or datetime64),
        one per fix (a scalar applies to all)."""
        batch = self._batch(lon, lat)
        return self._classify(batch, self._times(t, batch.n))

    def route_distance(self, lon: Any, lat: Any, route: Any) -> np.ndarray:
        """Distance (m) of each fix from its approved route; `route` holds zone indexes (see
        `zone_index`), one per fix or a scalar. Exact below the route's search radius
        `route_radius_m`, else that radius; +inf where the index is not a route (e.g. -1)."""
        batch = self._batch(lon, lat)
        return self._route_distance(batch, self._routes(route, batch.n))

    def route_distance_exact(self, lon: Any, lat: Any, route: Any) -> np.ndarray:
        """Exact distance (m) from each fix to its route, without the search-radius cap.

        GEOS per point (tens of thousands of fixes/s): for the few fixes beyond
        `route_radius_m`, e.g. the worst distance of a route deviation shown as evidence."""
        batch = self._batch(lon, lat)
        route = self._routes(route, batch.n)
        x, y = self.projector.forward(as_float(lon, "lon"), as_float(lat, "lat"))
        return self.route_grid.exact_distance(x, y, route)

    def evaluate(self, lon: Any, lat: Any, t: Any, route: Any = None) -> Evaluation:
        """classify() and, when `route` is given, route_distance(), projecting only once."""
        batch = self._batch(lon, lat)
        cls = self._classify(batch, self._times(t, batch.n))
        dist = None if route is None else self._route_distance(batch, self._routes(route, batch.n))
        return Evaluation(cls, dist)

    def route_radius_m(self, route: Any) -> np.ndarray:
        """Search radius per route zone index (distances are capped there); inf for non-routes."""
        return self.route_grid.radius_m(route)

    @staticmethod
    def _times(t: Any, n: int) -> np.ndarray:
        t = to_epoch_seconds(t)
        if t.ndim == 0:
            return np.full(n, int(t), dtype=np.int64)
        t = t.reshape(-1)
        if t.size != n:
            raise ValueError(f"{t.size} fix times for {n} fixes")
        return t

    def _routes(self, route: Any, n: int) -> np.ndarray:
        route = np.asarray(route, dtype=np.int64)
        if route.ndim == 0:
            route = np.full(n, int(route), dtype=np.int64)
        route = route.reshape(-1)
        if route.size != n:
            raise ValueError(f"{route.size} route indexes for {n} fixes")
        return route

    def _classify(self, b: Batch, t: np.ndarray) -> Classification:
        empty = np.zeros(0, dtype=np.int64)
        if self.area_grid.lonlat_box is None or b.n == 0:
            return Classification(self, b.n, empty, empty.astype(np.int32), empty.astype(bool))
        fix, zone = self.area_grid.hits(b)
        fix, zone, active = self.schedule.apply(fix, zone, t)
        return Classification(self, b.n, fix, zone.astype(np.int32), active)

    def _route_distance(self, b: Batch, route: np.ndarray) -> np.ndarray:
        return self.route_grid.distance(b, route)


def _geometry_digest(geometry: dict[str, Any]) -> str:
    text = json.dumps(geometry, sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
