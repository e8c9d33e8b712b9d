"""The simulator's ground truth against the real rule engine (in-process ingestion path):
every injected misbehaviour is found, and nothing else."""

from __future__ import annotations

import pytest

from compliance.violations import KINDS
from simulators.accuracy import recent_start_ms
from simulators.city import generate_city, install_city
from simulators.fleet import DEFAULT_RATES, Fleet, FleetConfig
from telemetry.ingest import Incoming
from tests.compliance.city import Pipeline, violations
from tests.simulators.test_fleet import SCRIPT as FLEET_SCRIPT

# The fleet tests' scripted trucks, and one more that unloads at a disposal site off its permit.
SCRIPT = {**FLEET_SCRIPT, 6: ["unapproved_disposal"]}
SLACK_S = 30  # fixes every 10 s: an episode is seen up to a few fixes late or early


def overlaps(truth, found) -> bool:
    plate, kind, _stream, start, end = found[:5]
    end = end if end is not None else start
    t_end = truth.end_ms // 1000 if truth.end_ms is not None else 2**62  # still going on
    return (
        plate == truth.plate
        and kind == truth.kind
        and start <= t_end + SLACK_S
        and end >= truth.start_ms // 1000 - SLACK_S
    )


@pytest.mark.parametrize(
    ("seed", "gap_pct", "rates"),
    [(21, 5.0, {}), (22, 100.0, DEFAULT_RATES), (23, 30.0, {k: 0.1 for k in DEFAULT_RATES})],
)
def test_rules_find_the_injected_misbehaviour_and_nothing_else(db, settings, seed, gap_pct, rates):
    city = generate_city(seed, trucks=10, center=(114.06, 22.55), expired=2)
    install_city(db, settings, city)
    duration = 5400
    # A fixed time of day (10:00 city time, outside the rush hours some permits ban), so the
    # outcome does not depend on when the suite runs; tests/simulators/test_accuracy.py covers the hours.
    start_ms = recent_start_ms(settings.city["timezone"], "10:00", duration)
    config = FleetConfig(script=SCRIPT, rates=dict(rates), coverage_gap_pct=gap_pct)
    fleet = Fleet(city, config, start_ms=start_ms)
    messages = fleet.advance(duration) + fleet.finish()
    Pipeline(settings, db).feed([Incoming(t, p) for t, p in messages], batch_size=200)
    found = violations(db)
    # Episodes shorter than a rule's minimum duration may rightly go unreported.
    # Misbehaviour while the terminal was dark is invisible; an episode still open at the end
    # (going dark, found by the clock sweep) is not over yet.
    fleet.annotate_truth()
    long_enough = {  # the rule's minimum duration and three fixes
        kind: (settings.sections["rules"][kind].get("min_duration_s", 0) + 30) * 1000
        for kind in KINDS
    }
    truth = [
        e
        for e in fleet.truth
        if e.kind in KINDS  # alarms, status and black trucks: tests/simulators/test_accuracy.py
        and e.end_ms is not None
        and e.end_ms - e.start_ms >= long_enough[e.kind]
        and not e.detail.get("while_dark")
    ]
    missed = [e for e in truth if not any(overlaps(e, v) for v in found)]
    # A terminal alarm is a going-dark violation of its own stream.
    extra = [
        v
        for v in found
        if not any(
            overlaps(e, v if v[2] != "terminal_alarm" else (v[0], "terminal_alarm", *v[2:]))
            for e in fleet.truth
        )
    ]
    assert not missed, f"not found: {missed}\nfound: {found}"
    assert not extra, f"no such misbehaviour injected: {extra}\ntruth: {fleet.truth}"
    assert {e.kind for e in fleet.truth} >= {k for ks in SCRIPT.values() for k in ks}
    assert "no_valid_permit" in {e.kind for e in truth}  # the two trucks on expired permits
