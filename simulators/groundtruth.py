"""Ground truth of the simulator: what the injected misbehaviour truly caused, to score the
rules against (`muck accuracy`, tests/simulators/test_fleet_rules.py).

`TruckTruth` opens and closes one truck's episodes as it drives (simulators.driving) and as
its terminal reports or falls silent (simulators.messages), judging them by the thresholds the
rules use (simulators.thresholds); `mark_while_dark` and `black_truth` complete the truth at
the end of a run. The episodes are `TruthEvent`s, written with `write_truth`.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compliance.violations import KINDS
from simulators.city import ROUTE_WIDTH_M

if TYPE_CHECKING:
    from collections.abc import Iterable

    from simulators.driving import Seg
    from simulators.fleet import TruckAgent

# Scored beside the violation kinds: terminal alarms (going_dark violations of stream
# `terminal_alarm`), terminals reported offline (`device_status`, the MQTT last will), and the
# black-truck list (black_trucks), per plate and reason or per unregistered device.
TERMINAL_KINDS = ("terminal_alarm", "terminal_offline")
BLACK_KINDS = (
    "black_unregistered_device",
    "black_unregistered_plate",
    "black_no_valid_permit",
    "black_untracked",
)
SCORED_KINDS = KINDS + TERMINAL_KINDS + BLACK_KINDS


@dataclass
class TruthEvent:
    plate: str
    device_id: str
    kind: str  # one of SCORED_KINDS (compliance.violations.KINDS and the extras above)
    start_ms: int  # device time (simulated), epoch milliseconds UTC
    end_ms: int | None = None  # None while still going on
    detail: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in SCORED_KINDS:
            raise ValueError(f"unknown violation kind {self.kind!r}")

    def as_json(self) -> dict[str, Any]:
        body = asdict(self)
        body["start"] = _iso(self.start_ms)
        body["end"] = _iso(self.end_ms) if self.end_ms is not None else None
        return body


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat()


def truth_document(events: list[TruthEvent], **meta: Any) -> dict[str, Any]:
    ordered = sorted(events, key=lambda e: (e.start_ms, e.device_id, e.kind))
    counts: dict[str, int] = {}
    for event in ordered:
        counts[event.kind] = counts.get(event.kind, 0) + 1
    return {"meta": meta, "counts": counts, "events": [e.as_json() for e in ordered]}


def write_truth(path: str | Path, events: list[TruthEvent], **meta: Any) -> None:
    Path(path).write_text(
        json.dumps(truth_document(events, **meta), ensure_ascii=False, indent=1), encoding="utf-8"
    )


# Segment tags of injected misbehaviour that leave the route.
OFF_ROUTE = ("route_deviation", "restricted_zone", "unapproved_disposal")


def _dist_to_polyline(x: float, y: float, pts: list[tuple[float, float]]) -> float:
    best = math.inf
    for (ax, ay), (bx, by) in zip(pts, pts[1:], strict=False):
        dx, dy = bx - ax, by - ay
        n2 = dx * dx + dy * dy
        u = 0.0 if n2 == 0 else max(0.0, min(1.0, ((x - ax) * dx + (y - ay) * dy) / n2))
        best = min(best, math.hypot(x - ax - u * dx, y - ay - u * dy))
    return best


class TruckTruth:
    """One truck's ground truth: its episodes (appended to the fleet's `truth` as they open)
    and the camera evidence for the black-truck list."""

    def __init__(self, agent: TruckAgent) -> None:
        self.agent = agent
        self.fleet = agent.fleet
        self.limits = agent.fleet.thresholds
        self.plate, self.device_id = agent.truck.plate, agent.truck.device_id
        self.dark_event: TruthEvent | None = None
        self.alarm_event: TruthEvent | None = None
        self.offline_event: TruthEvent | None = None
        # Cameras
        self.recent: deque[tuple[int, float, float]] = deque()  # delivered fixes, 5 min
        self.checks: list[list] = []  # sightings awaiting a fix: [ms, site, confident]
        self.untracked: list[int] = []  # ms of confident untracked sightings
        self.evidence: list[tuple[int, bool]] = []  # delivered sightings (ms, confident)
        self.rogue_first_ms: int | None = None
        self.rogue_last_ms: int | None = None

    def _event(self, kind: str, start_ms: int, end_ms: int | None, detail: dict) -> TruthEvent:
        event = TruthEvent(self.plate, self.device_id, kind, start_ms, end_ms, detail)
        self.fleet.truth.append(event)
        return event

    # -- driving ----------------------------------------------------------------------------
    def open(self, kind: str, **detail) -> TruthEvent:
        """An episode starting now (its end is set by the caller)."""
        event = TruthEvent(
            self.plate, self.device_id, kind, self.fleet.ms(self.agent.t), None, detail
        )
        if self.agent.judged:  # black trucks' misbehaviour is no rule's business (no bound fixes)
            self.fleet.truth.append(event)
        return event

    def track(self, events: dict[str, TruthEvent], seg: Seg) -> None:
        """Open and close ground-truth episodes for the segment's injected misbehaviour."""
        agent = self.agent
        if not agent.judged:
            return
        s, city, limits = agent.state, self.fleet.city, self.limits
        kmh = s.v * 3.6
        loaded = s.load != "empty"
        if not agent.permitted:
            # Stops included: the rule spans them (compliance.rules.permit).
            on = loaded and city.site_contains(s.x, s.y) is None
            self._flip(events, "no_valid_permit", on, permit=agent.truck.permit)
        elif agent.hours is not None:
            # Stops included, as for no_valid_permit: the whole loaded trip is transport out of
            # hours (the rule may see it in pieces; docs/accuracy.md).
            on = loaded and not agent.operating_at(agent.t + 1)
            on = on and city.site_contains(s.x, s.y) is None
            if on or "restricted_hours" in events:
                self._flip(events, "restricted_hours", on, permit=agent.truck.permit)
        if seg.tag == "speeding" or "speeding" in events:
            on = seg.tag == "speeding" and kmh > seg.limit_kmh + limits.speed_tolerance_kmh
            self._flip(events, "speeding", on, limit_kmh=seg.limit_kmh)
        if seg.tag == "unsealed_transport" or "unsealed_transport" in events:
            on = seg.tag == "unsealed_transport" and s.lid == "open" and kmh >= limits.moving_kmh
            on = on and loaded and city.site_contains(s.x, s.y) is None
            self._flip(events, "unsealed_transport", on)
        if seg.tag == "restricted_zone" or "restricted_zone" in events:
            zone = agent.driver.zone or city.restricted[0]
            cx, cy = city.node_xy(zone["node"])
            inside = abs(s.x - cx) <= zone["half_m"] and abs(s.y - cy) <= zone["half_m"]
            inside = inside and self.fleet.zone_in_force(zone, agent.t + 1)
            self._flip(events, "restricted_zone", inside, zone=zone["code"])
        if seg.tag in OFF_ROUTE or "route_deviation" in events:
            d = _dist_to_polyline(s.x, s.y, agent.route_xy)
            reentry = "route_deviation" in events
            limit = ROUTE_WIDTH_M * (limits.route_reentry_ratio if reentry else 1.0)
            on = loaded and d > limit and city.site_contains(s.x, s.y) is None
            self._flip(events, "route_deviation", on, route=agent.route.code)

    def _flip(self, events: dict[str, TruthEvent], kind: str, on: bool, **detail) -> None:
        if on and kind not in events:
            # The episode starts at this tick (the state is yielded right after).
            events[kind] = self._event(kind, self.fleet.ms(self.agent.t + 1), None, detail)
        elif not on and kind in events:
            events.pop(kind).end_ms = self.fleet.ms(self.agent.t + 1)

    # -- the terminal -----------------------------------------------------------------------
    def went_dark(self, since_ms: int) -> None:
        """A fix was due and the terminal is dark: going dark since its last delivered fix."""
        if self.dark_event is None:
            self.dark_event = self._event("going_dark", since_ms, None, {})

    def reappeared(self, ms: int) -> None:
        """A fix was delivered: the end of going dark, if it was."""
        if self.dark_event is not None:
            self.dark_event.end_ms = ms
            self.dark_event = None

    def alarm_sent(self, alarm: str, ms: int, dark_ms: int) -> None:
        """A fix carries an alarm before the terminal goes dark at `dark_ms`."""
        if self.alarm_event is None:
            # Seen only if one of its fixes is delivered (marked by `delivered`).
            detail = {"alarm": alarm, "unseen": True}
            self.alarm_event = self._event("terminal_alarm", ms, dark_ms, detail)

    def alarm_over(self) -> None:
        self.alarm_event = None

    def offline(self, ms: int) -> None:
        """The broker published the terminal's last will."""
        self.offline_event = self._event("terminal_offline", ms, None, {})

    def online(self, ms: int) -> None:
        if self.offline_event is not None:
            self.offline_event.end_ms = ms
            self.offline_event = None

    def delivered(self, ms: int, x: float, y: float, alarmed: bool) -> None:
        """A fix that reaches the platform (now or in a re-upload): evidence for cameras."""
        if alarmed and self.alarm_event is not None:
            self.alarm_event.detail.pop("unseen", None)
        if not self.agent.judged:
            if self.rogue_first_ms is None:
                self.rogue_first_ms = ms
            self.rogue_last_ms = ms
            return
        recent = self.recent
        window = self.limits.anpr_window_s * 1000
        recent.append((ms, x, y))
        while recent and recent[0][0] < ms - window:
            recent.popleft()
        if self.checks:
            self.checks = [
                c for c in self.checks if not (ms - c[0] <= window and self._near(c[1], x, y))
            ]

    # -- cameras ----------------------------------------------------------------------------
    def _near(self, site: str | None, x: float, y: float) -> bool:
        if site is None:
            return True  # a road checkpoint: any fix in the window
        city = self.fleet.city
        zone = city.sites[site]
        sx, sy = city.roads.nodes[zone.node]
        dx, dy = max(abs(x - sx) - zone.half_m, 0.0), max(abs(y - sy) - zone.half_m, 0.0)
        return math.hypot(dx, dy) <= self.limits.anpr_radius_m

    def sighted(self, ms: int, site: str | None, confident: bool) -> None:
        """A camera sighting of this truck reached the platform."""
        agent = self.agent
        self.evidence.append((ms, confident))
        if not (agent.registered and agent.permitted):
            return
        if agent.device is not None and agent.judged:
            window = self.limits.anpr_window_s * 1000
            if any(ms - f[0] <= window and self._near(site, f[1], f[2])
                   for f in self.recent):  # fmt: skip
                return
        self.checks.append([ms, site, confident])

    def settle_checks(self, now_ms: int | None) -> None:
        """Sightings no fix within the window explained: untracked (all of them at the end)."""
        keep = []
        window = self.limits.anpr_window_s * 1000
        for check in self.checks:
            if now_ms is None or now_ms > check[0] + window:
                if check[2]:
                    self.untracked.append(check[0])
            else:
                keep.append(check)
        self.checks = keep


