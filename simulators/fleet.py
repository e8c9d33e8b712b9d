"""A live fleet for the synthetic city: trucks drive their permitted trips along the roads and
report over MQTT, with GPS noise, lost, duplicated and buffered messages, and injected
misbehaviour recorded as ground truth (simulators/groundtruth.py).

The simulation advances in whole simulated seconds; `Fleet.advance(t)` returns the messages
(topic, payload) that the terminals send up to simulated second `t`, in order. Everything is
drawn from random generators seeded by the city seed, so the same city, configuration and
start time give the same messages. `run_live` paces it against the wall clock (`speedup`).
"""

from __future__ import annotations

import datetime as dt
import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import msgspec
import numpy as np

from geofence.timewin import LocalClock, window_bitmap
from simulators.city import ROUTE_WIDTH_M, City, Truck
from simulators.groundtruth import TruthEvent
from telemetry.contract import Topics

ACCEL = 0.8  # m/s² when speeding up
DECEL = 1.5  # m/s² planned braking
TURN_KMH = 20.0  # speed through a turn of more than 45°
SPEED_TOLERANCE_KMH = 5.0  # [rules.speeding] tolerance_kmh: speeding truth starts above it
OVER_LIMIT_KMH = 30.0  # how far over the limit an injected speeder drives
MOVING_KMH = 5.0
WILL_DELAY_S = 45  # the broker publishes a vanished terminal's will after 1.5 x keepalive (30 s)
ALARMS = ("antenna_cut", "power_cut")  # sent on the last fixes before some terminals go dark
# [compliance] anpr_match_window_min / anpr_match_radius_m: the black-truck truth of a camera
# sighting of a registered, permitted truck is "untracked" when its terminal delivered no fix
# within this window and distance of the camera's site (any distance for a road checkpoint).
ANPR_WINDOW_S = 300
ANPR_RADIUS_M = 500.0

# Driving misbehaviour, at most one per loaded trip (probability per trip).
TRIP_KINDS = (
    "route_deviation",
    "unsealed_transport",
    "speeding",
    "illegal_dumping",
    "restricted_zone",
    "unapproved_disposal",
)
OFF_ROUTE = ("route_deviation", "restricted_zone", "unapproved_disposal")  # tags that leave it
DEFAULT_RATES = {
    "route_deviation": 0.05,
    "unsealed_transport": 0.05,
    "speeding": 0.05,
    "illegal_dumping": 0.02,
    "restricted_zone": 0.01,
    "unapproved_disposal": 0.01,  # to another disposal site, off the route  # through the city-centre zone (banned all day), off the route
    "going_dark": 0.03,  # independent of the others: the terminal goes silent for 7-15 min
    # A truck on a permit with operating hours whose trip would fall outside them goes anyway
    # (probability per such trip; the others wait at the site until the hours allow it).
    "restricted_hours": 0.2,
}
INJECTABLE = (*TRIP_KINDS, "going_dark", "restricted_hours")


@dataclass
class FleetConfig:
    interval_s: int = 10  # seconds between fixes of one truck
    noise_m: float = 10.0  # GPS noise, σ per axis (m)
    drop_pct: float = 0.5  # messages lost on the way (%)
    duplicate_pct: float = 0.5  # messages delivered twice (%)
    coverage_gap_pct: float = 5.0  # loaded trips with a coverage gap, re-uploaded as a batch (%)
    stop_pct: float = 25.0  # intersections where a truck has to stop (red light) (%)
    rates: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_RATES))
    # Truck index -> kinds forced on its first loaded trip (tests, demonstrations).
    script: dict[int, list[str]] = field(default_factory=dict)
    topic_prefix: str = "muck/v1"
    timezone: str = "Asia/Shanghai"  # city local time: operating hours, zone windows
    alarm_pct: float = 50.0  # going-dark terminals that first send antenna_cut or power_cut (%)
    checkpoints: int = 3  # road checkpoint cameras (besides one camera at every site gate)
    low_confidence_pct: float = 3.0  # camera reads under anpr_min_confidence (%)

    def __post_init__(self) -> None:
        if int(self.interval_s) < 1:
            raise ValueError("interval_s must be at least 1 second")
        self.interval_s = int(self.interval_s)
        for kind in list(self.rates) + [k for ks in self.script.values() for k in ks]:
            if kind not in INJECTABLE:
                raise ValueError(f"cannot inject {kind!r}; one of {', '.join(INJECTABLE)}")


@dataclass
class Seg:
    ax: float
    ay: float
    bx: float
    by: float
    limit_kmh: float
    target_mps: float
    lid: str = "closed"
    tag: str = ""  # injected misbehaviour on this segment
    stop_after: bool = False
    gate_a: str | None = None  # the site at the start node, whose gate camera sees the truck
    gate_b: str | None = None  # the site at the end node
    checkpoint: str | None = None  # the road checkpoint camera at the end node

    @property
    def length(self) -> float:
        return math.hypot(self.bx - self.ax, self.by - self.ay)


@dataclass
class State:
    x: float
    y: float
    v: float  # m/s
    heading: float
    lid: str = "closed"
    lift: str = "down"
    load: str = "empty"
    dark: bool = False
    gap: bool = False


