"""Synthetic zones and fixes for `muck bench geofence` (and the tests' large cases).

Everything is seeded: the same arguments give the same zones and fixes.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely

from geofence.index import GeofenceConfig, GeofenceIndex
from geofence.model import Zone
from geofence.projection import Projector

_AREA_KINDS = ("site", "disposal", "restricted", "speed")
_AREA_WEIGHTS = (0.4, 0.1, 0.25, 0.25)


def synthetic_zones(
    city: dict[str, Any],
    *,
    n_polygons: int = 1800,
    n_routes: int = 200,
    route_vertices: int = 1000,
    extent_m: float = 40_000.0,
    seed: int = 1,
) -> list[Zone]:
    """Star-shaped polygons of 50-500 vertices (radius 100-1500 m) and random-walk routes of
    `route_vertices` vertices (about 20 m apart), over a square of `extent_m` around the city
    centre, in WGS-84."""
    rng = np.random.default_rng(seed)
    proj = Projector(city)
    half = extent_m / 2
    zones: list[Zone] = []
    kinds = rng.choice(len(_AREA_KINDS), size=n_polygons, p=_AREA_WEIGHTS)
    for i in range(n_polygons):
        nv = int(rng.integers(50, 501))
        cx, cy = rng.uniform(-half, half, 2)
        base = rng.uniform(100, 1500)
        angles = np.sort(rng.uniform(0, 2 * np.pi, nv))
        # smooth radial noise keeps the polygon star-shaped (hence valid)
        k = np.arange(1, 4)
        amp = rng.uniform(0, 0.15, 3)
        phase = rng.uniform(0, 2 * np.pi, 3)
        wobble = 1 + (amp[:, None] * np.sin(k[:, None] * angles[None, :] + phase[:, None])).sum(0)
        r = base * wobble * rng.uniform(0.97, 1.0, nv)
        lon, lat = proj.inverse(cx + r * np.cos(angles), cy + r * np.sin(angles))
        ring = np.column_stack([lon, lat]).tolist()
        ring.append(ring[0])
        kind = _AREA_KINDS[kinds[i]]
        attrs: dict[str, Any] = {}
        if kind == "speed":
            attrs["speed_limit_kmh"] = float(rng.choice([20, 30, 40, 60]))
        elif kind == "restricted" and i % 2:
            attrs["windows"] = [
                {"days": [1, 2, 3, 4, 5], "start": "07:00", "end": "09:00"},
                {"days": [1, 2, 3, 4, 5, 6, 7], "start": "22:00", "end": "05:00"},
            ]
        elif kind == "disposal":
            attrs["opening_hours"] = [{"days": "daily", "start": "20:00", "end": "06:00"}]
        zones.append(
            Zone(
                code=f"BENCH-{kind.upper()}-{i:05d}",
                kind=kind,
                name=f"bench {kind} {i}",
                geometry={"type": "Polygon", "coordinates": [ring]},
                district=f"D{i % 10}",
                attributes=attrs,
            )
        )
    for i in range(n_routes):
        x, y = rng.uniform(-half * 0.8, half * 0.8, 2)
        heading = rng.uniform(0, 2 * np.pi)
        turn = np.cumsum(rng.normal(0, 0.08, route_vertices))
        step = rng.uniform(15, 25, route_vertices)
        xs = x + np.cumsum(step * np.cos(heading + turn))
        ys = y + np.cumsum(step * np.sin(heading + turn))
        lon, lat = proj.inverse(xs, ys)
        zones.append(
            Zone(
                code=f"BENCH-ROUTE-{i:04d}",
                kind="route",
                name=f"bench route {i}",
                geometry={
                    "type": "LineString",
                    "coordinates": np.column_stack([lon, lat]).tolist(),
                },
                attributes={"width_m": float(rng.choice([30.0, 50.0, 80.0]))},
            )
        )
    return zones


@dataclass
class BenchFixes:
    lon: np.ndarray
    lat: np.ndarray
    t: np.ndarray
    route: np.ndarray  # zone index of the fix's approved route


def synthetic_fixes(
    index: GeofenceIndex, city: dict[str, Any], n: int, *, extent_m: float = 40_000.0, seed: int = 2
) -> BenchFixes:
    """Half the fixes near zone centres, half uniform over the area; each fix gets a random
    route, and route fixes scatter around their route (sigma = 1.5 x width) so that many lie
    near the corridor edge; 10 % are anywhere in the area."""
    rng = np.random.default_rng(seed)
    proj = Projector(city)
    half = extent_m / 2
    x = rng.uniform(-half, half, n)
    y = rng.uniform(-half, half, n)
    area = np.flatnonzero(index.kind != 2)
    if area.size:
        near = rng.random(n) < 0.5
        pick = rng.choice(area, size=int(near.sum()))
        centroids = shapely.centroid(index._prepared[pick])
        x[near] = shapely.get_x(centroids) + rng.normal(0, 600, pick.size)
        y[near] = shapely.get_y(centroids) + rng.normal(0, 600, pick.size)
    routes = np.flatnonzero(index.kind == 2)
    route = np.full(n, -1, dtype=np.int64)
    if routes.size:
        route = rng.choice(routes, size=n).astype(np.int64)
        on = rng.random(n) < 0.9
        rx = np.empty(n)
        ry = np.empty(n)
        for r in np.unique(route[on]):
            sel = np.flatnonzero(on & (route == r))
            xy = shapely.get_coordinates(index._prepared[r])
            v = rng.integers(0, len(xy), sel.size)
            w = index.width_m[r]
            rx[sel] = xy[v, 0] + rng.normal(0, 1.5 * w, sel.size)
            ry[sel] = xy[v, 1] + rng.normal(0, 1.5 * w, sel.size)
        # route fixes replace the positions of the `on` fixes
        x[on], y[on] = rx[on], ry[on]
    lon, lat = proj.inverse(x, y)
    t0 = 1_767_225_600  # 2026-01-01 00:00 UTC
    t = t0 + rng.integers(0, 7 * 86400, n)
    return BenchFixes(lon, lat, t, route)


def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def run_benchmark(
    city: dict[str, Any],
    config: GeofenceConfig,
    *,
    n_polygons: int = 1800,
    n_routes: int = 200,
    n_fixes: int = 1_000_000,
    repeat: int = 3,
    seed: int = 1,
    echo=print,
) -> dict[str, float]:
    start = time.perf_counter()
    zones = synthetic_zones(city, n_polygons=n_polygons, n_routes=n_routes, seed=seed)
    echo(
        f"generated {len(zones)} zones ({n_polygons} polygons of 50-500 vertices, {n_routes} "
        f"routes of 1000 vertices) in {time.perf_counter() - start:.1f} s"
    )
    start = time.perf_counter()
    index = GeofenceIndex(zones, city=city, config=config)
    build = time.perf_counter() - start
    echo(f"index built in {build:.2f} s, {index.memory_bytes() / 1e6:.0f} MB of arrays")
    fixes = synthetic_fixes(index, city, n_fixes, seed=seed + 1)
    lon, lat, t, route = fixes.lon, fixes.lat, fixes.t, fixes.route

    results: dict[str, float] = {"build_s": build}
    cls = index.classify(lon, lat, t)
    echo(
        f"{n_fixes:,} fixes: {np.unique(cls.fix).size / n_fixes:.0%} in some zone, "
        f"{cls.fix.size / n_fixes:.2f} zone hits per fix"
    )
    batch = index._batch(lon, lat)
    tt = index._times(t, n_fixes)
    rr = index._routes(route, n_fixes)
    proj_s = _best(lambda: index._batch(lon, lat), repeat)
    cls_only = _best(lambda: index._classify(batch, tt), repeat)
    dist_only = _best(lambda: index._route_distance(batch, rr), repeat)
    classify_s = _best(lambda: index.classify(lon, lat, t), repeat)
    route_s = _best(lambda: index.route_distance(lon, lat, route), repeat)
    both_s = _best(lambda: index.evaluate(lon, lat, t, route), repeat)
    d = index.route_distance(lon, lat, route)
    near = d < index.route_radius_m(route)
    echo(f"route fixes within the exact radius: {near.mean():.0%}")
    for label, seconds in (
        ("projection only", proj_s),
        ("classify, after projection", cls_only),
        ("route distance, after projection", dist_only),
        ("classify (incl. projection)", classify_s),
        ("route distance (incl. projection)", route_s),
        ("evaluate: both, one projection", both_s),
    ):
        echo(f"{label:36s} {n_fixes / seconds / 1e6:6.2f} M fixes/s  ({seconds * 1e3:.0f} ms)")
    results.update(
        projection_per_s=n_fixes / proj_s,
        classify_per_s=n_fixes / classify_s,
        route_distance_per_s=n_fixes / route_s,
        evaluate_per_s=n_fixes / both_s,
    )
    return results
