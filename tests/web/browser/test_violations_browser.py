"""An enforcement officer in chromium: filter the violations, open one, confirm it, export
the list as CSV (a real download) and read it back."""

from __future__ import annotations

import csv
import io

from registry.service import upsert_company, upsert_truck
from tests.web.browser.test_web_browser import (  # noqa: F401 (fixtures)
    SHOTS,
    _login,
    page,
    pytestmark,
    server,
)
from tests.web.test_dashboard import add_user
from tests.web.test_violations import insert_violation


def test_officer_filters_opens_confirms_and_exports(server, page, db):  # noqa: F811
    add_user(db, "officer", "enforcement")
    with db.cursor() as cur:
        company = upsert_company(cur, "深圳市甲运输有限公司", None)
        t1 = upsert_truck(cur, "粤B10001", company)
        t2 = upsert_truck(cur, "粤B20002", company)
    db.commit()
    vid = insert_violation(db, t1, company, "speeding")
    insert_violation(db, t2, company, "illegal_dumping")

    _login(page, server, "officer")
    page.click("#nav-violations")
    page.wait_for_selector("#violations")
    assert page.locator("#violations tr[data-id]").count() == 2
    page.select_option("#f-kind", "speeding")
    page.click("#apply-filters")
    page.wait_for_url("**kind=speeding**")
    assert page.locator("#violations tr[data-id]").count() == 1
    assert "超速" in page.inner_text("#kind-counts")

    page.click(f"#violations tr[data-id='{vid}'] td a")
    page.wait_for_function("window.muckViolation && window.muckViolation.points === 6")
    assert page.evaluate("window.muckViolation.start") == 2
    assert "待审核" in page.inner_text("#status")
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "violation.png"), full_page=True)

    page.fill("#form-confirm input[name=note]", "轨迹与车速清楚")
    page.click("#do-confirm")
    page.wait_for_selector("#status:has-text('已确认')")
    assert "轨迹与车速清楚" in page.inner_text("#events")

    page.goto(server + "/violations/?kind=speeding")
    with page.expect_download() as info:
        page.click("#export-csv")
    data = open(info.value.path(), "rb").read()
    assert data.startswith(b"\xef\xbb\xbf")
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))
    assert len(rows) == 1
    assert rows[0]["车牌号码"] == "粤B10001" and rows[0]["状态"] == "已确认"
