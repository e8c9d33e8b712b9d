"""Driving: a truck's life in whole simulated seconds. Loading at its site, its approved route
loaded (acceleration, braking, turns, red lights, cruising near the limit), unloading at the
disposal site, back empty; repeat. Into some loaded trips it injects misbehaviour: a detour, a
restricted zone, another disposal site, dumping on the way, an open lid, speeding, leaving
outside the permit's hours.

`Driver.life()` yields the truck's `State` once per simulated second. On every second it
tells the truck's ground truth (simulators.groundtruth) which segment the truck is on and
notes the cameras it passes; each loaded trip lets the terminal (simulators.messages) plan its
faults. Every draw comes from the truck's one random generator, in a fixed order, so the same
seed drives the same way.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from simulators.fleet import TruckAgent
    from simulators.groundtruth import TruthEvent

ACCEL = 0.8  # m/s² when speeding up
DECEL = 1.5  # m/s² planned braking
TURN_KMH = 20.0  # speed through a turn of more than 45°
OVER_LIMIT_KMH = 30.0  # how far over the limit an injected speeder drives

# Driving misbehaviour, at most one per loaded trip (probability per trip).
TRIP_KINDS = (
    "route_deviation",
    "unsealed_transport",
    "speeding",
    "illegal_dumping",
    "restricted_zone",
    "unapproved_disposal",
)
DEFAULT_RATES = {
    "route_deviation": 0.05,
    "unsealed_transport": 0.05,
    "speeding": 0.05,
    "illegal_dumping": 0.02,
    "restricted_zone": 0.01,  # through a restricted zone in force, off the route
    "unapproved_disposal": 0.01,  # to another disposal site, off the route
    "going_dark": 0.03,  # independent of the others: the terminal goes silent for 7-15 min
    # A truck on a permit with operating hours whose trip would fall outside them goes anyway
    # (probability per such trip; the others wait at the site until the hours allow it).
    "restricted_hours": 0.2,
}
INJECTABLE = (*TRIP_KINDS, "going_dark", "restricted_hours")
# Openings (FleetConfig.opening, `muck demo`'s first minute): a truck that starts the run
# already in the middle of a misbehaviour, so the rule's minimum duration
# (core/defaults.toml [rules.*]) passes within the first minute instead of after the usual
# 5-10 minutes of loading. `black_seen`: a black truck leaving its site past the gate camera.
OPENINGS = ("unsealed_transport", "speeding", "route_deviation", "illegal_dumping", "black_seen")


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
    """The truck as its sensors see it, this simulated second."""

    x: float
    y: float
    v: float  # m/s
    heading: float
    lid: str = "closed"
    lift: str = "down"
    load: str = "empty"


def _heading(seg: Seg) -> float:
    return math.degrees(math.atan2(seg.bx - seg.ax, seg.by - seg.ay)) % 360


def _turn_deg(a: Seg, b: Seg) -> float:
    d = abs(_heading(a) - _heading(b)) % 360
    return min(d, 360 - d)


def straight_run(segs: list[Seg]) -> tuple[int, int]:
    """The longest run segs[a:b] without a turn over 45°, leaving out the first segment (in
    the origin site) and the last (into the disposal site)."""
    best, best_m = (1, 1), 0.0
    a = 1
    for b in range(2, len(segs)):
        if b == len(segs) - 1 or _turn_deg(segs[b - 1], segs[b]) > 45:
            metres = sum(seg.length for seg in segs[a:b])
            if metres > best_m:
                best, best_m = (a, b), metres
            a = b
    return best


class Driver:
    """One truck's movements: `life()` yields its state every simulated second."""

    def __init__(self, agent: TruckAgent) -> None:
        self.agent = agent
        self.fleet = agent.fleet
        self.rng = agent.rng
        self.route, self.route_xy = agent.route, agent.route_xy
        self.ignores_hours = "restricted_hours" in self.fleet.config.script.get(agent.index, ())
        self.factor = self.rng.uniform(0.72, 0.85)  # how close to the limit this driver goes
        self.trips = 0
        self.state = State(*self.route_xy[0], 0.0, 0.0)
        self.zone: dict | None = None  # the restricted zone this trip crosses
        # Cameras
        self.in_site: str | None = self.route.origin  # the site whose gate it passed last
        self.cam_out: list[tuple[str, str | None, str, int]] = []  # camera, site, direction, ms

    def life(self) -> Iterator[State]:
        agent = self.agent
        opening = self.fleet.openings.get(agent.index)
        if opening is not None:
            yield from self._opening(opening)
        else:
            # Start somewhere in the loading dwell at the origin site, staggered.
            yield from self._dwell(self.rng.randint(10, 240), load="empty")
        while True:
            kinds = self._plan()
            if agent.hours is not None and agent.permitted:
                yield from self._wait_for_hours(kinds)
            yield from self._loading()
            yield from self._loaded_trip(kinds)
            self.trips += 1

    def _wait_for_hours(self, kinds: list[str]) -> Iterator[State]:
        """A truck on a permit with operating hours loads only when the loaded trip (loading,
        driving at three quarters of the ordinary roads' limit, unloading; with a margin) fits
        in them — unless it goes anyway (restricted_hours, rate per such trip)."""
        if self.ignores_hours:
            return
        length = sum(
            math.dist(a, b) for a, b in zip(self.route_xy, self.route_xy[1:], strict=False)
        )
        limit_kmh = self.fleet.thresholds.speed_limits["other"]
        need = int(1.5 * (600 + length / (limit_kmh / 3.6 * 0.75) + 300))
        decided = False
        agent = self.agent
        while not all(agent.operating_at(agent.t + k) for k in range(0, need + 1, 300)):
            if not decided:
                decided = True
                if self.rng.random() < self.fleet.config.rates.get("restricted_hours", 0.0):
                    kinds.append("restricted_hours")
                    return
            yield from self._dwell(60, load="empty", lid="closed", lift="down")

    def _plan(self) -> list[str]:
        config = self.fleet.config
        agent = self.agent
        if self.trips == 0 and agent.index in config.script:
            return list(config.script[agent.index])
        if not agent.permitted or not agent.judged:
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
        self.agent.t += 1
        return self.state

    def _loading(self) -> Iterator[State]:
        r = self.rng
        yield from self._dwell(r.randint(60, 150), load="empty", lid="closed", lift="down")
        yield from self._dwell(r.randint(60, 150), load="half")
        yield from self._dwell(r.randint(20, 60), load="full")

    def _unloading(self, unapproved: str | None = None) -> Iterator[State]:
        r = self.rng
        yield from self._dwell(r.randint(20, 60), load="full")
        if not self.agent.permitted:
            # Without a valid permit the unloading is part of the unpermitted transport, charged
            # as no_valid_permit only (one act, one charge: docs/compliance.md).
            unapproved = None
        truth = self.agent.truth
        event = truth.open("unapproved_disposal", site=unapproved) if unapproved else None
        yield from self._dwell(r.randint(30, 60), lid="open", lift="up", load="half")
        yield from self._dwell(r.randint(20, 40), load="empty")
        if event is not None:
            event.end_ms = self.fleet.ms(self.agent.t)
        yield from self._dwell(r.randint(20, 40), lid="closed", lift="down", load="empty")

    def _segments(self, pts: list[tuple[float, float]]) -> list[Seg]:
        fleet = self.fleet
        roads = fleet.city.roads
        cameras = fleet.cameras
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
                    gate_a=cameras.gates.get(a),
                    gate_b=cameras.gates.get(b),
                    checkpoint=cameras.checkpoints.get(b),
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
        self.agent.terminal.plan_trip(going_dark="going_dark" in kinds)
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
            event = self.agent.truth.open("illegal_dumping", at_node=nodes[k])
            yield from self._dwell(r.randint(20, 40), lift="up", load="full")
            yield from self._dwell(r.randint(20, 40), lift="up", load="half")
            yield from self._dwell(r.randint(20, 40), lift="up", load="empty")
            event.end_ms = self.fleet.ms(self.agent.t)
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

    # -- openings (the first minute of a demo) ----------------------------------------------

    def _opening(self, kind: str) -> Iterator[State]:
        """Start the run in the middle of a loaded trip, the misbehaviour `kind` already under
        way, then finish the trip (unloading, back to the origin site) and live as usual. No
        terminal faults on this trip: nothing delays the fixes that prove it."""
        nodes = list(self.route.nodes)
        s = self.state
        s.load = "full"
        if kind == "black_seen":
            # Loaded at the site's node, driving out: the gate camera sees it within seconds.
            yield from self._loaded_trip([])
            return
        if kind == "illegal_dumping":
            k = len(nodes) // 2
            s.x, s.y = self.fleet.city.roads.nodes[nodes[k]]
            event = self.agent.truth.open("illegal_dumping", at_node=nodes[k])
            yield from self._dwell(40, lift="up", load="full")
            yield from self._dwell(30, lift="up", load="half")
            yield from self._dwell(20, lift="up", load="empty")
            event.end_ms = self.fleet.ms(self.agent.t)
            yield from self._dwell(15, lift="down", load="empty")
            yield from self._drive(self._segments(self._xy(nodes[k::-1])))
            return
        detour = self._detour(nodes) if kind == "route_deviation" else None
        if detour is not None:
            segs, first = detour, next(i for i, seg in enumerate(detour) if seg.tag)
        else:
            segs = self._segments(self._xy(nodes))
            first, end = 1, 1  # a route without a detour: an ordinary trip from node 1
            if kind == "speeding":
                first, end = straight_run(segs)
                for seg in segs[first:end]:
                    seg.target_mps = min(100.0, seg.limit_kmh + OVER_LIMIT_KMH) / 3.6
            elif kind == "unsealed_transport":  # from the first node outside the site
                first, end = 1, min(len(segs) - 1, 4)
                for seg in segs[first:end]:
                    seg.lid = "open"
            for seg in segs[first:end]:
                seg.tag, seg.stop_after = kind, False
        segs = segs[first:]
        s.x, s.y = segs[0].ax, segs[0].ay
        yield from self._drive(segs, rolling=True)
        yield from self._unloading()
        yield from self._drive(self._segments(self._xy(nodes[::-1])))

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
        t = self.agent.t
        self.zone = city.restricted[0]
        for zone in city.restricted[1:]:
            if all(self.fleet.zone_in_force(zone, t + k) for k in (0, 300, 600)):
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

    def _drive(self, segs: list[Seg], *, rolling: bool = False) -> Iterator[State]:
        """Drive the segments; from a standstill, or `rolling` at the first one's target speed
        (an opening: the truck was already on the road)."""
        s = self.state
        s.v = segs[0].target_mps if rolling else 0.0
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
                    ms = self.fleet.ms(self.agent.t + 1)
                    self.cam_out.append((seg.checkpoint, None, "pass", ms))
                if last:
                    s.v = 0.0
                    self._observe(open_events, seg)
                    yield self._tick()
                    break
                if seg.stop_after:
                    s.v = 0.0
                    self._observe(open_events, seg)
                    yield self._tick()
                    yield from self._dwell(self.rng.randint(10, 45))
                    carry = 0.0
                    s.lid = seg.lid
                else:
                    self._observe(open_events, seg)
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
            self._observe(open_events, seg)
            yield self._tick()
        for event in open_events.values():
            event.end_ms = self.fleet.ms(self.agent.t)
        s.v = 0.0
        s.lid = "closed"

    def _observe(self, events: dict[str, TruthEvent], seg: Seg) -> None:
        """Before the tick that puts the truck here: the gate cameras it passes, and the
        ground-truth episodes of the segment's injected misbehaviour."""
        if seg.gate_a is not None or seg.gate_b is not None:
            self._gates(seg)
        self.agent.truth.track(events, seg)

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
            ms = self.fleet.ms(self.agent.t + 1)
            gate_camera = self.fleet.cameras.gate_camera
            if self.in_site is not None:
                self.cam_out.append((gate_camera[self.in_site], self.in_site, "out", ms))
            if inside is not None:
                self.cam_out.append((gate_camera[inside], inside, "in", ms))
            self.in_site = inside
