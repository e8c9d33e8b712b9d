"""Scores recomputed from the case history: only decided cases count, in the cycle of their
decision date, from the moment they were decided until they are withdrawn."""

from __future__ import annotations

import datetime as dt

import pytest

from credit.scoring import (
    Scheme,
    SchemeError,
    company_score,
    company_standings,
    score_subject,
    subject_score,
)
from tests.credit.history import at, case, company, violation


def test_cycle_boundaries_follow_the_configured_start(settings):
    scheme = Scheme.from_settings(settings.with_overrides(credit={"cycle_start": "07-01"}))
    assert scheme.cycle_of(dt.date(2026, 6, 30)) == (dt.date(2025, 7, 1), dt.date(2026, 7, 1))
    assert scheme.cycle_of(dt.date(2026, 7, 1)) == (dt.date(2026, 7, 1), dt.date(2027, 7, 1))
    with pytest.raises(SchemeError, match="credit.cycle_start must be MM-DD"):
        Scheme.from_settings(settings.with_overrides(credit={"cycle_start": "July"}))
    with pytest.raises(SchemeError, match="02-29"):
        Scheme.from_settings(settings.with_overrides(credit={"cycle_start": "02-29"}))


def test_score_across_a_cycle_boundary_with_a_withdrawal_and_at_past_dates(db, settings):
    cid, (truck,) = company(db)
    # Cycle 2025: a dumping case decided on 20 Dec 2025.
    dump = violation(db, settings, truck, "illegal_dumping", at(2025, 12, 18))
    case(db, cid, [dump], decided_at=at(2025, 12, 20))
    # Cycle 2026: speeding + route deviation in one case (3 + 3, fine: 罚款 0) on 10 Mar;
    # a second dumping case decided 2 Apr, withdrawn 10 May (points restored).
    s1 = violation(db, settings, truck, "speeding", at(2026, 3, 1))
    s2 = violation(db, settings, truck, "route_deviation", at(2026, 3, 2))
    case(db, cid, [s1, s2], decided_at=at(2026, 3, 10))
    d2 = violation(db, settings, truck, "illegal_dumping", at(2026, 3, 30))
    withdrawn = case(db, cid, [d2], decided_at=at(2026, 4, 2), withdrawn_at=at(2026, 5, 10))
    # A case still open never counts.
    open_v = violation(db, settings, truck, "no_valid_permit", at(2026, 4, 20))
    case(db, cid, [open_v], decided_at=None)

    scheme = Scheme.from_settings(settings)
    # 31 Dec 2025: only the 2025 dumping (10).
    assert company_score(db, settings, cid, scheme.end_of_day(dt.date(2025, 12, 31))).score == 90
    # 1 Jan 2026: a new cycle, back to 100 even though the 2025 case stands.
    assert company_score(db, settings, cid, scheme.end_of_day(dt.date(2026, 1, 1))).score == 100
    # 9 Mar: the March and April cases are not decided yet, and the explanation says so.
    before = company_score(db, settings, cid, scheme.end_of_day(dt.date(2026, 3, 9)))
    assert before.score == 100
    assert [line.what for line in before.lines] == ["not_yet_decided"] * 2
    # 3 May: 3 + 3 + 10 = 16.
    may3 = company_score(db, settings, cid, scheme.end_of_day(dt.date(2026, 5, 3)))
    assert may3.score == 84 and may3.cases == 2
    assert [
        (line.what, line.kind or line.penalty_category, line.points) for line in may3.lines
    ] == [
        ("violation", "speeding", 3),
        ("violation", "route_deviation", 3),
        ("penalty", "罚款", 0),
        ("violation", "illegal_dumping", 10),
        ("penalty", "罚款", 0),
    ]
    # 11 May: the withdrawal gave the 10 points back, and the explanation says so.
    may11 = company_score(db, settings, cid, scheme.end_of_day(dt.date(2026, 5, 11)))
    assert may11.score == 94
    (line,) = [line for line in may11.lines if line.what == "withdrawn"]
    assert line.case_id == withdrawn and line.restored == 10 and line.note == "复核撤销"


