"""A supervisor in chromium: a new violation appears on the live feed (the badge counts it, a
notice links to it) without reloading the page, and the supervisor opens it from there."""

from __future__ import annotations

from alerts.dispatcher import Dispatcher
from alerts.subscriptions import create_subscription
from tests.alerts.conftest import fleet, violate  # noqa: F401 (fixture)
from tests.web.browser.test_web_browser import (  # noqa: F401 (fixtures)
    SHOTS,
    _login,
    page,
    pytestmark,
    server,
)
from tests.web.test_dashboard import add_user


def test_supervisor_sees_a_new_alert_and_opens_the_violation(
    server,  # noqa: F811
    page,  # noqa: F811
    db,
    settings,
    fleet,  # noqa: F811
):
    add_user(db, "sup1", "supervisor")
    with db.cursor() as cur:
        create_subscription(cur, owner_kind="user", owner="sup1", channel="feed")
    db.commit()
    _login(page, server, "sup1")
    assert page.inner_text("#alert-badge") == "0"
    page.wait_for_timeout(500)  # the stream is open
    dispatcher = Dispatcher(settings.with_overrides(alerts={"poll_s": 0.2})).start()
    try:
        vid = violate(db, settings, fleet["A"][1], kind="unsealed_transport", severity="serious")
        page.wait_for_selector("#alert-badge:has-text('1')", timeout=10_000)
        toast = page.locator(f"#alert-toasts a[href='/violations/{vid}']")
        toast.wait_for(timeout=5_000)
        text = toast.inner_text()
        assert "未密闭运输" in text and "粤B20001" in text and "Asia/Shanghai" in text
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "alert-feed.png"))
        toast.click()
        page.wait_for_url(f"{server}/violations/{vid}")
        assert "粤B20001" in page.inner_text("main")
        # The unread list has it too, linked to the same page.
        page.goto(server + "/alerts/")
        assert page.locator(f"#alert-list a[href='/violations/{vid}']").count() == 1
        page.click("#mark-all-read")
        page.wait_for_selector("#alert-badge:has-text('0')")
    finally:
        dispatcher.stop()
