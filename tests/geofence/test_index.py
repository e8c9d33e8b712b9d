"""The in-memory evaluator: zones containing fixes, route distances, time windows,
hysteresis, degenerate input. Checked against independent computations (ray casting written
here, pyproj.Geod geodesic distances, shapely brute force)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import Geod

from geofence.corridor import corridor_hysteresis
from geofence.index import GeofenceConfig, GeofenceIndex
from geofence.model import BanDay, Zone
from geofence.projection import Projector

CITY = {"timezone": "Asia/Shanghai", "center_lon": 114.06, "center_lat": 22.55, "projection": ""}
TZ = ZoneInfo("Asia/Shanghai")
GEOD = Geod(ellps="WGS84")
PROJ = Projector(CITY)


def epoch(*args) -> int:
    """Epoch seconds of a local (Shanghai) wall-clock time."""
    return int(dt.datetime(*args, tzinfo=TZ).timestamp())


def ring_lonlat(xy) -> list[list[float]]:
    xy = np.asarray(xy, dtype=float)
    lon, lat = PROJ.inverse(xy[:, 0], xy[:, 1])
    ring = np.column_stack([lon, lat]).tolist()
    if ring[0] != ring[-1]:
        ring.append(ring[0])
    return ring


def polygon_zone(code, kind, outer, holes=(), **attrs) -> Zone:
    rings = [ring_lonlat(outer)] + [ring_lonlat(h) for h in holes]
    return Zone(code, kind, code, {"type": "Polygon", "coordinates": rings}, attributes=attrs)


def route_zone(code, xy, width) -> Zone:
    xy = np.asarray(xy, dtype=float)
    lon, lat = PROJ.inverse(xy[:, 0], xy[:, 1])
    return Zone(
        code,
        "route",
        code,
        {"type": "LineString", "coordinates": np.column_stack([lon, lat]).tolist()},
        attributes={"width_m": float(width)},
    )


def ray_cast(lon: float, lat: float, ring: list[list[float]]) -> bool:
    """Even-odd point in polygon, written independently of shapely."""
    inside = False
    n = len(ring)
    for i in range(n - 1):
        x1, y1 = ring[i]
        x2, y2 = ring[i + 1]
        if (y1 > lat) != (y2 > lat):
            xc = x1 + (lat - y1) * (x2 - x1) / (y2 - y1)
            if lon < xc:
                inside = not inside
    return inside


def geodesic_distance_to_line(lon, lat, line: list[list[float]], step_m: float = 0.25) -> float:
    """Distance from a point to a polyline by dense geodesic sampling (pyproj.Geod)."""
    best = np.inf
    for (lo1, la1), (lo2, la2) in zip(line[:-1], line[1:], strict=True):
        length = GEOD.inv(lo1, la1, lo2, la2)[2]
        n = max(int(length / step_m), 1)
        pts = np.array(GEOD.npts(lo1, la1, lo2, la2, n - 1)) if n > 1 else np.zeros((0, 2))
        lons = np.r_[lo1, pts[:, 0] if len(pts) else [], lo2]
        lats = np.r_[la1, pts[:, 1] if len(pts) else [], la2]
        d = GEOD.inv(np.full(lons.size, lon), np.full(lats.size, lat), lons, lats)[2]
        best = min(best, float(d.min()))
    return best


# ----------------------------------------------------------------------------- containment

SQUARE = [(0, 0), (400, 0), (400, 400), (0, 400)]
HOLE = [(150, 150), (250, 150), (250, 250), (150, 250)]
T0 = epoch(2026, 3, 4, 12, 0)  # a Wednesday noon


def test_polygon_with_hole_against_ray_casting():
    zone = polygon_zone("SITE-H", "site", SQUARE, [HOLE])
    index = GeofenceIndex([zone], city=CITY)
    rng = np.random.default_rng(3)
    x = rng.uniform(-100, 500, 4000)
    y = rng.uniform(-100, 500, 4000)
    lon, lat = PROJ.inverse(x, y)
    got = index.classify(lon, lat, T0).site_at() == 0
    outer, hole = zone.geometry["coordinates"]
    expected = np.array(
        [ray_cast(a, b, outer) and not ray_cast(a, b, hole) for a, b in zip(lon, lat, strict=True)]
    )
    # stay clear of the edges (the projection bends straight lon/lat edges by micrometres)
    edge = shapely.distance(shapely.Polygon(SQUARE, [HOLE]).boundary, shapely.points(x, y)) < 0.01
    assert expected[~edge].sum() > 1000
    assert (got[~edge] == expected[~edge]).all()


def test_inside_outside_and_on_edge():
    index = GeofenceIndex([polygon_zone("S", "site", SQUARE, [HOLE])], city=CITY)
    pts = np.array(
        [
            (10, 10),  # inside
            (-10, 10),  # outside
            (200, 200),  # in the hole: outside
            (160, 200),  # inside the hole too
            (140, 200),  # between hole and outer ring
            (400, 200),  # exactly on the outer edge: inside (boundary counts)
            (399.5, 200),
            (400.5, 200),
        ]
    )
    # feed projected points straight through the index internals to place them on the edge
    x, y = pts[:, 0].astype(float), pts[:, 1].astype(float)
    lon, lat = PROJ.inverse(x, y)
    got = index.classify(lon, lat, T0).site_at()
    assert got.tolist()[:5] == [0, -1, -1, -1, 0]
    assert got[6] == 0 and got[7] == -1
    # the edge point itself: round-tripping through lon/lat may move it by nanometres
    assert got[5] in (0, -1)


def test_circle_zone_radius():
    site = Zone(
        "C",
        "site",
        "circle",
        {"type": "Point", "coordinates": [114.06, 22.55]},
        attributes={"radius_m": 100.0},
    )
    index = GeofenceIndex([site], city=CITY)
    az = np.linspace(0, 360, 36, endpoint=False)
    lon_in, lat_in, _ = GEOD.fwd(np.full(36, 114.06), np.full(36, 22.55), az, np.full(36, 99.0))
    lon_out, lat_out, _ = GEOD.fwd(np.full(36, 114.06), np.full(36, 22.55), az, np.full(36, 101))
    assert (index.classify(lon_in, lat_in, T0).site_at() == 0).all()
    assert (index.classify(lon_out, lat_out, T0).site_at() == -1).all()


def test_nested_sites_report_the_smallest_and_all_pairs():
    big = polygon_zone("BIG", "site", [(-500, -500), (500, -500), (500, 500), (-500, 500)])
    small = polygon_zone("SMALL", "site", [(-50, -50), (50, -50), (50, 50), (-50, 50)])
    index = GeofenceIndex([big, small], city=CITY)
    lon, lat = PROJ.inverse(np.array([0.0, 300.0]), np.array([0.0, 0.0]))
    cls = index.classify(lon, lat, T0)
    site = cls.site_at()
    assert index.codes[site[0]] == "SMALL" and index.codes[site[1]] == "BIG"
    assert sorted(index.codes[cls.zones_at(0)]) == ["BIG", "SMALL"]


def test_lowest_speed_limit_applies():
    a = polygon_zone(
        "SP40", "speed", [(0, 0), (300, 0), (300, 300), (0, 300)], speed_limit_kmh=40.0
    )
    b = polygon_zone(
        "SP20", "speed", [(100, 100), (200, 100), (200, 200), (100, 200)], speed_limit_kmh=20.0
    )
    index = GeofenceIndex([a, b], city=CITY)
    lon, lat = PROJ.inverse(np.array([150.0, 50.0, 900.0]), np.array([150.0, 50.0, 0.0]))
    limits = index.classify(lon, lat, T0).speed_limit_at()
    assert limits.tolist() == [20.0, 40.0, np.inf]


def test_a_speed_zone_may_name_its_road_class_instead_of_a_limit():
    from geofence.index import GeofenceConfig

    road = polygon_zone(
        "URB", "speed", [(0, 0), (300, 0), (300, 300), (0, 300)], road_class="urban_expressway"
    )
    school = polygon_zone(
        "SCH", "speed", [(100, 100), (200, 100), (200, 200), (100, 200)], speed_limit_kmh=30.0
    )
    config = GeofenceConfig(road_class_limits={"urban_expressway": 60.0, "other": 40.0})
    index = GeofenceIndex([road, school], city=CITY, config=config)
    lon, lat = PROJ.inverse(np.array([150.0, 50.0, 900.0]), np.array([150.0, 50.0, 0.0]))
    limits = index.classify(lon, lat, T0).speed_limit_at()
    assert limits.tolist() == [30.0, 60.0, np.inf]


def test_road_class_limits_come_from_the_thresholds():
    from core.config import load_settings
    from geofence.index import GeofenceConfig

    settings = load_settings().with_overrides(thresholds={"speed_limit_expressway_kmh": 70})
    limits = GeofenceConfig.from_settings(settings).road_class_limits
    assert limits == {"expressway": 70.0, "urban_expressway": 60.0, "other": 40.0}


def test_validity_dates_are_local_and_inclusive():
    zone = polygon_zone("V", "site", SQUARE)
    zone = Zone(
        **{**zone.__dict__, "valid_from": dt.date(2026, 3, 1), "valid_to": dt.date(2026, 3, 31)}
    )
    index = GeofenceIndex([zone], city=CITY)
    lon, lat = PROJ.inverse(np.full(4, 10.0), np.full(4, 10.0))
    t = [
        epoch(2026, 2, 28, 23, 59, 59),
        epoch(2026, 3, 1, 0, 0),
        epoch(2026, 3, 31, 23, 59, 59),
        epoch(2026, 4, 1, 0, 0),
    ]
    assert index.classify(lon, lat, t).site_at().tolist() == [-1, 0, 0, -1]


def test_inactive_zones_are_not_loaded():
    zone = polygon_zone("OFF", "site", SQUARE)
    index = GeofenceIndex([Zone(**{**zone.__dict__, "active": False})], city=CITY)
    assert len(index) == 0
    lon, lat = PROJ.inverse(np.array([10.0]), np.array([10.0]))
    assert index.classify(lon, lat, T0).site_at().tolist() == [-1]


# ----------------------------------------------------------------------------- time windows


def _restricted(windows=None, code="R"):
    attrs = {"windows": windows} if windows else {}
    return polygon_zone(code, "restricted", SQUARE, **attrs)


def _active(index, times):
    lon, lat = PROJ.inverse(np.full(len(times), 10.0), np.full(len(times), 10.0))
    return (index.classify(lon, lat, times).restricted_active_at() >= 0).tolist()


def test_weekday_school_window():
    windows = [{"days": [1, 2, 3, 4, 5], "start": "07:00", "end": "08:30"}]
    index = GeofenceIndex([_restricted(windows)], city=CITY)
    times = [
        epoch(2026, 3, 4, 6, 59),  # Wednesday, before
        epoch(2026, 3, 4, 7, 0),  # start is inside
        epoch(2026, 3, 4, 8, 29, 59),
        epoch(2026, 3, 4, 8, 30),  # end is outside
        epoch(2026, 3, 7, 7, 30),  # Saturday
    ]
    assert _active(index, times) == [False, True, True, False, False]
    # the zone is still reported as restricted outside its window
    lon, lat = PROJ.inverse(np.array([10.0]), np.array([10.0]))
    assert index.classify(lon, lat, times[0]).restricted_at().tolist() == [0]


def test_window_across_midnight_belongs_to_its_start_day():
    windows = [{"days": [5], "start": "21:00", "end": "04:00"}]  # Friday night
    index = GeofenceIndex([_restricted(windows)], city=CITY)
    times = [
        epoch(2026, 3, 6, 20, 59),  # Friday
        epoch(2026, 3, 6, 23, 0),
        epoch(2026, 3, 7, 3, 59),  # Saturday morning: still Friday's window
        epoch(2026, 3, 7, 4, 0),
        epoch(2026, 3, 7, 23, 0),  # Saturday night: no window
        epoch(2026, 3, 6, 2, 0),  # Friday early morning: Thursday had no window
    ]
    assert _active(index, times) == [False, True, True, False, False, False]


def test_week_wraps_from_sunday_to_monday():
    windows = [{"days": [7], "start": "22:00", "end": "02:00"}]
    index = GeofenceIndex([_restricted(windows)], city=CITY)
    assert _active(
        index, [epoch(2026, 3, 8, 23, 0), epoch(2026, 3, 9, 1, 0), epoch(2026, 3, 9, 23, 0)]
    ) == [True, True, False]


def test_no_windows_means_always_banned():
    index = GeofenceIndex([_restricted()], city=CITY)
    assert _active(index, [epoch(2026, 3, 4, 3, 0), epoch(2026, 3, 8, 15, 0)]) == [True, True]


def test_ban_days_whole_day_and_partial_and_per_zone():
    windows = [{"days": "weekdays", "start": "07:00", "end": "08:30"}]
    a = _restricted(windows, "A")
    b = polygon_zone(
        "B", "restricted", [(1000, 0), (1400, 0), (1400, 400), (1000, 400)], windows=windows
    )
    bans = [
        BanDay(dt.date(2026, 6, 7), None, dt.time(7, 0), dt.time(18, 0), "gaokao"),  # all
        BanDay(dt.date(2026, 10, 1), "A", None, None, "national day"),  # A only, whole day
    ]
    index = GeofenceIndex([a, b], bans, city=CITY)
    lon, lat = PROJ.inverse(np.array([10.0, 1010.0] * 4), np.array([10.0] * 8))
    t = np.repeat(
        [
            epoch(2026, 6, 7, 12, 0),  # gaokao: both banned
            epoch(2026, 6, 7, 19, 0),  # after the exam-day ban, a Sunday: neither
            epoch(2026, 10, 1, 23, 30),  # national day: A only
            epoch(2026, 10, 2, 0, 30),  # the day after: neither
        ],
        2,
    )
    got = index.classify(lon, lat, t).restricted_active_at() >= 0
    assert got.tolist() == [True, True, False, False, True, False, False, False]


def test_disposal_opening_hours():
    hours = [{"days": "daily", "start": "20:00", "end": "06:00"}]
    index = GeofenceIndex([polygon_zone("D", "disposal", SQUARE, opening_hours=hours)], city=CITY)
    lon, lat = PROJ.inverse(np.full(2, 10.0), np.full(2, 10.0))
    cls = index.classify(lon, lat, [epoch(2026, 3, 4, 12, 0), epoch(2026, 3, 4, 22, 0)])
    assert cls.disposal_site_at().tolist() == [0, 0]
    assert cls.disposal_site_at(open_only=True).tolist() == [-1, 0]


def test_datetime64_times_are_accepted():
    index = GeofenceIndex([_restricted([{"start": "07:00", "end": "08:00"}])], city=CITY)
    t = np.array(["2026-03-03T23:30:00", "2026-03-04T04:00:00"], dtype="datetime64[s]")  # UTC
    assert _active(index, t) == [True, False]  # 07:30 and 12:00 in Shanghai


def test_dst_time_zone():
    city = {**CITY, "timezone": "Europe/Berlin", "center_lon": 13.4, "center_lat": 52.5}
    proj = Projector(city)
    ring = np.column_stack(proj.inverse(np.array([0, 400, 400, 0.0]), np.array([0, 0, 400, 400.0])))
    zone = Zone(
        "R",
        "restricted",
        "R",
        {"type": "Polygon", "coordinates": [ring.tolist()]},
        attributes={"windows": [{"days": "daily", "start": "07:00", "end": "08:00"}]},
    )
    index = GeofenceIndex([zone], city=city)
    berlin = ZoneInfo("Europe/Berlin")
    times = [
        int(dt.datetime(2026, m, d, 7, 30, tzinfo=berlin).timestamp())
        for m, d in ((3, 28), (3, 30), (10, 24), (10, 26))
    ]
    times += [int(dt.datetime(2026, 3, 30, 8, 30, tzinfo=berlin).timestamp())]
    lon, lat = proj.inverse(np.full(5, 10.0), np.full(5, 10.0))
    got = index.classify(lon, lat, times).restricted_active_at() >= 0
    assert got.tolist() == [True, True, True, True, False]


# ----------------------------------------------------------------------------- routes


def _curve(radius=300.0, n=60):
    """A quarter circle plus a straight tail: a route with a curve."""
    a = np.linspace(0, np.pi / 2, n)
    arc = np.column_stack([radius * np.cos(a), radius * np.sin(a)])
    tail = np.column_stack([np.linspace(0, -400, 8)[1:], np.full(7, radius)])
    return np.vstack([arc, tail])


def test_route_distance_on_a_curve_matches_geodesic():
    xy = _curve()
    route = route_zone("RT", xy, 50)
    index = GeofenceIndex([route], city=CITY)
    rng = np.random.default_rng(5)
    # points around the curve at distances 0..120 m (both sides), many near the 50 m edge
    k = rng.integers(0, len(xy) - 1, 300)
    off = np.r_[rng.uniform(-120, 120, 200), rng.uniform(45, 55, 100) * rng.choice([-1, 1], 100)]
    p = xy[k]
    normal = np.column_stack(
        [np.cos(np.linspace(0, np.pi / 2, 60)), np.sin(np.linspace(0, np.pi / 2, 60))]
    )
    normal = np.vstack([normal, np.tile([0.0, 1.0], (7, 1))])[k]
    x, y = p[:, 0] + off * normal[:, 0], p[:, 1] + off * normal[:, 1]
    lon, lat = PROJ.inverse(x, y)
    got = index.route_distance(lon, lat, 0)
    line = route.geometry["coordinates"]
    expected = np.array(
        [geodesic_distance_to_line(a, b, line) for a, b in zip(lon, lat, strict=True)]
    )
    radius = index.route_radius_m(0)
    near = expected < radius - 1
    assert near.sum() > 250
    assert np.abs(got[near] - expected[near]).max() < 1.0
    assert (got[~near] >= radius - 1).all() and (got <= radius).all()
    # inside/outside the corridor agrees with the geodesic truth away from the threshold
    clear = np.abs(expected - 50) > 1
    assert ((got[clear] <= 50) == (expected[clear] <= 50)).all()


def test_route_distance_matches_shapely_brute_force_on_many_routes():
    from bench.geofence import synthetic_fixes, synthetic_zones

    zones = synthetic_zones(CITY, n_polygons=30, n_routes=12, route_vertices=300, seed=7)
    index = GeofenceIndex(zones, city=CITY)
    fixes = synthetic_fixes(index, CITY, 20_000, seed=8)
    got = index.route_distance(fixes.lon, fixes.lat, fixes.route)
    x, y = PROJ.forward(fixes.lon, fixes.lat)
    exact = shapely.distance(index._prepared[fixes.route], shapely.points(x, y))
    radius = index.route_radius_m(fixes.route)
    assert (exact < radius).mean() > 0.5
    expected = np.minimum(exact, radius)
    assert np.abs(got - expected).max() < 1e-6
    # and classification against shapely brute force over every area zone
    cls = index.classify(fixes.lon, fixes.lat, fixes.t)
    areas = np.flatnonzero(index.kind != 2)
    pts = shapely.points(x, y)
    brute = shapely.intersects(index._prepared[areas][None, :], pts[:, None])
    fi, zi = np.nonzero(brute)
    expected_pairs = set(zip(fi.tolist(), areas[zi].tolist(), strict=True))
    assert set(zip(cls.fix.tolist(), cls.zone.tolist(), strict=True)) == expected_pairs
    assert len(expected_pairs) > 1000


def test_zero_length_route_is_a_point():
    route = Zone(
        "Z",
        "route",
        "Z",
        {"type": "LineString", "coordinates": [[114.06, 22.55]] * 3},
        attributes={"width_m": 50.0},
    )
    index = GeofenceIndex([route], city=CITY)
    lon, lat, _ = GEOD.fwd([114.06, 114.06], [22.55, 22.55], [0, 90], [30.0, 70.0])
    d = index.route_distance(lon, lat, [0, 0])
    assert np.abs(d - [30.0, 70.0]).max() < 0.1


def test_route_index_errors_give_inf_not_nan():
    index = GeofenceIndex(
        [route_zone("RT", _curve(), 50), polygon_zone("S", "site", SQUARE)], city=CITY
    )
    site = index.zone_index("S")
    lon, lat = PROJ.inverse(np.zeros(3), np.zeros(3))
    d = index.route_distance(lon, lat, [-1, site, 10_000])
    assert np.isinf(d).all()


# ----------------------------------------------------------------------------- degenerate


def test_far_and_invalid_fixes_never_crash_or_match():
    index = GeofenceIndex(
        [polygon_zone("S", "site", SQUARE), route_zone("RT", _curve(), 50)], city=CITY
    )
    lon = np.array([-74.0, 114.06 + 180, 300.0, np.nan, 114.06, 0.0, 180.0, -180.0])
    lat = np.array([40.7, 22.55, 10.0, 22.55, np.inf, 0.0, 90.0, -90.0])
    cls = index.classify(lon, lat, T0)
    assert cls.fix.size == 0
    d = index.route_distance(lon, lat, 1 if index.kind[1] == 2 else 0)
    assert not np.isnan(d).any()
    assert (d == index.route_radius_m(index.zone_index("RT"))).all()


def test_empty_batch_and_empty_catalogue():
    empty = GeofenceIndex([], city=CITY)
    cls = empty.classify(np.array([114.06]), np.array([22.55]), T0)
    assert cls.site_at().tolist() == [-1]
    assert cls.speed_limit_at().tolist() == [np.inf]
    assert np.isinf(empty.route_distance([114.06], [22.55], [0])).all()
    index = GeofenceIndex([polygon_zone("S", "site", SQUARE)], city=CITY)
    res = index.evaluate(np.zeros(0), np.zeros(0), np.zeros(0), route=np.zeros(0, int))
    assert res.classification.site_at().shape == (0,)
    assert res.route_distance_m.shape == (0,)


def test_zone_far_from_centre_is_skipped_not_fatal():
    far = Zone(
        "FAR",
        "site",
        "far",
        {
            "type": "Polygon",
            "coordinates": [[[2.0, 48.0], [2.01, 48.0], [2.01, 48.01], [2.0, 48.01], [2.0, 48.0]]],
        },
    )
    index = GeofenceIndex([far, polygon_zone("S", "site", SQUARE)], city=CITY)
    assert [code for code, _ in index.skipped] == ["FAR"]
    assert index.codes.tolist() == ["S"]


def test_mismatched_lengths_raise_clearly():
    index = GeofenceIndex([polygon_zone("S", "site", SQUARE)], city=CITY)
    with pytest.raises(ValueError, match="differ in length"):
        index.classify([114.0, 114.1], [22.5], T0)
    with pytest.raises(ValueError, match="fix times"):
        index.classify([114.0, 114.1], [22.5, 22.6], [T0])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(allow_nan=True, allow_infinity=True, width=64),
            st.floats(allow_nan=True, allow_infinity=True, width=64),
            st.integers(min_value=0, max_value=4_000_000_000),
        ),
        max_size=40,
    )
)
def test_property_evaluator_never_raises_or_returns_nan(fixes):
    index = _PROPERTY_INDEX
    lon = np.array([f[0] for f in fixes], dtype=float)
    lat = np.array([f[1] for f in fixes], dtype=float)
    t = np.array([f[2] for f in fixes], dtype=np.int64)
    route = np.full(len(fixes), index.zone_index("RT"))
    res = index.evaluate(lon, lat, t, route)
    assert not np.isnan(res.route_distance_m).any()
    assert (res.route_distance_m >= 0).all()
    assert not np.isnan(res.classification.speed_limit_at()).any()
    assert res.classification.site_at().shape == (len(fixes),)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(-600, 600), st.floats(-600, 600)), min_size=1, max_size=50))
def test_property_near_points_match_ray_casting_and_geodesic(points):
    index = _PROPERTY_INDEX
    xy = np.array(points)
    lon, lat = PROJ.inverse(xy[:, 0], xy[:, 1])
    sites = index.classify(lon, lat, T0).site_at() == index.zone_index("S")
    ring, hole = index.zones[index.zone_index("S")].geometry["coordinates"]
    edge = shapely.distance(shapely.Polygon(SQUARE, [HOLE]).boundary, shapely.points(xy)) < 0.01
    expected = np.array(
        [ray_cast(a, b, ring) and not ray_cast(a, b, hole) for a, b in zip(lon, lat, strict=True)]
    )
    assert (sites[~edge] == expected[~edge]).all()


_PROPERTY_INDEX = GeofenceIndex(
    [
        polygon_zone("S", "site", SQUARE, [HOLE]),
        polygon_zone("SP", "speed", SQUARE, speed_limit_kmh=30.0),
        route_zone("RT", _curve(), 50),
    ],
    city=CITY,
)


# ----------------------------------------------------------------------------- hysteresis


def test_hysteresis_independent_fixes():
    d = np.array([10, 49, 50, 51, 10, 34, 36, 60])
    prev = np.array([True, True, True, True, False, False, False, False])
    on = corridor_hysteresis(d, 50.0, prev, reentry_ratio=0.7)
    assert on.tolist() == [True, True, True, False, True, True, False, False]


def test_hysteresis_noise_at_the_edge_does_not_flap():
    rng = np.random.default_rng(1)
    # a truck driving 45..55 m from the route centre (noise around the 50 m edge)
    d = 50 + rng.uniform(-5, 5, 200)
    d[0] = 60  # it leaves once
    naive = d <= 50
    on = corridor_hysteresis(d, 50.0, True, group=np.zeros(200, int), reentry_ratio=0.7)
    assert np.count_nonzero(np.diff(naive.astype(int))) > 20  # a naive test flaps
    assert not on.any()  # hysteresis: off once, stays off
    back = corridor_hysteresis(np.r_[d, 30.0, 40.0], 50.0, True, group=np.zeros(202, int))
    assert back[-2] and back[-1]  # back under 35 m, then stays on inside the band


def test_hysteresis_per_truck_in_one_batch():
    truck = np.array([1, 2, 1, 2, 1, 2])
    d = np.array([60, 40, 45, 60, 20, 45])
    prev = np.array([True, True, True, True, True, True])
    on = corridor_hysteresis(d, [50, 50, 50, 50, 50, 50], prev, group=truck)
    # truck 1: 60 off, 45 stays off, 20 back on; truck 2: 40 on, 60 off, 45 stays off
    assert on.tolist() == [False, True, False, False, True, False]


def test_the_front_door_exports_what_other_packages_use():
    import geofence.index as front

    assert [front.SITE, front.DISPOSAL, front.ROUTE, front.RESTRICTED, front.SPEED] == [
        front.KIND_CODE[k] for k in ("site", "disposal", "route", "restricted", "speed")
    ]
    res = _PROPERTY_INDEX.evaluate([114.06], [22.55], T0, _PROPERTY_INDEX.zone_index("RT"))
    assert isinstance(res, front.Evaluation)
    assert isinstance(res.classification, front.Classification)
    assert set(front.__all__) <= set(vars(front))


def test_config_from_settings():
    from core.config import load_settings

    cfg = GeofenceConfig.from_settings(load_settings())
    assert cfg.route_distance_cap_m == 100.0 and cfg.route_cell_m > 0


def test_incremental_rebuild_reuses_unchanged_zones_and_matches_a_fresh_build():
    from bench.geofence import synthetic_fixes, synthetic_zones

    zones = synthetic_zones(CITY, n_polygons=40, n_routes=6, route_vertices=200, seed=11)
    first = GeofenceIndex(zones, city=CITY)
    assert first.cache_hits == 0
    # move one polygon by 300 m and drop one route
    moved = zones[0]
    ring = np.array(moved.geometry["coordinates"][0])
    x, y = PROJ.forward(ring[:, 0], ring[:, 1])
    lon, lat = PROJ.inverse(x + 300, y)
    moved = Zone(
        **{
            **moved.__dict__,
            "geometry": {"type": "Polygon", "coordinates": [np.column_stack([lon, lat]).tolist()]},
        }
    )
    changed = [moved] + zones[1:-1]
    incremental = GeofenceIndex(changed, city=CITY, cache=first.build_cache)
    fresh = GeofenceIndex(changed, city=CITY)
    assert incremental.cache_hits >= 2 * 39 + 5  # geometry + cells of 39 polygons, 5 routes
    assert len(incremental.build_cache) < len(first.build_cache) + 3  # stale parts dropped
    fixes = synthetic_fixes(fresh, CITY, 20_000, seed=12)
    a = incremental.evaluate(fixes.lon, fixes.lat, fixes.t, fixes.route)
    b = fresh.evaluate(fixes.lon, fixes.lat, fixes.t, fixes.route)
    assert np.array_equal(a.classification.fix, b.classification.fix)
    assert np.array_equal(a.classification.zone, b.classification.zone)
    assert np.allclose(a.route_distance_m, b.route_distance_m, rtol=0, atol=1e-9)


def test_local_clock_offsets_across_a_long_span_are_correct_and_cheap():
    import time

    from geofence.timewin import LocalClock

    clock = LocalClock("Europe/Berlin")
    rng = np.random.default_rng(4)
    t = np.r_[0, rng.integers(1_700_000_000, 1_800_000_000, 2000), 4_000_000_000]
    start = time.perf_counter()
    got = clock.offsets(t)
    assert time.perf_counter() - start < 2.0
    berlin = ZoneInfo("Europe/Berlin")
    expected = [
        int(
            dt.datetime.fromtimestamp(int(v), dt.UTC).astimezone(berlin).utcoffset().total_seconds()
        )
        for v in t
    ]
    assert got.tolist() == expected
