"""`muck accuracy`: the matcher on hand-made cases, and a short scored run of the simulator
through the real ingestion path and rules (in process)."""

from __future__ import annotations

import pytest

from simulators.accuracy import Found, match, run_accuracy, tolerances_s
from simulators.city import generate_city
from simulators.fleet import DEFAULT_RATES, FleetConfig
from simulators.groundtruth import TruthEvent

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


def test_tolerances_from_the_rule_table(settings):
    tol = tolerances_s(settings, 10)
    assert tol["speeding"] == settings.sections["rules"]["speeding"]["min_duration_s"] + 20
    assert tol["going_dark"] == settings.thresholds["dark_after_s"] + 20


SCRIPT = {
    0: ["route_deviation"],
    1: ["unsealed_transport"],
    2: ["speeding"],
    3: ["illegal_dumping"],
    4: ["going_dark"],
    5: ["restricted_zone"],
    6: ["unapproved_disposal"],
    7: ["speeding"],
    8: ["unsealed_transport"],
    9: ["route_deviation"],
}
MIN_PRECISION = 0.9
MIN_RECALL = 0.9


def test_a_short_run_meets_the_floors(db, settings):
    city = generate_city(31, trucks=12, center=(114.06, 22.55), expired=2)
    config = FleetConfig(script=SCRIPT, rates={k: 0.1 for k in DEFAULT_RATES})
    result = run_accuracy(settings, db, city, config, hours=1.0)
    print(result.table())
    injected = {k for ks in SCRIPT.values() for k in ks} | {"no_valid_permit"}
    assert {k for k, s in result.scores.items() if s.truth} >= injected
    assert not result.failures(MIN_PRECISION, MIN_RECALL), result.table()
    assert "| speeding |" in result.markdown()