def _dist_to_polyline(x: float, y: float, pts: list[tuple[float, float]]) -> float:
    best = math.inf
    for (ax, ay), (bx, by) in zip(pts, pts[1:], strict=False):
        dx, dy = bx - ax, by - ay
        n2 = dx * dx + dy * dy
        u = 0.0 if n2 == 0 else max(0.0, min(1.0, ((x - ax) * dx + (y - ay) * dy) / n2))
        best = min(best, math.hypot(x - ax - u * dx, y - ay - u * dy))
    return best


class TruckAgent:
    """One truck's life as a generator of per-second states."""

    def __init__(self, fleet: Fleet, index: int, truck: Truck) -> None:
        self.fleet, self.index, self.truck = fleet, index, truck
        city = fleet.city
        self.rng = random.Random(city.seed * 1_000_003 + index)
        permit = fleet.permits.get(truck.permit)
        day = time.gmtime(fleet.start_ms / 1000)
        today = dt.date(day.tm_year, day.tm_mon, day.tm_mday)
        self.permitted = permit is not None and permit.valid_on(today)
        self.registered = bool(truck.company)
        # Rules judge only trucks whose bound terminal reports; black trucks are judged by the
        # black-truck list (cameras, unregistered terminals) alone.
        self.judged = not truck.black
        self.device = (truck.device_id if self.judged else truck.rogue_device) or None
        self.hours = (
            window_bitmap(permit.operating_hours)
            if permit is not None and permit.operating_hours
            else None
        )
        self.ignores_hours = "restricted_hours" in fleet.config.script.get(index, ())
        self.route = city.routes[truck.route or permit.routes[0]]
        self.route_xy = city.route_xy(self.route.code)
        self.factor = self.rng.uniform(0.72, 0.85)  # how close to the limit this driver goes
        self.t = 0  # simulated seconds since the fleet's start
        self.trips = 0
        self.dark_until = -1
        self.dark_from = -1
        self.gap_from = -1
        self.gap_until = -1
        self.state = State(*self.route_xy[0], 0.0, 0.0)
        self.gen = self._life()
        # Emission
        self.phase = self.rng.randrange(fleet.config.interval_s)
        self.seq = 0
        self.buffer: list[dict] = []
        self.last_delivered_ms: int | None = None
        self.dark_event: TruthEvent | None = None
        self.dark_windows: list[tuple[int, int]] = []  # device time, ms
        self.alarm: str | None = None  # sent on the fixes from alarm_from until dark_from
        self.alarm_from = -1
        self.alarm_event: TruthEvent | None = None
        self.offline_event: TruthEvent | None = None
        self.online_sent = False
        self.zone: dict | None = None  # the restricted zone this trip crosses
        # Cameras
        self.in_site: str | None = self.route.origin  # the site whose gate it passed last
        self.cam_out: list[tuple[str, str | None, str, int]] = []  # camera, site, direction, ms
        self.recent: deque[tuple[int, float, float]] = deque()  # delivered fixes, 5 min
        self.checks: list[list] = []  # sightings awaiting a fix: [ms, site, confident]
        self.untracked: list[int] = []  # ms of confident untracked sightings
        self.evidence: list[tuple[int, bool]] = []  # delivered sightings (ms, confident)
        self.rogue_first_ms: int | None = None
        self.rogue_last_ms: int | None = None

    # -- truth ----------------------------------------------------------------------------
    def _open(self, kind: str, **detail) -> TruthEvent:
        event = TruthEvent(
            self.truck.plate, self.truck.device_id, kind, self.fleet.ms(self.t), None, detail
        )
        if self.judged:  # black trucks' misbehaviour is no rule's business (no bound fixes)
            self.fleet.truth.append(event)
        return event

    def operating_at(self, t: int) -> bool:
        """Inside the permit's operating hours at simulated second t (always without hours)."""
        return self.hours is None or bool(self.hours[self.fleet.minute_of_week(t)])

    # -- life -----------------------------------------------------------------------------
    def _life(self) -> Iterator[State]:
        # Start somewhere in the loading dwell at the origin site, staggered.
        yield from self._dwell(self.rng.randint(10, 240), load="empty")
        while True:
            kinds = self._plan()
            if self.hours is not None and self.permitted:
                yield from self._wait_for_hours(kinds)
            yield from self._loading()
            yield from self._loaded_trip(kinds)
            self.trips += 1

    def _wait_for_hours(self, kinds: list[str]) -> Iterator[State]:
        """A truck on a permit with operating hours loads only when the loaded trip (loading,
        driving at three quarters of the limit, unloading; with a margin) fits in them —
        unless it goes anyway (restricted_hours, rate per such trip)."""
        if self.ignores_hours:
            return
        length = sum(
            math.dist(a, b) for a, b in zip(self.route_xy, self.route_xy[1:], strict=False)
        )
        need = int(1.5 * (600 + length / (40 / 3.6 * 0.75) + 300))
        decided = False
        while not all(self.operating_at(self.t + k) for k in range(0, need + 1, 300)):
            if not decided:
                decided = True
                if self.rng.random() < self.fleet.config.rates.get("restricted_hours", 0.0):
                    kinds.append("restricted_hours")
                    return
            yield from self._dwell(60, load="empty", lid="closed", lift="down")

    def _plan(self) -> list[str]:
        config = self.fleet.config
        if self.trips == 0 and self.index in config.script:
            return list(config.script[self.index])
        if not self.permitted or not self.judged:
            return []  # a truck without a valid permit (or a black one) misbehaves enough
        kinds = []
        u = self.rng.random()
        for kind in TRIP_KINDS:
            u -= config.rates.get(kind, 0.0)
            if u < 0:
                kinds.append(kind)
                break
        if self.rng.random() < config.rates.get("going_dark", 0.0):
            kinds.append("going_dark")
        return kinds

    def _dwell(self, seconds: int, **state) -> Iterator[State]:
        s = self.state
        s.v = 0.0
        for key, value in state.items():
            setattr(s, key, value)
        for _ in range(int(seconds)):
            yield self._tick()

    def _tick(self) -> State:
        self.t += 1
        s = self.state
        s.dark = self.dark_from <= self.t < self.dark_until
        s.gap = self.gap_from <= self.t < self.gap_until
        return s

    def _loading(self) -> Iterator[State]:
        r = self.rng
        yield from self._dwell(r.randint(60, 150), load="empty", lid="closed", lift="down")
        yield from self._dwell(r.randint(60, 150), load="half")
        yield from self._dwell(r.randint(20, 60), load="full")

    def _unloading(self, unapproved: str | None = None) -> Iterator[State]:
        r = self.rng
        yield from self._dwell(r.randint(20, 60), load="full")
        if unapproved is None and not self.permitted:
            unapproved = self.route.disposal  # no valid permit approves any disposal site
        event = self._open("unapproved_disposal", site=unapproved) if unapproved else None
        yield from self._dwell(r.randint(30, 60), lid="open", lift="up", load="half")
        yield from self._dwell(r.randint(20, 40), load="empty")
        if event is not None:
            event.end_ms = self.fleet.ms(self.t)
        yield from self._dwell(r.randint(20, 40), lid="closed", lift="down", load="empty")

    def _segments(self, pts: list[tuple[float, float]]) -> list[Seg]:
        fleet = self.fleet
        roads = fleet.city.roads
        segs = []
        for (ax, ay), (bx, by), a, b in zip(pts, pts[1:], *self._nodes_of(pts), strict=False):
            edge = roads.edge_between(a, b)
            target = edge.limit_kmh * self.factor * self.rng.uniform(0.96, 1.03) / 3.6
            stop = self.rng.random() * 100 < fleet.config.stop_pct
            segs.append(
                Seg(
                    ax,
                    ay,
                    bx,
                    by,
                    edge.limit_kmh,
                    target,
                    stop_after=stop,
                    gate_a=fleet.gates.get(a),
                    gate_b=fleet.gates.get(b),
                    checkpoint=fleet.checkpoints.get(b),
                )
            )
        return segs

    def _nodes_of(self, pts):
        index = self.fleet.node_at
        nodes = [index[p] for p in pts]
        return nodes, nodes[1:]

    def _xy(self, nodes: list[int]) -> list[tuple[float, float]]:
        return [self.fleet.city.roads.nodes[n] for n in nodes]

    def _loaded_trip(self, kinds: list[str]) -> Iterator[State]:
        r = self.rng
        nodes = list(self.route.nodes)
        if "going_dark" in kinds:
            self.dark_from = self.t + r.randint(60, 300)
            self.dark_until = self.dark_from + r.randint(420, 900)
            self.dark_windows.append(
                (self.fleet.ms(self.dark_from), self.fleet.ms(self.dark_until))
            )
            self.alarm = None
            if r.random() * 100 < self.fleet.config.alarm_pct:
                self.alarm = r.choice(ALARMS)
                self.alarm_from = self.dark_from - r.randint(15, 35)
        if r.random() * 100 < self.fleet.config.coverage_gap_pct:
            begin = max(self.t, self.dark_until) + r.randint(30, 400)
            self.gap_from, self.gap_until = begin, begin + r.randint(60, 240)
        self.state.load = "full"
        if "unapproved_disposal" in kinds:
            city = self.fleet.city
            others = [
                d
                for d in city.sites.values()
                if d.kind == "disposal" and d.code != self.route.disposal
            ]
            if others:
                other = r.choice(others)
                avoid = city.restricted_nodes() | {
                    d.node for d in city.sites.values() if d.node not in (nodes[0], other.node)
                }
                path = city.roads.shortest_path(nodes[0], other.node, avoid)
                segs = self._segments(self._xy(path))
                for seg in segs:
                    seg.tag = "unapproved_disposal"  # off the route too, where it leaves it
                yield from self._drive(segs)
                yield from self._unloading(unapproved=other.code)
                yield from self._drive(self._segments(self._xy(path[::-1])))
                return
        if "illegal_dumping" in kinds and len(nodes) >= 3:
            k = r.randrange(1, len(nodes) - 1)
            yield from self._drive(self._segments(self._xy(nodes[: k + 1])))
            yield from self._dwell(r.randint(30, 90), load="full")
            event = self._open("illegal_dumping", at_node=nodes[k])
            yield from self._dwell(r.randint(20, 40), lift="up", load="full")
            yield from self._dwell(r.randint(20, 40), lift="up", load="half")
            yield from self._dwell(r.randint(20, 40), lift="up", load="empty")
            event.end_ms = self.fleet.ms(self.t)
            yield from self._dwell(r.randint(10, 30), lift="down", load="empty")
            yield from self._drive(self._segments(self._xy(nodes[k::-1])))
            return
        segs = None
        if "route_deviation" in kinds and len(nodes) >= 4:
            segs = self._detour(nodes)
        if "restricted_zone" in kinds and len(nodes) >= 3:
            segs = self._through_zone(nodes)
        if segs is None:
            segs = self._segments(self._xy(nodes))
        if "unsealed_transport" in kinds or "speeding" in kinds:
            kind = "unsealed_transport" if "unsealed_transport" in kinds else "speeding"
            n = len(segs)
            a = r.randrange(1, n - 1) if n >= 3 else 0
            b = a + 1  # up to 3 segments, not into the disposal site
            while b < min(n - 1, a + 3) and (
                kind == "unsealed_transport" or _turn_deg(segs[b - 1], segs[b]) <= 45
            ):  # a speeder goes straight on (a turn would slow the truck down)
                b += 1
            for i, seg in enumerate(segs[a:b], a):
                seg.tag = kind
                if i < b - 1:
                    seg.stop_after = False  # an offender does not stop on the way
                if kind == "unsealed_transport":
                    seg.lid = "open"
                else:
                    seg.target_mps = min(100.0, seg.limit_kmh + OVER_LIMIT_KMH) / 3.6
        yield from self._drive(segs)
        yield from self._unloading()
        back = self._segments(self._xy(nodes[::-1]))
        yield from self._drive(back)

    def _route_edges(self, nodes: list[int]) -> set[int]:
        adjacency = self.fleet.city.roads.adjacency
        return {
            k for a, b in zip(nodes, nodes[1:], strict=False) for nb, k in adjacency[a] if nb == b
        }

    def _through_zone(self, nodes: list[int]) -> list[Seg] | None:
        """Leave the route at the node nearest a restricted zone in force — the school zone in
        its window (from now for at least ten minutes), else the city-centre zone (banned all
        day) — cross the zone, rejoin."""
        city = self.fleet.city
        self.zone = city.restricted[0]
        for zone in city.restricted[1:]:
            if all(self.fleet.zone_in_force(zone, self.t + k) for k in (0, 300, 600)):
                self.zone = zone
        centre = self.zone["node"]
        cx, cy = city.node_xy(centre)
        i = min(
            range(1, len(nodes) - 1),
            key=lambda k: math.dist(city.node_xy(nodes[k]), (cx, cy)),
        )
        j = min(len(nodes) - 2, i + 2)
        avoid = (set(nodes) - {nodes[i], nodes[j]}) | city.restricted_nodes() - {centre}
        avoid |= {s.node for s in city.sites.values()}
        try:
            there = city.roads.shortest_path(nodes[i], centre, avoid, self._route_edges(nodes))
            back = city.roads.shortest_path(centre, nodes[j], avoid, self._route_edges(nodes))
        except ValueError:
            return None
        detour = there + back[1:]
        segs = self._segments(self._xy(nodes[:i] + detour + nodes[j + 1 :]))
        for seg in segs[i : i + len(detour) - 1]:
            seg.tag = "restricted_zone"
        return segs

    def _detour(self, nodes: list[int]) -> list[Seg] | None:
        """Leave the route at node i and rejoin at node j over other roads."""
        city = self.fleet.city
        for _ in range(5):
            i = self.rng.randrange(1, len(nodes) - 2)
            j = min(len(nodes) - 2, i + self.rng.randint(2, 3))
            if j <= i:
                continue
            avoid = (set(nodes) - {nodes[i], nodes[j]}) | city.restricted_nodes()
            avoid |= {s.node for s in city.sites.values()}
            roads = city.roads
            on_route = {
                k
                for a, b in zip(nodes, nodes[1:], strict=False)
                for nb, k in roads.adjacency[a]
                if nb == b
            }
            try:
                path = roads.shortest_path(nodes[i], nodes[j], avoid, on_route)
            except ValueError:
                continue
            full = nodes[:i] + path + nodes[j + 1 :]
            segs = self._segments(self._xy(full))
            for seg in segs[i : i + len(path) - 1]:
                seg.tag = "route_deviation"
            return segs
        return None

    def _drive(self, segs: list[Seg]) -> Iterator[State]:
        s = self.state
        s.v = 0.0
        open_events: dict[str, TruthEvent] = {}
        pos = 0.0
        i = 0
        at = -1  # the segment whose per-segment values below are current
        while i < len(segs):
            seg = segs[i]
            if at != i:  # once per segment, not per simulated second
                at = i
                length = seg.length
                heading = _heading(seg)
                last = i == len(segs) - 1
                if last or seg.stop_after:
                    v_end = 0.0
                else:
                    nxt = segs[i + 1]
                    v_end = min(seg.target_mps, nxt.target_mps)
                    turn = _turn_deg(seg, nxt)
                    if turn > 45:
                        v_end = min(v_end, TURN_KMH / 3.6)
            v_allow = math.sqrt(v_end * v_end + 2 * DECEL * max(0.0, length - pos))
            v_des = min(seg.target_mps, v_allow)
            s.v = min(v_des, s.v + ACCEL) if v_des > s.v else max(v_des, s.v - 3.0)
            pos += s.v
            s.lid = seg.lid
            if pos >= length - 1e-6:
                carry = pos - length
                s.x, s.y = seg.bx, seg.by
                s.heading = heading
                if seg.checkpoint is not None:
                    self.cam_out.append((seg.checkpoint, None, "pass", self.fleet.ms(self.t + 1)))
                if last:
                    s.v = 0.0
                    self._track(open_events, seg)
                    yield self._tick()
                    break
                if seg.stop_after:
                    s.v = 0.0
                    self._track(open_events, seg)
                    yield self._tick()
                    yield from self._dwell(self.rng.randint(10, 45))
                    carry = 0.0
                    s.lid = seg.lid
                else:
                    self._track(open_events, seg)
                    yield self._tick()
                i += 1
                pos = carry
                nseg = segs[i]
                u = min(1.0, pos / max(nseg.length, 1e-6))
                s.x, s.y = nseg.ax + u * (nseg.bx - nseg.ax), nseg.ay + u * (nseg.by - nseg.ay)
                continue
            u = pos / length
            s.x, s.y = seg.ax + u * (seg.bx - seg.ax), seg.ay + u * (seg.by - seg.ay)
            s.heading = heading
            self._track(open_events, seg)
            yield self._tick()
        for event in open_events.values():
            event.end_ms = self.fleet.ms(self.t)
        s.v = 0.0
        s.lid = "closed"

    def _track(self, events: dict[str, TruthEvent], seg: Seg) -> None:
        """Open and close ground-truth episodes for the segment's injected misbehaviour."""
        s = self.state
        kmh = s.v * 3.6
        loaded = s.load != "empty"
        if seg.gate_a is not None or seg.gate_b is not None:
            self._gates(seg)
        if not self.judged:
            return
        if not self.permitted:
            # Stops included: the rule spans them (compliance.rules.permit).
            on = loaded and self.fleet.city.site_contains(s.x, s.y) is None
            self._flip(events, "no_valid_permit", on, permit=self.truck.permit)
        elif self.hours is not None:
            # Stops included, as for no_valid_permit: the whole loaded trip is transport out of
            # hours (the rule may see it in pieces; docs/accuracy.md).
            on = loaded and not self.operating_at(self.t + 1)
            on = on and self.fleet.city.site_contains(s.x, s.y) is None
            if on or "restricted_hours" in events:
                self._flip(events, "restricted_hours", on, permit=self.truck.permit)
        if seg.tag == "speeding" or "speeding" in events:
            on = seg.tag == "speeding" and kmh > seg.limit_kmh + SPEED_TOLERANCE_KMH
            self._flip(events, "speeding", on, limit_kmh=seg.limit_kmh)
        if seg.tag == "unsealed_transport" or "unsealed_transport" in events:
            on = seg.tag == "unsealed_transport" and s.lid == "open" and kmh >= MOVING_KMH
            on = on and loaded and self.fleet.city.site_contains(s.x, s.y) is None
            self._flip(events, "unsealed_transport", on)
        if seg.tag == "restricted_zone" or "restricted_zone" in events:
            zone = self.zone or self.fleet.city.restricted[0]
            cx, cy = self.fleet.city.node_xy(zone["node"])
            inside = abs(s.x - cx) <= zone["half_m"] and abs(s.y - cy) <= zone["half_m"]
            inside = inside and self.fleet.zone_in_force(zone, self.t + 1)
            self._flip(events, "restricted_zone", inside, zone=zone["code"])
        if seg.tag in OFF_ROUTE or "route_deviation" in events:
            d = _dist_to_polyline(s.x, s.y, self.route_xy)
            limit = ROUTE_WIDTH_M * (0.7 if "route_deviation" in events else 1.0)
            on = loaded and d > limit and self.fleet.city.site_contains(s.x, s.y) is None
            self._flip(events, "route_deviation", on, route=self.route.code)

    def _gates(self, seg: Seg) -> None:
        """A site gate camera sees the truck leave or enter the site."""
        city, s = self.fleet.city, self.state
        inside = None
        for code in (seg.gate_a, seg.gate_b):
            if code is not None:
                site = city.sites[code]
                sx, sy = city.roads.nodes[site.node]
                if abs(s.x - sx) <= site.half_m and abs(s.y - sy) <= site.half_m:
                    inside = code
        if inside != self.in_site:
            ms = self.fleet.ms(self.t + 1)
            if self.in_site is not None:
                self.cam_out.append((self.fleet.gate_camera[self.in_site], self.in_site, "out", ms))
            if inside is not None:
                self.cam_out.append((self.fleet.gate_camera[inside], inside, "in", ms))
            self.in_site = inside

    def _flip(self, events: dict[str, TruthEvent], kind: str, on: bool, **detail) -> None:
        if not self.judged:
            return
        if on and kind not in events:
            # The episode starts at this tick (the state is yielded right after).
            events[kind] = TruthEvent(
                self.truck.plate,
                self.truck.device_id,
                kind,
                self.fleet.ms(self.t + 1),
                None,
                detail,
            )
            self.fleet.truth.append(events[kind])
        elif not on and kind in events:
            events.pop(kind).end_ms = self.fleet.ms(self.t + 1)

    # -- emission -------------------------------------------------------------------------
    def emit(self, state: State, out: list[tuple[str, bytes]]) -> None:
        fleet, r = self.fleet, self.rng
        config = fleet.config
        device = self.device
        if device is None:
            return  # no terminal reports for this truck: only the cameras see it
        ts = fleet.ms(self.t)
        self.seq += 1
        if self.judged:
            self._status(state, ts, out)
        if state.dark:
            if self.dark_event is None:
                start = self.last_delivered_ms if self.last_delivered_ms is not None else ts
                self.dark_event = TruthEvent(
                    self.truck.plate, self.truck.device_id, "going_dark", start, None, {}
                )
                fleet.truth.append(self.dark_event)
            return
        noise = config.noise_m
        x, y = state.x + r.gauss(0, noise), state.y + r.gauss(0, noise)
        lon, lat = fleet.city.lonlat(x, y)
        kmh = max(0.0, state.v * 3.6 + (r.gauss(0, 0.8) if state.v > 0 else 0.0))
        fix = {
            "ts": ts,
            "lat": round(lat, 6),
            "lon": round(lon, 6),
            "speed": round(kmh, 1),
            "heading": int(state.heading) % 360,
            "lid": state.lid,
            "lift": state.lift,
            "load": state.load,
            "acc": True,
            "sats": r.randint(8, 16),
            "hdop": round(r.uniform(0.6, 1.6), 1),
            "seq": self.seq,
        }
        alarmed = self.alarm is not None and self.alarm_from <= self.t < self.dark_from
        if alarmed:
            fix["alarms"] = [self.alarm]
            if self.alarm_event is None:
                # Seen only if one of its fixes is delivered (marked below).
                self.alarm_event = TruthEvent(
                    self.truck.plate,
                    self.truck.device_id,
                    "terminal_alarm",
                    ts,
                    fleet.ms(self.dark_from),
                    {"alarm": self.alarm, "unseen": True},
                )
                fleet.truth.append(self.alarm_event)
        elif self.alarm_event is not None and self.t >= self.dark_from:
            self.alarm_event = None
        topic = fleet.topic(device)
        if state.gap:
            self.buffer.append(fix)
            self._delivered(ts, x, y, alarmed)  # re-uploaded later
            return
        lost = r.random() * 100 < config.drop_pct
        if not lost:
            out.append((topic, msgspec.json.encode(fix)))
            if r.random() * 100 < config.duplicate_pct:
                out.append((topic, msgspec.json.encode(fix)))
            self.last_delivered_ms = ts
            self._delivered(ts, x, y, alarmed)
            if self.dark_event is not None:
                self.dark_event.end_ms = ts
                self.dark_event = None
        if self.buffer:
            # Back in coverage: the buffered fixes follow as one batch (盲区补传).
            out.append((topic, msgspec.json.encode(self.buffer)))
            fleet.reuploads += 1
            self.buffer = []

    def _status(self, state: State, ts: int, out: list[tuple[str, bytes]]) -> None:
        """The terminal's status topic: online when it connects; offline when the broker
        publishes its last will, WILL_DELAY_S after the terminal vanished (switched off or
        power cut; a terminal with a cut GNSS antenna stays connected, silent)."""
        topic = self.fleet.status_topic(self.device)
        if not self.online_sent and not state.dark:
            self.online_sent = True
            out.append((topic, msgspec.json.encode({"status": "online", "ts": ts})))
            if self.offline_event is not None:
                self.offline_event.end_ms = ts
                self.offline_event = None
        elif (
            state.dark
            and self.online_sent
            and self.alarm != "antenna_cut"
            and self.t >= self.dark_from + WILL_DELAY_S
        ):
            self.online_sent = False  # reconnects when the dark period ends
            # The will's payload as the simulator publishes it for the broker: with the
            # simulated time (a real will carries none and is stamped on arrival).
            out.append((topic, msgspec.json.encode({"status": "offline", "ts": ts})))
            self.offline_event = TruthEvent(
                self.truck.plate, self.truck.device_id, "terminal_offline", ts, None, {}
            )
            self.fleet.truth.append(self.offline_event)

    def _delivered(self, ms: int, x: float, y: float, alarmed: bool) -> None:
        """A fix that reaches the platform (now or in a re-upload): evidence for cameras."""
        if alarmed and self.alarm_event is not None:
            self.alarm_event.detail.pop("unseen", None)
        if not self.judged:
            if self.rogue_first_ms is None:
                self.rogue_first_ms = ms
            self.rogue_last_ms = ms
            return
        recent = self.recent
        recent.append((ms, x, y))
        while recent and recent[0][0] < ms - ANPR_WINDOW_S * 1000:
            recent.popleft()
        if self.checks:
            window = ANPR_WINDOW_S * 1000
            self.checks = [
                c for c in self.checks if not (ms - c[0] <= window and self._near(c[1], x, y))
            ]

    def _near(self, site: str | None, x: float, y: float) -> bool:
        if site is None:
            return True  # a road checkpoint: any fix in the window
        city = self.fleet.city
        zone = city.sites[site]
        sx, sy = city.roads.nodes[zone.node]
        dx, dy = max(abs(x - sx) - zone.half_m, 0.0), max(abs(y - sy) - zone.half_m, 0.0)
        return math.hypot(dx, dy) <= ANPR_RADIUS_M

    def sighted(self, ms: int, site: str | None, confident: bool) -> None:
        """A camera sighting of this truck reached the platform."""
        self.evidence.append((ms, confident))
        if not (self.registered and self.permitted):
            return
        if self.device is not None and self.judged:
            if any(ms - f[0] <= ANPR_WINDOW_S * 1000 and self._near(site, f[1], f[2])
                   for f in self.recent):  # fmt: skip
                return
        self.checks.append([ms, site, confident])

    def settle_checks(self, now_ms: int | None) -> None:
        """Sightings no fix within the window explained: untracked (all of them at the end)."""
        keep = []
        for check in self.checks:
            if now_ms is None or now_ms > check[0] + ANPR_WINDOW_S * 1000:
                if check[2]:
                    self.untracked.append(check[0])
            else:
                keep.append(check)
        self.checks = keep


