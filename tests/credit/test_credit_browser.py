"""A credit officer in chromium: the overview shows a proposed blacklisting, the officer
signs it off, the company moves to the blacklist and its page and trucks carry the flag; the
双公示 file is exported from the dashboard (a real download) and read back with openpyxl."""

from __future__ import annotations

import datetime as dt
import io

import openpyxl

from credit.exports import PENALTY_HEADERS
from credit.lists import evaluate, list_entries
from tests.credit.history import case, company, violation
from tests.web.browser.test_web_browser import (  # noqa: F401 (fixtures)
    SHOTS,
    _login,
    page,
    pytestmark,
    server,
)
from tests.web.test_dashboard import add_user


def test_credit_officer_signs_off_and_exports(server, page, db, settings):  # noqa: F811
    add_user(db, "credit1", "credit")
    now = dt.datetime.now(dt.UTC)
    cid, (truck,) = company(db, plates=("粤B10001",))
    for i in range(3):
        v = violation(db, settings, truck, "illegal_dumping", now - dt.timedelta(days=9 - i))
        case(db, cid, [v], decided_at=now - dt.timedelta(days=8 - i))
    evaluate(db, settings)
    (entry,) = list_entries(db, subject="company")

    _login(page, server, "credit1")
    page.click("#nav-credit")
    page.wait_for_selector("#standings")
    assert "70" in page.inner_text(f"#company-{cid}")
    assert page.locator(f"#company-{cid} svg.spark").count() == 1
    page.click(f"#signoff-{entry['id']}")
    page.wait_for_selector("#list-black")
    assert "深圳某某运输有限公司" in page.inner_text("#list-black")
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "credit-overview.png"), full_page=True)

    page.click(f"#company-{cid} a")
    page.wait_for_selector("#explanation")
    assert page.locator("#explanation tr.line-violation").count() == 3
    assert "失信黑名单" in page.inner_text("#company-flag")
    assert "失信黑名单" in page.inner_text("#trucks")

    page.goto(server + "/credit/")
    page.click("#to-exports")
    page.wait_for_selector("#export-form")
    page.fill("input[name=from]", (now - dt.timedelta(days=30)).date().isoformat())
    page.fill("input[name=to]", now.date().isoformat())
    with page.expect_download() as info:
        page.click("#export-submit")
    data = open(info.value.path(), "rb").read()
    sheet = openpyxl.load_workbook(io.BytesIO(data))["处罚信息"]
    assert tuple(c.value for c in sheet[1]) == PENALTY_HEADERS
    assert sheet.max_row == 4 and sheet.cell(2, 1).value == "深圳某某运输有限公司"
    page.goto(server + "/credit/exports")
    assert page.locator("#exports a[id^=download-]").count() == 1
