"""How far each fix of a batch is from its approved route: per-route segment grids and exact
point-to-segment distances.

Route segments are indexed per route in a two-level grid (tiles of cells); each cell keeps
only the segments that can be the nearest one for some point of the cell and lie within the
route's search radius. The distance of a fix is then the exact point-to-segment minimum over
a handful of candidates, computed in numpy. Distances at or beyond the search radius
(max(geofence.route_distance_cap_m, 2 x width)) are reported as the radius itself.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely

from geofence.batch import Batch, expand

if TYPE_CHECKING:
    from geofence.index import ProjectedZones

_TILE = 16  # cells per tile side in the route grid


class RouteGrid:
    """The segment grids of an index's routes, by zone index (positions in the index's
    `zones`); `lonlat_box` is None when there are no routes."""

    def __init__(
        self,
        parts: ProjectedZones,
        route_idx: np.ndarray,
        width_m: np.ndarray,
        *,
        cell_m: float,
        cap_m: float,
    ) -> None:
        """`route_idx`: the indexes of the routes among the index's zones; `width_m`: the
        corridor width per zone index."""
        zones = parts.zones
        self._prepared = parts.prepared
        self.cell_m = float(cell_m)
        n_routes = len(route_idx)
        self._route_slot = np.full(len(zones), -1, dtype=np.int32)
        self._route_slot[route_idx] = np.arange(n_routes, dtype=np.int32)
        self._route_radius = np.zeros(n_routes)
        self._route_origin = np.zeros((n_routes, 2))
        self._route_tiles = np.zeros((n_routes, 2), dtype=np.int64)  # ntx, nty
        self._route_tile_base = np.zeros(n_routes, dtype=np.int64)
        self.lonlat_box = None
        seg_parts: list[np.ndarray] = []
        tile_block_parts: list[np.ndarray] = []
        entry_parts: list[np.ndarray] = []
        slot_parts: list[np.ndarray] = []
        cell = self.cell_m
        seg_base = 0
        tile_base = 0
        block_base = 0
        lonlat = []
        for r, j in enumerate(route_idx):
            width = width_m[j]
            radius = max(float(cap_m), 2.0 * width)
            self._route_radius[r] = radius
            key = ("route", parts.geom_keys[zones[j].code], radius, cell, parts.crs_key)
            item = parts.cached(key, _route_grid, parts.prepared[j], cell, radius)
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
            lon0, lat0, lon1, lat1 = parts.lonlat_bounds[zones[j].code]
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
            self.lonlat_box = (
                box[:, 0].min(),
                box[:, 1].min(),
                box[:, 2].max(),
                box[:, 3].max(),
            )

    def radius_m(self, route: Any) -> np.ndarray:
        """Search radius per route zone index (distances are capped there); inf for non-routes."""
        n_zones = self._route_slot.size
        route = np.asarray(route, dtype=np.int64)
        slot = np.where((route >= 0) & (route < n_zones), route, 0)
        slot = self._route_slot[slot] if n_zones else np.full(route.shape, -1)
        valid = (route >= 0) & (route < n_zones) & (slot >= 0)
        out = np.full(route.shape, np.inf)
        out[valid] = self._route_radius[slot[valid]]
        return out

    def distance(self, b: Batch, route: np.ndarray) -> np.ndarray:
        """Distance (m) of each fix from its route (`route`: zone index per fix), exact below
        the route's search radius, else that radius; +inf where the index is not a route."""
        n = b.n
        out = np.full(n, np.inf)
        if n == 0 or self.lonlat_box is None:
            return out
        valid = (route >= 0) & (route < self._route_slot.size)
        slot = np.full(n, -1, dtype=np.int64)
        slot[valid] = self._route_slot[route[valid]]
        has_route = slot >= 0
        out[has_route] = self._route_radius[slot[has_route]]
        fi = np.flatnonzero(has_route & b.projected)
        if not fi.size:
            return out
        r = slot[fi]
        cell = self.cell_m
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
        fix, pos = expand(fi, start, count)
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

    def exact_distance(self, x: np.ndarray, y: np.ndarray, route: np.ndarray) -> np.ndarray:
        """GEOS distance (m) from each projected fix to its route, one vectorised call per
        route; +inf where the index is not a route."""
        out = np.full(route.size, np.inf)
        valid = (route >= 0) & (route < self._route_slot.size)
        valid[valid] = self._route_slot[route[valid]] >= 0
        for r in np.unique(route[valid]):
            sel = valid & (route == r)
            out[sel] = shapely.distance(shapely.points(x[sel], y[sel]), self._prepared[int(r)])
        return out


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
