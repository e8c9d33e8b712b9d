"""In-memory geofence evaluation: which zones contain each fix, and how far each fix is from
its approved route, for large batches at once.

Design (see docs/geofence.md):

- Fixes are projected once per batch into the city's metric projection (pyproj, vectorised).
  Fixes outside the lon/lat bounding box of all zones are never projected: they are outside
  everything (this also keeps far-away fixes away from the projection's distorted edges).
- Area zones (sites, disposal sites, restricted and speed zones) are indexed in a uniform
  grid over their extent. Each (cell, zone) entry records whether the cell lies wholly inside
  the zone; only fixes in cells the zone's boundary crosses are tested exactly, with shapely's
  vectorised `intersects_xy` on prepared polygons (a fix on the boundary counts as inside).
- Route segments are indexed per route in a two-level grid (tiles of cells); each cell keeps
  only the segments that can be the nearest one for some point of the cell and lie within the
  route's search radius. The distance of a fix is then the exact point-to-segment minimum over
  a handful of candidates, computed in numpy. Distances at or beyond the search radius
  (max(geofence.route_distance_cap_m, 2 x width)) are reported as the radius itself.

Zone indexes are positions in `GeofenceIndex.zones`. Within each kind, zones are ordered by
area (smallest first), so "the" site of a fix inside nested sites is the most specific one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import shapely

from geofence.model import KINDS, ROAD_CLASSES, BanDay, Zone
from geofence.projection import Projector
from geofence.timewin import LocalClock, parse_hhmm, to_epoch_seconds, window_bitmap

KIND_CODE = {kind: i for i, kind in enumerate(KINDS)}
SITE, DISPOSAL, ROUTE, RESTRICTED, SPEED = (KIND_CODE[k] for k in KINDS)

_NEVER = np.iinfo(np.int64).max
_EARLIEST = np.iinfo(np.int64).min
_TILE = 16  # cells per tile side in the route grid
_KEY_SHIFT = 40  # ban-interval keys: zone << 40 | seconds
_REF_X, _REF_Y = 0.5371, 0.4629  # reference point of a grid cell, in cells from its corner


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
class _Batch:
    n: int
    x: np.ndarray  # projected metres, NaN where not projected
    y: np.ndarray
    projected: np.ndarray  # bool: inside the lon/lat box of some zone and finite


def _as_float(values: Any, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        arr = arr.reshape(-1)
    return arr


class Classification:
    """Zones containing each fix of a batch, as sparse (fix, zone) pairs sorted by fix.

    `active` is per pair: for a restricted zone, its ban is in force at the fix time
    (window or ban day); for a disposal site, it is open; True for other kinds. Zones outside
    their validity dates at the fix time are left out altogether.
    """

    def __init__(
        self,
        index: GeofenceIndex,
        n: int,
        fix: np.ndarray,
        zone: np.ndarray,
        active: np.ndarray,
    ) -> None:
        self.index = index
        self.n = n
        self.fix = fix
        self.zone = zone
        self.active = active
        self.kind = index.kind[zone] if zone.size else np.zeros(0, dtype=np.int8)

    def __len__(self) -> int:
        return self.n

    def pairs(self, kind: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(fix, zone) index arrays, optionally for one kind."""
        if kind is None:
            return self.fix, self.zone
        sel = self.kind == KIND_CODE[kind]
        return self.fix[sel], self.zone[sel]

    def zones_at(self, i: int) -> list[int]:
        lo, hi = np.searchsorted(self.fix, [i, i + 1])
        return self.zone[lo:hi].tolist()

    def _first(self, sel: np.ndarray) -> np.ndarray:
        out = np.full(self.n, np.iinfo(np.int32).max, dtype=np.int32)
        np.minimum.at(out, self.fix[sel], self.zone[sel].astype(np.int32))
        out[out == np.iinfo(np.int32).max] = -1
        return out

    def in_kind(self, kind: str) -> np.ndarray:
        """Boolean per fix: inside at least one valid zone of `kind`."""
        out = np.zeros(self.n, dtype=bool)
        out[self.fix[self.kind == KIND_CODE[kind]]] = True
        return out

    def site_at(self) -> np.ndarray:
        """Zone index of the (smallest) construction site containing each fix, or -1."""
        return self._first(self.kind == SITE)

    def disposal_site_at(self, open_only: bool = False) -> np.ndarray:
        """Zone index of the (smallest) disposal site containing each fix, or -1; with
        open_only, only sites within their opening hours at the fix time."""
        sel = self.kind == DISPOSAL
        if open_only:
            sel &= self.active
        return self._first(sel)

    def restricted_at(self) -> np.ndarray:
        """Zone index of a restricted zone containing the fix (ban in force or not), or -1."""
        return self._first(self.kind == RESTRICTED)

    def restricted_active_at(self) -> np.ndarray:
        """Zone index of a restricted zone containing the fix whose ban is in force at the
        fix time (weekly window or ban day, local time), or -1."""
        return self._first((self.kind == RESTRICTED) & self.active)

    def speed_limit_at(self) -> np.ndarray:
        """Lowest speed limit (km/h) of the speed zones containing each fix; +inf if none."""
        out = np.full(self.n, np.inf)
        sel = self.kind == SPEED
        np.minimum.at(out, self.fix[sel], self.index.speed_limit_kmh[self.zone[sel]])
        return out


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
        self._geoms: list[shapely.Geometry] = [item[1] for item in prepared]
        n = len(self.zones)
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
        self.valid_from_s = np.full(n, _EARLIEST, dtype=np.int64)
        self.valid_to_s = np.full(n, _NEVER, dtype=np.int64)
        for i, z in enumerate(self.zones):
            if z.valid_from is not None:
                self.valid_from_s[i] = self.clock.local_midnight(z.valid_from)
            if z.valid_to is not None:
                self.valid_to_s[i] = self.clock.local_midnight(z.valid_to + dt.timedelta(days=1))
        self._dated = (self.valid_from_s != _EARLIEST) | (self.valid_to_s != _NEVER)
        self._timed = (self.kind == RESTRICTED) | (self.kind == DISPOSAL)
        self._build_windows()
        self._build_ban_intervals(list(ban_days))
        self._build_area_grid()
        self._build_routes()

    # ------------------------------------------------------------------ building

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
            item = self._old_cache.get(key)
            self.cache_hits += item is not None
            if item is None:
                item = self._project_zone(zone, radius)
            self.build_cache[key] = item
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

    def _build_windows(self) -> None:
        """Weekly bitmaps: restricted zones' ban windows, disposal sites' opening hours."""
        rows: list[np.ndarray] = []
        self._win_row = np.full(len(self.zones), -1, dtype=np.int32)  # -1 = always
        for i, zone in enumerate(self.zones):
            key = {"restricted": "windows", "disposal": "opening_hours"}.get(zone.kind)
            windows = zone.attributes.get(key) if key else None
            if windows:
                self._win_row[i] = len(rows)
                rows.append(window_bitmap(windows))
        self._win_bits = np.array(rows) if rows else np.zeros((0, 10080), dtype=bool)

    def _build_ban_intervals(self, ban_days: list[BanDay]) -> None:
        restricted = np.flatnonzero(self.kind == RESTRICTED)
        intervals: dict[int, list[tuple[int, int]]] = {}
        for ban in ban_days:
            if ban.zone_code is None:
                targets = restricted.tolist()
            else:
                i = self._code_index.get(ban.zone_code)
                targets = [i] if i is not None and self.kind[i] == RESTRICTED else []
            if ban.start is None or ban.end is None:
                start_min, end_min = 0, 1440
            else:
                start_min = parse_hhmm(ban.start.strftime("%H:%M"))
                end_min = parse_hhmm(ban.end.strftime("%H:%M"))
                if end_min <= start_min:
                    end_min += 1440
            start = self.clock.local_instant(ban.day, start_min)
            end = self.clock.local_instant(ban.day, end_min)
            for zone in targets:
                intervals.setdefault(int(zone), []).append((start, end))
        starts: list[int] = []
        ends: list[int] = []
        for zone in sorted(intervals):
            merged: list[list[int]] = []
            for s, e in sorted(intervals[zone]):
                s, e = max(s, 0), min(e, (1 << _KEY_SHIFT) - 1)
                if e <= s:
                    continue
                if merged and s <= merged[-1][1]:
                    merged[-1][1] = max(merged[-1][1], e)
                else:
                    merged.append([s, e])
            for s, e in merged:
                starts.append((zone << _KEY_SHIFT) | s)
                ends.append((zone << _KEY_SHIFT) | e)
        self._ban_start = np.asarray(starts, dtype=np.int64)
        self._ban_end = np.asarray(ends, dtype=np.int64)

    def _build_area_grid(self) -> None:
        area_idx = np.flatnonzero(self.kind != ROUTE)
        self._area_count = len(area_idx)
        self._prepared = np.array(self._geoms, dtype=object)
        if len(self._prepared):
            shapely.prepare(self._prepared)
        if not len(area_idx):
            self._area_lonlat = None
            return
        lonlat_bounds = np.array([self._lonlat_bounds[self.zones[i].code] for i in area_idx])
        pad = np.array([r for r in (self._circle_pad_deg(i) for i in area_idx)])
        self._area_lonlat = (
            float((lonlat_bounds[:, 0] - pad).min()) - 1e-3,
            float((lonlat_bounds[:, 1] - pad).min()) - 1e-3,
            float((lonlat_bounds[:, 2] + pad).max()) + 1e-3,
            float((lonlat_bounds[:, 3] + pad).max()) + 1e-3,
        )
        bounds = shapely.bounds(self._prepared[area_idx])
        x0, y0 = bounds[:, 0].min(), bounds[:, 1].min()
        x1, y1 = bounds[:, 2].max(), bounds[:, 3].max()
        cell = float(self.config.zone_cell_m)
        extent = max((x1 - x0) * (y1 - y0), 1.0)
        if extent / (cell * cell) > self.config.max_zone_cells:
            cell = math.sqrt(extent / self.config.max_zone_cells)
        # origin on the lattice of multiples of `cell`, so per-zone cells can be cached
        ox = math.floor(x0 / cell) - 1
        oy = math.floor(y0 / cell) - 1
        x0, y0 = ox * cell, oy * cell
        nx = int((x1 - x0) // cell) + 2
        ny = int((y1 - y0) // cell) + 2
        cells: list[np.ndarray] = []
        zone_ids: list[np.ndarray] = []
        insides: list[np.ndarray] = []
        refs: list[np.ndarray] = []  # per entry: reference inside, GEOS fallback
        edge_lists: list[np.ndarray] = []  # per entry: ids of its polygon edges
        edge_segs: list[np.ndarray] = []  # polygon edges (x0, y0, x1, y1) of all zones
        seg_base = 0
        edge_counts: list[np.ndarray] = []
        for j in area_idx:
            key = ("cells", self._geom_keys[self.zones[j].code], cell, self._crs_key)
            item = self._old_cache.get(key)
            self.cache_hits += item is not None
            if item is None:
                item = _zone_cells(self._prepared[j], cell)
            self.build_cache[key] = item
            gx, gy, inside, ref, segs, seg_ids, counts = item
            cid = (gy - oy) * nx + (gx - ox)
            cells.append(cid)
            zone_ids.append(np.full(cid.size, j, dtype=np.int32))
            insides.append(inside)
            refs.append(ref)
            edge_segs.append(segs)
            edge_lists.append((seg_ids + seg_base).astype(np.int32))
            seg_base += len(segs)
            edge_counts.append(counts)
        cell_of = np.concatenate(cells)
        order = np.argsort(cell_of, kind="stable")
        self._grid = (x0, y0, cell, nx, ny)
        self._cell_zone = np.concatenate(zone_ids)[order]
        self._cell_inside = np.concatenate(insides)[order]
        ref = np.concatenate(refs)[order]
        self._ref_in = ref[:, 0]
        counts = np.concatenate(edge_counts)
        self._entry_edges = np.concatenate(edge_lists)
        edges = np.concatenate(edge_segs)
        first = np.cumsum(counts) - counts  # entry order before sorting
        self._entry_edge_start = first[order].astype(np.int32)
        self._entry_edge_count = np.where(ref[:, 1], -1, counts[order]).astype(np.int32)
        self._edge_x0, self._edge_y0 = edges[:, 0].copy(), edges[:, 1].copy()
        self._edge_x1, self._edge_y1 = edges[:, 2].copy(), edges[:, 3].copy()
        counts_per_cell = np.bincount(cell_of, minlength=nx * ny)
        self._cell_start = np.zeros(nx * ny + 1, dtype=np.int32)
        np.cumsum(counts_per_cell, out=self._cell_start[1:])

    def _circle_pad_deg(self, i: int) -> float:
        radius = float(self.zones[i].attributes.get("radius_m", 0.0))
        if self.zones[i].geometry.get("type") != "Point":
            return 0.0
        lat = self._lonlat_bounds[self.zones[i].code][1]
        return radius / 111_000.0 / max(math.cos(math.radians(lat)), 0.01) * 1.01

    def _build_routes(self) -> None:
        route_idx = np.flatnonzero(self.kind == ROUTE)
        n_routes = len(route_idx)
        self._route_slot = np.full(len(self.zones), -1, dtype=np.int32)
        self._route_slot[route_idx] = np.arange(n_routes, dtype=np.int32)
        self._route_radius = np.zeros(n_routes)
        self._route_origin = np.zeros((n_routes, 2))
        self._route_tiles = np.zeros((n_routes, 2), dtype=np.int64)  # ntx, nty
        self._route_tile_base = np.zeros(n_routes, dtype=np.int64)
        self._route_lonlat = None
        seg_parts: list[np.ndarray] = []
        tile_block_parts: list[np.ndarray] = []
        entry_parts: list[np.ndarray] = []
        slot_parts: list[np.ndarray] = []
        cell = float(self.config.route_cell_m)
        seg_base = 0
        tile_base = 0
        block_base = 0
        lonlat = []
        for r, j in enumerate(route_idx):
            width = self.width_m[j]
            radius = max(float(self.config.route_distance_cap_m), 2.0 * width)
            self._route_radius[r] = radius
            key = ("route", self._geom_keys[self.zones[j].code], radius, cell, self._crs_key)
            item = self._old_cache.get(key)
            self.cache_hits += item is not None
            if item is None:
                item = _route_grid(self._geoms[j], cell, radius)
            self.build_cache[key] = item
            segs, ox, oy, ntx, nty, tile, pos, seg_ids = item
            used, tile_inv = np.unique(tile, return_inverse=True)
            tile_block = np.full(ntx * nty, -1, dtype=np.int64)
            tile_block[used] = block_base + np.arange(len(used))
            slot = (block_base + tile_inv) * (_TILE * _TILE) + pos
            order = np.argsort(slot, kind="stable")
            slot_parts.append(slot[order])
            entry_parts.append((seg_ids[order] + seg_base).astype(np.int32))
            tile_block_parts.append(tile_block)
            seg_parts.append(segs)
            self._route_origin[r] = (ox, oy)
            self._route_tiles[r] = (ntx, nty)
            self._route_tile_base[r] = tile_base
            seg_base += len(segs)
            tile_base += ntx * nty
            block_base += len(used)
            lon0, lat0, lon1, lat1 = self._lonlat_bounds[self.zones[j].code]
            pad_lat = radius / 110_000.0
            pad_lon = pad_lat / max(math.cos(math.radians(max(abs(lat0), abs(lat1)))), 0.01)
            lonlat.append((lon0 - pad_lon, lat0 - pad_lat, lon1 + pad_lon, lat1 + pad_lat))
        if n_routes:
            segs = np.concatenate(seg_parts)
            self._seg_x0 = segs[:, 0].copy()
            self._seg_y0 = segs[:, 1].copy()
            self._seg_dx = segs[:, 2] - segs[:, 0]
            self._seg_dy = segs[:, 3] - segs[:, 1]
            len2 = self._seg_dx**2 + self._seg_dy**2
            self._seg_inv = np.divide(1.0, len2, out=np.zeros_like(len2), where=len2 > 0)
            self._tile_block = np.concatenate(tile_block_parts)
            self._entries = np.concatenate(entry_parts)
            slots = np.concatenate(slot_parts)
            counts = np.bincount(slots, minlength=block_base * _TILE * _TILE)
            self._slot_start = np.zeros(block_base * _TILE * _TILE + 1, dtype=np.int32)
            np.cumsum(counts, out=self._slot_start[1:])
            box = np.array(lonlat)
            self._route_lonlat = (
                box[:, 0].min(),
                box[:, 1].min(),
                box[:, 2].max(),
                box[:, 3].max(),
            )

    # ------------------------------------------------------------------ lookups

    def __len__(self) -> int:
        return len(self.zones)

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
        total = 0
        for value in vars(self).values():
            if isinstance(value, np.ndarray) and value.dtype != object:
                total += value.nbytes
        return total

    # ------------------------------------------------------------------ evaluation

    def _batch(self, lon: Any, lat: Any) -> _Batch:
        lon = _as_float(lon, "lon")
        lat = _as_float(lat, "lat")
        if lon.shape != lat.shape:
            raise ValueError(f"lon and lat differ in length ({lon.size} vs {lat.size})")
        n = lon.size
        boxes = [b for b in (getattr(self, "_area_lonlat", None), self._route_lonlat) if b]
        if not boxes or n == 0:
            nan = np.full(n, np.nan)
            return _Batch(n, nan, nan.copy(), np.zeros(n, dtype=bool))
        box = np.array(boxes)
        lo0, la0 = box[:, 0].min(), box[:, 1].min()
        lo1, la1 = box[:, 2].max(), box[:, 3].max()
        with np.errstate(invalid="ignore"):
            ok = (lon >= lo0) & (lon <= lo1) & (lat >= la0) & (lat <= la1)
        if ok.all():
            x, y = self.projector.forward(lon, lat)
        else:
            x = np.full(n, np.nan)
            y = np.full(n, np.nan)
            if ok.any():
                x[ok], y[ok] = self.projector.forward(lon[ok], lat[ok])
        with np.errstate(invalid="ignore"):
            ok &= np.isfinite(x) & np.isfinite(y)
        return _Batch(n, x, y, ok)

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
        out = np.full(batch.n, np.inf)
        valid = (route >= 0) & (route < len(self.zones))
        valid[valid] = self.kind[route[valid]] == KIND_CODE["route"]
        x, y = self.projector.forward(_as_float(lon, "lon"), _as_float(lat, "lat"))
        for r in np.unique(route[valid]):
            sel = valid & (route == r)
            out[sel] = shapely.distance(shapely.points(x[sel], y[sel]), self._geoms[int(r)])
        return out

    def evaluate(self, lon: Any, lat: Any, t: Any, route: Any = None) -> Evaluation:
        """classify() and, when `route` is given, route_distance(), projecting only once."""
        batch = self._batch(lon, lat)
        cls = self._classify(batch, self._times(t, batch.n))
        dist = None if route is None else self._route_distance(batch, self._routes(route, batch.n))
        return Evaluation(cls, dist)

    def route_radius_m(self, route: Any) -> np.ndarray:
        """Search radius per route zone index (distances are capped there); inf for non-routes."""
        route = np.asarray(route, dtype=np.int64)
        slot = np.where((route >= 0) & (route < len(self.zones)), route, 0)
        slot = self._route_slot[slot] if len(self.zones) else np.full(route.shape, -1)
        valid = (route >= 0) & (route < len(self.zones)) & (slot >= 0)
        out = np.full(route.shape, np.inf)
        out[valid] = self._route_radius[slot[valid]]
        return out

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

    def _classify(self, b: _Batch, t: np.ndarray) -> Classification:
        empty = np.zeros(0, dtype=np.int64)
        if self._area_lonlat is None or b.n == 0:
            return Classification(self, b.n, empty, empty.astype(np.int32), empty.astype(bool))
        x0, y0, cell, nx, ny = self._grid
        if b.projected.all():
            fi, xs, ys = np.arange(b.n), b.x, b.y
        else:
            fi = np.flatnonzero(b.projected)
            xs, ys = b.x[fi], b.y[fi]
        gx = np.floor((xs - x0) / cell)
        gy = np.floor((ys - y0) / cell)
        inside = (gx >= 0) & (gx < nx) & (gy >= 0) & (gy < ny)
        if not inside.all():
            fi, gx, gy = fi[inside], gx[inside], gy[inside]
        cid = gy.astype(np.int64) * nx + gx.astype(np.int64)
        start = self._cell_start[cid]
        count = self._cell_start[cid + 1] - start
        has = count > 0
        fi, start, count = fi[has], start[has], count[has]
        fix, pos = _expand(fi, start, count)
        zone = self._cell_zone[pos]
        hit = self._cell_inside[pos].copy()
        edge = np.flatnonzero(~hit)
        if edge.size:
            hit[edge] = self._edge_test(fix[edge], pos[edge], zone[edge], b)
        fix, zone = fix[hit], zone[hit]
        if self._dated.any():
            tt = t[fix]
            valid = (tt >= self.valid_from_s[zone]) & (tt < self.valid_to_s[zone])
            if not valid.all():
                fix, zone = fix[valid], zone[valid]
        active = np.ones(fix.size, dtype=bool)
        timed = np.flatnonzero(self._timed[zone])
        if timed.size:
            zt, ttt = zone[timed], t[fix[timed]]
            kinds_t = self.kind[zt]
            rows = self._win_row[zt]
            act = rows < 0
            windowed = ~act
            if windowed.any():
                mow = self.clock.minute_of_week(ttt[windowed])
                act[windowed] = self._win_bits[rows[windowed], mow]
            if self._ban_start.size:
                key = (zt.astype(np.int64) << _KEY_SHIFT) | np.clip(ttt, 0, (1 << _KEY_SHIFT) - 1)
                k = np.searchsorted(self._ban_start, key, side="right") - 1
                banned = (k >= 0) & (key < self._ban_end[np.maximum(k, 0)])
                act |= banned & (kinds_t == RESTRICTED)
            active[timed] = act
        return Classification(self, b.n, fix, zone.astype(np.int32), active)

    def _edge_test(
        self, fix: np.ndarray, entry: np.ndarray, zone: np.ndarray, b: _Batch
    ) -> np.ndarray:
        """Exact point-in-zone for fixes in cells crossed by the zone's boundary.

        Each such (cell, zone) entry keeps a reference point of the cell whose inside-ness is
        known and the zone's edges that overlap the cell: a fix is inside iff the reference
        is, flipped once per edge crossing the segment fix -> reference (which stays inside
        the convex cell). Entries whose reference point lies on the boundary fall back to
        GEOS (shapely.intersects_xy).
        """
        out = np.zeros(fix.size, dtype=bool)
        count = self._entry_edge_count[entry]
        geos = np.flatnonzero(count < 0)
        if geos.size:
            fg = fix[geos]
            out[geos] = shapely.intersects_xy(self._prepared[zone[geos]], b.x[fg], b.y[fg])
        par = np.flatnonzero(count >= 0)
        if not par.size:
            return out
        fix, entry, count = fix[par], entry[par], count[par]
        px, py = b.x[fix], b.y[fix]
        x0, y0, cell, _, _ = self._grid
        rx = x0 + (np.floor((px - x0) / cell) + _REF_X) * cell  # the cell's reference point
        ry = y0 + (np.floor((py - y0) / cell) + _REF_Y) * cell
        inside = self._ref_in[entry].copy()
        has = np.flatnonzero(count > 0)
        if has.size:
            k, pos = _expand(has, self._entry_edge_start[entry[has]], count[has])
            pos = self._entry_edges[pos]
            ax, ay = self._edge_x0[pos], self._edge_y0[pos]
            bx, by = self._edge_x1[pos], self._edge_y1[pos]
            qx, qy, sx, sy = px[k], py[k], rx[k], ry[k]
            ex, ey = bx - ax, by - ay
            d1 = ex * (qy - ay) - ey * (qx - ax) > 0  # side of the fix w.r.t. the edge
            d2 = ex * (sy - ay) - ey * (sx - ax) > 0  # side of the reference
            fx, fy = sx - qx, sy - qy
            d3 = fx * (ay - qy) - fy * (ax - qx) > 0  # sides of the edge's ends w.r.t. fix->ref
            d4 = fx * (by - qy) - fy * (bx - qx) > 0
            cross = (d1 != d2) & (d3 != d4)
            flips = np.bincount(k[cross], minlength=fix.size)
            inside ^= (flips % 2).astype(bool)
        out[par] = inside
        return out

    def _route_distance(self, b: _Batch, route: np.ndarray) -> np.ndarray:
        n = b.n
        out = np.full(n, np.inf)
        if n == 0 or self._route_lonlat is None:
            return out
        valid = (route >= 0) & (route < len(self.zones))
        slot = np.full(n, -1, dtype=np.int64)
        slot[valid] = self._route_slot[route[valid]]
        has_route = slot >= 0
        out[has_route] = self._route_radius[slot[has_route]]
        fi = np.flatnonzero(has_route & b.projected)
        if not fi.size:
            return out
        r = slot[fi]
        cell = float(self.config.route_cell_m)
        cx = np.floor((b.x[fi] - self._route_origin[r, 0]) / cell)
        cy = np.floor((b.y[fi] - self._route_origin[r, 1]) / cell)
        ntx, nty = self._route_tiles[r, 0], self._route_tiles[r, 1]
        tx = np.floor_divide(cx, _TILE)
        ty = np.floor_divide(cy, _TILE)
        inside = (tx >= 0) & (tx < ntx) & (ty >= 0) & (ty < nty)
        if not inside.all():
            fi, r, cx, cy, tx, ty, ntx = (a[inside] for a in (fi, r, cx, cy, tx, ty, ntx))
        cx, cy = cx.astype(np.int64), cy.astype(np.int64)
        block = self._tile_block[
            self._route_tile_base[r] + ty.astype(np.int64) * ntx + tx.astype(np.int64)
        ]
        used = block >= 0
        if not used.all():
            fi, block, cx, cy = fi[used], block[used], cx[used], cy[used]
        sl = block * (_TILE * _TILE) + (cy % _TILE) * _TILE + (cx % _TILE)
        start = self._slot_start[sl]
        count = self._slot_start[sl + 1] - start
        has = count > 0
        fi, start, count = fi[has], start[has], count[has]
        if not fi.size:
            return out
        fix, pos = _expand(fi, start, count)
        seg = self._entries[pos]
        px = b.x[fix] - self._seg_x0[seg]
        py = b.y[fix] - self._seg_y0[seg]
        dx, dy = self._seg_dx[seg], self._seg_dy[seg]
        u = (px * dx + py * dy) * self._seg_inv[seg]
        np.clip(u, 0.0, 1.0, out=u)
        px -= u * dx
        py -= u * dy
        d2 = px * px + py * py
        first = np.zeros(fi.size, dtype=np.int64)
        np.cumsum(count[:-1], out=first[1:])
        best = np.sqrt(np.minimum.reduceat(d2, first))
        out[fi] = np.minimum(best, out[fi])
        return out


def _expand(fix: np.ndarray, start: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Repeat each fix `count` times, with positions start..start+count-1 in the entries."""
    total = int(count.sum())
    rep_fix = np.repeat(fix, count)
    offset = np.repeat(start - (np.cumsum(count) - count), count)
    pos = np.arange(total, dtype=np.int64) + offset
    return rep_fix, pos


def _zone_cells(geom: shapely.Geometry, cell: float):
    """One zone's grid entries on the lattice of multiples of `cell` (absolute indexes):
    gx, gy, inside (cell wholly covered), ref (reference point inside, GEOS fallback), and
    for boundary cells the zone's edges whose bounding box overlaps the cell: segments
    (x0, y0, x1, y1), per-entry edge ids (grouped by entry) and counts."""
    bx0, by0, bx1, by1 = geom.bounds
    ix0, ix1 = math.floor(bx0 / cell), math.floor(bx1 / cell)
    iy0, iy1 = math.floor(by0 / cell), math.floor(by1 / cell)
    gx, gy = np.meshgrid(np.arange(ix0, ix1 + 1), np.arange(iy0, iy1 + 1))
    gx, gy = gx.ravel().astype(np.int64), gy.ravel().astype(np.int64)
    boxes = shapely.box(gx * cell, gy * cell, (gx + 1) * cell, (gy + 1) * cell)
    hit = shapely.intersects(geom, boxes)
    gx, gy = gx[hit], gy[hit]
    inside = shapely.covers(geom, boxes[hit])
    ref = np.zeros((gx.size, 2), dtype=bool)
    ref[:, 0] = inside
    counts = np.zeros(gx.size, dtype=np.int64)
    edge_rows = np.flatnonzero(~inside)
    if not edge_rows.size:
        return gx, gy, inside, ref, np.zeros((0, 4)), np.zeros(0, dtype=np.int64), counts
    # an off-centre reference point, unlikely to sit on an edge of man-made polygons
    rx = (gx[edge_rows] + _REF_X) * cell
    ry = (gy[edge_rows] + _REF_Y) * cell
    ref[edge_rows, 0] = shapely.intersects_xy(geom, rx, ry)
    # a reference point on (or within a micrometre of) the boundary: let GEOS decide
    ref[edge_rows, 1] = shapely.distance(geom.boundary, shapely.points(rx, ry)) < 1e-6
    segs = []
    for ring in shapely.get_rings(geom):
        xy = shapely.get_coordinates(ring)
        segs.append(np.hstack([xy[:-1], xy[1:]]))
    segs = np.vstack(segs)
    segs = segs[(segs[:, 0] != segs[:, 2]) | (segs[:, 1] != segs[:, 3])]
    sx0 = np.floor(np.minimum(segs[:, 0], segs[:, 2]) / cell).astype(np.int64)
    sx1 = np.floor(np.maximum(segs[:, 0], segs[:, 2]) / cell).astype(np.int64)
    sy0 = np.floor(np.minimum(segs[:, 1], segs[:, 3]) / cell).astype(np.int64)
    sy1 = np.floor(np.maximum(segs[:, 1], segs[:, 3]) / cell).astype(np.int64)
    wx = sx1 - sx0 + 1
    n = wx * (sy1 - sy0 + 1)
    seg = np.repeat(np.arange(len(segs)), n)
    k = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
    width = ix1 - ix0 + 3  # local keys, with a margin for edges on the bounding box
    pair_key = (sy0[seg] + k // wx[seg] - iy0 + 1) * width + (sx0[seg] + k % wx[seg] - ix0 + 1)
    # map each (cell, segment) to the zone's boundary entry of that cell
    edge_key = (gy[edge_rows] - iy0 + 1) * width + (gx[edge_rows] - ix0 + 1)
    order = np.argsort(edge_key)
    where = np.minimum(np.searchsorted(edge_key[order], pair_key), edge_key.size - 1)
    found = edge_key[order][where] == pair_key
    entry = edge_rows[order][where[found]]
    seg = seg[found]
    by_entry = np.argsort(entry, kind="stable")
    entry, seg = entry[by_entry], seg[by_entry]
    counts += np.bincount(entry, minlength=gx.size)
    return gx, gy, inside, ref, segs, seg, counts


def _geometry_digest(geometry: dict[str, Any]) -> str:
    text = json.dumps(geometry, sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def _segments(geom: shapely.Geometry) -> np.ndarray:
    """(n, 4) array of x0, y0, x1, y1 for the non-degenerate segments of a (multi)line; a
    zero-length route becomes one degenerate segment (its distance is to the point)."""
    parts = []
    for part in shapely.get_parts(geom):
        xy = shapely.get_coordinates(part)
        if len(xy) >= 2:
            parts.append(np.hstack([xy[:-1], xy[1:]]))
    segs = np.vstack(parts) if parts else np.zeros((0, 4))
    keep = (segs[:, 0] != segs[:, 2]) | (segs[:, 1] != segs[:, 3])
    if keep.any():
        return segs[keep]
    xy = shapely.get_coordinates(geom)[:1]
    return np.hstack([xy, xy])


def _route_grid(geom: shapely.Geometry, cell: float, radius: float) -> tuple:
    """One route's part of the route index: its segments, grid origin and tile counts, and
    the (tile, position in tile, segment) entries of its cells."""
    segs = _segments(geom)
    bx0 = min(segs[:, 0].min(), segs[:, 2].min()) - radius
    by0 = min(segs[:, 1].min(), segs[:, 3].min()) - radius
    bx1 = max(segs[:, 0].max(), segs[:, 2].max()) + radius
    by1 = max(segs[:, 1].max(), segs[:, 3].max()) + radius
    ox, oy = math.floor(bx0 / cell) * cell, math.floor(by0 / cell) * cell
    ncx = int((bx1 - ox) // cell) + 1
    ncy = int((by1 - oy) // cell) + 1
    ntx, nty = -(-ncx // _TILE), -(-ncy // _TILE)
    cell_ids, seg_ids = _route_cells(segs, ox, oy, cell, ntx * _TILE, radius)
    cx = cell_ids % (ntx * _TILE)
    cy = cell_ids // (ntx * _TILE)
    tile = (cy // _TILE) * ntx + cx // _TILE
    pos = (cy % _TILE) * _TILE + cx % _TILE
    return segs, ox, oy, ntx, nty, tile, pos, seg_ids


def _route_cells(
    segs: np.ndarray, ox: float, oy: float, cell: float, ncx: int, radius: float
) -> tuple[np.ndarray, np.ndarray]:
    """(cell id, segment id) pairs: for each cell of the route's grid, the segments that can be
    nearest to some point of the cell and lie within `radius` of it.

    A segment is dropped from a cell when a lower bound of its distance to the cell (distance
    between the cell and the segment's bounding box) exceeds the smallest upper bound over all
    segments (distance to the farthest cell corner, exact since distance to a segment is
    convex): it can never be the nearest there.
    """
    sx0 = np.minimum(segs[:, 0], segs[:, 2])
    sx1 = np.maximum(segs[:, 0], segs[:, 2])
    sy0 = np.minimum(segs[:, 1], segs[:, 3])
    sy1 = np.maximum(segs[:, 1], segs[:, 3])
    ix0 = np.floor((sx0 - radius - ox) / cell).astype(np.int64)
    ix1 = np.floor((sx1 + radius - ox) / cell).astype(np.int64)
    iy0 = np.floor((sy0 - radius - oy) / cell).astype(np.int64)
    iy1 = np.floor((sy1 + radius - oy) / cell).astype(np.int64)
    wx = ix1 - ix0 + 1
    wy = iy1 - iy0 + 1
    count = wx * wy
    seg = np.repeat(np.arange(len(segs)), count)
    k = np.arange(int(count.sum()), dtype=np.int64) - np.repeat(np.cumsum(count) - count, count)
    gx = ix0[seg] + k % wx[seg]
    gy = iy0[seg] + k // wx[seg]
    cx0 = ox + gx * cell
    cy0 = oy + gy * cell
    cx1 = cx0 + cell
    cy1 = cy0 + cell
    # lower bound: distance between the cell and the segment's bounding box
    ddx = np.maximum(np.maximum(sx0[seg] - cx1, cx0 - sx1[seg]), 0.0)
    ddy = np.maximum(np.maximum(sy0[seg] - cy1, cy0 - sy1[seg]), 0.0)
    lower = np.hypot(ddx, ddy)
    near = lower < radius
    seg, gx, gy, cx0, cy0, lower = seg[near], gx[near], gy[near], cx0[near], cy0[near], lower[near]
    # upper bound: farthest corner
    upper = np.zeros(seg.size)
    for ax, ay in ((0, 0), (1, 0), (0, 1), (1, 1)):
        d = _point_segment_distance(cx0 + ax * cell, cy0 + ay * cell, segs[seg])
        np.maximum(upper, d, out=upper)
    cid = gy * ncx + gx
    order = np.argsort(cid, kind="stable")
    cid, seg, lower, upper = cid[order], seg[order], lower[order], upper[order]
    if not cid.size:
        return cid, seg
    first = np.flatnonzero(np.r_[True, cid[1:] != cid[:-1]])
    best_upper = np.minimum.reduceat(upper, first)
    group = np.cumsum(np.r_[True, cid[1:] != cid[:-1]]) - 1
    keep = lower <= best_upper[group]
    return cid[keep], seg[keep]


def _point_segment_distance(px: np.ndarray, py: np.ndarray, segs: np.ndarray) -> np.ndarray:
    dx = segs[:, 2] - segs[:, 0]
    dy = segs[:, 3] - segs[:, 1]
    len2 = dx * dx + dy * dy
    ux = px - segs[:, 0]
    uy = py - segs[:, 1]
    u = np.divide(ux * dx + uy * dy, len2, out=np.zeros_like(len2), where=len2 > 0)
    np.clip(u, 0.0, 1.0, out=u)
    return np.hypot(ux - u * dx, uy - u * dy)
