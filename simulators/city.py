"""A seeded synthetic city for the fleet simulator (issue 5).

`generate_city(seed, ...)` builds, from one `random.Random(seed)`, a road network (a jittered
grid with an expressway, urban expressways and a diagonal arterial; speed class per edge),
construction and disposal sites at road nodes, restricted zones (a city-centre zone banned all
day, a school zone with weekday windows), approved routes along the roads (shortest paths that
avoid the restricted zones and other sites), companies with valid unified social credit codes,
trucks with yellow plates, terminals, and permits. Same seed and arguments, same city.

`install_city(conn, settings, city)` writes it through the platform's own import paths
(GeoJSON zone import, the registry service, the permit JSON import); idempotent.

Coordinates are local metres east/north of `city.center_lon/center_lat`, turned into WGS-84
with a local tangent plane (well under a metre off over the few km of the city).
"""

from __future__ import annotations

import datetime as dt
import heapq
import json
import math
import random
from dataclasses import dataclass, field
from typing import Any

from stdnum.cn import uscc

from simulators.thresholds import speed_limits as settings_speed_limits

USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
PLATE_CHARS = "ABCDEFGHJKLMNPQRSTUVWXYZ"
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘蔡蒋余杜叶"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰涛明超秀霞平刚桂英华建国志红文斌海燕鹏飞俊辉林峰"
COMPANY_WORDS = ["鹏城", "宏达", "顺通", "华建", "恒泰", "安运", "中基", "新业", "利民", "盛世"]
COMPANY_WORDS += ["永兴", "远航", "城建", "金石", "振华", "汇通", "广源", "德信", "东方", "南粤"]
SITE_HALF_M = 120.0  # half side of a site / disposal site square
ROUTE_WIDTH_M = 50.0
SPEED_ZONE_HALF_M = 40.0  # half width of the speed-zone strip along a fast road
# Operating hours of the permits that have them (every HOURS_EVERY-th permit): no transport
# in the rush hours 07:00-09:00 and 17:00-19:00 (city local time).
HOURS_EVERY = 3
RUSH_HOUR_BAN = [
    {"days": "daily", "start": "09:00", "end": "17:00"},
    {"days": "daily", "start": "19:00", "end": "07:00"},
]
# Black trucks, in turn: an unregistered truck whose unregistered terminal reports; a
# registered, permitted truck whose bound terminal is silent while an unregistered one reports
# (a swapped terminal); an unregistered plate with no terminal; a registered truck with no
# permit and no terminal; a registered, permitted truck whose terminal never reports.
BLACK_MODES = (
    "rogue_terminal",
    "swapped_terminal",
    "unregistered_plate",
    "no_permit_no_terminal",
    "silent_terminal",
)


@dataclass(frozen=True)
class Edge:
    a: int
    b: int
    road_class: str  # expressway, urban_expressway or other (geofence.model.ROAD_CLASSES)
    length_m: float
    limit_kmh: float  # the class's muck-truck limit, [thresholds] speed_limit_<class>_kmh


@dataclass
class RoadNetwork:
    nodes: list[tuple[float, float]]  # local metres (x east, y north)
    edges: list[Edge]
    adjacency: dict[int, list[tuple[int, int]]] = field(default_factory=dict)  # node -> (nb, edge)

    def __post_init__(self) -> None:
        self.adjacency = {i: [] for i in range(len(self.nodes))}
        for k, e in enumerate(self.edges):
            self.adjacency[e.a].append((e.b, k))
            self.adjacency[e.b].append((e.a, k))

    def edge_between(self, a: int, b: int) -> Edge:
        for nb, k in self.adjacency[a]:
            if nb == b:
                return self.edges[k]
        raise KeyError((a, b))

    def shortest_path(
        self, src: int, dst: int, avoid_nodes: set[int] = frozenset(), avoid_edges=frozenset()
    ) -> list[int]:
        """Fastest path (travel time at the class limit), Dijkstra; ties broken by node id."""
        best = {src: 0.0}
        prev: dict[int, int] = {}
        heap = [(0.0, src)]
        while heap:
            cost, node = heapq.heappop(heap)
            if node == dst:
                break
            if cost > best.get(node, math.inf):
                continue
            for nb, k in self.adjacency[node]:
                if (nb in avoid_nodes and nb != dst) or k in avoid_edges:
                    continue
                edge = self.edges[k]
                c = cost + edge.length_m / edge.limit_kmh
                if c < best.get(nb, math.inf) - 1e-9:
                    best[nb] = c
                    prev[nb] = node
                    heapq.heappush(heap, (c, nb))
        if dst not in best:
            raise ValueError(f"no road from node {src} to node {dst}")
        path = [dst]
        while path[-1] != src:
            path.append(prev[path[-1]])
        return path[::-1]


