"""`muck accuracy`: the matcher on hand-made cases, and a short scored run of the simulator
through the real ingestion path and rules (in process)."""

from __future__ import annotations

import pytest

from simulators.accuracy import (
    Found,
    match,
    merge_truth,
    recent_start_ms,
    run_accuracy,
    tolerances_s,
)
from simulators.city import generate_city
from simulators.fleet import DEFAULT_RATES, FleetConfig
from simulators.groundtruth import TruthEvent
from tests.conftest import truncate_all
from tests.mqtt_helpers import count

T0 = 1_800_000_000_000
TOL = {"speeding": 50.0, "illegal_dumping": 40.0, "going_dark": 320.0}


def truth(kind, start_s, end_s, plate="粤B00001", **detail) -> TruthEvent:
    end = T0 + end_s * 1000 if end_s is not None else None
    return TruthEvent(plate, "D1", kind, T0 + start_s * 1000, end, dict(detail))


def found(kind, start_s, end_s, plate="粤B00001") -> Found:
    return Found(plate, kind, T0 + start_s * 1000, T0 + end_s * 1000 if end_s is not None else None)


def test_true_false_positives_and_negatives():
    t = [truth("speeding", 0, 60), truth("speeding", 1000, 1060), truth("speeding", 3000, 3100)]
    v = [
        found("speeding", 10, 60),  # TP, 10 s late
        found("speeding", 2000, 2060),  # nothing there: FP
        found("speeding", 3000, 3100, plate="粤B00002"),  # another truck: FP
        found("illegal_dumping", 3000, 3030),  # another kind: FP
    ]
    s = match(t, v, TOL, T0 + 10_000_000)
    sp = s["speeding"]
    assert (sp.truth, sp.found, sp.tp, sp.fp, sp.fn) == (3, 3, 1, 2, 2)
    assert sp.precision == pytest.approx(1 / 3) and sp.recall == pytest.approx(1 / 3)
    assert sp.errors_s == [10.0]
    assert s["illegal_dumping"].fp == 1 and s["illegal_dumping"].recall is None


def test_one_to_one_and_nearest_start_first():
    t = [truth("speeding", 0, 60), truth("speeding", 100, 160)]
    v = [found("speeding", 95, 160)]  # overlaps both within tolerance: the nearer one
    s = match(t, v, TOL, T0 + 10_000_000)["speeding"]
    assert (s.tp, s.fp, s.fn) == (1, 0, 1)
    assert s.errors_s == [-5.0]
    # Two violations for one episode: the second is a false positive.
    s = match([truth("speeding", 0, 60)], [found("speeding", 0, 30), found("speeding", 40, 60)],
              TOL, T0 + 10_000_000)["speeding"]  # fmt: skip
    assert (s.tp, s.fp, s.fn) == (1, 1, 0)


def test_tolerance_is_per_kind():
    t = [truth("speeding", 0, 60), truth("going_dark", 0, 600)]
    v = [found("speeding", 60 + 49, 200), found("going_dark", 900, 1000)]
    s = match(t, v, TOL, T0 + 10_000_000)
    assert s["speeding"].tp == 1  # 49 s after the end, tolerance 50 s
    assert s["going_dark"].tp == 1  # 300 s after the end, tolerance 320 s
    s = match(t, [found("speeding", 60 + 51, 200)], TOL, T0 + 10_000_000)
    assert (s["speeding"].tp, s["speeding"].fp) == (0, 1)


def test_open_intervals_run_to_the_end():
    t = [truth("going_dark", 5000, None)]
    s = match(t, [found("going_dark", 100, None)], TOL, T0 + 6_000_000)["going_dark"]
    assert s.tp == 1


def test_while_dark_is_excluded_from_recall_but_explains_a_violation():
    t = [truth("speeding", 0, 60, while_dark=True), truth("speeding", 500, 560, while_dark=True)]
    s = match(t, [found("speeding", 40, 70)], TOL, T0 + 10_000_000)["speeding"]
    assert (s.truth, s.dark, s.tp, s.fp, s.fn, s.dark_matched) == (0, 2, 0, 0, 0, 1)
    assert s.recall is None and s.precision == 1.0


def test_short_episodes_are_excluded_from_recall():
    shortest = {"speeding": 40.0, "going_dark": 310.0}
    t = [
        truth("speeding", 0, 30),  # shorter than the rule's minimum: not expected
        truth("speeding", 1000, 1100),
        truth("going_dark", 9700, None),  # dark for 300 s when the run ends: not yet
    ]
    s = match(t, [found("speeding", 5, 30)], TOL, T0 + 10_000_000, shortest)
    sp = s["speeding"]
    assert (sp.truth, sp.short, sp.tp, sp.fp, sp.fn, sp.short_matched) == (1, 1, 0, 0, 1, 1)
    assert sp.recall == 0.0 and sp.recall_all == 0.5 and sp.precision == 1.0
    assert sp.missed == [t[1]]
    assert (s["going_dark"].short, s["going_dark"].fn) == (1, 0)


def test_merge_truth_joins_gaps_the_fixes_cannot_see():
    t = [
        truth("route_deviation", 0, 100),
        truth("route_deviation", 109, 200),  # 9 s later: the same episode
        truth("route_deviation", 230, 300, while_dark=True),  # 30 s later: another
        truth("route_deviation", 305, 400, while_dark=True),
    ]
    merged = merge_truth(t, 10)
    assert [(e.start_ms - T0, e.end_ms - T0) for e in merged] == [
        (0, 200_000),
        (230_000, 400_000),
    ]
    assert not merged[0].detail.get("while_dark") and merged[1].detail["while_dark"]
    assert merged[0].detail["parts"] == 2
    assert t[0].end_ms == T0 + 100_000  # the fleet's truth is left alone


