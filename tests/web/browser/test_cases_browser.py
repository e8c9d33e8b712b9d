"""An enforcement officer in chromium turns two confirmed violations of one company into a
case on the violation list, and decides it; the company's score drops on the credit page,
and the listing job proposes it for the watch list, where a credit officer sees it."""

from __future__ import annotations

from core.config import load_settings
from core.db import transaction
from credit.cases import decide, open_case
from credit.lists import evaluate
from registry.service import upsert_company, upsert_truck
from tests.web.browser.test_web_browser import (  # noqa: F401 (fixtures)
    SHOTS,
    _login,
    page,
    pytestmark,
    server,
)
from tests.web.test_dashboard import add_user
from tests.web.test_violations import T0, insert_violation


def test_officer_opens_a_case_from_two_violations_and_decides_it(server, page, db):  # noqa: F811
    import datetime as dt

    add_user(db, "officer", "enforcement")
    with db.cursor() as cur:
        company = upsert_company(cur, "深圳市甲运输有限公司", "91110000600037341L")
        other = upsert_company(cur, "深圳市乙运输有限公司", None)
        t1 = upsert_truck(cur, "粤B10001", company)
        t2 = upsert_truck(cur, "粤B10002", company)
        t3 = upsert_truck(cur, "粤B20001", other)
    db.commit()
    first = insert_violation(db, t1, company, "speeding", status="confirmed")
    second = insert_violation(
        db, t2, company, "unsealed_transport", status="confirmed", start=T0 + dt.timedelta(hours=1)
    )
    unrelated = insert_violation(db, t3, other, "speeding", status="confirmed")
    pending = insert_violation(db, t1, company, "speeding", start=T0 + dt.timedelta(hours=2))
    # An earlier decided case (going dark, 5 points): 95 before today's case, 89 after it,
    # below the watch line of 90.
    earlier = insert_violation(
        db, t1, company, "going_dark", status="confirmed", start=T0 - dt.timedelta(days=1)
    )
    settings = load_settings()
    with transaction(db) as cur:
        decide(
            cur,
            settings,
            open_case(cur, settings, [earlier], "officer0"),
            "officer0",
            fields={"penalty_category": "警告"},
        )

    _login(page, server, "officer")
    page.click("#nav-violations")
    page.wait_for_selector("#violations")
    # only confirmed violations can be selected
    assert page.locator(f"#select-{pending}").count() == 0
    page.check(f"#select-{first}")
    page.check(f"#select-{second}")
    page.click("#open-case-selected")
    page.wait_for_selector("#chosen")
    assert page.locator("#chosen tr[data-id]").count() == 2
    assert page.locator(f"#chosen tr[data-id='{unrelated}']").count() == 0
    page.fill("#note", "同一企业两车")
    page.click("#do-open")
    page.wait_for_selector("#case-status[data-status='open']")
    assert "深圳市甲运输有限公司" in page.inner_text("#party")
    assert "粤B10001" in page.inner_text("#facts") and "粤B10002" in page.inner_text("#facts")
    assert "第四十二条" in page.inner_text("#legal-basis")
    assert page.locator("#case-violations tr[data-id]").count() == 2

    # a fine without its amount: refused, the message next to the field
    page.select_option("#decide-penalty_category", "罚款")
    page.click("#do-decide")
    page.wait_for_selector("span.error[data-field='decide-fine_yuan']")
    page.select_option("#decide-penalty_category", "罚款")
    page.fill("#decide-fine_yuan", "20000")
    page.click("#do-decide")
    page.wait_for_selector("#case-status[data-status='decided']")
    assert "20,000.00" in page.inner_text("#fine")
    assert "罚决〔" in page.inner_text("#decision-no")
    assert page.locator("#notice-decision").count() == 1
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "case-decided.png"), full_page=True)

    # the violations moved with the case
    page.click(f"#case-violations tr[data-id='{first}'] a")
    page.wait_for_selector("#in-case")
    assert "已立案" in page.inner_text("#status")
    with db.cursor() as cur:
        cur.execute(
            "SELECT status, decision_no FROM violations WHERE id = ANY(%s) ORDER BY id",
            ([first, second],),
        )
        rows = cur.fetchall()
        cur.execute("SELECT status, decided_at IS NOT NULL FROM credit_cases")
        cases = cur.fetchall()
    db.rollback()
    assert {status for status, _ in rows} == {"case_opened"} and rows[0][1] == rows[1][1]
    assert sorted(cases) == [("decided", True), ("decided", True)]

    # Credit: the company's score dropped by the case's 6 points (speeding 3, unsealed 3),
    # each deduction explained; the listing job proposes it for the watch list.
    page.goto(f"{server}/credit/companies/{company}")
    page.wait_for_selector("#score")
    assert page.inner_text("#score") == "89"
    with db.cursor() as cur:
        cur.execute("SELECT case_no FROM credit_cases WHERE created_by = 'officer'")
        (case_no,) = cur.fetchone()
    db.rollback()
    assert case_no in page.content()
    evaluate(db, settings)  # the listing clock job's work (tests/credit/test_collect_credit.py)
    add_user(db, "creditor", "credit")
    page.context.clear_cookies()  # logged out
    _login(page, server, "creditor")
    page.goto(f"{server}/credit/")
    page.wait_for_selector("#pending")
    pending_rows = page.inner_text("#pending")
    assert "深圳市甲运输有限公司" in pending_rows and "深圳市乙运输有限公司" not in pending_rows
