"""Alerts in the dashboard: the live feed (server-sent events), the badge, unread list and
mark-as-read, subscriptions, and the admin page with dead letters."""

from __future__ import annotations

import threading

import pytest

from alerts.fanout import FanOut
from alerts.subscriptions import create_subscription
from tests.alerts.conftest import violate
from tests.mqtt_helpers import wait_until
from tests.web.test_dashboard import add_user, close_app, csrf_of, login, make_app


@pytest.fixture
def app(db, database_url):
    app = make_app(database_url, MUCK_ALERT_STREAM_S=4)
    yield app
    close_app(app)


def client_of(app, db, username, role):
    add_user(db, username, role)
    client = app.test_client()
    assert login(client, username).status_code == 302
    return client


def feed_subscription(db, owner, **filters):
    with db.cursor() as cur:
        create_subscription(cur, owner_kind="user", owner=owner, channel="feed", **filters)
    db.commit()


def fan_out(settings, db):
    fan = FanOut(settings)
    fan.run(db)
    fan.run(db)


def test_sse_stream_delivers_a_feed_alert_to_the_logged_in_user(app, db, settings, fleet):
    client = client_of(app, db, "sup1", "supervisor")
    feed_subscription(db, "sup1")
    feed_subscription(db, "other")
    resp = client.get("/alerts/stream", buffered=False)
    assert resp.status_code == 200
    assert resp.mimetype == "text/event-stream"
    chunks: list[str] = []

    def read():
        for chunk in resp.response:
            chunks.append(chunk.decode() if isinstance(chunk, bytes) else chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert wait_until(lambda: any("event: count" in c for c in chunks), 5)
    vid = violate(db, settings, fleet["A"][1], kind="speeding")
    fan_out(settings, db)
    assert wait_until(lambda: any("event: alert" in c for c in chunks), 5), chunks
    alert = next(c for c in chunks if "event: alert" in c)
    assert f'"url": "/violations/{vid}"' in alert
    assert '"kind": "超速"' in alert and '"unread": 1' in alert
    assert '"timezone": "Asia/Shanghai"' in alert
    # The stream ends by itself (MUCK_ALERT_STREAM_S) and the browser reconnects.
    reader.join(10)
    assert not reader.is_alive()


def test_badge_unread_list_and_mark_as_read(app, db, settings, fleet):
    client = client_of(app, db, "sup1", "supervisor")
    feed_subscription(db, "sup1")
    vids = [violate(db, settings, fleet["A"][1]) for _ in range(2)]
    fan_out(settings, db)
    page = client.get("/alerts/").get_data(as_text=True)
    assert 'id="alert-badge">2<' in page
    for vid in vids:
        assert f'href="/violations/{vid}"' in page
    assert "(Asia/Shanghai)" in page
    token = csrf_of(page)
    with db.cursor() as cur:
        cur.execute("SELECT id FROM alert_outbox ORDER BY id LIMIT 1")
        (first,) = cur.fetchone()
    db.commit()
    client.post("/alerts/read", data={"csrf_token": token, "id": str(first)})
    assert 'id="alert-badge">1<' in client.get("/alerts/").get_data(as_text=True)
    client.post("/alerts/read", data={"csrf_token": token, "all": "1"})
    assert 'id="alert-badge">0<' in client.get("/").get_data(as_text=True)
    # Without the token nothing changes (and no 500).
    assert client.post("/alerts/read", data={"all": "1"}).status_code == 400


def test_own_subscriptions_page_creates_and_removes(app, db, fleet):
    client = client_of(app, db, "sup1", "supervisor")
    page = client.get("/alerts/subscriptions").get_data(as_text=True)
    token = csrf_of(page)
    bad = client.post(
        "/alerts/subscriptions", data={"csrf_token": token, "districts": "12", "events": "detected"}
    )
    assert bad.status_code == 400 and "6-digit" in bad.get_data(as_text=True)
    company = fleet["B"][0]
    ok = client.post(
        "/alerts/subscriptions",
        data={
            "csrf_token": token,
            "kinds": ["speeding", "unsealed_transport"],
            "severities": "serious",
            "districts": "440304, 440305",
            "companies": str(company),
            "events": "detected",
        },
    )
    assert ok.status_code == 302
    with db.cursor() as cur:
        cur.execute(
            "SELECT id, owner, channel, kinds, districts, company_ids FROM alert_subscriptions"
        )
        sid, owner, channel, kinds, districts, companies = cur.fetchone()
        cur.execute("SELECT count(*) FROM audit_log WHERE action = 'alert_subscription.create'")
        assert cur.fetchone()[0] == 1
    db.commit()
    assert (owner, channel, kinds, districts, companies) == (
        "sup1",
        "feed",
        ["speeding", "unsealed_transport"],
        ["440304", "440305"],
        [company],
    )
    # Another user cannot remove it.
    other = client_of(app, db, "sup2", "supervisor")
    token2 = csrf_of(other.get("/alerts/").get_data(as_text=True))
    assert (
        other.post(f"/alerts/subscriptions/{sid}/remove", data={"csrf_token": token2}).status_code
        == 404
    )
    assert (
        client.post(f"/alerts/subscriptions/{sid}/remove", data={"csrf_token": token}).status_code
        == 302
    )
    with db.cursor() as cur:
        cur.execute("SELECT active FROM alert_subscriptions WHERE id = %s", (sid,))
        assert cur.fetchone()[0] is False
    db.commit()


def test_admin_page_manages_team_webhooks_and_shows_dead_letters(app, db, settings, fleet):
    admin = client_of(app, db, "boss", "admin")
    token = csrf_of(admin.get("/admin/alerts/").get_data(as_text=True))
    resp = admin.post(
        "/admin/alerts/",
        data={
            "csrf_token": token,
            "owner_kind": "team",
            "owner": "district-team",
            "channel": "webhook",
            "target": "http://127.0.0.1:9/hook",
            "events": "detected",
        },
        follow_redirects=True,
    )
    assert "Webhook secret" in resp.get_data(as_text=True) or "密钥" in resp.get_data(as_text=True)
    unknown_user = admin.post(
        "/admin/alerts/",
        data={"csrf_token": token, "owner_kind": "user", "owner": "nobody", "channel": "feed"},
    )
    assert unknown_user.status_code == 400
    violate(db, settings, fleet["A"][1])
    fan_out(settings, db)
    with db.cursor() as cur:
        cur.execute(
            "UPDATE alert_outbox SET status = 'dead', attempts = 12, last_error = 'HTTP 503 from the receiver' RETURNING id"
        )
        (dead,) = cur.fetchone()
    db.commit()
    page = admin.get("/admin/alerts/").get_data(as_text=True)
    assert f'data-dead="{dead}"' in page and "HTTP 503 from the receiver" in page
    assert (
        admin.post(f"/admin/alerts/dead/{dead}/retry", data={"csrf_token": token}).status_code
        == 302
    )
    with db.cursor() as cur:
        cur.execute("SELECT status, attempts FROM alert_outbox WHERE id = %s", (dead,))
        assert cur.fetchone() == ("pending", 0)
    db.commit()
    assert f'data-dead="{dead}"' not in admin.get("/admin/alerts/").get_data(as_text=True)
    supervisor = client_of(app, db, "sup1", "supervisor")
    assert supervisor.get("/admin/alerts/").status_code == 403
