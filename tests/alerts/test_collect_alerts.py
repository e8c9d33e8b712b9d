"""The product as it runs: a real `muck collect` subprocess, a violating track published over
MQTT, and the alert arriving at a webhook receiver — signed, linking to the violation."""

from __future__ import annotations

from alerts.subscriptions import create_subscription
from alerts.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from tests.compliance.city import EMPTY, TOPICS, Trace, build_city
from tests.mqtt_helpers import collector_env, publish, wait_until
from tests.services import muck_collect


def test_muck_collect_alerts_the_webhook_of_a_violation_published_over_mqtt(
    settings, broker, db, receiver
):
    city = build_city(db, settings)
    with db.cursor() as cur:
        sub = create_subscription(
            cur,
            owner_kind="team",
            owner="ops",
            channel="webhook",
            target=receiver.url,
            kinds=["speeding"],
        )
    db.commit()
    env = collector_env(settings, broker.url, '[alerts]\npublic_base_url = "https://muck.test"\n')
    collector = muck_collect("alerts-e2e", env)
    try:
        trace = Trace("T2", city.base_ms).drive(3000, 0, 70, **EMPTY)
        publish(broker.url, [(TOPICS.telemetry("T2"), m.payload) for m in trace.messages()])
        assert wait_until(lambda: len(receiver.received) >= 1, 30), collector.output()
    finally:
        collector.stop()
    got = receiver.received[0]
    assert verify(
        sub.secret, got["headers"][TIMESTAMP_HEADER], got["body"], got["headers"][SIGNATURE_HEADER]
    )
    body = got["json"]
    with db.cursor() as cur:
        cur.execute("SELECT id FROM violations WHERE kind = 'speeding'")
        (vid,) = cur.fetchone()
        cur.execute("SELECT status FROM alert_outbox WHERE violation_id = %s", (vid,))
        assert cur.fetchone()[0] == "delivered"
    db.commit()
    assert body["violation"]["id"] == vid and body["violation"]["plate"] == "粤B10002"
    assert body["url"] == f"https://muck.test/violations/{vid}"
