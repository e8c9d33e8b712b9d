# ruff: noqa: F811 - the fixtures of tests/web/test_dashboard.py are imported and used as arguments
"""Security probes on every route of the dashboard and API (Flask's test client, the real
database): anonymous and role access, CSRF-less POSTs, control characters and over-long
values, stored XSS through names, formula injection in exports, bad uploads, log-in
throttling, the password policy and forced resets, cookies and security headers."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import openpyxl
import pytest

from tests.web.test_dashboard import (  # noqa: F401 - fixtures
    PASSWORD,
    ROUTES,
    _fill,
    add_user,
    app,
    as_role,
    close_app,
    csrf_of,
    ids,
    login,
    make_app,
    users,
    web_settings,
)
from web import throttle
from web.users import UserError, create_user

TEMPLATES = Path(__file__).resolve().parents[2] / "web" / "templates"
XSS = '<script>alert("xss")</script><img src=x onerror=alert(1)>'


def _audit(db, action: str) -> list:
    with db.cursor() as cur:
        cur.execute(
            "SELECT username, after FROM audit_log WHERE action = %s ORDER BY id", (action,)
        )
        rows = cur.fetchall()
    db.commit()
    return rows


def _post_rules(app) -> list[str]:
    """Every POST route, with sample values for its path variables."""
    urls = []
    for rule in app.url_map.iter_rules():
        if "POST" not in rule.methods:
            continue
        url = rule.rule
        for arg in rule.arguments:
            url = re.sub(rf"<(?:\w+:)?{arg}>", "1" if "id" in arg else "x", url)
        urls.append(url)
    return sorted(urls)


# ---- control characters and over-long values ----------------------------------------------


def test_a_nul_in_the_company_filter_is_a_400_not_a_500(as_role, ids):
    client = as_role("admin")
    page = client.get("/violations/?company=%00")
    assert page.status_code == 400
    assert "control characters" in page.get_data(as_text=True)
    api = client.get("/api/v1/violations?company=%00")
    assert api.status_code == 400 and "company" in api.get_json()["error"]


@pytest.mark.parametrize(
    "query",
    [
        "company=%00",
        "q=a%01b",
        "plate=%1f",
        "status=x%7f",
        "zzz=%00",
        "%00=1",
        "company=" + "x" * 1001,
    ],
)
def test_every_get_route_refuses_control_characters_and_long_values(as_role, ids, query):
    client = as_role("admin")
    for url, _ in ROUTES:
        filled = _fill(url, ids)
        sep = "&" if "?" in filled else "?"
        resp = client.get(filled + sep + query)
        assert resp.status_code == 400, f"{filled}{sep}{query}: {resp.status_code}"


def test_post_bodies_with_control_characters_are_refused(as_role, ids):
    client = as_role("admin")
    token = csrf_of(client.get("/registry/companies/new").get_data(as_text=True))
    form = client.post("/registry/companies/new", data={"csrf_token": token, "name": "某\x00公司"})
    assert form.status_code == 400
    api = client.post(
        f"/api/v1/violations/{ids['violation']}/actions",
        json={"action": "confirm", "note": "ok\x00"},
        headers={"X-CSRFToken": token},
    )
    assert api.status_code == 400 and "$.note" in api.get_json()["error"]


# ---- CSRF ------------------------------------------------------------------------------------


def test_every_post_route_refuses_a_request_without_csrf_token(as_role, ids, app):
    client = as_role("admin")
    urls = _post_rules(app)
    assert len(urls) >= 15
    for url in urls:
        resp = client.post(url, data={"active": "0", "name": "x"})
        assert resp.status_code in (400, 403, 404, 405), f"{url}: {resp.status_code}"
        assert resp.status_code != 500


def test_anonymous_posts_change_nothing(app, ids):
    client = app.test_client()
    for url in _post_rules(app):
        resp = client.post(url, data={"active": "0"})
        assert resp.status_code in (302, 400, 401, 403, 404, 405), f"{url}: {resp.status_code}"


# ---- stored XSS through names ---------------------------------------------------------------


def test_names_with_markup_are_escaped_on_every_page(as_role, ids, db):
    with db.cursor() as cur:
        cur.execute("UPDATE companies SET name = %s", (XSS,))
        # Plates are validated on every write path; a legacy row is written directly.
        cur.execute("UPDATE trucks SET plate = %s WHERE id = %s", ("粤B" + XSS, ids["truck"]))
        cur.execute(
            """INSERT INTO geofence_zones (code, kind, name, district, geometry)
               VALUES ('XSS-1', 'site', %s, %s, %s)""",
            (XSS, XSS, json.dumps({"type": "Point", "coordinates": [114.06, 22.55]})),
        )
        cur.execute(
            """INSERT INTO permits (number, company_id, origin_site, valid_from, valid_to, note)
               VALUES (%s, %s, 'XSS-1', current_date, current_date + 30, %s)""",
            ("深建渣准" + XSS, ids["company"], XSS),
        )
    db.commit()
    client = as_role("admin")
    seen_in = 0
    for url, _ in ROUTES:
        resp = client.get(_fill(url, ids))
        body = (
            resp.get_data(as_text=True)
            if resp.mimetype.startswith(("text/", "application/j"))
            else ""
        )
        if resp.mimetype == "text/html":
            assert "<script>alert(" not in body and "<img src=x" not in body, url
            seen_in += "&lt;script&gt;alert(" in body
        elif resp.mimetype == "application/json":
            # Data, not markup: served as JSON with nosniff, drawn with textContent or text
            # nodes (web/static/*.js), never as HTML.
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert seen_in >= 3, "the names never reached a page: the test tests nothing"


def test_map_scripts_never_hand_names_to_leaflet_as_html():
    static = Path(__file__).resolve().parents[2] / "web" / "static"
    for js in static.glob("*.js"):
        text = js.read_text()
        for call in re.findall(r"bind(?:Tooltip|Popup)\(([^;]*)", text):
            assert call.startswith(("document.createTextNode(", "T.")), f"{js.name}: {call}"
        assert "insertAdjacentHTML" not in text
        for assigned in re.findall(r"innerHTML\s*=\s*([^;]+);", text):
            assert assigned.strip() == "''", f"{js.name}: innerHTML = {assigned}"


# ---- formula injection in exports ---------------------------------------------------------


@pytest.mark.parametrize("name", ['=HYPERLINK("http://x")', "+1+1", "-2+3", "@SUM(A1)", "\tTAB"])
def test_exports_never_start_a_cell_with_a_formula(as_role, ids, db, name):
    with db.cursor() as cur:
        cur.execute("UPDATE companies SET name = %s", (name,))
    db.commit()
    client = as_role("enforcement")
    text = client.get("/violations/export.csv").get_data().decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(text)))
    cells = [cell for row in rows[1:] for cell in row]
    assert "'" + name in cells
    assert not any(c[:1] in ("=", "+", "@", "\t") for c in cells)
    wb = openpyxl.load_workbook(io.BytesIO(client.get("/violations/export.xlsx").get_data()))
    values = [c.value for row in wb.active.iter_rows(min_row=2) for c in row if c.value]
    assert "'" + name in values
    assert not any(isinstance(v, str) and v[:1] in ("=", "+", "@", "\t") for v in values)


# ---- uploads ------------------------------------------------------------------------------


def _upload(client, content: bytes, filename: str):
    token = csrf_of(client.get("/registry/zones").get_data(as_text=True))
    return client.post(
        "/registry/zones",
        data={
            "csrf_token": token,
            "file": (io.BytesIO(content), filename),
            "crs": "wgs84",
            "fmt": "",
            "kind": "",
        },
        content_type="multipart/form-data",
    )


def test_malformed_and_oversized_zone_uploads_are_refused_with_the_feature_named(
    as_role, ids, db, database_url
):
    client = as_role("admin")
    broken = _upload(client, b'{"type": "FeatureCollection", "features": [', "zones.geojson")
    assert broken.status_code == 400 and "line 1 column 44" in broken.get_data(as_text=True)
    bad_geometry = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {"kind": "site", "code": "OK-1", "name": "a"},
                "geometry": {"type": "Point", "coordinates": [114.06, 22.55]},
            },
            {
                "type": "Feature",
                "properties": {"kind": "site", "code": "BAD-2", "name": "b"},
                "geometry": {"type": "Polygon", "coordinates": [[[114.0, 22.5], [999, 22.5]]]},
            },
        ],
    }
    resp = _upload(client, json.dumps(bad_geometry).encode(), "zones.geojson")
    html = resp.get_data(as_text=True)
    assert resp.status_code == 400 and "feature 1" in html and "BAD-2" in html
    # Larger than web.max_upload_bytes: refused by size, nothing parsed.
    small = make_app(database_url, MUCK_SETTINGS=web_settings(database_url, max_upload_bytes=2000))
    try:
        small_client = small.test_client()
        assert login(small_client, "admin").status_code == 302
        big = json.dumps({"type": "FeatureCollection", "features": [], "pad": "x" * 5000})
        resp = _upload(small_client, big.encode(), "zones.geojson")
        assert resp.status_code == 400 and "2000" in resp.get_data(as_text=True)
        huge = _upload(small_client, b"x" * 200_000, "zones.geojson")
        assert huge.status_code == 413
    finally:
        close_app(small)
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM geofence_zones")
        assert cur.fetchone()[0] == 0
    db.commit()


def test_a_malformed_permits_csv_names_its_line(tmp_path):
    from permits.io import PermitImportError, read_permits_file

    path = tmp_path / "permits.csv"
    path.write_text(
        "number,company,plates,origin_site,disposal_sites,valid_from,valid_to\n"
        "P-1,某公司,粤B12345,SITE-1,DISP-1,2026-01-01,2026-12-31\n"
        "P-2,某公司,粤B12345,SITE-1,DISP-1,not-a-date,2026-12-31\n"
    )
    with pytest.raises(PermitImportError) as exc:
        read_permits_file(path)
    assert "line 3" in str(exc.value)


# ---- log-in throttling and passwords ------------------------------------------------------


def test_wrong_passwords_lock_the_account_with_back_off_and_audit(app, users, db):
    client = app.test_client()
    for _ in range(5):  # web.login_free_failures
        assert login(client, "admin", "wrong-password").status_code == 401
    locked = login(client, "admin")  # the right password, too soon
    assert locked.status_code == 429 and 25 <= int(locked.headers["Retry-After"]) <= 31
    assert _audit(db, "user.login_throttled")[0][1]["username"] == "admin"
    # Another account is not affected (the address has 5 failures, far from its 20).
    assert login(app.test_client(), "supervisor").status_code == 302
    # Back-off doubles with each failure beyond the free ones.
    cfg = app.config["MUCK_SETTINGS"]["web"]
    with db.cursor() as cur:
        first = throttle.retry_after(cur, "admin", "10.1.1.1", cfg)
        throttle.record_failure(cur, "admin", "10.1.1.1", cfg)
        second = throttle.retry_after(cur, "admin", "10.1.1.1", cfg)
        assert 25 < first <= 30 and 55 < second <= 60
        # Once the back-off has passed, the right password logs in and clears the count.
        cur.execute("UPDATE web_login_failures SET at = at - interval '10 minutes'")
    db.commit()
    assert login(client, "admin").status_code == 302
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM web_login_failures WHERE username = 'admin'")
        assert cur.fetchone()[0] == 0
    db.commit()


def test_one_address_trying_many_accounts_is_throttled(app, users, db):
    client = app.test_client()
    for i in range(20):  # web.login_free_failures_per_address
        assert login(client, f"nobody{i}", "wrong-password").status_code == 401
    assert login(client, "supervisor").status_code == 429


@pytest.mark.parametrize(
    "password",
    [
        "aaaaaaaaaa",
        "12345678",
        "abcdefgh",
        "password",
        "Password1",
        "woaini1314",
        "qwerty123",
        "zhangsan-2026",
    ],
)
def test_weak_passwords_are_refused(db, password):
    with db.cursor() as cur, pytest.raises(UserError, match="password"):
        create_user(cur, "zhangsan", password, "supervisor")
    db.rollback()


def test_an_admin_forces_a_password_reset(as_role, users, db):
    admin = as_role("admin")
    token = csrf_of(admin.get("/admin/users").get_data(as_text=True))
    resp = admin.post(
        f"/admin/users/{users['supervisor'].id}/force-reset", data={"csrf_token": token}
    )
    assert resp.status_code == 302
    assert len(_audit(db, "user.password_reset_forced")) == 1
    client = admin.application.test_client()
    assert login(client, "supervisor").headers["Location"] == "/account/password"
    assert client.get("/").headers["Location"] == "/account/password"
    assert client.get("/api/v1/me").status_code == 403
    page = client.get("/account/password")
    token = csrf_of(page.get_data(as_text=True))
    weak = client.post(
        "/account/password", data={"csrf_token": token, "current": PASSWORD, "new": "11111111"}
    )
    assert weak.status_code == 400 and "one character" in weak.get_data(as_text=True)
    ok = client.post(
        "/account/password", data={"csrf_token": token, "current": PASSWORD, "new": "tea-kettle-77"}
    )
    assert ok.status_code == 302
    assert client.get("/").status_code == 200
    again = admin.application.test_client()
    assert login(again, "supervisor", "tea-kettle-77").status_code == 302
    assert again.get("/").status_code == 200


# ---- cookies and headers -----------------------------------------------------------------


def test_session_cookie_flags(app, users, db, database_url):
    resp = login(app.test_client(), "admin")
    cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    tls = make_app(database_url, MUCK_SETTINGS=web_settings(database_url, secure_cookies=True))
    try:
        resp = login(tls.test_client(), "admin")
        assert "Secure" in resp.headers["Set-Cookie"]
    finally:
        close_app(tls)


def test_security_headers_on_every_route(as_role, ids):
    client = as_role("admin")
    for url, _ in ROUTES:
        resp = client.get(_fill(url, ids))
        csp = resp.headers.get("Content-Security-Policy", "")
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp, url
        assert "frame-ancestors 'none'" in csp, url
        assert resp.headers["X-Frame-Options"] == "DENY", url
        assert resp.headers["X-Content-Type-Options"] == "nosniff", url


def test_templates_have_no_inline_script():
    for template in TEMPLATES.rglob("*.html"):
        text = template.read_text()
        for tag in re.findall(r"<script\b[^>]*>", text):
            assert "src=" in tag or 'type="application/json"' in tag, f"{template.name}: {tag}"
        assert not re.search(r"\son[a-z]+\s*=", text), f"{template.name}: inline event handler"
        assert "javascript:" not in text, template.name