@dataclass
class Site:
    code: str
    kind: str  # "site" or "disposal"
    name: str
    node: int
    half_m: float = SITE_HALF_M


@dataclass
class Route:
    code: str
    origin: str  # site code
    disposal: str  # disposal site code
    nodes: list[int]  # road nodes from the origin's node to the disposal site's node


@dataclass
class Company:
    name: str
    credit_code: str
    legal_representative: str


@dataclass
class Truck:
    plate: str
    device_id: str  # "" for a truck with no terminal at all
    company: str  # credit code ("" for an unregistered truck)
    permit: str  # permit number ("" for none)
    # Black trucks (黑车) only: what makes them black (BLACK_MODES), the route they drive, and
    # the unregistered terminal that reports for them (if any).
    black: str = ""
    route: str = ""
    rogue_device: str = ""


@dataclass
class Permit:
    number: str
    company: str  # credit code
    trucks: list[str]
    origin_site: str
    disposal_sites: list[str]
    routes: list[str]
    valid_from: dt.date
    valid_to: dt.date
    operating_hours: list[dict[str, Any]] = field(default_factory=list)  # [] = any time

    def valid_on(self, day: dt.date) -> bool:
        return self.valid_from <= day <= self.valid_to


@dataclass
class City:
    seed: int
    center: tuple[float, float]  # lon, lat
    roads: RoadNetwork
    sites: dict[str, Site]
    restricted: list[dict[str, Any]]  # {"code", "name", "node", "half_m", "windows"}
    routes: dict[str, Route]
    companies: list[Company]
    trucks: list[Truck]
    permits: list[Permit]
    black_trucks: list[Truck] = field(default_factory=list)  # see BLACK_MODES

    # -- geometry -------------------------------------------------------------------------
    def lonlat(self, x: float, y: float) -> tuple[float, float]:
        lon0, lat0 = self.center
        return (
            lon0 + x / (111_320.0 * math.cos(math.radians(lat0))),
            lat0 + y / 110_574.0,
        )

    def node_xy(self, node: int) -> tuple[float, float]:
        return self.roads.nodes[node]

    def route_xy(self, code: str) -> list[tuple[float, float]]:
        return [self.roads.nodes[n] for n in self.routes[code].nodes]

    def site_contains(self, x: float, y: float, margin_m: float = 0.0) -> str | None:
        for site in self.sites.values():
            sx, sy = self.roads.nodes[site.node]
            if abs(x - sx) <= site.half_m + margin_m and abs(y - sy) <= site.half_m + margin_m:
                return site.code
        return None

    def restricted_nodes(self) -> set[int]:
        return {zone["node"] for zone in self.restricted}

    # -- exports --------------------------------------------------------------------------
    def _square(self, node: int, half: float) -> dict[str, Any]:
        cx, cy = self.roads.nodes[node]
        ring = [(-1, -1), (1, -1), (1, 1), (-1, 1), (-1, -1)]
        coords = [self._ll(cx + dx * half, cy + dy * half) for dx, dy in ring]
        return {"type": "Polygon", "coordinates": [coords]}

    def _ll(self, x: float, y: float) -> list[float]:
        lon, lat = self.lonlat(x, y)
        return [round(lon, 7), round(lat, 7)]

    def geojson(self) -> dict[str, Any]:
        """Every zone as a GeoJSON FeatureCollection (the schema of docs/geofence.md)."""
        features = []

        def add(geometry, **props):
            features.append({"type": "Feature", "geometry": geometry, "properties": props})

        for site in self.sites.values():
            add(
                self._square(site.node, site.half_m), kind=site.kind, code=site.code, name=site.name
            )
        for zone in self.restricted:
            props = {"kind": "restricted", "code": zone["code"], "name": zone["name"]}
            if zone["windows"]:
                props["windows"] = zone["windows"]
            add(self._square(zone["node"], zone["half_m"]), **props)
        for route in self.routes.values():
            add(
                {
                    "type": "LineString",
                    "coordinates": [self._ll(*p) for p in self.route_xy(route.code)],
                },
                kind="route",
                code=route.code,
                name=f"{route.origin} → {route.disposal}",
                width_m=ROUTE_WIDTH_M,
            )
        # Fast roads become speed zones (a strip along each edge), so the rules know their limit;
        # everything else is an "other" road at speed_limit_other_kmh.
        for k, edge in enumerate(self.roads.edges):
            if edge.road_class == "other":
                continue
            add(
                self._strip(edge),
                kind="speed",
                code=f"{self.prefix}-SPD-{k:04d}",
                name=f"{edge.road_class} {edge.a}-{edge.b}",
                speed_limit_kmh=edge.limit_kmh,
            )
        return {"type": "FeatureCollection", "features": features}

    def basemap_geojson(self) -> dict[str, Any]:
        """The road network as the offline base layer (`muck zones import-basemap`): one
        LineString per edge, its class the edge's speed class (expressway, urban_expressway,
        other)."""
        nodes = self.roads.nodes
        features = [
            {
                "type": "Feature",
                "properties": {"class": edge.road_class},
                "geometry": {
                    "type": "LineString",
                    "coordinates": [self._ll(*nodes[edge.a]), self._ll(*nodes[edge.b])],
                },
            }
            for edge in self.roads.edges
        ]
        return {"type": "FeatureCollection", "features": features}

    def districts_geojson(self) -> dict[str, Any]:
        """Four districts (行政区, Shenzhen's codes): the quadrants of the road network's
        extent, so that every fix and violation falls in one (the dashboard filters by them).
        Imported like zones (kind `district`), into their own table."""
        xs = [p[0] for p in self.roads.nodes]
        ys = [p[1] for p in self.roads.nodes]
        x0, x1, y0, y1 = min(xs) - 500, max(xs) + 500, min(ys) - 500, max(ys) + 500
        xm, ym = (x0 + x1) / 2, (y0 + y1) / 2
        quadrants = (
            ("440305", "南山区", x0, xm, y0, ym),
            ("440304", "福田区", xm, x1, y0, ym),
            ("440306", "宝安区", x0, xm, ym, y1),
            ("440303", "罗湖区", xm, x1, ym, y1),
        )
        features = []
        for code, name, ax, bx, ay, by in quadrants:
            ring = [(ax, ay), (bx, ay), (bx, by), (ax, by), (ax, ay)]
            features.append(
                {
                    "type": "Feature",
                    "properties": {"kind": "district", "code": code, "name": name},
                    "geometry": {"type": "Polygon", "coordinates": [[self._ll(*p) for p in ring]]},
                }
            )
        return {"type": "FeatureCollection", "features": features}

    @property
    def prefix(self) -> str:
        return f"SIM{self.seed}"

    def _strip(self, edge: Edge) -> dict[str, Any]:
        (ax, ay), (bx, by) = self.roads.nodes[edge.a], self.roads.nodes[edge.b]
        ux, uy = (bx - ax) / edge.length_m, (by - ay) / edge.length_m
        h = SPEED_ZONE_HALF_M
        # Extended past both nodes so junctions stay covered.
        ax, ay, bx, by = ax - ux * h, ay - uy * h, bx + ux * h, by + uy * h
        nx, ny = -uy * h, ux * h
        ring = [(ax + nx, ay + ny), (ax - nx, ay - ny), (bx - nx, by - ny), (bx + nx, by + ny)]
        ring.append(ring[0])
        return {"type": "Polygon", "coordinates": [[self._ll(x, y) for x, y in ring]]}

    def permits_json(self) -> str:
        """The permits in the JSON format of `muck permits import`."""
        items = []
        for p in self.permits:
            item = {
                "number": p.number,
                "company_credit_code": p.company,
                "trucks": p.trucks,
                "origin_site": p.origin_site,
                "disposal_sites": p.disposal_sites,
                "routes": p.routes,
                "valid_from": p.valid_from.isoformat(),
                "valid_to": p.valid_to.isoformat(),
                "authority": "模拟市住房和建设局",
            }
            if p.operating_hours:
                item["operating_hours"] = p.operating_hours
            items.append(item)
        return json.dumps(items, ensure_ascii=False)

    def describe(self) -> str:
        return (
            f"city seed {self.seed}: {len(self.roads.nodes)} road nodes, {len(self.roads.edges)} "
            f"edges, {sum(s.kind == 'site' for s in self.sites.values())} sites, "
            f"{sum(s.kind == 'disposal' for s in self.sites.values())} disposal sites, "
            f"{len(self.routes)} routes, {len(self.companies)} companies, {len(self.trucks)} "
            f"trucks, {len(self.permits)} permits, {len(self.black_trucks)} black trucks"
        )


