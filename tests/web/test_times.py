"""Every time shown is in the city's time zone, labelled: pages, JSON answers, exports' headers.

A known UTC instant (2026-12-03 07:04:05 UTC) is stored and read back through a page and the
map's JSON, in the shipped zone (Asia/Shanghai, UTC+8) and in another one (America/New_York,
UTC-5 in December).
"""

from __future__ import annotations

import datetime as dt

import pytest

from tests.web.test_dashboard import add_user, close_app, login, make_app, seed_fleet, web_settings

KNOWN = dt.datetime(2026, 12, 3, 7, 4, 5, tzinfo=dt.UTC)


def _app(database_url: str, timezone: str | None):
    settings = web_settings(database_url)
    if timezone:
        settings = settings.with_overrides(city={"timezone": timezone})
    return make_app(database_url, MUCK_SETTINGS=settings)


@pytest.mark.parametrize(
    ("timezone", "page_text", "iso"),
    [
        (None, "2026-12-03 15:04:05 (UTC+8)", "2026-12-03T15:04:05+08:00"),
        ("America/New_York", "2026-12-03 02:04:05 (UTC-5)", "2026-12-03T02:04:05-05:00"),
    ],
)
def test_a_known_utc_time_in_the_city_zone_with_its_label(
    db, database_url, timezone, page_text, iso
):
    add_user(db, "watcher", "supervisor")
    _, ids = seed_fleet(db, n=2)
    with db.cursor() as cur:
        cur.execute("UPDATE truck_state SET fix_time = %s WHERE truck_id = %s", (KNOWN, ids[0]))
    db.commit()
    app = _app(database_url, timezone)
    try:
        client = app.test_client()
        login(client, "watcher")
        html = client.get("/trucks/").get_data(as_text=True)
        assert page_text in html
        listed = client.get("/api/v1/trucks?q=10001").get_json()["items"][0]
        assert listed["last_report"] == iso
        assert dt.datetime.fromisoformat(listed["last_report"]) == KNOWN  # the same instant
        assert client.get(f"/api/v1/trucks/{ids[0]}").get_json()["fix_time"] == iso
        track = client.get(
            f"/api/v1/trucks/{ids[0]}/track?from=2026-12-03T07:00:00Z&to=2026-12-03T07:04:05Z"
        ).get_json()
        assert track["to"] == iso
        # the map page hands the browser the zone (map_common.js formats in it)
        zone = timezone or "Asia/Shanghai"
        assert f'"timezone": "{zone}"' in client.get("/map").get_data(as_text=True)
        overview = client.get("/").get_data(as_text=True)
        label = page_text.rsplit(" ", 1)[1]
        assert "00:00:00 " + label in overview  # "today" starts at the city's midnight
    finally:
        close_app(app)


def test_the_filter_and_the_helper_are_one(db, database_url):
    from web.times import local_time, offset_label

    app = _app(database_url, None)
    with app.app_context():
        env = app.jinja_env
        assert env.filters["localtime"] is local_time is env.globals["localtime"]
        assert local_time(KNOWN) == "2026-12-03 15:04:05 (UTC+8)"
        assert local_time(KNOWN.isoformat(), label=False) == "2026-12-03 15:04:05"
        assert local_time(None) == ""
        assert offset_label(KNOWN) == "UTC+8"
    with pytest.raises(ValueError, match="naive"):
        with app.app_context():
            local_time(dt.datetime(2026, 12, 3, 7, 4, 5))
    close_app(app)


def test_offset_labels_of_odd_zones(db, database_url):
    from web.times import offset_label

    for zone, label in (
        ("Asia/Kolkata", "UTC+5:30"),
        ("UTC", "UTC"),
        ("America/Sao_Paulo", "UTC-3"),
    ):
        app = _app(database_url, zone)
        with app.app_context():
            assert offset_label(KNOWN) == label
        close_app(app)
