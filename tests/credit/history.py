"""A credit history built the way the product builds one: companies and trucks through the
registry, violations through the compliance writer and confirmed by an officer, cases as
rows of credit_cases (the contract with the cases half of issue 14)."""

from __future__ import annotations

import datetime as dt
import itertools
import json

from compliance.violations import EpisodeRow, ViolationWriter, change_status
from core.db import transaction
from registry.service import upsert_company, upsert_truck

UTC = dt.UTC
VALID_CODE = "91110000600037341L"  # passes the GB 32100 check
_serial = itertools.count(1)


def company(
    db, name: str = "深圳某某运输有限公司", code: str | None = VALID_CODE, plates=("粤B10001",)
):
    with transaction(db) as cur:
        cid = upsert_company(cur, name, code, "张三")
        trucks = [upsert_truck(cur, plate, cid) for plate in plates]
    return cid, trucks


def violation(
    db, settings, truck_id: int, kind: str, start: dt.datetime, *, confirm=True, **params
):
    """A violation found by the rule writer (as the collector stores one), confirmed."""
    row = EpisodeRow(
        truck_id=truck_id,
        kind=kind,
        stream="test",
        start=start.timestamp(),
        end=start.timestamp() + 120,
        worst=None,
        unit="",
        severity="minor",
        permit_no=None,
        zone_code=None,
        lat=22.55,
        lon=114.06,
        points=3,
        legal_basis="《城市建筑垃圾管理规定》",
        params=params,
    )
    with transaction(db) as cur:
        (vid,) = ViolationWriter(settings).write(cur, [row])
    if confirm:
        change_status(db, vid, "confirm", "officer1", note="checked")
    return vid


def case(
    db,
    company_id: int,
    violation_ids,
    *,
    decided_at: dt.datetime | None,
    decision_date: dt.date | None = None,
    penalty_category: str | None = "罚款",
    fine_yuan: float | None = 5000,
    withdrawn_at: dt.datetime | None = None,
    status: str | None = None,
    driver_licence: str | None = None,
    demo: bool = False,
) -> int:
    """A case over the violations, decided (and withdrawn) at the given times."""
    n = next(_serial)
    year = (decision_date or (decided_at or dt.datetime.now(UTC)).date()).year
    if decided_at is not None and decision_date is None:
        decision_date = decided_at.astimezone(dt.timezone(dt.timedelta(hours=8))).date()
    if status is None:
        status = "withdrawn" if withdrawn_at else ("decided" if decided_at else "open")
    with db.cursor() as cur:
        cur.execute(
            """SELECT c.name, c.credit_code, c.legal_representative FROM companies c
               WHERE c.id = %s""",
            (company_id,),
        )
        name, code, rep = cur.fetchone()
        cur.execute(
            """INSERT INTO credit_cases (case_no, case_year, company_id, party_name,
                   party_credit_code, legal_representative, facts, legal_basis,
                   penalty_category, penalty_content, fine_yuan, decision_no, decision_date,
                   authority_name, status, withdrawn_reason, decided_at, withdrawn_at,
                   driver_name, driver_licence, demo, created_by)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,
                       %s, %s, %s, 'officer1')
               RETURNING id""",
            (
                f"深城管立〔{year}〕{n:04d}号",
                year,
                company_id,
                name,
                code,
                rep,
                "未按规定路线行驶",
                "《城市建筑垃圾管理规定》第二十六条",
                penalty_category if decided_at else None,
                "罚款人民币伍仟元" if decided_at else "",
                fine_yuan if decided_at else None,
                f"深城管罚〔{year}〕{n:04d}号" if decided_at else None,
                decision_date if decided_at else None,
                "深圳市城市管理和综合执法局",
                status,
                "复核撤销" if withdrawn_at else None,
                decided_at,
                withdrawn_at,
                "李四" if driver_licence else None,
                driver_licence,
                demo,
            ),
        )
        case_id = cur.fetchone()[0]
        for vid in violation_ids:
            cur.execute(
                "INSERT INTO credit_case_violations (case_id, violation_id, active) VALUES (%s, %s, %s)",
                (case_id, vid, withdrawn_at is None),
            )
        cur.execute(
            "INSERT INTO credit_case_events (case_id, actor, action, after) VALUES (%s, 'officer1', 'opened', %s)",
            (case_id, json.dumps({"status": status})),
        )
    db.commit()
    return case_id


def at(y, m, d, h=12) -> dt.datetime:
    """A moment in city time (UTC+8)."""
    return dt.datetime(y, m, d, h, tzinfo=dt.timezone(dt.timedelta(hours=8)))