def _heading(seg: Seg) -> float:
    return math.degrees(math.atan2(seg.bx - seg.ax, seg.by - seg.ay)) % 360


def _turn_deg(a: Seg, b: Seg) -> float:
    d = abs(_heading(a) - _heading(b)) % 360
    return min(d, 360 - d)


class Fleet:
    """The trucks of a city, driven in simulated seconds from `start_ms`."""

    def __init__(
        self,
        city: City,
        config: FleetConfig | None = None,
        *,
        start_ms: int,
        trucks: int | None = None,
    ) -> None:
        self.city = city
        self.config = config or FleetConfig()
        self.start_ms = int(start_ms) // 1000 * 1000
        self.truth: list[TruthEvent] = []
        self.node_at = {xy: k for k, xy in enumerate(city.roads.nodes)}
        self._topics = Topics(self.config.topic_prefix)
        self._topic_cache: dict[str, str] = {}
        self._status_cache: dict[str, str] = {}
        self.permits = {p.number: p for p in city.permits}
        self.clock = LocalClock(self.config.timezone)
        self._mow: tuple[int, int] = (-1, 0)  # (simulated minute, local minute of the week)
        self.zone_bits = {
            z["code"]: window_bitmap(z["windows"]) if z["windows"] else None
            for z in city.restricted
        }
        # Cameras: one at every site gate, and road checkpoints at the nodes the most routes
        # pass (not sites, not restricted zones).
        self.gates = {site.node: site.code for site in city.sites.values()}
        self.gate_camera = {code: f"{code}-GATE" for code in city.sites}
        use: dict[int, int] = {}
        for route in city.routes.values():
            for node in route.nodes[1:-1]:
                use[node] = use.get(node, 0) + 1
        busy = sorted(
            (n for n in use if n not in self.gates and n not in city.restricted_nodes()),
            key=lambda n: (-use[n], n),
        )
        self.checkpoints = {
            n: f"{city.prefix}-CP-{k + 1:02d}"
            for k, n in enumerate(busy[: self.config.checkpoints])
        }
        self.cam_rng = random.Random(city.seed * 31 + 7)
        self.sightings = 0
        chosen = city.trucks if trucks is None else city.trucks[:trucks]
        self.agents = [TruckAgent(self, i, truck) for i, truck in enumerate(chosen)]
        self.agents += [
            TruckAgent(self, len(chosen) + k, truck) for k, truck in enumerate(city.black_trucks)
        ]
        self.t = 0
        self.published = 0
        self.reuploads = 0
        self._settled = False

    def ms(self, t: int) -> int:
        return self.start_ms + t * 1000

    def minute_of_week(self, t: int) -> int:
        """City local minute of the week (Monday 00:00 = 0) at simulated second t."""
        minute = (self.start_ms // 1000 + t) // 60
        if self._mow[0] != minute:
            mow = self.clock.minute_of_week(np.array([minute * 60], dtype=np.int64))
            self._mow = (minute, int(mow[0]))
        return self._mow[1]

    def zone_in_force(self, zone: dict, t: int) -> bool:
        bits = self.zone_bits[zone["code"]]
        return bits is None or bool(bits[self.minute_of_week(t)])

    def topic(self, device: str) -> str:
        topic = self._topic_cache.get(device)
        if topic is None:
            topic = self._topic_cache[device] = self._topics.telemetry(device)
        return topic

    def status_topic(self, device: str) -> str:
        topic = self._status_cache.get(device)
        if topic is None:
            topic = self._status_cache[device] = self._topics.status(device)
        return topic

    def advance(self, until_s: int) -> list[tuple[str, bytes]]:
        """Run every truck up to simulated second `until_s`; the messages sent meanwhile."""
        out: list[tuple[str, bytes]] = []
        interval = self.config.interval_s
        while self.t < until_s:
            self.t += 1
            for agent in self.agents:
                state = next(agent.gen)
                if agent.cam_out:
                    self._cameras(agent, out)
                if (agent.t - agent.phase) % interval == 0:
                    agent.emit(state, out)
        return out

    def _cameras(self, agent: TruckAgent, out: list[tuple[str, bytes]]) -> None:
        """Publish the truck's plate sightings (lost and duplicated like fixes; a few reads
        under the confidence threshold)."""
        r, config = self.cam_rng, self.config
        for camera, site, direction, ms in agent.cam_out:
            low = r.random() * 100 < config.low_confidence_pct
            confidence = round(r.uniform(0.55, 0.79) if low else r.uniform(0.85, 0.99), 2)
            body = {
                "ts": ms,
                "plate": agent.truck.plate,
                "plate_color": "yellow",
                "direction": direction,
                "confidence": confidence,
                "image_ref": f"anpr/{camera}/{ms}.jpg",
            }
            if site is not None:
                body["site_id"] = site
            if r.random() * 100 < config.drop_pct:
                continue
            payload = msgspec.json.encode(body)
            topic = self._topics.sightings(camera)
            out.append((topic, payload))
            if r.random() * 100 < config.duplicate_pct:
                out.append((topic, payload))
            self.sightings += 1
            agent.sighted(ms, site, not low)
        agent.cam_out.clear()

    def finish(self) -> list[tuple[str, bytes]]:
        """Flush buffered fixes and close open truth episodes at the current time."""
        out: list[tuple[str, bytes]] = []
        for agent in self.agents:
            if agent.buffer:
                out.append((self.topic(agent.device), msgspec.json.encode(agent.buffer)))
                agent.buffer = []
        return out

    def annotate_truth(self) -> list[TruthEvent]:
        """Mark misbehaviour that happened while the truck's terminal was dark
        (`detail["while_dark"]`): no fix shows it, so no rule can find it. Adds the
        black-truck truth (once): per plate seen by a camera with a confident read, why it
        is black; per unregistered terminal that delivered fixes."""
        windows = {a.truck.device_id: a.dark_windows for a in self.agents}
        for event in self.truth:
            if event.kind in ("going_dark", "terminal_alarm", "terminal_offline"):
                continue
            if event.kind.startswith("black_"):
                continue
            end = event.end_ms if event.end_ms is not None else self.ms(self.t)
            if any(a < end and b > event.start_ms for a, b in windows[event.device_id]):
                event.detail["while_dark"] = True
        if not self._settled:
            self._settled = True
            self.truth.extend(self.black_truth())
        return self.truth

    def black_truth(self) -> list[TruthEvent]:
        """What the black-truck list should hold at the end of the run."""
        out = []
        for agent in self.agents:
            truck = agent.truck
            agent.settle_checks(None)
            confident = [ms for ms, ok in agent.evidence if ok]
            reason = None
            times = confident
            if not agent.registered:
                reason = "black_unregistered_plate"
            elif not agent.permitted:
                reason = "black_no_valid_permit"
            elif agent.untracked:
                reason, times = "black_untracked", agent.untracked
            if reason is not None and times:
                detail = {"sightings": len(times), "mode": truck.black or "fleet"}
                out.append(TruthEvent(truck.plate, truck.device_id, reason, times[0], times[-1],
                                      detail))  # fmt: skip
            if truck.rogue_device and agent.rogue_first_ms is not None:
                out.append(
                    TruthEvent(
                        truck.plate,
                        truck.rogue_device,
                        "black_unregistered_device",
                        agent.rogue_first_ms,
                        agent.rogue_last_ms,
                        {"mode": truck.black},
                    )
                )
        return out

    def open_truth(self) -> list[TruthEvent]:
        return [e for e in self.truth if e.end_ms is None]


def run_live(
    fleet: Fleet,
    publish: Callable[[list[tuple[str, bytes]]], None],
    *,
    speedup: float = 1.0,
    duration_s: float | None = None,
    stop: threading.Event | None = None,
    status: Callable[[Fleet], None] | None = None,
    tick_s: float = 0.25,
) -> None:
    """Advance the fleet with the wall clock × `speedup` (never past the real present, so fix
    times stay acceptable to the collector) and publish; until `duration_s` simulated seconds
    or `stop`. `speedup` 0 runs as fast as possible."""
    stop = stop or threading.Event()
    began = time.monotonic()
    last_status = 0.0
    while not stop.is_set():
        elapsed = time.monotonic() - began
        now_t = (time.time() * 1000 - fleet.start_ms) / 1000
        target = now_t if speedup <= 0 else min(elapsed * speedup, now_t)
        if duration_s is not None:
            target = min(target, duration_s)
        target = int(target)
        if target > fleet.t:
            messages = fleet.advance(target)
            if messages:
                publish(messages)
                fleet.published += len(messages)
        if status is not None and time.monotonic() - last_status >= 1.0:
            status(fleet)
            last_status = time.monotonic()
        if duration_s is not None and fleet.t >= duration_s:
            break
        if speedup > 0 or target >= now_t - 1:
            stop.wait(tick_s)
    fleet.annotate_truth()
    tail = fleet.finish()
    if tail:
        publish(tail)
        fleet.published += len(tail)
    if status is not None:
        status(fleet)


def fast_publisher(settings):
    """A publish function over simulators.fastpub (QoS 1, waits for every PUBACK)."""
    from simulators.fastpub import FastPublisher

    endpoint = settings.mqtt_endpoint()
    publisher = FastPublisher(
        endpoint.host,
        endpoint.port,
        client_id="muck-simulator",
        username=endpoint.username,
        password=endpoint.password,
    )

    def publish(messages: list[tuple[str, bytes]]) -> None:
        publisher.publish_many((t.encode(), p) for t, p in messages)

    return publisher, publish