def test_penalty_category_points_and_the_floor(db, settings):
    cid, (truck,) = company(db)
    ids = [violation(db, settings, truck, "no_valid_permit", at(2026, 2, d)) for d in range(1, 12)]
    case(db, cid, ids[:1], decided_at=at(2026, 2, 20), penalty_category="吊销许可证件")
    first = company_score(db, settings, cid, at(2026, 2, 21))
    assert first.score == 100 - 10 - 10
    case(db, cid, ids[1:], decided_at=at(2026, 2, 22))
    floored = company_score(db, settings, cid, at(2026, 2, 23))
    assert floored.score == 0 and floored.lines[-1].what == "floor"
    assert floored.lines[-1].points == 100 - 10 - 10 - 100


def test_one_act_one_charge_a_violation_absorbed_in_the_same_case_deducts_nothing(db, settings):
    cid, (truck,) = company(db)
    heavier = violation(db, settings, truck, "restricted_zone", at(2026, 3, 1))
    lighter = violation(db, settings, truck, "route_deviation", at(2026, 3, 1))
    alone = violation(db, settings, truck, "route_deviation", at(2026, 3, 2))
    with db.cursor() as cur:  # as compliance/concurrence.py links the same conduct
        cur.execute(
            "UPDATE violations SET absorbed_by = %s WHERE id = ANY(%s)", (heavier, [lighter, alone])
        )
    db.commit()
    case(db, cid, [heavier, lighter], decided_at=at(2026, 3, 10))
    assert company_score(db, settings, cid, at(2026, 3, 11)).score == 100 - 3
    # Charged on its own (its heavier charge is in no case of this party), it counts.
    case(db, cid, [alone], decided_at=at(2026, 3, 12))
    assert company_score(db, settings, cid, at(2026, 3, 13)).score == 100 - 3 - 3


def test_trucks_and_drivers_carry_scores_when_the_scheme_says_so(db, settings):
    cid, (t1, t2) = company(db, plates=("粤B10001", "粤B10002"))
    v1 = violation(db, settings, t1, "going_dark", at(2026, 3, 1))
    v2 = violation(db, settings, t2, "speeding", at(2026, 3, 1))
    case(db, cid, [v1, v2], decided_at=at(2026, 3, 5), driver_licence="440301199001011234")
    when = at(2026, 3, 6)
    truck1 = subject_score(db, settings, "truck", t1, when)
    assert truck1.score == 95 and [line.kind for line in truck1.lines] == ["going_dark"]
    assert subject_score(db, settings, "truck", t2, when).score == 97
    with pytest.raises(SchemeError, match="does not score drivers"):
        subject_score(db, settings, "driver", "440301199001011234", when)
    drivers = settings.with_overrides(credit={"score_drivers": True})
    assert subject_score(db, drivers, "driver", "440301199001011234", when).score == 92
    no_trucks = settings.with_overrides(credit={"score_trucks": False})
    with pytest.raises(SchemeError, match="does not score trucks"):
        subject_score(db, no_trucks, "truck", t1, when)


def test_standings_rank_lowest_first_with_a_daily_history(db, settings):
    good, _ = company(db, "好运输公司", None, plates=("粤B20001",))
    bad, (truck,) = company(db, "差运输公司", "91350100M000100Y43", plates=("粤B20002",))
    now = dt.datetime.now(dt.UTC)
    v = violation(db, settings, truck, "illegal_dumping", now - dt.timedelta(days=3))
    case(db, bad, [v], decided_at=now - dt.timedelta(days=2), demo=True)
    standings = company_standings(db, settings, history_days=5)
    assert [s.company_id for s in standings] == [bad, good]
    assert standings[0].score.score == 90 and standings[0].demo
    # Decided two days ago: the end of each day from then on has the 10 points off.
    assert [points for _, points in standings[0].history] == [100, 100, 90, 90, 90]
    assert [points for _, points in standings[1].history] == [100] * 5


def test_pure_scoring_needs_no_database(settings):
    # Scoring is a function of the cases: the same history always gives the same score.
    scheme = Scheme.from_settings(settings)
    score = score_subject(scheme, [], "company", 1, at(2026, 1, 1))
    assert score.score == 100 and score.lines == [] and score.cycle_start == dt.date(2026, 1, 1)
