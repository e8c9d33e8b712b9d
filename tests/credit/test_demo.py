"""The demo's credit data: a sample of violations confirmed and decided as demo cases, which
score the companies and show as demo data (the real `muck demo` is started by
tests/muck/test_demo_first_minute.py)."""

from __future__ import annotations

import datetime as dt

from compliance.violations import get_violation
from credit.demo import DemoCases
from credit.scoring import company_score
from tests.credit.history import company, violation

NOW = dt.datetime.now(dt.UTC)


def test_demo_cases_confirm_a_sample_and_decide_it(db, settings):
    cid, (truck,) = company(db)
    ids = [
        violation(
            db, settings, truck, "illegal_dumping", NOW - dt.timedelta(hours=h), confirm=False
        )
        for h in range(1, 7)
    ]
    made = DemoCases(settings, per_run=10, limit=2)(db)
    assert len(made) == 2
    sampled = [v for v in ids if v % 2 == 0][:2]
    for vid in ids:
        status = get_violation(db, vid)[0]["status"]
        assert status == ("case_opened" if vid in sampled else "new"), vid
    with db.cursor() as cur:
        cur.execute("SELECT demo, status, decision_no IS NOT NULL FROM credit_cases")
        assert cur.fetchall() == [(True, "decided", True)] * 2
    db.rollback()
    assert company_score(db, settings, cid).score == 80
    assert DemoCases(settings, per_run=10, limit=2)(db) == []  # the limit holds
