"""Delivery from the outbox: signed webhooks, retries through an outage, dead letters,
apprise robots — against real HTTP servers on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json

from alerts.dispatcher import Dispatcher
from alerts.subscriptions import create_subscription
from alerts.webhook import KEY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from tests.alerts.conftest import violate
from tests.alerts.receiver import Receiver
from tests.mqtt_helpers import wait_until

FAST = {"poll_s": 0.1, "backoff_base_s": 0.2, "backoff_max_s": 0.5, "gap_wait_s": 0.0}


def fast(settings, **alerts):
    return settings.with_overrides(alerts={**FAST, **alerts})


def subscribe(db, channel="webhook", target="", secret="s" * 32, owner="ops", **filters):
    with db.cursor() as cur:
        sub = create_subscription(
            cur,
            owner_kind="team",
            owner=owner,
            channel=channel,
            target=target,
            secret=secret,
            **filters,
        )
    db.commit()
    return sub


@contextlib.contextmanager
def dispatching(settings):
    dispatcher = Dispatcher(settings).start()
    try:
        yield dispatcher
    finally:
        dispatcher.stop()


def statuses(db) -> dict[str, int]:
    with db.cursor() as cur:
        cur.execute("SELECT status, count(*) FROM alert_outbox GROUP BY status")
        out = dict(cur.fetchall())
    db.commit()
    return out


def test_webhook_gets_a_signed_alert_that_links_to_the_violation(db, settings, fleet, receiver):
    settings = fast(settings, public_base_url="https://muck.example.gov.cn/")
    sub = subscribe(db, target=receiver.url)
    vid = violate(db, settings, fleet["A"][1], kind="speeding", severity="serious")
    with dispatching(settings):
        assert wait_until(lambda: len(receiver.received) == 1, 10), "no alert arrived"
    got = receiver.received[0]
    headers = got["headers"]
    assert verify(sub.secret, headers[TIMESTAMP_HEADER], got["body"], headers[SIGNATURE_HEADER])
    assert not verify(
        "wrong" * 8, headers[TIMESTAMP_HEADER], got["body"], headers[SIGNATURE_HEADER]
    )
    tampered = got["body"].replace(b"serious", b"minor")
    assert not verify(sub.secret, headers[TIMESTAMP_HEADER], tampered, headers[SIGNATURE_HEADER])
    body = got["json"]
    assert headers[KEY_HEADER] == body["idempotency_key"] == f"v{vid}-e1-s{sub.id}"
    assert body["url"] == f"https://muck.example.gov.cn/violations/{vid}"
    assert body["event"] == "detected"
    v = body["violation"]
    assert (v["id"], v["kind"], v["severity"], v["plate"]) == (
        vid,
        "speeding",
        "serious",
        "粤B20001",
    )
    assert v["kind_label"] == "超速" and v["company"] == "甲渣土运输公司"
    assert statuses(db) == {"delivered": 1}


def test_a_receiver_that_is_down_gets_every_alert_when_it_returns(db, settings, fleet):
    settings = fast(settings)
    down = Receiver()  # its port, nothing listening yet
    subscribe(db, target=down.url)
    truck = fleet["A"][1]
    vids = [violate(db, settings, truck) for _ in range(5)]
    with dispatching(settings) as dispatcher:
        assert wait_until(lambda: dispatcher.stats.failed >= 10, 15), "no retries seen"
        assert statuses(db) == {"pending": 5}
        # Answers 500 for a while: still not delivered, still retried.
        receiver = Receiver(port=down.port, status=500).start()
        try:
            assert wait_until(lambda: len(receiver.received) >= 5, 15)
            receiver.status = 200
            assert wait_until(lambda: statuses(db) == {"delivered": 5}, 15), statuses(db)
        finally:
            receiver.stop()
    by_key: dict[str, set[int]] = {}
    for body in receiver.bodies():
        by_key.setdefault(body["idempotency_key"], set()).add(body["violation"]["id"])
    # Every alert arrived; the retries of one alert carried the same key.
    assert sorted(v for ids in by_key.values() for v in ids) == vids
    assert len(by_key) == 5 and all(len(ids) == 1 for ids in by_key.values())
    assert len(receiver.received) > 5, "the 500s were not retried"
    for r in receiver.received:
        assert r["headers"][KEY_HEADER] == r["json"]["idempotency_key"]


def test_kept_connections_are_reused_and_renewed_when_the_receiver_restarts(db, settings, fleet):
    settings = fast(settings)
    receiver = Receiver(keep_alive=True).start()
    subscribe(db, target=receiver.url)
    truck = fleet["A"][1]
    try:
        with dispatching(settings) as dispatcher:
            for n in range(1, 4):
                violate(db, settings, truck)
                assert wait_until(lambda n=n: len(receiver.received) == n, 10)
            assert len(receiver.connections) == 1, "a new connection per alert"
            receiver.stop()  # the kept connection dies with it
            receiver = Receiver(port=receiver.port, keep_alive=True).start()
            violate(db, settings, truck)
            assert wait_until(lambda: len(receiver.received) == 1, 10)
            assert dispatcher.stats.failed == 0, "the dead kept connection cost an attempt"
    finally:
        receiver.stop()


def test_dead_lettered_after_max_attempts_then_retried(db, settings, fleet):
    settings = fast(settings, max_attempts=3)
    down = Receiver()
    sub = subscribe(db, target=down.url)
    violate(db, settings, fleet["A"][1])
    with dispatching(settings) as dispatcher:
        assert wait_until(lambda: statuses(db) == {"dead": 1}, 15), statuses(db)
        assert dispatcher.stats.dead == 1
        with db.cursor() as cur:
            cur.execute("SELECT attempts, last_error, subscription_id FROM alert_outbox")
            attempts, error, sid = cur.fetchone()
        db.commit()
        assert (attempts, sid) == (3, sub.id) and "no answer" in error
        receiver = Receiver(port=down.port).start()
        try:
            from alerts.outbox import dead_letters, retry

            with db.cursor() as cur:
                (dead,) = dead_letters(cur)
                assert retry(cur, dead["id"]) and not retry(cur, dead["id"])
            db.commit()
            assert wait_until(lambda: len(receiver.received) == 1, 10)
        finally:
            receiver.stop()
    assert statuses(db) == {"delivered": 1}


def test_apprise_group_robot_channel_posts_to_a_local_server(db, settings, fleet, receiver):
    """WeCom, DingTalk and e-mail go through apprise; its json:// URL posts the same message
    to a local HTTP server, so the path through apprise is tested without the internet."""
    settings = fast(settings)
    target = f"json://127.0.0.1:{receiver.port}/robot"
    subscribe(db, channel="wecom", target=target, secret="", kinds=["speeding"])
    vid = violate(db, settings, fleet["B"][1], kind="speeding")
    violate(db, settings, fleet["B"][1], kind="unsealed_transport")
    with dispatching(settings):
        assert wait_until(lambda: len(receiver.received) == 1, 10)
        assert wait_until(lambda: statuses(db) == {"delivered": 1}, 5)
    got = receiver.received[0]
    assert got["path"] == "/robot"
    message = got["json"]
    assert "超速" in message["title"] and "粤B20002" in message["title"]
    assert f"/violations/{vid}" in message["message"]
    assert "乙渣土运输公司" in message["message"]
    assert json.dumps(message, ensure_ascii=False)


def test_a_slow_receiver_does_not_hold_back_the_next_fan_out(db, settings, fleet):
    """Deliveries are a pipeline: while one receiver takes 3 s per alert, the events after
    the first fan-out pass reach a fast receiver at once (in rounds, the third violation
    waited for the slow answers of the first two)."""
    slow, quick = Receiver(delay_s=3.0).start(), Receiver().start()
    try:
        settings = fast(settings, batch=2, workers=4)
        subscribe(db, target=slow.url, owner="slow")
        subscribe(db, target=quick.url, owner="quick")
        for _ in range(3):
            violate(db, settings, fleet["A"][1])
        with dispatching(settings):
            assert wait_until(lambda: len(quick.received) == 3, 10), quick.received
            assert wait_until(lambda: len(slow.received) >= 1, 5)
            gap = quick.received[2]["at"] - slow.received[0]["at"]
            assert gap < 2.0, f"the third alert waited {gap:.1f} s for the slow receiver"
            assert wait_until(lambda: len(slow.received) == 3, 15)
            assert wait_until(lambda: statuses(db).get("delivered") == 6, 10), statuses(db)
    finally:
        slow.stop()
        quick.stop()
