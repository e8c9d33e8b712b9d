"""The supervisor's first minutes on the live map, in chromium: the map fits the city (not the
configured centre) and keeps the user's view on reload; with no tile server the streets come
from the database (screenshot); a configured tile URL still works and the switcher offers
both; "updated at" is the server's time in the city zone, labelled, although the browser
runs in another zone."""

from __future__ import annotations

import datetime as dt
import re
import struct
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from zoneinfo import ZoneInfo

import pytest

from tests.web.browser.test_web_browser import ARGS, CHROMIUM, SHOTS, _login, sync_api
from tests.web.browser.test_web_browser import pytestmark as needs_chromium
from tests.web.test_dashboard import add_user, close_app, make_app, web_settings

pytestmark = [needs_chromium, pytest.mark.skipif(sync_api is None, reason="playwright missing")]

# The simulated city lies 20 km north-east of the configured centre (114.06, 22.55).
CITY_CENTRE = (114.25, 22.70)


def _png(rgb=(120, 160, 220)) -> bytes:
    """A plain 256 x 256 PNG tile."""
    raw = b"".join(b"\x00" + bytes(rgb) * 256 for _ in range(256))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", 256, 256, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


@pytest.fixture
def tile_server():
    """A tile server on 127.0.0.1 that counts the tiles it serves."""
    served: list[str] = []
    tile = _png()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            served.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(tile)))
            self.end_headers()
            self.wfile.write(tile)

        def log_message(self, *args):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_port}", served
    srv.shutdown()


def _serve(database_url, **web):
    from werkzeug.serving import make_server

    settings = web_settings(database_url, live_poll_s=1, live_overlap_s=0, **web)
    # Playwright's waits evaluate strings ('unsafe-eval'); inline scripts stay forbidden,
    # so the pages run under the production policy otherwise.
    app = make_app(database_url, MUCK_SETTINGS=settings, MUCK_CSP_SCRIPT_EXTRA="'unsafe-eval'")
    srv = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, app


@pytest.fixture
def city(db, settings):
    from simulators.city import generate_city, install_city

    city = generate_city(5, trucks=10, center=CITY_CENTRE)
    install_city(db, settings, city)
    # trucks on the road: a state for each, at its route's second node
    with db.cursor() as cur:
        for truck in city.trucks:
            lon, lat = city.lonlat(*city.route_xy(city.permits[0].routes[0])[1])
            cur.execute(
                """INSERT INTO truck_state (truck_id, device_id, fix_time, received_at, lat, lon,
                       speed_kmh, heading, lid, lift, load)
                   SELECT id, %s, now(), now(), %s, %s, 30, 90, 'closed', 'down', 'full'
                   FROM trucks WHERE plate = %s""",
                (truck.device_id, lat, lon, truck.plate),
            )
    db.commit()
    return city


@pytest.fixture
def browser():
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