def mark_while_dark(
    truth: list[TruthEvent], dark_windows: dict[str, list[tuple[int, int]]], now_ms: int
) -> None:
    """Mark misbehaviour that happened while the truck's terminal was dark
    (`detail["while_dark"]`; `dark_windows`: per device, in ms): no fix shows it, so no rule
    can find it."""
    for event in truth:
        if event.kind in ("going_dark", "terminal_alarm", "terminal_offline"):
            continue
        if event.kind.startswith("black_"):
            continue
        end = event.end_ms if event.end_ms is not None else now_ms
        if any(a < end and b > event.start_ms for a, b in dark_windows[event.device_id]):
            event.detail["while_dark"] = True


def black_truth(agents: Iterable[TruckAgent]) -> list[TruthEvent]:
    """What the black-truck list should hold at the end of the run: per plate seen by a camera
    with a confident read, why it is black; per unregistered terminal that delivered fixes."""
    out = []
    for agent in agents:
        truck, truth = agent.truck, agent.truth
        truth.settle_checks(None)
        confident = [ms for ms, ok in truth.evidence if ok]
        reason = None
        times = confident
        if not agent.registered:
            reason = "black_unregistered_plate"
        elif not agent.permitted:
            reason = "black_no_valid_permit"
        elif truth.untracked:
            reason, times = "black_untracked", truth.untracked
        if reason is not None and times:
            detail = {"sightings": len(times), "mode": truck.black or "fleet"}
            out.append(TruthEvent(truck.plate, truck.device_id, reason, times[0], times[-1],
                                  detail))  # fmt: skip
        if truck.rogue_device and truth.rogue_first_ms is not None:
            out.append(
                TruthEvent(
                    truck.plate,
                    truck.rogue_device,
                    "black_unregistered_device",
                    truth.rogue_first_ms,
                    truth.rogue_last_ms,
                    {"mode": truck.black},
                )
            )
    return out
