"""What the devices send over MQTT (docs/mqtt-contract.md): a truck terminal's fixes and
status, the ANPR cameras' plate sightings. On the way messages get GPS noise, are lost or
delivered twice; a terminal in a coverage gap buffers its fixes and re-uploads them as one
batch (盲区补传), and a terminal that goes dark falls silent, some after an alarm, some with
the broker publishing their last will.

Each message that reaches the platform (or falls silent) is reported to the truck's ground
truth (simulators.groundtruth), which decides what it means.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from simulators.city import City
    from simulators.driving import State
    from simulators.fleet import FleetConfig, TruckAgent
    from simulators.thresholds import RuleThresholds
    from telemetry.contract import Topics

WILL_DELAY_S = 45  # the broker publishes a vanished terminal's will after 1.5 x keepalive (30 s)
ALARMS = ("antenna_cut", "power_cut")  # sent on the last fixes before some terminals go dark


class Terminal:
    """A truck's terminal: a fix every `interval_s` (with its own phase), its status, and its
    faults per loaded trip (going dark, alarms, coverage gaps), in the truck's simulated
    seconds."""

    def __init__(self, agent: TruckAgent) -> None:
        self.agent = agent
        self.fleet = agent.fleet
        self.rng = agent.rng
        self.device = agent.device
        self.phase = self.rng.randrange(self.fleet.config.interval_s)
        self.seq = 0
        self.buffer: list[dict] = []
        self.last_delivered_ms: int | None = None
        self.online_sent = False
        self.dark_from = -1
        self.dark_until = -1
        self.dark_windows: list[tuple[int, int]] = []  # device time, ms
        self.alarm: str | None = None  # sent on the fixes from alarm_from until dark_from
        self.alarm_from = -1
        self.gap_from = -1
        self.gap_until = -1

    def plan_trip(self, *, going_dark: bool) -> None:
        """The faults of the loaded trip starting now: going dark 1-5 minutes into it for
        7-15 minutes (some with an alarm first), a coverage gap after it."""
        r, t, config = self.rng, self.agent.t, self.fleet.config
        if going_dark:
            self.dark_from = t + r.randint(60, 300)
            self.dark_until = self.dark_from + r.randint(420, 900)
            self.dark_windows.append(
                (self.fleet.ms(self.dark_from), self.fleet.ms(self.dark_until))
            )
            self.alarm = None
            if r.random() * 100 < config.alarm_pct:
                self.alarm = r.choice(ALARMS)
                self.alarm_from = self.dark_from - r.randint(15, 35)
        if r.random() * 100 < config.coverage_gap_pct:
            begin = max(t, self.dark_until) + r.randint(30, 400)
            self.gap_from, self.gap_until = begin, begin + r.randint(60, 240)

    def emit(self, state: State, out: list[tuple[str, bytes]]) -> None:
        """The terminal's messages of this simulated second (a fix is due)."""
        device = self.device
        if device is None:
            return  # no terminal reports for this truck: only the cameras see it
        agent, fleet, r = self.agent, self.fleet, self.rng
        config, truth, t = fleet.config, agent.truth, agent.t
        ts = fleet.ms(t)
        self.seq += 1
        dark = self.dark_from <= t < self.dark_until
        if agent.judged:
            self._status(dark, ts, out)
        if dark:
            truth.went_dark(self.last_delivered_ms if self.last_delivered_ms is not None else ts)
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
        alarmed = self.alarm is not None and self.alarm_from <= t < self.dark_from
        if alarmed:
            fix["alarms"] = [self.alarm]
            truth.alarm_sent(self.alarm, ts, fleet.ms(self.dark_from))
        elif t >= self.dark_from:
            truth.alarm_over()
        topic = fleet.topic(device)
        if self.gap_from <= t < self.gap_until:
            self.buffer.append(fix)
            truth.delivered(ts, x, y, alarmed)  # re-uploaded later
            return
        lost = r.random() * 100 < config.drop_pct
        if not lost:
            out.append((topic, msgspec.json.encode(fix)))
            if r.random() * 100 < config.duplicate_pct:
                out.append((topic, msgspec.json.encode(fix)))
            self.last_delivered_ms = ts
            truth.delivered(ts, x, y, alarmed)
            truth.reappeared(ts)
        if self.buffer:
            # Back in coverage: the buffered fixes follow as one batch (盲区补传).
            out.append((topic, msgspec.json.encode(self.buffer)))
            fleet.reuploads += 1
            self.buffer = []

    def _status(self, dark: bool, ts: int, out: list[tuple[str, bytes]]) -> None:
        """The terminal's status topic: online when it connects; offline when the broker
        publishes its last will, WILL_DELAY_S after the terminal vanished (switched off or
        power cut; a terminal with a cut GNSS antenna stays connected, silent)."""
        topic = self.fleet.status_topic(self.device)
        if not self.online_sent and not dark:
            self.online_sent = True
            out.append((topic, msgspec.json.encode({"status": "online", "ts": ts})))
            self.agent.truth.online(ts)
        elif (
            dark
            and self.online_sent
            and self.alarm != "antenna_cut"
            and self.agent.t >= self.dark_from + WILL_DELAY_S
        ):
            self.online_sent = False  # reconnects when the dark period ends
            # The will's payload as the simulator publishes it for the broker: with the
            # simulated time (a real will carries none and is stamped on arrival).
            out.append((topic, msgspec.json.encode({"status": "offline", "ts": ts})))
            self.agent.truth.offline(ts)

    def flush(self, out: list[tuple[str, bytes]]) -> None:
        """The fixes still buffered in a coverage gap, as one batch (at the end of a run)."""
        if self.buffer:
            out.append((self.fleet.topic(self.device), msgspec.json.encode(self.buffer)))
            self.buffer = []


class Cameras:
    """The ANPR cameras: one at every site gate, and road checkpoints at the nodes the most
    routes pass (not sites, not restricted zones); they publish the sightings of the trucks
    that pass them (simulators.driving notes where)."""

    def __init__(
        self, city: City, config: FleetConfig, topics: Topics, thresholds: RuleThresholds
    ) -> None:
        self.config, self.topics = config, topics
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
            n: f"{city.prefix}-CP-{k + 1:02d}" for k, n in enumerate(busy[: config.checkpoints])
        }
        self.rng = random.Random(city.seed * 31 + 7)
        self.sightings = 0
        # Confidence of a read: a few (low_confidence_pct) just under anpr_min_confidence,
        # the others clearly over it.
        top = round(thresholds.anpr_min_confidence - 0.01, 2)
        self.low = (min(0.55, top), top)
        self.high = (min(round(thresholds.anpr_min_confidence + 0.05, 2), 0.99), 0.99)

    def publish(self, agent: TruckAgent, out: list[tuple[str, bytes]]) -> None:
        """Publish the truck's plate sightings (lost and duplicated like fixes; a few reads
        under the confidence threshold)."""
        r, config = self.rng, self.config
        cam_out = agent.driver.cam_out
        for camera, site, direction, ms in cam_out:
            low = r.random() * 100 < config.low_confidence_pct
            confidence = round(r.uniform(*self.low) if low else r.uniform(*self.high), 2)
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
            topic = self.topics.sightings(camera)
            out.append((topic, payload))
            if r.random() * 100 < config.duplicate_pct:
                out.append((topic, payload))
            self.sightings += 1
            agent.truth.sighted(ms, site, not low)
        cam_out.clear()
