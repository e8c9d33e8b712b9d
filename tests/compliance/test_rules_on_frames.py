"""Each rule on both sides of each of its thresholds, on frames built in memory (no database:
tests/compliance/frames.py), through the engine's own batch path; and every rule's episode
split over two batches at every fix: one violation, the same as in one batch.

The thresholds come from the settings (each rule's table in core/defaults.toml), so a case
reads "just over the tolerance for just the minimum duration"; a rule that misreads a
threshold, or compares on the wrong side of it, fails here. The PostgreSQL scenarios of
tests/compliance/test_rules.py drive the same rules through ingestion with GPS noise.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter

import pytest

from compliance.pipeline import PIPELINE
from compliance.rules.dark import GoingDark
from compliance.rules.dumping import IllegalDumping, UnapprovedDisposal
from compliance.rules.permit import NoValidPermit
from compliance.rules.restricted import RestrictedHours, RestrictedZone
from compliance.rules.route import RouteDeviation
from compliance.rules.speeding import Speeding
from compliance.rules.unsealed import UnsealedTransport
from geofence.model import BanDay
from tests.compliance.city import EMPTY, LOADED, feature, square
from tests.compliance.frames import (
    BASE,
    DAY,
    SETTINGS,
    T1,
    T2,
    Frames,
    Track,
    city_zones,
    local,
    permit,
)

OPEN = {"load": "full", "lid": "open", "lift": "down"}  # loaded, lid open
LIFTED = {"load": "full", "lid": "open", "lift": "up"}  # dump body up, load not gone yet
MAX_GAP_S = float(SETTINGS["compliance"]["max_gap_s"])
DARK_AFTER_S = float(SETTINGS.thresholds["dark_after_s"])


def kinds_of(*tracks: Track, frames: Frames | None = None) -> list[str]:
    return (frames or Frames()).feed(*tracks).kinds()


def along_route(seconds: float, kmh: float, state: dict, track: Track) -> Track:
    """A leg east along ROUTE-AB (y = 0) at `kmh` for `seconds`."""
    return track.leg(seconds, (track.x + kmh / 3.6 * seconds, track.y), kmh=kmh, **state)


# -- speeding ---------------------------------------------------------------------------------
SPEEDING = Speeding.spec_in(SETTINGS)
LIMIT = SETTINGS.thresholds["speed_limit_other_kmh"]  # no speed zone on the route


def speeding_track(kmh: float, seconds: float, every_s: float = 1.0) -> Track:
    track = Track(T1, BASE, 1000, 0, every_s)
    along_route(60, 35, LOADED, track)
    along_route(seconds, kmh, LOADED, track)
    return along_route(60, 35, LOADED, track)


@pytest.mark.parametrize(
    ("over_kmh", "longer_s", "expected"),
    [(0.1, 0, ["speeding"]), (0.0, 120, []), (0.1, -1, [])],
    ids=["over-tolerance-for-the-minimum", "at-tolerance-for-long", "over-just-too-short"],
)
def test_speeding(over_kmh, longer_s, expected):
    kmh = LIMIT + SPEEDING["tolerance_kmh"] + over_kmh
    frames = Frames().feed(speeding_track(kmh, SPEEDING["min_duration_s"] + longer_s))
    assert frames.kinds() == expected
    if expected:
        (row,) = frames.violations()
        assert row.end is not None and row.end - row.start == SPEEDING["min_duration_s"]
        assert row.worst == pytest.approx(kmh - LIMIT) and row.severity == "minor"


def test_speeding_by_the_serious_margin_is_serious():
    frames = Frames().feed(speeding_track(LIMIT + SPEEDING["serious_over_kmh"], 60))
    assert [row.severity for row in frames.violations()] == ["serious"]


@pytest.mark.parametrize(("over_kmh", "expected"), [(0.1, ["speeding"]), (0.0, [])])
def test_a_speed_zone_sets_the_limit(over_kmh, expected):
    """SPEED-30 spans x 2100..2900 at y = -2000; an empty truck drives through it."""
    kmh = 30 + SPEEDING["tolerance_kmh"] + over_kmh  # within the default limit outside the zone
    track = Track(T1, BASE, 1800, -2000).leg(60, (2200, -2000), kmh=kmh, **EMPTY)
    track.leg(SPEEDING["min_duration_s"], (2500, -2000), kmh=kmh, **EMPTY)
    assert kinds_of(track) == expected


# -- unsealed transport ----------------------------------------------------------------------
UNSEALED = UnsealedTransport.spec_in(SETTINGS)
MOVING_KMH = SETTINGS["compliance"]["moving_kmh"]


def lid_open_track(
    seconds: float, kmh: float = 35, state: dict = OPEN, every_s: float = 1.0
) -> Track:
    """Along the route with the lid closed, `seconds` with it open (`state`), closed again."""
    closed = {**state, "lid": "closed"}
    track = along_route(60, 35, closed, Track(T1, BASE, 1000, 0, every_s))
    along_route(seconds, kmh, state, track)
    return along_route(60, 35, closed, track)


@pytest.mark.parametrize(
    ("longer_s", "kmh", "state", "expected"),
    [
        (0, 35, OPEN, ["unsealed_transport"]),
        (-1, 35, OPEN, []),
        (0, MOVING_KMH, OPEN, ["unsealed_transport"]),
        (300, MOVING_KMH - 0.1, OPEN, []),
        (300, 35, {**EMPTY, "lid": "open"}, []),
    ],
    ids=["for-the-minimum", "just-too-short", "at-moving-speed", "standing", "empty"],
)
def test_unsealed_transport(longer_s, kmh, state, expected):
    track = lid_open_track(UNSEALED["min_duration_s"] + longer_s, kmh, state)
    assert kinds_of(track) == expected


@pytest.mark.parametrize("x", [0, 5000], ids=["SITE-A", "DISP-B"])
def test_a_lid_open_inside_a_site_is_not_unsealed_transport(x):
    """Covering the load while manoeuvring inside a site (a 150 m square) is allowed."""
    track = Track(T1, BASE, x - 100, -100)
    track.leg(UNSEALED["min_duration_s"] * 3, (x + 100, 100), kmh=8, **OPEN)
    assert Frames().feed(track).violations() == []


# -- route deviation -------------------------------------------------------------------------
ROUTE = RouteDeviation.spec_in(SETTINGS)
REENTRY = SETTINGS.thresholds["route_reentry_ratio"]
WIDTH = 50.0  # ROUTE-AB's corridor half-width (tests/compliance/city.py)


def off_route_track(*offsets: tuple[float, float], every_s: float = 1.0) -> Track:
    """Loaded along ROUTE-AB, then (metres north of it, seconds) stretches, then back."""
    track = along_route(60, 35, LOADED, Track(T1, BASE, 1000, 0, every_s))
    for metres, seconds in offsets:
        along_route(seconds, 35, LOADED, track.at(track.x, metres))
    return along_route(60, 35, LOADED, track.at(track.x, 0))


@pytest.mark.parametrize(
    ("metres", "longer_s", "expected"),
    [(WIDTH + 10, 0, ["route_deviation"]), (WIDTH + 10, -1, []), (WIDTH - 10, 240, [])],
    ids=["outside-for-the-minimum", "outside-just-too-short", "inside-the-corridor"],
)
def test_route_deviation(metres, longer_s, expected):
    frames = Frames().feed(off_route_track((metres, ROUTE["min_duration_s"] + longer_s)))
    assert frames.kinds() == expected
    if expected:
        (row,) = frames.violations()
        assert row.worst == pytest.approx(metres, abs=1.0)  # metres from the route


@pytest.mark.parametrize(
    ("metres", "expected"),
    [(WIDTH * REENTRY + 1, ["route_deviation"]), (WIDTH * REENTRY - 1, [])],
    ids=["not-yet-back", "back"],
)
def test_back_inside_the_width_is_off_route_until_within_the_reentry_ratio(metres, expected):
    """Hysteresis: off beyond the width, back on only nearer than width x re-entry ratio. Two
    stretches each shorter than the minimum, beyond the width and then just outside the
    re-entry distance, are one deviation; the second stretch alone is none."""
    half = ROUTE["min_duration_s"] / 2 + 5
    assert kinds_of(off_route_track((WIDTH + 10, half), (metres, half))) == expected
    assert kinds_of(off_route_track((metres, 2 * half))) == []


def test_no_route_deviation_without_an_approved_route():
    frames = Frames(permits=[permit(routes=())])
    assert kinds_of(off_route_track((WIDTH + 200, 600)), frames=frames) == []


# -- illegal dumping and unapproved disposal --------------------------------------------------
DUMPING = IllegalDumping.spec_in(SETTINGS)
DISPOSAL = UnapprovedDisposal.spec_in(SETTINGS)


def lift_track(
    x: float, y: float, lifted_s: float, after: dict = LOADED, every_s: float = 1.0
) -> Track:
    """Loaded to (x, y), the body up for `lifted_s` (the load sensor still full), then
    `after` (EMPTY: the load gone), and away."""
    track = Track(T1, BASE, x - 600, y, every_s).leg(60, (x, y), kmh=36, **LOADED)
    track.leg(lifted_s, **LIFTED).leg(30, **after)
    return track.leg(60, (x + 600, y), kmh=36, **after)


def drop_track(x: float, y: float, silence_s: float | None = None) -> Track:
    """Loaded to (x, y), then empty from one fix to the next (no lift sensor), `silence_s`
    apart (default: the usual interval)."""
    track = Track(T1, BASE, x - 600, y).leg(60, (x, y), kmh=36, load="full")
    if silence_s is not None:
        track.gap(silence_s)
    return track.leg(60, (x + 600, y), kmh=36, load="empty")


@pytest.mark.parametrize(
    ("longer_s", "expected"), [(0, ["illegal_dumping"]), (-1, [])], ids=["minimum", "too-short"]
)
def test_lifting_outside_every_site_is_illegal_dumping(longer_s, expected):
    assert kinds_of(lift_track(2500, 20, DUMPING["min_duration_s"] + longer_s)) == expected


def test_a_load_drop_outside_sites_is_dumping_at_once():
    frames = Frames().feed(drop_track(2500, 20))
    (row,) = frames.violations()
    assert row.kind == "illegal_dumping" and row.end == row.start  # the fix where it dropped


@pytest.mark.parametrize(
    ("silence_s", "expected"),
    [(MAX_GAP_S, ["illegal_dumping"]), (MAX_GAP_S + 1, [])],
    ids=["located", "after-a-silence"],
)
def test_a_load_drop_after_a_silence_proves_no_place(silence_s, expected):
    assert silence_s < DARK_AFTER_S  # not dark either
    assert kinds_of(drop_track(2500, 20, silence_s)) == expected


@pytest.mark.parametrize(
    ("x", "permitted", "expected"),
    [
        (5000, ("DISP-B",), []),
        (3500, ("DISP-B",), ["unapproved_disposal"]),
        (3500, ("DISP-B", "DISP-C"), []),
        (0, ("DISP-B",), []),  # SITE-A, the permit's origin: levelling the load
    ],
    ids=["approved-site", "site-not-on-the-permit", "site-on-the-permit", "origin-site"],
)
def test_unloading_inside_a_site(x, permitted, expected):
    frames = Frames(permits=[permit(disposal_sites=permitted)])
    assert kinds_of(lift_track(x, 0, 60, after=EMPTY), frames=frames) == expected


@pytest.mark.parametrize(
    ("longer_s", "expected"),
    [(0, ["unapproved_disposal"]), (-1, [])],
    ids=["minimum", "too-short"],
)
def test_lifting_at_a_site_not_on_the_permit(longer_s, expected):
    assert kinds_of(lift_track(3500, 0, DISPOSAL["min_duration_s"] + longer_s)) == expected


@pytest.mark.parametrize(
    ("opening", "expected"),
    [("06:00-12:00", []), ("06:00-09:00", ["unapproved_disposal"])],
    ids=["open", "closed"],
)
def test_unloading_at_the_approved_site_outside_its_opening_hours(opening, expected):
    start, end = opening.split("-")
    hours = [{"days": "daily", "start": start, "end": end}]
    closed = feature(
        "DISP-B",
        "disposal",
        {"type": "Polygon", "coordinates": square(5000, 0, 150)},
        opening_hours=hours,
    )
    frames = Frames(city_zones(closed))
    assert kinds_of(lift_track(5000, 0, 60, after=EMPTY), frames=frames) == expected


# -- restricted zone -------------------------------------------------------------------------
RESTRICTED = RestrictedZone.spec_in(SETTINGS)
# RESTR-AM: x -2800..-2200 at y 1700..2300, banned 07:00-09:00 every day.
MORNING_BAN = feature(
    "RESTR-AM",
    "restricted",
    {"type": "Polygon", "coordinates": square(-2500, 2000, 300)},
    windows=[{"days": "daily", "start": "07:00", "end": "09:00"}],
)


def through_restr_am(at: float, inside_s: float, y: float = 2000, every_s: float = 1.0) -> Track:
    """An empty truck driving east through RESTR-AM, inside it for `inside_s`."""
    track = Track(T1, at, -3200, y, every_s).leg(30, (-2900, y), kmh=30, **EMPTY)
    track.at(-2750, y).leg(inside_s, (-2250, y), kmh=30, **EMPTY)
    return track.at(-2100, y).leg(30, (-1800, y), kmh=30, **EMPTY)


@pytest.mark.parametrize(
    ("at", "longer_s", "y", "expected"),
    [
        ("08:00", 0, 2000, ["restricted_zone"]),
        ("08:00", -1, 2000, []),
        ("10:00", 600, 2000, []),
        ("08:00", 600, 2320, []),
    ],
    ids=["inside-in-the-window", "too-short", "outside-the-window", "skirting"],
)
def test_restricted_zone(at, longer_s, y, expected):
    track = through_restr_am(local(at), RESTRICTED["min_duration_s"] + longer_s, y)
    frames = Frames(city_zones(MORNING_BAN)).feed(track)
    assert frames.kinds() == expected
    if expected:
        (row,) = frames.violations()
        assert row.zone_code == "RESTR-AM" and row.worst == 30.0  # km/h inside


def test_a_ban_that_begins_while_inside_counts_from_its_start():
    track = through_restr_am(local("06:59"), 120)
    (row,) = Frames(city_zones(MORNING_BAN)).feed(track).violations()
    assert row.kind == "restricted_zone" and row.start == local("07:00")


@pytest.mark.parametrize(
    ("day", "expected"), [(DAY, ["restricted_zone"]), (DAY + dt.timedelta(days=1), [])]
)
def test_a_ban_day_bans_outside_the_window(day, expected):
    frames = Frames(city_zones(MORNING_BAN), ban_days=[BanDay(day, "RESTR-AM", reason="考试")])
    assert kinds_of(through_restr_am(local("10:00"), 120), frames=frames) == expected


def test_a_zone_banned_at_all_times():
    """RESTR-1: x 2200..2800 at y 1700..2300, no windows."""
    track = Track(T1, BASE, 2000, 2000).leg(60, (2600, 2000), kmh=30, **EMPTY)
    assert kinds_of(track) == ["restricted_zone"]
    outside = Track(T1, BASE, 2000, 2400).leg(60, (2600, 2400), kmh=30, **EMPTY)
    assert kinds_of(outside) == []


# -- restricted hours ------------------------------------------------------------------------
HOURS = RestrictedHours.spec_in(SETTINGS)
NIGHTS = permit(operating_hours=[{"days": "daily", "start": "22:00", "end": "06:00"}])


def loaded_on_route(at: float, seconds: float, truck: int = T1, every_s: float = 1.0) -> Track:
    """Loaded along ROUTE-AB from x = 1000 at 15 km/h (at most 14 minutes: the route ends)."""
    assert seconds <= 840
    return along_route(seconds, 15, LOADED, Track(truck, at, 1000, 0, every_s))


@pytest.mark.parametrize(
    ("at", "longer_s", "expected"),
    [
        ("10:00", 0, ["restricted_hours"]),
        ("10:00", -1, []),
        ("23:00", 300, []),
    ],
    ids=["outside-hours-for-the-minimum", "too-short", "inside-hours"],
)
def test_restricted_hours(at, longer_s, expected):
    frames = Frames(permits=[NIGHTS])
    track = loaded_on_route(local(at), HOURS["min_duration_s"] + longer_s)
    assert kinds_of(track, frames=frames) == expected


def test_restricted_hours_begin_when_the_permitted_hours_end():
    frames = Frames(permits=[NIGHTS]).feed(loaded_on_route(local("05:58"), 600))
    (row,) = frames.violations()
    assert row.kind == "restricted_hours" and row.start == local("06:00")


def test_restricted_hours_run_on_through_stops_and_not_inside_a_site():
    half = HOURS["min_duration_s"] / 2 + 10
    track = loaded_on_route(BASE, half)
    track.leg(60, **LOADED)  # standing at a light, still carrying
    along_route(half, 35, LOADED, track)
    assert kinds_of(track, frames=Frames(permits=[NIGHTS])) == ["restricted_hours"]
    loading = Track(T1, BASE, 0, 0).leg(HOURS["min_duration_s"] * 3, **LOADED)  # in SITE-A
    assert kinds_of(loading, frames=Frames(permits=[NIGHTS])) == []


# -- going dark ------------------------------------------------------------------------------
DARK = GoingDark.spec_in(SETTINGS)
WORKING = {"kmh": 35.0, **LOADED}
PARKED = {"kmh": 0.0, "acc": False, **EMPTY}


def dark_track(
    gap_s: float, before: dict = WORKING, after: dict = WORKING, every_s: float = 1.0
) -> Track:
    track = Track(T1, BASE, 1000, 0, every_s).leg(60, (1600, 0), **before).gap(gap_s)
    return track.leg(60, (2200, 0), **after)


@pytest.mark.parametrize(
    ("gap_s", "before", "expected"),
    [
        (DARK_AFTER_S + 1, WORKING, ["going_dark"]),
        (DARK_AFTER_S, WORKING, []),
        (DARK_AFTER_S * 4, PARKED, []),
        (DARK_AFTER_S + 1, {**PARKED, "acc": True}, ["going_dark"]),  # ignition on
        (DARK_AFTER_S + 1, {**PARKED, "load": "half"}, ["going_dark"]),  # loaded
        (DARK_AFTER_S + 1, {**PARKED, "kmh": MOVING_KMH}, ["going_dark"]),  # moving
    ],
    ids=["working", "at-the-limit", "parked", "ignition-on", "loaded", "moving"],
)
def test_going_dark_in_a_batch(gap_s, before, expected):
    frames = Frames().feed(dark_track(gap_s, before))
    assert frames.kinds() == expected
    if expected:
        (row,) = frames.violations()
        assert row.stream == "gap" and row.end - row.start == gap_s
        assert row.worst == pytest.approx(gap_s / 60.0) and row.severity == "minor"


def test_the_fix_before_the_gap_decides_whether_the_truck_was_working():
    assert kinds_of(dark_track(DARK_AFTER_S * 2, WORKING, PARKED)) == ["going_dark"]
    assert kinds_of(dark_track(DARK_AFTER_S * 2, PARKED, WORKING)) == []


@pytest.mark.parametrize(("longer_s", "severity"), [(0, "serious"), (-1, "minor")])
def test_going_dark_is_serious_from_its_threshold(longer_s, severity):
    frames = Frames().feed(dark_track(DARK["serious_after_s"] + longer_s))
    assert [row.severity for row in frames.violations()] == [severity]


def test_back_empty_after_going_dark_loaded_is_flagged_and_not_dumping():
    frames = Frames().feed(dark_track(DARK_AFTER_S + 1, after={"kmh": 35.0, **EMPTY}))
    (row,) = frames.violations()
    assert row.kind == "going_dark" and row.severity == "serious"
    assert row.params["unloaded_while_dark"] is True


@pytest.mark.parametrize(
    ("alarms", "expected"), [(["antenna_cut"], ["going_dark"]), (["overspeed"], [])]
)
def test_a_terminal_alarm_is_going_dark(alarms, expected):
    track = Track(T1, BASE, 1000, 0).leg(60, (1600, 0), **WORKING)
    track.leg(5, (1650, 0), alarms=alarms, **WORKING).leg(60, (2200, 0), **WORKING)
    frames = Frames().feed(track)
    assert frames.kinds() == expected
    assert all(row.stream == "terminal_alarm" for row in frames.violations())


# -- no valid permit -------------------------------------------------------------------------
NO_PERMIT = NoValidPermit.spec_in(SETTINGS)


@pytest.mark.parametrize(
    ("truck", "longer_s", "expected"),
    [(T2, 0, ["no_valid_permit"]), (T2, -1, []), (T1, 600, [])],
    ids=["without-for-the-minimum", "too-short", "with-a-valid-permit"],
)
def test_no_valid_permit(truck, longer_s, expected):
    track = loaded_on_route(BASE, NO_PERMIT["min_duration_s"] + longer_s, truck)
    assert kinds_of(track) == expected


YESTERDAY, TOMORROW = DAY - dt.timedelta(days=1), DAY + dt.timedelta(days=1)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"valid_to": DAY}, []),
        ({"valid_from": DAY}, []),
        ({"valid_to": YESTERDAY}, ["no_valid_permit"]),
        ({"valid_from": TOMORROW}, ["no_valid_permit"]),
        ({"status": "suspended"}, ["no_valid_permit"]),
        ({"status": "revoked"}, ["no_valid_permit"]),
        ({"trucks": (T2,)}, ["no_valid_permit"]),
    ],
    ids=["ends-today", "starts-today", "expired", "not-yet", "suspended", "revoked", "other-truck"],
)
def test_which_permit_is_valid(changes, expected):
    frames = Frames(permits=[permit(**changes)])
    assert kinds_of(loaded_on_route(BASE, 600), frames=frames) == expected


def test_a_permit_ends_at_local_midnight_after_its_last_day():
    frames = Frames(permits=[permit(valid_to=YESTERDAY)])
    (row,) = frames.feed(loaded_on_route(local("23:58", YESTERDAY), 600)).violations()
    assert row.kind == "no_valid_permit" and row.start == local("00:00")


def test_no_valid_permit_needs_a_load_outside_a_site():
    assert kinds_of(along_route(600, 35, EMPTY, Track(T2, BASE, 1000, 0))) == []
    assert kinds_of(Track(T2, BASE, 0, 0).leg(600, **LOADED)) == []  # loading in SITE-A
    stops = loaded_on_route(BASE, 60, T2).leg(60, **LOADED)  # a light: still one transport
    assert kinds_of(along_route(60, 35, LOADED, stops)) == ["no_valid_permit"]


# -- carried from one batch to the next -------------------------------------------------------
# One violating scenario per rule, reporting every 10 s as terminals do: its frames (without
# carry yet) and its track.
TEN = {"every_s": 10.0}
SPLIT = {
    "route_deviation": (
        Frames,
        # off route in the second stretch only by the corridor state carried into it
        lambda: off_route_track((WIDTH + 10, 40), (WIDTH * REENTRY + 1, 40), **TEN),
    ),
    "unsealed_transport": (Frames, lambda: lid_open_track(UNSEALED["min_duration_s"] + 30, **TEN)),
    "illegal_dumping": (Frames, lambda: lift_track(2500, 20, 40, EMPTY, **TEN)),
    "unapproved_disposal": (Frames, lambda: lift_track(3500, 0, 40, EMPTY, **TEN)),
    "speeding": (Frames, lambda: speeding_track(LIMIT + SPEEDING["tolerance_kmh"] + 5, 60, **TEN)),
    "restricted_zone": (
        lambda **kw: Frames(city_zones(MORNING_BAN), **kw),
        lambda: through_restr_am(local("08:00"), 90, **TEN),
    ),
    "restricted_hours": (
        lambda **kw: Frames(permits=[NIGHTS], **kw),
        lambda: loaded_on_route(BASE, HOURS["min_duration_s"] + 60, **TEN),
    ),
    "going_dark": (Frames, lambda: dark_track(DARK_AFTER_S + 60, **TEN)),
    "no_valid_permit": (
        Frames,
        lambda: loaded_on_route(BASE, NO_PERMIT["min_duration_s"] + 60, T2, **TEN),
    ),
}


def test_every_rule_has_a_split_scenario():
    assert list(SPLIT) == [rule.kind for rule in PIPELINE]


def reports_per_violation(frames: Frames) -> set[int]:
    """How often each violation was reported: once when it qualifies, once when it ends
    (once in all when both happen in one batch), never again while it goes on."""
    return set(Counter(row.key for row in frames.episodes).values())


def summary(frames: Frames) -> list[tuple]:
    """What a split may not change. (The place is taken from the episode's first fix when
    the batch holds it; otherwise the evidence job fills it in from the stored fixes.)"""
    return [(r.key, r.end, r.worst, r.severity) for r in frames.violations()]


@pytest.mark.parametrize("stored", [False, True], ids=["cached", "stored"])
@pytest.mark.parametrize("kind", list(SPLIT))
def test_an_episode_split_over_two_batches_is_one_violation(kind, stored):
    """Cut the scenario into two batches before each of its fixes: the carry (open runs,
    the last fix's facts, the rules' kept columns) takes the episode across, and the two
    batches report the one violation that one batch reports."""
    make, build = SPLIT[kind]
    track = build()
    whole = summary(make().feed(track))
    assert [key[1] for key, *_ in whole] == [kind]
    for cut in range(1, len(track.rows)):
        split = make(stored=stored).feed(track, cuts=[cut])
        assert summary(split) == whole, f"cut before fix {cut}"
        assert reports_per_violation(split) <= {1, 2}, f"cut before fix {cut}"


@pytest.mark.parametrize("kind", list(SPLIT))
def test_an_episode_fed_one_fix_a_batch_is_one_violation(kind):
    make, build = SPLIT[kind]
    track = build()
    every_fix = make(stored=True).feed(track, cuts=range(1, len(track.rows)))
    assert summary(every_fix) == summary(make().feed(track))
    assert reports_per_violation(every_fix) <= {1, 2}
