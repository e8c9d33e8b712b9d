"""The load-test publisher speaks MQTT correctly: everything it publishes is stored once."""

from __future__ import annotations

import msgspec

from core.config import MqttEndpoint
from simulators.fastpub import FastPublisher
from telemetry.contract import Topics
from tests.mqtt_helpers import count, now_ms, running_collector, wait_until


def test_fast_publisher_delivers_every_message_at_qos1(settings, broker, db):
    endpoint = MqttEndpoint.parse(broker.url)
    topics = Topics()
    start = now_ms() - 600_000
    messages = [
        (
            topics.telemetry(f"FP{i % 50:03d}").encode(),
            msgspec.json.encode({"ts": start + i * 100, "lat": 22.5, "lon": 114.0, "speed": 30}),
        )
        for i in range(5000)
    ]
    with running_collector(settings):
        publisher = FastPublisher(endpoint.host, endpoint.port, window=500)
        assert publisher.publish_many(iter(messages)) == 5000
        assert publisher.acked == 5000
        publisher.close()
        assert wait_until(lambda: count(db, "SELECT count(*) FROM positions") == 5000)
