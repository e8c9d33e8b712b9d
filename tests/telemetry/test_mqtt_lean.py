"""The lean MQTT reader against a real broker: keep-alive in both directions."""

from __future__ import annotations

import threading
import time
import uuid

from telemetry.mqtt.lean import LeanSubscriber


def test_a_reader_that_only_sends_acks_keeps_its_connection(settings):
    """A collector working off a backlog sends acknowledgements all the time while the broker
    sends nothing: the reader must ping on silence, not take it for a dead link (a reconnect
    makes the broker redeliver everything unacknowledged)."""
    endpoint = settings.mqtt_endpoint()
    sub = LeanSubscriber(
        endpoint.host,
        endpoint.port,
        "keepalive-" + uuid.uuid4().hex[:8],
        ["muck/v1/nobody-publishes-here/#"],
        lambda generation, received: None,
        username=endpoint.username,
        password=endpoint.password,
        keepalive=2,
    )
    sub.start()
    try:
        assert sub.connected.wait(10)
        generation = sub.generation
        stop = threading.Event()

        def busy_acking() -> None:
            while not stop.is_set():
                sub._last_send = time.monotonic()  # as every PUBACK write does
                time.sleep(0.2)

        acking = threading.Thread(target=busy_acking)
        acking.start()
        time.sleep(7)  # more than 1.5 x keep-alive of silence from the broker
        stop.set()
        acking.join()
        assert sub.generation == generation, "the reader reconnected during the silence"
        assert sub.connected.is_set()
    finally:
        sub.stop()