# -- generation ---------------------------------------------------------------------------


def credit_code(rng: random.Random, division: str = "440300") -> str:
    """A unified social credit code (GB 32100-2015) with a correct check character."""
    body = "91" + division + "".join(rng.choice(USCC_ALPHABET) for _ in range(9))
    return body + uscc.calc_check_digit(body)


def yellow_plate(rng: random.Random, prefix: str = "粤B") -> str:
    if rng.random() < 0.5:
        tail = "".join(rng.choice("0123456789") for _ in range(5))
    else:
        tail = rng.choice(PLATE_CHARS) + "".join(rng.choice("0123456789") for _ in range(4))
    return prefix + tail


def chinese_name(rng: random.Random) -> str:
    return rng.choice(SURNAMES) + "".join(rng.choice(GIVEN) for _ in range(rng.choice((1, 2))))


def _road_network(
    rng: random.Random, n: int, spacing: float, limits: dict[str, float]
) -> RoadNetwork:
    half = (n - 1) / 2
    nodes = []
    for j in range(n):
        for i in range(n):
            jitter = spacing * 0.08
            nodes.append(
                (
                    round((i - half) * spacing + rng.uniform(-jitter, jitter), 1),
                    round((j - half) * spacing + rng.uniform(-jitter, jitter), 1),
                )
            )

    def nid(i: int, j: int) -> int:
        return j * n + i

    fast_row = rng.randrange(1, n // 2)  # an urban expressway east-west
    fast_col = rng.randrange(n // 2 + 1, n - 1)  # and one north-south
    edges = []

    def add(a: int, b: int, cls: str) -> None:
        (ax, ay), (bx, by) = nodes[a], nodes[b]
        edges.append(Edge(a, b, cls, round(math.hypot(bx - ax, by - ay), 1), limits[cls]))

    for j in range(n):
        for i in range(n):
            if i + 1 < n:
                cls = "expressway" if j == 0 else "urban_expressway" if j == fast_row else "other"
                add(nid(i, j), nid(i + 1, j), cls)
            if j + 1 < n:
                cls = "urban_expressway" if i == fast_col else "other"
                add(nid(i, j), nid(i, j + 1), cls)
    # A diagonal arterial (other road) from the south-west to the north-east quarter.
    for k in range(n // 2 - 1):
        add(nid(k, k + 1), nid(k + 1, k + 2), "other")
    return RoadNetwork(nodes, edges)


def generate_city(
    seed: int,
    *,
    trucks: int = 20,
    center: tuple[float, float] = (114.06, 22.55),
    grid: int = 9,
    spacing_m: float = 600.0,
    sites: int | None = None,
    disposal_sites: int | None = None,
    today: dt.date | None = None,
    plate_prefix: str = "粤B",
    expired: int | None = None,
    black: int | None = None,
    speed_limits: dict[str, float] | None = None,
) -> City:
    """A reproducible city: same arguments (and `today`), same city. The last `expired`
    trucks (default one in twenty) hold only an expired permit: every load they carry is
    transport without a valid permit. `black` black trucks (default: none under 10 trucks,
    else max(5, trucks // 40)) are drawn from a generator of their own, so they change
    nothing else. `speed_limits` per road class (default: the shipped `[thresholds]`) are
    those of the roads, the speed zones and the fastest paths."""
    rng = random.Random(seed)
    today = today or dt.date.today()
    roads = _road_network(rng, grid, spacing_m, speed_limits or settings_speed_limits())
    n = grid
    centre = (n // 2) * n + n // 2
    prefix = f"SIM{seed}"
    # Restricted zones: the centre (all day) and a school (weekday windows).
    school = rng.choice(
        [
            j * n + i
            for j in range(2, n - 2)
            for i in range(2, n - 2)
            if abs(i - n // 2) + abs(j - n // 2) >= 2
        ]
    )
    restricted = [
        {
            "code": f"{prefix}-NOGO-CENTRE",
            "name": "市中心禁区",
            "node": centre,
            "half_m": 200.0,
            "windows": [],
        },
        {
            "code": f"{prefix}-NOGO-SCHOOL",
            "name": "实验小学周边",
            "node": school,
            "half_m": 150.0,
            "windows": [
                {"days": "weekdays", "start": "07:00", "end": "08:30"},
                {"days": "weekdays", "start": "16:00", "end": "17:30"},
            ],
        },
    ]
    banned = {centre, school}
    n_sites = sites or max(2, min(8, (trucks + 4) // 5))
    n_disp = disposal_sites or max(2, n_sites // 2)
    border = [j * n + i for j in range(n) for i in range(n) if i in (0, n - 1) or j in (0, n - 1)]
    inner = [j * n + i for j in range(1, n - 1) for i in range(1, n - 1)]
    used: set[int] = set(banned)

    def pick(pool: list[int]) -> int:
        free = [p for p in pool if p not in used and all(_grid_dist(p, u, n) >= 2 for u in used)]
        node = rng.choice(free or [p for p in pool if p not in used])
        used.add(node)
        return node

    site_map: dict[str, Site] = {}
    for k in range(n_disp):
        code = f"{prefix}-DISP-{k + 1:02d}"
        site_map[code] = Site(code, "disposal", f"第{k + 1}消纳场", pick(border))
    for k in range(n_sites):
        code = f"{prefix}-SITE-{k + 1:02d}"
        site_map[code] = Site(
            code, "site", f"{rng.choice(COMPANY_WORDS)}项目{k + 1}号工地", pick(inner)
        )
    site_nodes = {s.node for s in site_map.values()}
    disposals = [s for s in site_map.values() if s.kind == "disposal"]
    route_map: dict[str, Route] = {}
    for k, site in enumerate(s for s in site_map.values() if s.kind == "site"):
        disp = disposals[k % len(disposals)]
        avoid = (banned | site_nodes) - {site.node, disp.node}
        path = roads.shortest_path(site.node, disp.node, avoid)
        code = f"{prefix}-ROUTE-{k + 1:02d}"
        route_map[code] = Route(code, site.code, disp.code, path)
    # Companies, trucks, permits.
    n_comp = max(1, min(len(route_map), (trucks + 9) // 10))
    names = rng.sample(COMPANY_WORDS, n_comp)
    companies = [
        Company(f"模拟市{w}渣土运输有限公司", credit_code(rng), chinese_name(rng)) for w in names
    ]
    routes = list(route_map.values())
    plates: set[str] = set()
    truck_list: list[Truck] = []
    permits: list[Permit] = []
    year = today.year
    for k, route in enumerate(routes):
        company = companies[k % n_comp]
        permits.append(
            Permit(
                f"深建渣准〔{year}〕{prefix}-{k + 1:03d}号",
                company.credit_code,
                [],
                route.origin,
                [route.disposal],
                [route.code],
                today - dt.timedelta(days=30),
                today + dt.timedelta(days=335),
                list(RUSH_HOUR_BAN) if k % HOURS_EVERY == HOURS_EVERY - 1 else [],
            )
        )
    n_expired = trucks // 20 if expired is None else max(0, min(trucks, expired))
    expired_permits: dict[str, Permit] = {}
    for i in range(trucks):
        plate = yellow_plate(rng, plate_prefix)
        while plate in plates:
            plate = yellow_plate(rng, plate_prefix)
        plates.add(plate)
        permit = permits[i % len(permits)]
        if i >= trucks - n_expired:
            number = permit.number.replace(f"{prefix}-", f"{prefix}-EXP-")
            old = expired_permits.get(number)
            if old is None:
                old = expired_permits[number] = Permit(
                    number,
                    permit.company,
                    [],
                    permit.origin_site,
                    list(permit.disposal_sites),
                    list(permit.routes),
                    today - dt.timedelta(days=400),
                    today - dt.timedelta(days=35),
                    list(permit.operating_hours),
                )
            permit = old
        permit.trucks.append(plate)
        truck_list.append(Truck(plate, f"{prefix}-T{i + 1:05d}", permit.company, permit.number))
    n_black = (0 if trucks < 10 else max(5, trucks // 40)) if black is None else max(0, black)
    black_list = _black_trucks(seed, n_black, plates, companies, permits, routes, plate_prefix)
    permits = [p for p in permits if p.trucks] + list(expired_permits.values())
    return City(
        seed,
        center,
        roads,
        site_map,
        restricted,
        route_map,
        companies,
        truck_list,
        permits,
        black_list,
    )


def _black_trucks(
    seed: int,
    n: int,
    plates: set[str],
    companies: list[Company],
    permits: list[Permit],
    routes: list[Route],
    plate_prefix: str,
) -> list[Truck]:
    """Black trucks of BLACK_MODES in turn, from a generator of their own (the rest of the
    city stays as it was without them). Permitted ones join a permit of their route."""
    rng = random.Random(seed * 7919 + 17)
    prefix = f"SIM{seed}"
    out = []
    for k in range(n):
        mode = BLACK_MODES[k % len(BLACK_MODES)]
        plate = yellow_plate(rng, plate_prefix)
        while plate in plates:
            plate = yellow_plate(rng, plate_prefix)
        plates.add(plate)
        route = routes[rng.randrange(len(routes))]
        permit = next(p for p in permits if p.routes == [route.code])
        registered = mode in ("swapped_terminal", "no_permit_no_terminal", "silent_terminal")
        permitted = mode in ("swapped_terminal", "silent_terminal")
        if permitted:
            permit.trucks.append(plate)
        out.append(
            Truck(
                plate,
                f"{prefix}-T9{k + 1:04d}" if permitted else "",
                permit.company if registered else "",
                permit.number if permitted else "",
                black=mode,
                route=route.code,
                rogue_device=f"{prefix}-X{k + 1:04d}"
                if mode in ("rogue_terminal", "swapped_terminal")
                else "",
            )
        )
    return out


def _grid_dist(a: int, b: int, n: int) -> int:
    return abs(a % n - b % n) + abs(a // n - b // n)


def city_from_settings(settings, seed: int, trucks: int, **kwargs) -> City:
    """The city of `seed` at the settings' centre, its roads at the settings' speed limits."""
    c = settings.city
    return generate_city(
        seed,
        trucks=trucks,
        center=(c["center_lon"], c["center_lat"]),
        speed_limits=settings_speed_limits(settings),
        **kwargs,
    )


# -- installation -------------------------------------------------------------------------

TERMINALS_FROM = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)


def install_city(conn, settings, city: City) -> dict[str, Any]:
    """Write the city through the platform's import paths; idempotent (upserts by code,
    credit code, plate, device and permit number)."""
    from geofence.basemap import parse_basemap, replace_basemap
    from geofence.io import parse_zones, read_geojson
    from geofence.store import upsert_zones
    from permits.io import parse_permits_json
    from permits.store import import_permits
    from registry.service import bind_terminal, upsert_company, upsert_truck

    c = settings.city
    zones = parse_zones(
        read_geojson(json.dumps(city.geojson(), ensure_ascii=False)),
        center=(c["center_lon"], c["center_lat"]),
        max_distance_km=settings.sections["geofence"]["max_zone_distance_km"],
        source=f"simulated city {city.seed}",
    )
    zone_counts = upsert_zones(conn, zones)
    districts = parse_zones(
        read_geojson(json.dumps(city.districts_geojson(), ensure_ascii=False)),
        center=(c["center_lon"], c["center_lat"]),
        max_distance_km=settings.sections["geofence"]["max_zone_distance_km"],
        source=f"simulated city {city.seed} (districts)",
    )
    district_counts = upsert_zones(conn, districts)
    conn.commit()
    basemap = parse_basemap(
        read_geojson(json.dumps(city.basemap_geojson())),
        center=(c["center_lon"], c["center_lat"]),
        max_distance_km=settings.sections["geofence"]["max_zone_distance_km"],
        source=f"simulated city {city.seed} (roads)",
    )
    replace_basemap(conn, basemap, f"simulated city {city.seed}")
    with conn.cursor() as cur:
        company_ids = {
            co.credit_code: upsert_company(cur, co.name, co.credit_code, co.legal_representative)
            for co in city.companies
        }
        for truck in city.trucks + city.black_trucks:
            if not truck.company:
                continue  # an unregistered black truck
            truck_id = upsert_truck(cur, truck.plate, company_ids[truck.company])
            if truck.device_id:
                bind_terminal(cur, truck.device_id, truck_id, TERMINALS_FROM)
    conn.commit()
    permit_counts = import_permits(
        conn, parse_permits_json(city.permits_json()), source=f"simulated city {city.seed}"
    )
    conn.commit()
    return {
        "zones": zone_counts,
        "districts": district_counts,
        "basemap": len(basemap),
        "companies": len(company_ids),
        "trucks": len(city.trucks) + sum(bool(t.company) for t in city.black_trucks),
        "permits": permit_counts,
    }
