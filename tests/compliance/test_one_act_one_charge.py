"""一事不二罚: one act, one charge (docs/compliance.md, "One act, one charge"): the policy for
every pair of kinds is documented, a truck without a permit unloading at a real disposal site
is charged with the missing permit only, and overlapping charges for the same conduct are
linked to the heavier one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from compliance.concurrence import POLICY, every_pair, link_concurrent, linked_pairs, relation
from tests.compliance.city import EMPTY, LOADED, Trace, build_city
from tests.compliance.test_rules import run, unload_at

DOCS = Path(__file__).resolve().parents[2] / "docs" / "compliance.md"


@pytest.fixture
def city(db, settings):
    return build_city(db, settings)


def test_every_pair_of_kinds_has_its_documented_policy():
    text = DOCS.read_text(encoding="utf-8")
    section = text.split("## One act, one charge", 1)[1].split("\n## ", 1)[0]
    rows = {
        frozenset((a, b)): rel
        for a, b, rel in re.findall(r"^\| `(\w+)` \| `(\w+)` \| (\w+) \|", section, re.M)
    }
    assert set(rows) == {frozenset(p) for p in every_pair()}
    for a, b in every_pair():
        assert rows[frozenset((a, b))] == relation(a, b)[0], (a, b)
    assert set(POLICY) <= set(every_pair()) | {(b, a) for a, b in every_pair()}


@pytest.mark.services
def test_no_permit_unloading_at_a_disposal_site_is_no_valid_permit_only(db, settings, city):
    # T2 holds no permit; DISP-B is a real disposal site (T1's permit approves it).
    trace = Trace("T2", city.base_ms).dwell(180, **LOADED).drive(1000, 0, 35, **LOADED)
    assert run(db, settings, unload_at(trace, 5000, 0)) == ["no_valid_permit"]


@pytest.mark.services
def test_with_a_permit_the_wrong_disposal_site_is_still_charged(db, settings, city):
    trace = Trace("T1", city.base_ms).dwell(180, **LOADED).drive(1000, 0, 35, **LOADED)
    assert run(db, settings, unload_at(trace, 3500, 0)) == ["unapproved_disposal"]


def _charges(db) -> list[tuple]:
    with db.cursor() as cur:
        cur.execute(
            """SELECT v.kind, p.kind FROM violations v LEFT JOIN violations p ON p.id = v.absorbed_by
               WHERE v.status <> 'withdrawn' ORDER BY v.kind"""
        )
        rows = cur.fetchall()
    db.commit()
    return rows


@pytest.mark.services
def test_off_route_into_a_restricted_zone_is_one_charge(db, settings, city):
    # T1 leaves its route north and crosses RESTR-1 (banned at all times), loaded.
    trace = Trace("T1", city.base_ms).dwell(180, **LOADED).drive(1800, 0, 35, **LOADED)
    trace.drive(1800, 2000, 30, **LOADED).drive(3200, 2000, 30, **LOADED)
    trace.drive(3200, 0, 30, **LOADED).drive(4950, 0, 35, **LOADED)
    run(db, settings, trace)
    # Equal points (3 and 3): the restricted zone, named first in the policy, is charged.
    assert _charges(db) == [("restricted_zone", None), ("route_deviation", "restricted_zone")]
    with db.cursor() as cur:
        cur.execute("SELECT action, note FROM violation_events WHERE action = 'linked'")
        ((action, note),) = cur.fetchall()
    db.commit()
    assert note.startswith("一事不二罚")


@pytest.mark.services
def test_separate_acts_are_not_linked(db, settings, city):
    # Off route at speed: route deviation and speeding are two acts.
    trace = Trace("T1", city.base_ms, x=1800, y=-2000).dwell(30, **EMPTY)
    trace.drive(3200, -2000, 38, **EMPTY)  # speeding in SPEED-30, no permit trip
    run(db, settings, trace)
    assert all(primary is None for _, primary in _charges(db))


def test_the_heavier_charge_follows_the_points(settings):
    assert ("route_deviation", "restricted_zone") in linked_pairs(settings)
    heavier_hours = settings.with_overrides(
        rules={
            **settings["rules"],
            "restricted_hours": {**settings["rules"]["restricted_hours"], "points": 6},
        }
    )
    assert ("route_deviation", "restricted_hours") in linked_pairs(heavier_hours)
    assert ("restricted_zone", "restricted_hours") in linked_pairs(heavier_hours)


@pytest.mark.services
def test_a_link_to_a_withdrawn_charge_is_undone(db, settings, city):
    with db.cursor() as cur:
        ids = []
        for kind, start, end in (
            ("restricted_zone", "10:00", "10:05"),
            ("route_deviation", "10:02", "10:10"),
            ("restricted_hours", "11:00", "11:05"),  # no overlap: stays alone
        ):
            cur.execute(
                """INSERT INTO violations (truck_id, kind, stream, started_at, ended_at)
                   VALUES (%s, %s, 's', %s::timestamptz, %s::timestamptz) RETURNING id""",
                (city.trucks["T1"], kind, f"2026-12-01 {start}+00", f"2026-12-01 {end}+00"),
            )
            ids.append(cur.fetchone()[0])
        assert link_concurrent(cur, settings, [city.trucks["T1"]]) == [(ids[1], ids[0])]
        cur.execute("UPDATE violations SET status = 'withdrawn' WHERE id = %s", (ids[0],))
        link_concurrent(cur, settings, [city.trucks["T1"]])
        cur.execute("SELECT absorbed_by FROM violations WHERE id = %s", (ids[1],))
        assert cur.fetchone() == (None,)
    db.rollback()