def test_fit_streets_without_tiles_view_kept_and_updated_in_city_zone(
    db, database_url, city, browser
):
    add_user(db, "watcher", "supervisor")
    srv, app = _serve(database_url)
    base = f"http://127.0.0.1:{srv.server_port}"
    try:
        # the browser's own zone is New York (UTC-5 in winter); the city's is Shanghai (UTC+8)
        context = browser.new_context(
            viewport={"width": 1280, "height": 800}, timezone_id="America/New_York"
        )
        page = context.new_page()
        assert page.evaluate("new Date(Date.UTC(2026, 11, 3)).getTimezoneOffset()") == 300
        _login(page, base, "watcher")
        page.goto(base + "/map")
        page.wait_for_function(
            "window.muckMap && window.muckMap.view === 'fitted' && window.muckBasemap"
            " && window.muckBasemap.features > 0 && window.muckMap.drawnCount === 10",
            timeout=20000,
        )
        # fitted to the city, 20 km from the configured centre
        centre = page.evaluate(
            "(() => { const c = window.muckMap.map.getCenter(); return [c.lng, c.lat]; })()"
        )
        assert abs(centre[0] - CITY_CENTRE[0]) < 0.02 and abs(centre[1] - CITY_CENTRE[1]) < 0.02
        inside = page.evaluate(
            """(() => { const m = window.muckMap.map, b = m.getBounds(); let all = true;
                 m.eachLayer((l) => { if (l.getBounds && l.feature) all = all && b.contains(l.getBounds()); });
                 return all; })()"""
        )
        assert inside, "a zone lies outside the fitted view"
        # the streets are drawn on the base layer's canvas, with no tile server at all
        assert page.locator(".leaflet-tile").count() == 0
        painted = page.evaluate(
            """(() => { const c = document.querySelector('.leaflet-basemap-pane canvas');
                 const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                 let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; })()"""
        )
        assert painted > 5000, f"only {painted} street pixels"
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "live-map-offline-streets.png"))
        # "updated at": the server's time in the city zone, with its label
        page.wait_for_function("window.muckMap.updates >= 2", timeout=10000)
        text = page.inner_text("#updated")
        ms = page.evaluate("window.muckMap.serverMs")
        expected = dt.datetime.fromtimestamp(ms / 1000, ZoneInfo("Asia/Shanghai"))
        match = re.search(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) \((UTC[+-][\d:]+)\)", text)
        assert match, text
        # the label may lag one poll behind serverMs: allow the poll interval
        shown = dt.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S").replace(
            tzinfo=ZoneInfo("Asia/Shanghai")
        )
        assert match.group(2) == "UTC+8" and abs((shown - expected).total_seconds()) <= 3, text
        # a truck's "last report" in the info panel: the same form
        page.evaluate(
            f"window.muckMap.select({next(iter(page.evaluate('Object.keys(window.muckMap.positions)')))})"
        )
        page.wait_for_function("document.querySelector('#truck-info table') !== null", timeout=5000)
        assert "(UTC+8)" in page.inner_text("#truck-info")
        # the user's view is kept: refreshes do not move it, a reload restores it
        page.evaluate("void window.muckMap.map.setView([22.71, 114.26], 15, {animate: false})")
        page.wait_for_function("window.muckMap.updates >= 4", timeout=10000)
        page.reload()
        page.wait_for_function(
            "window.muckMap && window.muckMap.updates >= 1 && window.muckBasemap.features > 0",
            timeout=20000,
        )
        view = page.evaluate(
            "(() => { const m = window.muckMap.map, c = m.getCenter(); return [c.lat, c.lng, m.getZoom(), window.muckMap.view]; })()"
        )
        assert view[3] == "restored" and view[2] == 15
        assert abs(view[0] - 22.71) < 1e-4 and abs(view[1] - 114.26) < 1e-4
        context.close()
    finally:
        srv.shutdown()
        close_app(app)


def test_a_configured_tile_url_still_works_and_the_switcher_offers_both(
    db, database_url, city, browser, tile_server
):
    url, served = tile_server
    add_user(db, "watcher", "supervisor")
    srv, app = _serve(database_url, tile_url=url + "/{z}/{x}/{y}.png")
    base = f"http://127.0.0.1:{srv.server_port}"
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        _login(page, base, "watcher")
        page.goto(base + "/map")
        page.wait_for_function("window.muckMap && window.muckMap.view === 'fitted'", timeout=20000)
        page.wait_for_function(
            "document.querySelectorAll('.leaflet-tile-loaded').length > 0", timeout=10000
        )
        assert served, "no tile was asked for"
        assert page.evaluate("window.muckBasemap.requests") == 0  # tiles shown, streets not asked
        bases = page.locator(".leaflet-control-layers-base label")
        assert bases.count() == 2
        labels = bases.all_inner_texts()
        assert any("瓦片" in t or "tiles" in t.lower() for t in labels), labels
        streets = next(i for i, t in enumerate(labels) if "离线" in t or "offline" in t.lower())
        bases.nth(streets).locator("input").check()
        page.wait_for_function("window.muckBasemap.features > 0", timeout=10000)
        assert page.locator(".leaflet-tile").count() == 0  # the tile layer was removed
        page.screenshot(path=str(SHOTS / "live-map-switched-to-streets.png"))
    finally:
        srv.shutdown()
        close_app(app)
