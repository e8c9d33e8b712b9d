"""The dashboard and API through Flask's test client, on the real test database."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from core.config import Settings, load_settings
from web import create_app
from web.users import create_user

PASSWORD = "correct-horse-1"
ROLES = ("supervisor", "enforcement", "credit", "admin")


def web_settings(database_url: str, **web) -> Settings:
    base = load_settings()
    s = Settings(base.sections, database_url, None, base.source)
    return s.with_overrides(web=web) if web else s


def make_app(database_url: str, **config):
    settings = config.pop("MUCK_SETTINGS", None) or web_settings(database_url)
    app = create_app({"MUCK_SETTINGS": settings, "TESTING": True, "SECRET_KEY": "test", **config})
    return app


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
    app.extensions["muck_pool"].close()


@pytest.fixture
def csrf_app(db, database_url):
    """CSRF checks on (the default); the `app` fixture keeps them on too."""
    app = make_app(database_url)
    yield app
    app.extensions["muck_pool"].close()


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
