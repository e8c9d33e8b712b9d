"""The live map and track replay in Debian's chromium, driven by Playwright.

Skipped (with the reason) when /usr/bin/chromium or playwright is missing; `.ci/run`
installs chromium. Playwright's own browser download is never used.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from tests.web.test_dashboard import add_user, close_app, make_app, seed_fleet, web_settings

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = Path(os.environ.get("MUCK_SCREENSHOTS", "/tmp/muck-screenshots"))

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason=f"{CHROMIUM} is not installed (apt-get install -y chromium)",
)
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright (Python package) is not installed"
)


@pytest.fixture
def server(db, database_url):
    from werkzeug.serving import make_server

    settings = web_settings(database_url, live_poll_s=1, live_overlap_s=0)
    # Playwright's waits evaluate strings ('unsafe-eval'); inline scripts stay forbidden,
    # so the pages run under the production policy otherwise.
    app = make_app(database_url, MUCK_SETTINGS=settings, MUCK_CSP_SCRIPT_EXTRA="'unsafe-eval'")
    srv = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()
    close_app(app)


@pytest.fixture
def page():
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        yield page
        browser.close()


def _login(page, base: str, username: str) -> None:
    page.goto(base + "/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", "correct-horse-1")
    page.click("#login-form button[type=submit]")
    page.wait_for_url(base + "/")


def test_live_map_draws_moves_and_opens_a_track(server, page, db):
    add_user(db, "watcher", "supervisor")
    _, ids = seed_fleet(db, n=40)
    _login(page, server, "watcher")
    page.goto(server + "/map")
    page.wait_for_function(
        "window.muckMap && window.muckMap.trucks.size === 40 && window.muckMap.drawnCount > 5",
        timeout=15000,
    )
    # the trucks are pixels on the canvas, not DOM elements
    assert page.locator(".leaflet-marker-icon").count() == 0
    x, y = page.evaluate(f"window.muckMap.positions[{ids[0]}]")
    painted = page.evaluate(
        f"""(() => {{ const c = document.querySelector('canvas.muck-trucks');
              const r = window.devicePixelRatio || 1;
              return Array.from(c.getContext('2d').getImageData({x} * r - 2, {y} * r - 2, 5, 5).data)
                          .some((v, i) => i % 4 === 3 && v > 0); }})()"""
    )
    assert painted, "nothing drawn where the truck is"
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "live-map.png"))

    with db.cursor() as cur:
        cur.execute(
            "UPDATE truck_state SET lat = lat + 0.01, fix_time = now(), updated_at = now() WHERE truck_id = %s",
            (ids[0],),
        )
    db.commit()
    page.wait_for_function(
        f"window.muckMap.positions[{ids[0]}] && window.muckMap.positions[{ids[0]}][1] < {y} - 5",
        timeout=10000,
    )

    x2, y2 = page.evaluate(f"window.muckMap.positions[{ids[0]}]")
    page.mouse.click(
        x2 + page.locator("#map").bounding_box()["x"], y2 + page.locator("#map").bounding_box()["y"]
    )
    page.wait_for_function("window.muckMap.trackPoints === 10", timeout=10000)
    assert "粤B10001" in page.inner_text("#truck-info")
    page.screenshot(path=str(SHOTS / "live-map-selected.png"))

    page.click("#track-link")
    page.wait_for_function("window.muckTrack && window.muckTrack.points === 10", timeout=10000)
    page.fill("#slider", "9")
    page.dispatch_event("#slider", "input")
    assert page.evaluate("window.muckTrack.index") == 9
    page.screenshot(path=str(SHOTS / "track-replay.png"))


def test_state_filter_hides_trucks(server, page, db):
    add_user(db, "watcher", "supervisor")
    seed_fleet(db, n=10)
    _login(page, server, "watcher")
    page.goto(server + "/map")
    page.wait_for_function("window.muckMap && window.muckMap.drawnCount === 10", timeout=15000)
    page.uncheck("#f-states input[value=loaded]")
    page.wait_for_function("window.muckMap.drawnCount === 5", timeout=5000)


def _districts(db) -> None:
    """福田区 holds trucks 0-4 of seed_fleet(10) but has a hole around truck 2; 罗湖区 is two
    squares, around trucks 7 and 8."""
    import json

    from geofence.io import parse_zones, read_geojson
    from geofence.store import upsert_zones

    def square(lon, lat, d):
        return [
            [lon - d, lat - d],
            [lon + d, lat - d],
            [lon + d, lat + d],
            [lon - d, lat + d],
            [lon - d, lat - d],
        ]

    doc = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {"kind": "district", "code": "440304", "name": "福田区"},
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [square(114.08, 22.57, 0.025), square(114.08, 22.57, 0.003)],
                },
            },
            {
                "type": "Feature",
                "properties": {"kind": "district", "code": "440303", "name": "罗湖区"},
                "geometry": {
                    "type": "MultiPolygon",
                    "coordinates": [[square(114.13, 22.62, 0.004)], [square(114.14, 22.63, 0.004)]],
                },
            },
        ],
    }
    upsert_zones(db, parse_zones(read_geojson(json.dumps(doc))))


def test_district_filter_uses_the_current_position(server, page, db):
    add_user(db, "watcher", "supervisor")
    _districts(db)
    _, ids = seed_fleet(db, n=10)
    _login(page, server, "watcher")
    page.goto(server + "/map")
    page.wait_for_function(
        "window.muckMap && window.muckMap.districtsLoaded === 2 && window.muckMap.drawnCount === 10",
        timeout=15000,
    )
    page.select_option("#f-district", "440304")
    page.wait_for_function(
        "window.muckMap.drawnCount === 4", timeout=15000, polling=200
    )  # 0, 1, 3, 4
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "live-map-district.png"))
    page.select_option("#f-district", "440303")
    page.wait_for_function("window.muckMap.drawnCount === 2", timeout=15000, polling=200)  # 7 and 8
    # truck 9 drives into 罗湖区: it is shown once its new position arrives
    with db.cursor() as cur:
        cur.execute(
            "UPDATE truck_state SET lat = 22.63, lon = 114.14, fix_time = now(), updated_at = now()"
            " WHERE truck_id = %s",
            (ids[9],),
        )
    db.commit()
    page.wait_for_function("window.muckMap.drawnCount === 3", timeout=15000, polling=200)
    # back to 福田区 (the view follows the district; only trucks in view are drawn)
    page.select_option("#f-district", "440304")
    page.wait_for_function("window.muckMap.drawnCount === 4", timeout=15000, polling=200)


def test_district_lookup_in_the_browser_matches_the_database(server, page, db):
    """The map's point-in-polygon (JavaScript) against geofence_district_at (PostgreSQL) on a
    grid across both districts, their hole and their edges."""
    add_user(db, "watcher", "supervisor")
    _districts(db)
    _login(page, server, "watcher")
    page.goto(server + "/map")
    page.wait_for_function("window.muckMap && window.muckMap.districtsLoaded === 2", timeout=15000)
    points = [(114.05 + i * 0.0013, 22.54 + j * 0.0013) for i in range(80) for j in range(80)]
    with db.cursor() as cur:
        cur.execute(
            "SELECT geofence_district_at(x, y) FROM unnest(%s::float8[], %s::float8[]) AS p(x, y)",
            ([p[0] for p in points], [p[1] for p in points]),
        )
        expected = [r[0] for r in cur.fetchall()]
    db.rollback()
    got = page.evaluate(
        "(pts) => pts.map(([x, y]) => window.muckMap.districtAt(x, y))", [list(p) for p in points]
    )
    assert {c for c in expected} == {None, "440304", "440303"}
    assert got == expected
