"""Which area zones (sites, disposal sites, restricted and speed zones) contain each fix of a
batch: a uniform grid over their extent, and the `Classification` it produces.

Each (cell, zone) entry records whether the cell lies wholly inside the zone; only fixes in
cells the zone's boundary crosses are tested exactly: against the zone's edges that overlap
the cell (numpy), or with shapely's vectorised `intersects_xy` on prepared polygons where
that cannot decide (a fix on the boundary counts as inside). The grid yields (fix, zone)
pairs; `geofence.schedule` then drops the zones outside their validity dates and marks which
are active at the fix time.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import shapely

from geofence.batch import Batch, expand
from geofence.model import DISPOSAL, KIND_CODE, RESTRICTED, SITE, SPEED, Zone

if TYPE_CHECKING:
    from geofence.index import GeofenceIndex, ProjectedZones

_REF_X, _REF_Y = 0.5371, 0.4629  # reference point of a grid cell, in cells from its corner


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


class AreaGrid:
    """The uniform grid of an index's area zones. Zone indexes are positions in the index's
    `zones`; `lonlat_box` is None when there are no area zones."""

    def __init__(
        self, parts: ProjectedZones, area_idx: np.ndarray, *, cell_m: float, max_cells: int
    ) -> None:
        """`area_idx`: the indexes of the area zones among the index's zones."""
        zones, prepared, lonlat_bounds = parts.zones, parts.prepared, parts.lonlat_bounds
        self._prepared = prepared
        if not len(area_idx):
            self.lonlat_box = None
            return
        lonlat = np.array([lonlat_bounds[zones[i].code] for i in area_idx])
        pad = np.array([_circle_pad_deg(zones[i], lonlat_bounds) for i in area_idx])
        self.lonlat_box = (
            float((lonlat[:, 0] - pad).min()) - 1e-3,
            float((lonlat[:, 1] - pad).min()) - 1e-3,
            float((lonlat[:, 2] + pad).max()) + 1e-3,
            float((lonlat[:, 3] + pad).max()) + 1e-3,
        )
        bounds = shapely.bounds(prepared[area_idx])
        x0, y0 = bounds[:, 0].min(), bounds[:, 1].min()
        x1, y1 = bounds[:, 2].max(), bounds[:, 3].max()
        cell = float(cell_m)
        extent = max((x1 - x0) * (y1 - y0), 1.0)
        if extent / (cell * cell) > max_cells:
            cell = math.sqrt(extent / max_cells)
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
            key = ("cells", parts.geom_keys[zones[j].code], cell, parts.crs_key)
            item = parts.cached(key, _zone_cells, prepared[j], cell)
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

    def hits(self, b: Batch) -> tuple[np.ndarray, np.ndarray]:
        """(fix, zone) pairs of the area zones containing each fix, sorted by fix; only call
        it when `lonlat_box` is set."""
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
        fix, pos = expand(fi, start, count)
        zone = self._cell_zone[pos]
        hit = self._cell_inside[pos].copy()
        edge = np.flatnonzero(~hit)
        if edge.size:
            hit[edge] = self._edge_test(fix[edge], pos[edge], zone[edge], b)
        return fix[hit], zone[hit]

    def _edge_test(
        self, fix: np.ndarray, entry: np.ndarray, zone: np.ndarray, b: Batch
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
            k, pos = expand(has, self._entry_edge_start[entry[has]], count[has])
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


def _circle_pad_deg(
    zone: Zone, lonlat_bounds: dict[str, tuple[float, float, float, float]]
) -> float:
    radius = float(zone.attributes.get("radius_m", 0.0))
    if zone.geometry.get("type") != "Point":
        return 0.0
    lat = lonlat_bounds[zone.code][1]
    return radius / 111_000.0 / max(math.cos(math.radians(lat)), 0.01) * 1.01


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
