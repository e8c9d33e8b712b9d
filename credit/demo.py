"""Demo data for the credit pages (`muck demo` only): a sample of the simulated fleet's
violations confirmed on the demo's behalf and turned into decided cases, every one marked
`demo = true` (the pages say so), so that a new user sees companies scored and lists
proposed without playing the officer first.

Nothing here runs outside `muck demo`; a city's cases come from its officers.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from compliance.violations import ViolationError, change_status
from credit.exports import KIND_LABELS

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
            cases.append(decide_demo_case(conn, self.settings, vid))
        return cases


def decide_demo_case(conn, settings: Any, violation_id: int) -> int:
    """Open and decide a demo case over one confirmed violation (status, events, the
    violation marked case_opened with the decision number). Commits."""
    credit = settings["credit"]
    now = dt.datetime.now(dt.UTC)
    with conn.cursor() as cur:
        cur.execute(
            """SELECT v.kind, v.started_at, v.legal_basis, t.plate, c.id, c.name, c.credit_code,
                      c.legal_representative, t.id
               FROM violations v JOIN trucks t ON t.id = v.truck_id
               JOIN companies c ON c.id = t.company_id WHERE v.id = %s""",
            (violation_id,),
        )
        kind, started, basis, plate, company_id, name, code, rep, truck_id = cur.fetchone()
        cur.execute("SELECT nextval('credit_cases_id_seq')")
        case_id = cur.fetchone()[0]
        year = now.year
        label = KIND_LABELS.get(kind, kind)
        fine = FINES.get(kind, 5000)
        cur.execute(
            """INSERT INTO credit_cases (id, case_no, case_year, company_id, truck_id,
                   party_name, party_credit_code, legal_representative, facts, legal_basis,
                   penalty_category, penalty_content, fine_yuan, decision_no, decision_date,
                   authority_name, authority_credit_code, status, decided_at, demo, created_by)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, '罚款', %s, %s, %s,
                       (%s AT TIME ZONE %s)::date, %s, %s, 'decided', %s, true, %s)""",
            (
                case_id,
                f"演示立〔{year}〕D{case_id:05d}号",
                year,
                company_id,
                truck_id,
                name,
                code,
                rep,
                f"{plate} 于 {started:%Y-%m-%d %H:%M} (UTC) {label}（演示数据，平台自动生成）",
                basis,
                f"罚款人民币 {fine} 元",
                fine,
                f"演示罚〔{year}〕D{case_id:05d}号",
                now,
                settings.city["timezone"],
                credit["authority_name"],
                credit["authority_credit_code"] or None,
                now,
                DEMO_ACTOR,
            ),
        )
        cur.execute(
            "INSERT INTO credit_case_violations (case_id, violation_id) VALUES (%s, %s)",
            (case_id, violation_id),
        )
        for action in ("opened", "decided"):
            cur.execute(
                """INSERT INTO credit_case_events (case_id, actor, action, note)
                   VALUES (%s, %s, %s, '演示数据')""",
                (case_id, DEMO_ACTOR, action),
            )
    conn.commit()
    # The violation's own status follows, as an officer's case would leave it.
    change_status(
        conn, violation_id, "open_case", DEMO_ACTOR, decision_no=f"演示罚〔{year}〕D{case_id:05d}号"
    )
    return case_id


def demo_cases_job(settings: Any):
    """The job `muck demo` adds to its collector's jobs."""
    from core.scheduling import Job

    return Job("demo credit cases", DemoCases(settings), 30.0, at_start=False)
