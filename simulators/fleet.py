"""A live fleet for the synthetic city: trucks drive their permitted trips along the roads and
report over MQTT, with GPS noise, lost, duplicated and buffered messages, and injected
misbehaviour recorded as ground truth.

Each truck (`TruckAgent`) is its identity (plate, terminal, permit, route) and three parts:
how it drives (simulators.driving), what its terminal and the cameras send
(simulators.messages), and what it truly did (simulators.groundtruth), all judged by the
settings' thresholds (simulators.thresholds).

The simulation advances in whole simulated seconds; `Fleet.advance(t)` returns the messages
(topic, payload) that the terminals send up to simulated second `t`, in order. Everything is
drawn from random generators seeded by the city seed, so the same city, configuration, settings
and start time give the same messages. `run_live` paces it against the wall clock (`speedup`).
"""

from __future__ import annotations

import datetime as dt
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from core.config import Settings
from geofence.timewin import LocalClock, window_bitmap
from simulators.city import City, Truck
from simulators.driving import DEFAULT_RATES, INJECTABLE, OPENINGS, Driver, Seg, straight_run
from simulators.groundtruth import TruckTruth, TruthEvent, black_truth, mark_while_dark
from simulators.messages import Cameras, Terminal
from simulators.thresholds import RuleThresholds, shipped_settings
from telemetry.contract import Topics

__all__ = [
    "DEFAULT_RATES",
    "INJECTABLE",
    "OPENINGS",
    "Fleet",
    "FleetConfig",
    "TruckAgent",
    "fast_publisher",
    "run_live",
]


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
    # None for either: the fleet's settings (mqtt.topic_prefix; city.timezone, the local time
    # of operating hours and zone windows).
    topic_prefix: str | None = None
    timezone: str | None = None
    alarm_pct: float = 50.0  # going-dark terminals that first send antenna_cut or power_cut (%)
    checkpoints: int = 3  # road checkpoint cameras (besides one camera at every site gate)
    low_confidence_pct: float = 3.0  # camera reads under anpr_min_confidence (%)
    # Trucks that start the run in the middle of a misbehaviour (simulators.driving.OPENINGS),
    # one truck per kind given, chosen by `Fleet` among those that can play it (`muck demo`).
    opening: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if int(self.interval_s) < 1:
            raise ValueError("interval_s must be at least 1 second")
        self.interval_s = int(self.interval_s)
        for kind in list(self.rates) + [k for ks in self.script.values() for k in ks]:
            if kind not in INJECTABLE:
                raise ValueError(f"cannot inject {kind!r}; one of {', '.join(INJECTABLE)}")
        for kind in self.opening:
            if kind not in OPENINGS:
                raise ValueError(f"no opening {kind!r}; one of {', '.join(OPENINGS)}")


class TruckAgent:
    """One truck: who it is, and its parts: `driver` (its movements, `gen` yields its state
    every simulated second), `terminal` (what its terminal sends) and `truth` (what it truly
    did). They share the truck's clock `t` (simulated seconds since the fleet's start), its
    `state` and its one random generator, drawn in a fixed order."""

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
        self.route = city.routes[truck.route or permit.routes[0]]
        self.route_xy = city.route_xy(self.route.code)
        self.t = 0
        self.truth = TruckTruth(self)
        self.driver = Driver(self)  # draws first: the driver's habits,
        self.terminal = Terminal(self)  # then the terminal's phase
        self.state = self.driver.state
        self.gen = self.driver.life()

    def operating_at(self, t: int) -> bool:
        """Inside the permit's operating hours at simulated second t (always without hours)."""
        return self.hours is None or bool(self.hours[self.fleet.minute_of_week(t)])