def test_false_positives_where_going_dark_ended_are_noted():
    t = [truth("going_dark", 0, 600)]
    s = match(t, [found("going_dark", 0, 600), found("illegal_dumping", 605, 605)], TOL, T0)
    assert (s["illegal_dumping"].fp, s["illegal_dumping"].fp_after_dark) == (1, 1)


def test_tolerances_from_the_rule_table(settings):
    tol = tolerances_s(settings, 10)
    assert tol["speeding"] == settings.sections["rules"]["speeding"]["min_duration_s"] + 20
    assert tol["going_dark"] == settings.thresholds["dark_after_s"] + 20


# Trucks 2, 6, 10, 14 and 18 of this city are on the permit with operating hours (no transport
# in the rush hours); the run starts on a weekday at 06:55 city time, so the hours and the
# school zone's 07:00-08:30 window are in force: trucks 2, 6 and 14 wait unless they go anyway
# (restricted_hours at the rate), truck 10 ignores the hours, truck 18 is on an expired permit.
SCRIPT = {
    0: ["route_deviation"],
    1: ["unsealed_transport"],
    3: ["speeding"],
    4: ["illegal_dumping"],
    5: ["going_dark"],
    7: ["restricted_zone"],
    8: ["unapproved_disposal"],
    9: ["speeding"],
    10: ["restricted_hours"],
    11: ["unsealed_transport"],
    12: ["going_dark"],
    13: ["route_deviation"],
}
MIN_PRECISION = 0.9
MIN_RECALL = 0.9
EVERY_KIND = {
    "route_deviation",
    "unsealed_transport",
    "illegal_dumping",
    "unapproved_disposal",
    "speeding",
    "restricted_zone",
    "restricted_hours",
    "going_dark",
    "no_valid_permit",
    "terminal_alarm",
    "terminal_offline",
    "black_unregistered_device",
    "black_unregistered_plate",
    "black_no_valid_permit",
    "black_untracked",
}


def short_run(settings, db, transport: str):
    city = generate_city(31, trucks=20, center=(114.06, 22.55), expired=2, black=5)
    config = FleetConfig(
        script=SCRIPT, rates={k: 0.1 for k in DEFAULT_RATES}, drop_pct=2, duplicate_pct=1
    )
    start = recent_start_ms(settings.city["timezone"], "06:55", 3600, weekday=True)
    return run_accuracy(
        settings,
        db,
        city,
        config,
        hours=1.0,
        transport=transport,
        database_url=settings.database_url,
        start_ms=start,
    )


def check_floors(result) -> None:
    print(result.table())
    assert {k for k, s in result.scores.items() if s.truth} >= EVERY_KIND, result.table()
    assert result.failures(MIN_PRECISION, MIN_RECALL) == [], result.table()
    assert "| speeding |" in result.markdown()


def test_a_short_run_meets_the_floors_through_the_broker_as_in_process(db, settings):
    """The suite's accuracy run: every kind present, through the broker and the real
    collector, meeting the floors; the in-process path stores exactly the same."""
    from simulators.accuracy import listed_black_trucks, stored_violations

    result = short_run(settings, db, "broker")
    assert result.transport == "broker" and not result.stopped
    check_floors(result)
    assert count(db, "SELECT count(*) FROM quarantine") == 0
    # Every minute was stored before the clock jobs ran: same violations and black-truck list
    # as the in-process path, which writes each minute synchronously.
    through_broker = (stored_violations(db), listed_black_trucks(db))
    truncate_all(db)
    again = short_run(settings, db, "inprocess")
    assert again.transport == "inprocess"
    assert (stored_violations(db), listed_black_trucks(db)) == through_broker
    assert again.table().split("\n")[1:] == result.table().split("\n")[1:]


def test_the_command_in_a_scratch_database(settings, tmp_path):
    # In a subprocess: invoking the click group here would cache help options that
    # tests/muck/test_cli.py's reference rendering sees.
    import os
    import subprocess
    import sys
    from pathlib import Path

    muck = str(Path(sys.executable).with_name("muck"))
    env = {**os.environ, "MUCK_DATABASE_URL": settings.database_url}
    report = tmp_path / "accuracy.md"
    args = [muck, "accuracy", "--trucks", "6", "--hours", "0.5", "--seed", "3"]

    def run(*extra):
        return subprocess.run([*args, *extra], capture_output=True, text=True, env=env, timeout=60)

    done = run("--report", str(report))  # through the test broker (MUCK_MQTT_URL)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "precision" in done.stdout and "scratch database muck_accuracy_" in done.stdout
    assert "messages (broker)" in done.stdout
    assert report.read_text(encoding="utf-8").startswith("# Rule accuracy")
    failing = run("--min-recall", "1.01", "--transport", "inprocess")
    assert failing.returncode == 1
    assert "below the floor" in failing.stderr and "messages (inprocess)" in failing.stdout


def test_stopping_early_scores_what_ran(db, settings):
    import threading

    stop = threading.Event()
    seen = []

    def status(fleet, fed, duration):
        seen.append(fleet.t)
        stop.set()  # as Ctrl-C does

    city = generate_city(5, trucks=3, center=(114.06, 22.55))
    result = run_accuracy(
        settings, db, city, FleetConfig(), hours=2.0, speedup=0, stop=stop, status=status
    )
    assert result.stopped and 0 < result.simulated_s < 7200
    assert "stopped early" in result.table()
