"""The dashboard and API through Flask's test client, on the real test database."""

from __future__ import annotations

import datetime as dt
import io
import json
import re

import pytest

from core.config import Settings, load_settings
from web import create_app
from web.users import create_token, create_user

PASSWORD = "correct-horse-1"
ROLES = ("supervisor", "enforcement", "credit", "admin")


def web_settings(database_url: str, **web) -> Settings:
    base = load_settings()
    s = Settings(base.sections, database_url, None, base.source)
    return s.with_overrides(web=web) if web else s


def make_app(database_url: str, **config):
    settings = config.pop("MUCK_SETTINGS", None) or web_settings(database_url)
    # Short alert streams: the browser reconnects, and no stream outlives its test.
    config.setdefault("MUCK_ALERT_STREAM_S", 5)
    app = create_app({"MUCK_SETTINGS": settings, "TESTING": True, "SECRET_KEY": "test", **config})
    return app


def close_app(app) -> None:
    pool = app.extensions.get("muck_pool")
    if pool is not None:
        pool.close()


def add_user(db, username: str, role: str, password: str = PASSWORD):
    with db.cursor() as cur:
        user = create_user(cur, username, password, role, actor="test")
    db.commit()
    return user


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" (?:type="hidden" )?value="([^"]+)"', html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def login(client, username: str, password: str = PASSWORD):
    page = client.get("/login")
    token = csrf_of(page.get_data(as_text=True))
    return client.post(
        "/login", data={"username": username, "password": password, "csrf_token": token}
    )


@pytest.fixture
def app(db, database_url):
    app = make_app(database_url)
    yield app
    close_app(app)


@pytest.fixture
def csrf_app(db, database_url):
    """CSRF checks on (the default); the `app` fixture keeps them on too."""
    app = make_app(database_url)
    yield app
    close_app(app)


@pytest.fixture
def users(db):
    return {role: add_user(db, role, role) for role in ROLES}


@pytest.fixture
def as_role(app, users):
    def client_for(role: str):
        client = app.test_client()
        resp = login(client, role)
        assert resp.status_code == 302, resp.get_data(as_text=True)
        return client

    return client_for


def seed_fleet(db, n: int = 3, *, minutes_ago: float = 0.5):
    """n trucks of one company, each with a state; truck 1 also has a track."""
    with db.cursor() as cur:
        cur.execute(
            "INSERT INTO companies (name, credit_code, credit_code_valid) "
            "VALUES ('深圳市某运输有限公司', NULL, false) RETURNING id"
        )
        company = cur.fetchone()[0]
        ids = []
        for i in range(n):
            cur.execute(
                "INSERT INTO trucks (plate, company_id, updated_at) VALUES (%s, %s, now() - interval '1 hour') RETURNING id",
                (f"粤B{10001 + i}", company),
            )
            tid = cur.fetchone()[0]
            ids.append(tid)
            cur.execute(
                """INSERT INTO truck_state (truck_id, device_id, fix_time, received_at, lat, lon,
                       speed_kmh, heading, lid, lift, load, updated_at)
                   VALUES (%s, %s, now() - make_interval(secs => %s), now(), %s, %s, 30, 90,
                           'closed', 'down', %s, now() - interval '1 hour')""",
                (
                    tid,
                    f"DEV{tid}",
                    minutes_ago * 60,
                    22.55 + 0.01 * i,
                    114.06 + 0.01 * i,
                    "full" if i % 2 == 0 else "empty",
                ),
            )
        now = dt.datetime.now(dt.UTC)
        for k in range(10):
            cur.execute(
                """INSERT INTO positions (device_id, fix_time, received_at, truck_id, lat, lon, speed_kmh, load)
                   VALUES (%s, %s, %s, %s, %s, %s, 20, 'full')""",
                (
                    f"DEV{ids[0]}",
                    now - dt.timedelta(minutes=30 - k),
                    now,
                    ids[0],
                    22.55 + k * 0.001,
                    114.06,
                ),
            )
    db.commit()
    return company, ids


# ---- access: every route, every role ----------------------------------------------------

# (url, permission) for every GET page and API route; None = public.
ROUTES = [
    ("/health", None),
    ("/healthz", None),
    ("/metrics", None),
    ("/login", None),
    ("/account/password", "overview"),
    ("/", "overview"),
    ("/api/v1/overview", "overview"),
    ("/api/v1/me", "overview"),
    ("/api/v1/openapi.json", "overview"),
    ("/map", "map"),
    ("/trucks/", "map"),
    ("/trucks/{truck}/track", "map"),
    ("/api/v1/trucks/live", "map"),
    ("/api/v1/trucks", "map"),
    ("/api/v1/trucks/{truck}", "map"),
    ("/api/v1/trucks/{truck}/track", "map"),
    ("/api/v1/companies", "map"),
    ("/api/v1/zones", "map"),
    ("/api/v1/districts", "map"),
    ("/api/v1/basemap?bbox=114.0,22.5,114.1,22.6", "map"),
    ("/violations/", "violations"),
    ("/violations/{violation}", "violations"),
    ("/violations/export.csv", "enforce"),
    ("/violations/export.xlsx", "enforce"),
    ("/violations/{violation}/evidence.pdf", "evidence"),
    ("/violations/evidence.zip", "evidence"),
    ("/black-trucks/", "violations"),
    ("/black-trucks/{black_truck}", "violations"),
    ("/api/v1/violations", "violations"),
    ("/api/v1/violations/{violation}", "violations"),
    ("/api/v1/violations/{violation}/evidence", "evidence"),
    ("/api/v1/violations/{violation}/evidence.pdf", "evidence"),
    ("/api/v1/violations/evidence.zip", "evidence"),
    ("/api/v1/black-trucks", "violations"),
    ("/registry/companies", "registry"),
    ("/registry/companies/new", "registry"),
    ("/registry/companies/{company}/edit", "registry"),
    ("/registry/trucks", "registry"),
    ("/registry/trucks/new", "registry"),
    ("/registry/trucks/{truck}/edit", "registry"),
    ("/registry/terminals", "registry"),
    ("/registry/terminals/new", "registry"),
    ("/registry/terminals/{terminal}/edit", "registry"),
    ("/registry/zones", "registry"),
    ("/registry/companies/import", "registry"),
    ("/registry/companies/template", "registry"),
    ("/registry/companies/export", "registry"),
    ("/registry/trucks/import", "registry"),
    ("/registry/trucks/template", "registry"),
    ("/registry/trucks/export", "registry"),
    ("/registry/terminals/import", "registry"),
    ("/registry/terminals/template", "registry"),
    ("/registry/terminals/export", "registry"),
    ("/admin/users", "users"),
    ("/admin/audit", "users"),
    ("/alerts/", "alerts"),
    ("/alerts/stream", "alerts"),
    ("/alerts/subscriptions", "alerts"),
    ("/admin/alerts/", "alerts_admin"),
    ("/cases/", "cases"),
    ("/cases/{case}", "cases"),
    ("/cases/new?v={confirmed}", "enforce"),
    ("/cases/{case}/{notice}.pdf", "enforce"),
    ("/credit/", "credit"),
    ("/credit/companies/{company}", "credit"),
    ("/credit/lists/{list_entry}/notice.pdf", "credit_signoff"),
    ("/credit/exports", "credit_export"),
    ("/credit/exports/{credit_export}/download", "credit_export"),
]
ALLOWED = {
    "overview": {"supervisor", "enforcement", "credit", "admin"},
    "map": {"supervisor", "enforcement", "admin"},
    "violations": {"supervisor", "enforcement", "admin"},
    "enforce": {"enforcement", "admin"},
    "evidence": {"supervisor", "enforcement", "credit", "admin"},
    "registry": {"admin"},
    "users": {"admin"},
    "alerts": {"supervisor", "enforcement", "admin"},
    "alerts_admin": {"admin"},
    "cases": {"supervisor", "enforcement", "credit", "admin"},
    "credit": {"supervisor", "enforcement", "credit", "admin"},
    "credit_signoff": {"credit", "admin"},
    "credit_export": {"credit", "admin"},
}


def _fill(url: str, ids: dict) -> str:
    return url.format(**ids)


@pytest.fixture
def ids(db):
    company, trucks = seed_fleet(db)
    with db.cursor() as cur:
        cur.execute(
            "INSERT INTO terminals (device_id, truck_id, valid_from) VALUES ('DEVX', %s, now() - interval '1 day') RETURNING id",
            (trucks[0],),
        )
        terminal = cur.fetchone()[0]
        cur.execute(
            """INSERT INTO violations (truck_id, company_id, kind, stream, started_at, updated_at)
               VALUES (%s, %s, 'speeding', 'over_limit', now() - interval '2 hours',
                       now() - interval '2 hours') RETURNING id""",
            (trucks[0], company),
        )
        violation = cur.fetchone()[0]
        cur.execute(
            """INSERT INTO black_trucks (kind, key, first_seen, last_seen, sightings,
                   confident_sightings, last_evidence_at)
               VALUES ('plate', '粤B66666', now(), now(), 1, 1, now()) RETURNING id"""
        )
        black_truck = cur.fetchone()[0]
        # a credit list entry and an export, for the credit pages (web/credit.py)
        cur.execute(
            """INSERT INTO credit_list_entries (subject_kind, subject_key, company_id,
                   subject_name, list_type, reason, legal_basis, authority_name, proposed_by)
               VALUES ('company', %s, %s, '测试公司', 'watch', 'r', 'b', 'a', 'system')
               RETURNING id""",
            (str(company), company),
        )
        list_entry = cur.fetchone()[0]
        cur.execute(
            """INSERT INTO credit_exports (kind, format, filter, row_count, warning_count,
                   sha256, filename, content, created_by, via)
               VALUES ('lists', 'json', '{}', 0, 0, encode(sha256('{}'::bytea), 'hex'),
                       'x.json', '{}'::bytea, 'test', 'cli') RETURNING id"""
        )
        credit_export = cur.fetchone()[0]
    db.commit()
    # its (provisional) evidence, as the collector's capture job leaves it
    from evidence.capture import CaptureJob

    CaptureJob(load_settings())(db)
    # a case over a confirmed violation (credit/cases.py)
    from core.db import transaction
    from credit.cases import open_case

    with transaction(db) as cur:
        cur.execute(
            """INSERT INTO violations (truck_id, company_id, kind, stream, started_at, status)
               VALUES (%s, %s, 'speeding', 'over_limit', now() - interval '3 hours',
                       'confirmed') RETURNING id""",
            (trucks[0], company),
        )
        in_case = cur.fetchone()[0]
        case = open_case(cur, load_settings(), [in_case], "test")
        cur.execute(
            """INSERT INTO violations (truck_id, company_id, kind, stream, started_at, status)
               VALUES (%s, %s, 'speeding', 'over_limit', now() - interval '4 hours',
                       'confirmed') RETURNING id""",
            (trucks[0], company),
        )
        confirmed = cur.fetchone()[0]
        # changed hours ago, like the other violation: the live map's cursor stays the trucks'
        cur.execute(
            "UPDATE violations SET updated_at = now() - interval '2 hours' WHERE id = ANY(%s)",
            ([in_case, confirmed],),
        )
    return {
        "company": company,
        "truck": trucks[0],
        "terminal": terminal,
        "violation": violation,
        "case": case,
        "confirmed": confirmed,
        "notice": "advance",
        "black_truck": black_truck,
        "list_entry": list_entry,
        "credit_export": credit_export,
    }


def test_every_get_route_is_listed(app):
    """A new route must be added to ROUTES (and so to the role matrix below)."""
    listed = {re.sub(r"\{(\w+)\}", "<id>", u.split("?")[0]) for u, _ in ROUTES}
    for rule in app.url_map.iter_rules():
        if "GET" not in rule.methods or rule.endpoint == "static":
            continue
        path = re.sub(r"<[^>]+>", "<id>", rule.rule)
        assert path in listed, f"{rule.rule} is not in ROUTES"


def test_anonymous_is_sent_to_login_except_health(app, ids):
    client = app.test_client()
    for url, permission in ROUTES:
        resp = client.get(_fill(url, ids))
        if permission is None:
            assert resp.status_code == 200
        elif url.startswith("/api/"):
            assert resp.status_code == 401, url
            assert "error" in resp.get_json()
        else:
            assert resp.status_code == 302, url
            assert "/login?next=" in resp.headers["Location"], url


@pytest.mark.parametrize("role", ROLES)
def test_role_matrix(as_role, ids, role):
    client = as_role(role)
    for url, permission in ROUTES:
        resp = client.get(_fill(url, ids))
        expected = 200 if permission is None or role in ALLOWED[permission] else 403
        assert resp.status_code == expected, f"{role} {url}: {resp.status_code}"


def test_refused_post_for_non_admin(as_role, ids, db):
    client = as_role("supervisor")
    page = client.get("/")
    token = csrf_of(page.get_data(as_text=True))
    resp = client.post(
        f"/registry/companies/{ids['company']}/active", data={"csrf_token": token, "active": "0"}
    )
    assert resp.status_code == 403
    with db.cursor() as cur:
        cur.execute("SELECT active FROM companies WHERE id = %s", (ids["company"],))
        assert cur.fetchone()[0] is True


# ---- log-in, sessions, language ---------------------------------------------------------


def test_login_logout_and_audit(app, users, db):
    client = app.test_client()
    bad = login(client, "admin", "wrong-password")
    assert bad.status_code == 401
    assert "用户名或密码错误" in bad.get_data(as_text=True)
    ok = login(client, "admin")
    assert ok.status_code == 302 and ok.headers["Location"] == "/"
    page = client.get("/")
    assert page.status_code == 200
    client.post("/logout", data={"csrf_token": csrf_of(page.get_data(as_text=True))})
    assert client.get("/").status_code == 302
    with db.cursor() as cur:
        cur.execute("SELECT action, username FROM audit_log WHERE entity = 'web_users' ORDER BY id")
        actions = [r[0] for r in cur.fetchall()]
    assert actions[-3:] == ["user.login_failed", "user.login", "user.logout"]


def test_login_redirect_keeps_next_but_not_other_sites(app, users):
    client = app.test_client()
    resp = client.get("/registry/trucks?q=粤B")
    assert resp.status_code == 302
    nxt = resp.headers["Location"].split("next=")[1]
    page = client.get("/login")
    token = csrf_of(page.get_data(as_text=True))
    resp = client.post(
        f"/login?next={nxt}", data={"username": "admin", "password": PASSWORD, "csrf_token": token}
    )
    assert resp.headers["Location"].startswith("/registry/trucks")
    client2 = app.test_client()
    token = csrf_of(client2.get("/login").get_data(as_text=True))
    resp = client2.post(
        "/login?next=https://evil.example/",
        data={"username": "admin", "password": PASSWORD, "csrf_token": token},
    )
    assert resp.headers["Location"] == "/"


def test_deactivated_user_cannot_log_in_and_loses_session(as_role, db, users):
    client = as_role("supervisor")
    assert client.get("/map").status_code == 200
    with db.cursor() as cur:
        cur.execute("UPDATE web_users SET active = false WHERE username = 'supervisor'")
    db.commit()
    assert client.get("/map").status_code == 302
    assert login(client.application.test_client(), "supervisor").status_code == 401


def test_session_expires(db, database_url, users):
    app = make_app(database_url)
    app.permanent_session_lifetime = dt.timedelta(seconds=1)
    client = app.test_client()
    assert login(client, "admin").status_code == 302
    assert client.get("/").status_code == 200
    import time

    time.sleep(2.1)
    assert client.get("/").status_code == 302
    close_app(app)


def test_session_lifetime_comes_from_settings(database_url):
    app = make_app(database_url, MUCK_SETTINGS=web_settings(database_url, session_lifetime_min=7))
    assert app.permanent_session_lifetime == dt.timedelta(minutes=7)
    close_app(app)


def test_chinese_by_default_english_on_request(as_role):
    client = as_role("supervisor")
    page = client.get("/map").get_data(as_text=True)
    assert "实时地图" in page and "Live map" not in page
    resp = client.post("/lang/en", data={"csrf_token": csrf_of(page), "next": "/map"})
    assert resp.status_code == 302 and resp.headers["Location"] == "/map"
    page = client.get("/map").get_data(as_text=True)
    assert "Live map" in page and "实时地图" not in page
    assert client.post("/lang/fr", data={"csrf_token": csrf_of(page)}).status_code == 400


def test_compiled_translations_match_the_catalogue():
    from pathlib import Path

    from babel.messages.mofile import read_mo
    from babel.messages.pofile import read_po

    folder = Path(__file__).resolve().parents[2] / "web" / "translations" / "zh" / "LC_MESSAGES"
    po = read_po((folder / "messages.po").open("rb"))
    mo = read_mo((folder / "messages.mo").open("rb"))
    for message in po:
        if message.id:
            assert message.string, f"untranslated: {message.id!r}"
            assert mo.get(message.id) is not None and mo[message.id].string == message.string, (
                f"messages.mo is stale for {message.id!r}: run pybabel compile -d web/translations"
            )


# ---- CSRF ---------------------------------------------------------------------------------


def test_csrf_rejects_posts_without_token(as_role, db, ids):
    client = as_role("admin")
    resp = client.post("/registry/companies/new", data={"name": "无令牌公司"})
    assert resp.status_code == 400
    resp = client.post(f"/registry/trucks/{ids['truck']}/active", data={"active": "0"})
    assert resp.status_code == 400
    resp = client.post(
        "/registry/companies/new", data={"name": "无令牌公司", "csrf_token": "forged"}
    )
    assert resp.status_code == 400
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM companies WHERE name = '无令牌公司'")
        assert cur.fetchone()[0] == 0
        cur.execute("SELECT active FROM trucks WHERE id = %s", (ids["truck"],))
        assert cur.fetchone()[0] is True
    anonymous = client.application.test_client()
    assert (
        anonymous.post("/login", data={"username": "admin", "password": PASSWORD}).status_code
        == 400
    )


# ---- bad query parameters: 400 with a message, never 500 ----------------------------------

BAD_API = [
    "/api/v1/trucks/live?since=abc",
    "/api/v1/trucks/live?since=-5",
    "/api/v1/trucks/live?crs=mercator",
    "/api/v1/trucks?page=0",
    "/api/v1/trucks?page=x",
    "/api/v1/trucks?per_page=100000",
    "/api/v1/trucks?sort=plate;drop",
    "/api/v1/trucks?company_id=abc",
    "/api/v1/trucks/{truck}/track?from=yesterday",
    "/api/v1/trucks/{truck}/track?from=2026-13-45T99:00",
    "/api/v1/trucks/{truck}/track?from=2026-01-02T00:00&to=2026-01-01T00:00",
    "/api/v1/trucks/{truck}/track?from=2026-01-01T00:00&to=2026-03-01T00:00",
    "/api/v1/trucks/{truck}/track?from=99999999999999999999",
    "/api/v1/zones?kind=dump",
    "/api/v1/companies?per_page=0",
]


def test_bad_api_params_are_400_with_message(as_role, ids):
    client = as_role("admin")
    for url in BAD_API:
        resp = client.get(_fill(url, ids))
        assert resp.status_code == 400, f"{url}: {resp.status_code}"
        assert resp.get_json()["error"], url


def test_bad_page_params(as_role, ids):
    client = as_role("admin")
    resp = client.get(f"/trucks/{ids['truck']}/track?from=not-a-date")
    assert resp.status_code == 400
    assert 'id="range-error"' in resp.get_data(as_text=True)
    resp = client.get(f"/trucks/{ids['truck']}/track?from=2026-01-02T00:00&to=2026-01-01T00:00")
    assert resp.status_code == 400 and "to must be after from" in resp.get_data(as_text=True)
    assert client.get("/registry/companies?page=-1").status_code == 400
    assert client.get("/registry/zones?kind=nope").status_code == 400
    assert client.get("/trucks/999999/track").status_code == 404
    assert client.get("/api/v1/trucks/999999/track").status_code == 404


# ---- the live map's data ------------------------------------------------------------------


def test_live_full_then_delta(db, database_url, users, ids):
    # No overlap here, to see exactly what changed; the default overlap re-sends rows
    # updated within live_overlap_s before the cursor (checked below).
    app = make_app(database_url, MUCK_SETTINGS=web_settings(database_url, live_overlap_s=0))
    client = app.test_client()
    assert login(client, "supervisor").status_code == 302
    full = client.get("/api/v1/trucks/live").get_json()
    assert full["full"] and full["count"] == 3
    assert set(full["trucks"]["plate"]) == {"粤B10001", "粤B10002", "粤B10003"}
    assert full["companies"] == {str(ids["company"]): "深圳市某运输有限公司"}
    cursor = full["cursor"]
    empty = client.get(f"/api/v1/trucks/live?since={cursor}").get_json()
    assert empty["count"] == 0 and empty["cursor"] == cursor
    with db.cursor() as cur:
        cur.execute(
            "UPDATE truck_state SET lat = 22.6, fix_time = now(), updated_at = now() WHERE truck_id = %s",
            (ids["truck"],),
        )
    db.commit()
    delta = client.get(f"/api/v1/trucks/live?since={cursor}").get_json()
    assert not delta["full"]
    assert delta["trucks"]["id"] == [ids["truck"]] and delta["trucks"]["lat"] == [22.6]
    assert int(delta["cursor"]) > int(cursor)
    # deactivating a truck reaches the map as a row with active = false
    with db.cursor() as cur:
        cur.execute(
            "UPDATE trucks SET active = false, updated_at = now() WHERE id = %s",
            (ids["truck"] + 1,),
        )
    db.commit()
    gone = client.get(f"/api/v1/trucks/live?since={delta['cursor']}").get_json()
    row = gone["trucks"]["id"].index(ids["truck"] + 1)
    assert gone["trucks"]["active"][row] is False
    assert client.get("/api/v1/trucks/live").get_json()["count"] == 2
    close_app(app)


def test_live_delta_overlap_resends_recent_rows(as_role, ids):
    client = as_role("supervisor")
    full = client.get("/api/v1/trucks/live").get_json()
    again = client.get(f"/api/v1/trucks/live?since={full['cursor']}").get_json()
    assert again["count"] == 3  # all were updated at the cursor: inside the 5 s overlap


def test_live_gcj02_display_coordinates(as_role, ids):
    from geofence.coords import wgs84_to_gcj02

    client = as_role("supervisor")
    wgs = client.get("/api/v1/trucks/live").get_json()
    gcj = client.get("/api/v1/trucks/live?crs=gcj02").get_json()
    i = wgs["trucks"]["id"].index(ids["truck"])
    lon, lat = wgs84_to_gcj02(wgs["trucks"]["lon"][i], wgs["trucks"]["lat"][i])
    assert gcj["trucks"]["lon"][i] == pytest.approx(float(lon), abs=1e-6)
    assert gcj["trucks"]["lat"][i] == pytest.approx(float(lat), abs=1e-6)
    assert abs(gcj["trucks"]["lon"][i] - wgs["trucks"]["lon"][i]) > 0.001  # hundreds of metres


def test_track_api_and_pagination(as_role, ids):
    client = as_role("supervisor")
    track = client.get(f"/api/v1/trucks/{ids['truck']}/track").get_json()
    assert track["count"] == 10 and not track["truncated"]
    assert track["points"]["t_ms"] == sorted(track["points"]["t_ms"])
    page1 = client.get("/api/v1/trucks?per_page=2").get_json()
    assert page1["total"] == 3 and len(page1["items"]) == 2 and page1["next"]
    page2 = client.get(page1["next"]).get_json()
    assert len(page2["items"]) == 1 and page2["next"] is None
    assert client.get("/api/v1/trucks?q=10002").get_json()["items"][0]["plate"] == "粤B10002"


def test_overview_counts(as_role, db, ids):
    with db.cursor() as cur:
        cur.execute(
            "UPDATE truck_state SET fix_time = now() - interval '1 hour' WHERE truck_id = %s",
            (ids["truck"],),
        )
        cur.execute("INSERT INTO trucks (plate) VALUES ('粤B99999')")
        cur.execute(
            "INSERT INTO quarantine (received_at, topic, reason, payload, payload_bytes) VALUES (now(), 't', 'malformed_json', '\\x00', 1)"
        )
    db.commit()
    counts = as_role("credit").get("/api/v1/overview").get_json()
    assert counts["trucks_registered"] == 4
    assert (
        counts["trucks_online"] == 2
        and counts["trucks_dark"] == 1
        and counts["trucks_never_reported"] == 1
    )
    assert counts["fixes_today"] >= 0
    assert counts["quarantine_today"] == [{"reason": "malformed_json", "count": 1}]


def test_openapi_documents_every_api_route(app, as_role):
    doc = as_role("supervisor").get("/api/v1/openapi.json").get_json()
    assert doc["openapi"].startswith("3.")
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/v1/"):
            path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
            assert path in doc["paths"], f"{path} missing from openapi.json"


# ---- API tokens ---------------------------------------------------------------------------


def test_bearer_tokens(app, db, users, ids):
    with db.cursor() as cur:
        token = create_token(cur, "supervisor", "wall screen")
        cur.execute("SELECT token_hash FROM web_api_tokens")
        assert token not in cur.fetchone()[0]
    db.commit()
    client = app.test_client()
    auth = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/trucks/live", headers=auth).status_code == 200
    assert client.get("/api/v1/me", headers=auth).get_json()["username"] == "supervisor"
    assert client.get("/map", headers=auth).status_code == 302  # tokens are for the API only
    assert (
        client.get("/api/v1/trucks/live", headers={"Authorization": "Bearer mw_wrong"}).status_code
        == 401
    )
    with db.cursor() as cur:
        cur.execute("UPDATE web_users SET active = false WHERE username = 'supervisor'")
    db.commit()
    assert client.get("/api/v1/trucks/live", headers=auth).status_code == 401


# ---- registry pages -----------------------------------------------------------------------


def _post_form(client, url: str, data: dict, **kw):
    token = csrf_of(client.get(url).get_data(as_text=True))
    return client.post(url, data={**data, "csrf_token": token}, **kw)


def _audit(db, action: str):
    with db.cursor() as cur:
        cur.execute(
            "SELECT username, entity_id, before, after FROM audit_log WHERE action = %s ORDER BY id",
            (action,),
        )
        return cur.fetchall()


def test_company_credit_code_rules(as_role, db, users):
    client = as_role("admin")
    resp = _post_form(client, "/registry/companies/new", {"name": "甲公司", "credit_code": "12345"})
    assert resp.status_code == 400
    assert 'class="error" data-field="credit_code"' in resp.get_data(as_text=True)
    # well-formed, wrong check character: stored, flagged, warned
    resp = _post_form(
        client, "/registry/companies/new", {"name": "乙公司", "credit_code": "91440300MA5DC0L4X0"}
    )
    assert resp.status_code == 302
    page = client.get(resp.headers["Location"]).get_data(as_text=True)
    assert "校验位不通过" in page and "校验未通过" in page
    with db.cursor() as cur:
        cur.execute("SELECT id, credit_code_valid FROM companies WHERE name = '乙公司'")
        company_id, valid = cur.fetchone()
    assert valid is False
    ((who, eid, before, after),) = _audit(db, "company.create")
    assert who == "admin" and eid == str(company_id) and before is None
    assert after["credit_code"] == "91440300MA5DC0L4X0" and after["credit_code_valid"] is False
    # valid code (checked with python-stdnum), edit writes before/after
    from stdnum.cn import uscc

    good = "91440300MA5DC0L4X" + uscc.calc_check_digit("91440300MA5DC0L4X")
    resp = _post_form(
        client,
        f"/registry/companies/{company_id}/edit",
        {"name": "乙公司（新）", "credit_code": good},
    )
    assert resp.status_code == 302
    ((_, _, before, after),) = _audit(db, "company.update")
    assert (
        before["name"] == "乙公司"
        and after["name"] == "乙公司（新）"
        and after["credit_code_valid"] is True
    )
    # duplicate code refused next to the field
    resp = _post_form(client, "/registry/companies/new", {"name": "丙公司", "credit_code": good})
    assert resp.status_code == 400 and 'data-field="credit_code"' in resp.get_data(as_text=True)


def test_truck_plate_rules_and_deactivate(as_role, db, ids):
    client = as_role("admin")
    resp = _post_form(
        client,
        "/registry/trucks/new",
        {"plate": "ABC123", "plate_color": "yellow", "company_id": "0"},
    )
    assert resp.status_code == 400 and 'data-field="plate"' in resp.get_data(as_text=True)
    resp = _post_form(
        client,
        "/registry/trucks/new",
        {"plate": "粤B10001", "plate_color": "yellow", "company_id": "0"},
    )
    assert resp.status_code == 400 and "already registered" in resp.get_data(as_text=True)
    resp = _post_form(
        client,
        "/registry/trucks/new",
        {"plate": "粤b 2345挂", "plate_color": "yellow", "company_id": str(ids["company"])},
    )
    assert resp.status_code == 302, resp.get_data(as_text=True)
    ((_, _, _, after),) = _audit(db, "truck.create")
    assert after["plate"] == "粤B2345挂" and after["company_id"] == ids["company"]
    token = csrf_of(client.get("/registry/trucks").get_data(as_text=True))
    resp = client.post(
        f"/registry/trucks/{ids['truck']}/active", data={"csrf_token": token, "active": "0"}
    )
    assert resp.status_code == 302
    ((_, eid, before, after),) = _audit(db, "truck.deactivate")
    assert eid == str(ids["truck"]) and before["active"] is True and after["active"] is False


def test_terminal_binding_rules(as_role, db, ids):
    client = as_role("admin")
    base = {"device_id": "DEV-NEW-1", "plate": "粤B10002", "model": "JT808-X"}
    resp = _post_form(
        client,
        "/registry/terminals/new",
        {**base, "valid_from": "2026-05-02T00:00", "valid_to": "2026-05-01T00:00"},
    )
    assert resp.status_code == 400 and 'data-field="valid_to"' in resp.get_data(as_text=True)
    resp = _post_form(
        client,
        "/registry/terminals/new",
        {**base, "plate": "粤B77777", "valid_from": "2026-05-01T00:00"},
    )
    assert resp.status_code == 400 and "no registered truck" in resp.get_data(as_text=True)
    resp = _post_form(
        client,
        "/registry/terminals/new",
        {**base, "device_id": "DEVX", "valid_from": "2026-05-01T00:00"},
    )
    assert resp.status_code == 400 and 'data-field="device_id"' in resp.get_data(as_text=True)
    resp = _post_form(client, "/registry/terminals/new", {**base, "valid_from": "2026-05-01T08:00"})
    assert resp.status_code == 302
    with db.cursor() as cur:
        cur.execute("SELECT id, valid_from, model FROM terminals WHERE device_id = 'DEV-NEW-1'")
        tid, vfrom, model = cur.fetchone()
    assert (
        vfrom == dt.datetime(2026, 5, 1, 0, 0, tzinfo=dt.UTC) and model == "JT808-X"
    )  # 08:00 +08:00
    token = csrf_of(client.get("/registry/terminals").get_data(as_text=True))
    assert (
        client.post(
            f"/registry/terminals/{ids['terminal']}/deactivate", data={"csrf_token": token}
        ).status_code
        == 302
    )
    ((_, _, before, after),) = _audit(db, "terminal.deactivate")
    assert before["valid_to"] is None and after["valid_to"] is not None
    assert len(_audit(db, "terminal.create")) == 1


ZONES_OK = {
    "type": "FeatureCollection",
    "features": [
        {
            "type": "Feature",
            "properties": {
                "kind": "site",
                "code": "SITE-T1",
                "name": "测试工地",
                "district": "福田区",
            },
            "geometry": {
                "type": "Polygon",
                "coordinates": [
                    [[114.05, 22.54], [114.06, 22.54], [114.06, 22.55], [114.05, 22.54]]
                ],
            },
        },
    ],
}


def test_zone_upload(as_role, db, users):
    client = as_role("admin")
    bad = {
        "type": "FeatureCollection",
        "features": [
            ZONES_OK["features"][0],
            {
                "type": "Feature",
                "properties": {"kind": "route", "code": "R-NOWIDTH"},
                "geometry": {
                    "type": "LineString",
                    "coordinates": [[114.05, 22.54], [114.06, 22.55]],
                },
            },
        ],
    }
    resp = _post_form(
        client,
        "/registry/zones",
        {
            "file": (io.BytesIO(json.dumps(bad).encode()), "zones.geojson"),
            "crs": "wgs84",
            "fmt": "",
            "kind": "",
        },
        content_type="multipart/form-data",
    )
    assert resp.status_code == 400
    html = resp.get_data(as_text=True)
    assert "feature 1" in html and "R-NOWIDTH" in html and "width_m" in html
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM geofence_zones")
        assert cur.fetchone()[0] == 0
    resp = _post_form(
        client,
        "/registry/zones",
        {
            "file": (io.BytesIO(json.dumps(ZONES_OK).encode()), "zones.geojson"),
            "crs": "wgs84",
            "fmt": "",
            "kind": "",
        },
        content_type="multipart/form-data",
    )
    assert resp.status_code == 302
    ((_, _, _, after),) = _audit(db, "zones.import")
    assert after["codes"] == ["SITE-T1"]
    zones = client.get("/api/v1/zones").get_json()
    assert [f["properties"]["code"] for f in zones["features"]] == ["SITE-T1"]
    token = csrf_of(client.get("/registry/zones").get_data(as_text=True))
    assert (
        client.post(
            "/registry/zones/SITE-T1/active", data={"csrf_token": token, "active": "0"}
        ).status_code
        == 302
    )
    assert client.get("/api/v1/zones").get_json()["total"] == 0
    assert len(_audit(db, "zone.deactivate")) == 1


def test_admin_creates_and_deactivates_users(as_role, db, users):
    client = as_role("admin")
    resp = _post_form(
        client,
        "/admin/users",
        {"username": "zhang.san", "role": "enforcement", "password": "short"},
    )
    assert resp.status_code == 400
    resp = _post_form(
        client,
        "/admin/users",
        {"username": "zhang.san", "role": "enforcement", "password": PASSWORD},
    )
    assert resp.status_code == 302
    assert login(client.application.test_client(), "zhang.san").status_code == 302
    ((who, uid, _, after),) = [
        r for r in _audit(db, "user.create") if r[3]["username"] == "zhang.san"
    ]
    assert who == "admin" and after["role"] == "enforcement" and "password" not in json.dumps(after)
    token = csrf_of(client.get("/admin/users").get_data(as_text=True))
    assert (
        client.post(
            f"/admin/users/{uid}/active", data={"csrf_token": token, "active": "0"}
        ).status_code
        == 302
    )
    assert login(client.application.test_client(), "zhang.san").status_code == 401


def test_health_needs_no_login(app):
    resp = app.test_client().get("/health")
    assert resp.status_code == 200 and resp.get_json() == {"status": "ok", "database": "ok"}


# ---- CLI ----------------------------------------------------------------------------------


def test_cli_user_create_and_token(db, database_url):
    """Through a separate process: invoking the click group here would leave its help-option
    state on the shared command objects (and change docs/cli.md's rendering)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "MUCK_DATABASE_URL": database_url}

    def muck(*args, stdin=None):
        return subprocess.run(
            [sys.executable, "-c", "from muck.cli import main; main()", *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )

    result = muck(
        "user",
        "create",
        "ops",
        "--role",
        "administrator",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    assert result.returncode == 0, result.stderr
    result = muck(
        "user", "create", "ops2", "--role", "boss", "--password-stdin", stdin=PASSWORD + "\n"
    )
    assert result.returncode == 1 and "unknown role" in result.stderr
    assert "Traceback" not in result.stderr
    result = muck("user", "token", "ops", "--name", "gateway")
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert token.startswith("mw_")
    app = make_app(database_url)
    resp = app.test_client().get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert resp.get_json()["role"] == "admin"
    close_app(app)
    assert [r[0] for r in _audit(db, "user.create")] == ["cli"]


def test_live_json_fast_path_matches_python_path(db, ids):
    from web.live import live_trucks, live_trucks_json

    for since in (None, 1):
        fast = json.loads(live_trucks_json(db, since, overlap_s=0))
        slow = live_trucks(db, since, overlap_s=0)
        for doc in (fast, slow):
            doc.pop("server_ms")
        assert fast == json.loads(json.dumps(slow))