class Fleet:
    """The trucks of a city, driven in simulated seconds from `start_ms`, judged by the
    thresholds of `settings` (default: the shipped ones, simulators.thresholds)."""

    def __init__(
        self,
        city: City,
        config: FleetConfig | None = None,
        *,
        start_ms: int,
        trucks: int | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.city = city
        self.config = config or FleetConfig()
        self.settings = settings or shipped_settings()
        self.thresholds = RuleThresholds.from_settings(self.settings)
        self.start_ms = int(start_ms) // 1000 * 1000
        self.truth: list[TruthEvent] = []
        self.node_at = {xy: k for k, xy in enumerate(city.roads.nodes)}
        self._topics = Topics(self.config.topic_prefix or self.settings.mqtt["topic_prefix"])
        self._topic_cache: dict[str, str] = {}
        self._status_cache: dict[str, str] = {}
        self.permits = {p.number: p for p in city.permits}
        self.clock = LocalClock(self.config.timezone or self.settings.city["timezone"])
        self._mow: tuple[int, int] = (-1, 0)  # (simulated minute, local minute of the week)
        self.zone_bits = {
            z["code"]: window_bitmap(z["windows"]) if z["windows"] else None
            for z in city.restricted
        }
        self.cameras = Cameras(city, self.config, self._topics, self.thresholds)
        chosen = city.trucks if trucks is None else city.trucks[:trucks]
        self.agents = [TruckAgent(self, i, truck) for i, truck in enumerate(chosen)]
        self.agents += [
            TruckAgent(self, len(chosen) + k, truck) for k, truck in enumerate(city.black_trucks)
        ]
        self.openings = cast_openings(self.agents, self.config.opening)
        self.t = 0
        self.published = 0
        self.reuploads = 0
        self._settled = False

    @property
    def sightings(self) -> int:
        """Camera sightings published so far."""
        return self.cameras.sightings

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
        cameras = self.cameras
        while self.t < until_s:
            self.t += 1
            for agent in self.agents:
                state = next(agent.gen)
                if agent.driver.cam_out:
                    cameras.publish(agent, out)
                terminal = agent.terminal
                if (agent.t - terminal.phase) % interval == 0:
                    terminal.emit(state, out)
        return out

    def finish(self) -> list[tuple[str, bytes]]:
        """Flush buffered fixes and close open truth episodes at the current time."""
        out: list[tuple[str, bytes]] = []
        for agent in self.agents:
            agent.terminal.flush(out)
        return out

    def annotate_truth(self) -> list[TruthEvent]:
        """Mark misbehaviour that happened while the truck's terminal was dark
        (`detail["while_dark"]`): no fix shows it, so no rule can find it. Adds the
        black-truck truth (once): per plate seen by a camera with a confident read, why it
        is black; per unregistered terminal that delivered fixes."""
        windows = {a.truck.device_id: a.terminal.dark_windows for a in self.agents}
        mark_while_dark(self.truth, windows, self.ms(self.t))
        if not self._settled:
            self._settled = True
            self.truth.extend(black_truth(self.agents))
        return self.truth

    def open_truth(self) -> list[TruthEvent]:
        return [e for e in self.truth if e.end_ms is None]


def cast_openings(agents: list[TruckAgent], kinds: tuple[str, ...]) -> dict[int, str]:
    """Truck index -> opening, one truck per kind, the first that can play it: a judged truck
    with a valid permit without operating hours (nothing else to flag), on a route long
    enough (a detour, a straight stretch of 1 km for the speeder); `black_seen` a black truck
    with no terminal (the cameras alone see it)."""
    cast: dict[int, str] = {}
    for kind in kinds:
        for agent in agents:
            if agent.index not in cast and _can_open(agent, kind):
                cast[agent.index] = kind
                break
        else:
            raise ValueError(f"no truck of this city can open with {kind!r}")
    return cast


def _can_open(agent: TruckAgent, kind: str) -> bool:
    if kind == "black_seen":
        return not agent.judged and agent.device is None
    if not (agent.judged and agent.permitted and agent.hours is None):
        return False
    nodes = agent.route.nodes
    if kind == "speeding":
        xy = agent.route_xy
        segs = [Seg(*a, *b, 40.0, 1.0) for a, b in zip(xy, xy[1:], strict=False)]
        a, b = straight_run(segs)
        return sum(seg.length for seg in segs[a:b]) >= 1000.0
    return len(nodes) >= (5 if kind == "route_deviation" else 4)


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
    from simulators.fastpub import FastPublisher, plain_endpoint

    endpoint = plain_endpoint(settings.mqtt_endpoint())
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
