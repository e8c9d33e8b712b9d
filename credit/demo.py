"""Demo data for the credit pages (`muck demo` only): a sample of the simulated fleet's
violations confirmed on the demo's behalf and turned into decided cases, every one marked
`demo = true` (the pages say so), so that a new user sees companies scored and lists
proposed without playing the officer first.

Nothing here runs outside `muck demo`; a city's cases come from its officers.
"""

from __future__ import annotations

import logging
from typing import Any

from compliance.violations import ViolationError, change_status
from core.db import transaction
from credit.cases import CaseError, decide, open_case

log = logging.getLogger(__name__)
DEMO_ACTOR = "demo"
# Fines by kind for the demo's decisions (yuan): illustrative, in the range of the national
# rules (《城市建筑垃圾管理规定》第二十六条: 5,000–50,000 for companies).
FINES = {"illegal_dumping": 20000, "no_valid_permit": 20000, "unapproved_disposal": 10000}


class DemoCases:
    """A clock job of `muck demo`: each run confirms every other ended violation still new
    (the sample), and opens and decides one case per confirmed violation, up to `limit`
    cases in all."""

    def __init__(self, settings: Any, *, per_run: int = 8, limit: int = 40) -> None:
        self.settings = settings
        self.per_run = per_run
        self.limit = limit

    def __call__(self, conn) -> list[int]:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM credit_cases WHERE demo")
            made = cur.fetchone()[0]
            # Ended episodes only (their evidence is being fixed); every other one by id, so
            # the sample is not all of one truck.
            cur.execute(
                """SELECT v.id FROM violations v JOIN trucks t ON t.id = v.truck_id
                   WHERE v.status = 'new' AND v.ended_at IS NOT NULL AND v.id %% 2 = 0
                     AND t.company_id IS NOT NULL
                   ORDER BY v.id LIMIT %s""",
                (max(0, min(self.per_run, self.limit - made)),),
            )
            sample = [row[0] for row in cur.fetchall()]
        conn.commit()
        cases = []
        for vid in sample:
            try:
                change_status(conn, vid, "confirm", DEMO_ACTOR, note="演示数据：自动确认")
            except ViolationError as exc:  # changed meanwhile (e.g. revised by a replay)
                log.info("demo: violation %s not confirmed: %s", vid, exc)
                continue
            try:
                cases.append(decide_demo_case(conn, self.settings, vid))
            except CaseError as exc:  # e.g. its company has no credit code to decide on
                log.info("demo: no case for violation %s: %s", vid, exc)
        return cases


def decide_demo_case(conn, settings: Any, violation_id: int) -> int:
    """Open and decide a demo case over one confirmed violation, through credit/cases.py as
    an officer's case goes (its number, events and the violation's status), marked demo
    data. Commits."""
    with transaction(conn) as cur:
        cur.execute("SELECT kind FROM violations WHERE id = %s", (violation_id,))
        (kind,) = cur.fetchone()
        fine = FINES.get(kind, 5000)
        case_id = open_case(cur, settings, [violation_id], DEMO_ACTOR, note="演示数据", demo=True)
        decide(
            cur,
            settings,
            case_id,
            DEMO_ACTOR,
            fields={
                "penalty_category": "罚款",
                "penalty_content": f"罚款人民币 {fine} 元（演示数据，平台自动生成）",
                "fine_yuan": fine,
            },
            note="演示数据",
        )
    return case_id


def demo_cases_job(settings: Any):
    """The job `muck demo` adds to its collector's jobs."""
    from core.scheduling import Job

    return Job("demo credit cases", DemoCases(settings), 30.0, at_start=False)
