"""The demo's first-minute openings (simulators.driving.OPENINGS): each is cast on a truck that
can play it, its misbehaviour is under way from the first seconds, and every other truck
drives exactly as it would without openings."""

from __future__ import annotations

import pytest

from simulators.city import generate_city
from simulators.driving import OPENINGS
from simulators.fleet import Fleet, FleetConfig

START_MS = 1_795_390_000_000


def _fleet(opening=()):
    city = generate_city(1, trucks=20)
    return Fleet(city, FleetConfig(interval_s=5, opening=opening), start_ms=START_MS)


def test_openings_start_at_once_and_leave_the_rest_of_the_fleet_alone():
    plain, opened = _fleet(), _fleet(OPENINGS)
    assert sorted(opened.openings.values()) == sorted(OPENINGS)
    telemetry = [m for m in plain.advance(300) if m[0].endswith("/telemetry")]
    scripted = opened.advance(300)
    devices = {opened.agents[i].device for i in opened.openings}
    rest = [
        m for m in scripted if m[0].endswith("/telemetry") and m[0].split("/")[-2] not in devices
    ]
    assert rest == [m for m in telemetry if m[0].split("/")[-2] not in devices]
    starts = {e.kind: (e.start_ms - START_MS) / 1000 for e in opened.truth}
    # every driving opening is a ground-truth episode from the first seconds
    for kind in ("unsealed_transport", "speeding", "route_deviation", "illegal_dumping"):
        assert starts.get(kind, 999) <= 15, (kind, starts)
    black = next(a for a in opened.agents if opened.openings.get(a.index) == "black_seen")
    assert black.device is None and black.truck.black == "unregistered_plate"
    assert any(black.truck.plate.encode() in p for t, p in scripted if "/sightings" in t)


def test_an_unknown_opening_is_refused():
    with pytest.raises(ValueError, match="no opening 'flying'"):
        FleetConfig(opening=("flying",))
