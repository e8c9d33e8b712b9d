"""Small helpers for tests that publish over a real broker."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator

import msgspec
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from core.config import MqttEndpoint, Settings
from telemetry.collector import Collector


def publish(url: str, messages: Iterable[tuple[str, bytes]], qos: int = 1) -> int:
    """Publish and wait until the broker has acknowledged every message."""
    endpoint = MqttEndpoint.parse(url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-pub-" + uuid.uuid4().hex[:8])
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect(endpoint.host, endpoint.port)
    client.loop_start()
    infos = [client.publish(topic, payload, qos=qos) for topic, payload in messages]
    for info in infos:
        info.wait_for_publish(30)
    client.loop_stop()
    client.disconnect()
    return len(infos)


def clear_retained(url: str, topic_filter: str = "#", listen_s: float = 0.5) -> int:
    """Remove every retained message under `topic_filter` from the broker (an empty retained
    publish each): the status a JT/T 808 gateway retains for its terminals would otherwise
    reach every collector that subscribes later in the session's shared broker."""
    endpoint = MqttEndpoint.parse(url)
    retained: set[str] = set()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-clr-" + uuid.uuid4().hex[:8])
    client.on_message = lambda _c, _u, msg: retained.add(msg.topic) if msg.retain else None
    client.connect(endpoint.host, endpoint.port)
    client.loop_start()
    client.subscribe(topic_filter, qos=1)
    time.sleep(listen_s)
    infos = [client.publish(topic, b"", qos=1, retain=True) for topic in sorted(retained)]
    for info in infos:
        info.wait_for_publish(10)
    client.loop_stop()
    client.disconnect()
    return len(infos)


def fix(ts_ms: int, lat: float = 22.55, lon: float = 114.06, **extra) -> bytes:
    body = {"ts": ts_ms, "lat": lat, "lon": lon, "speed": 30.0, "heading": 90}
    body.update(extra)
    return msgspec.json.encode(body)


def now_ms() -> int:
    return int(time.time() * 1000)


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


@contextlib.contextmanager
def running_collector(
    settings: Settings, client_id: str | None = None, **kwargs
) -> Iterator[Collector]:
    collector = Collector(settings, client_id=client_id or "test-" + uuid.uuid4().hex[:8], **kwargs)
    collector.start()
    assert collector.wait_connected(10), "collector did not connect to the broker"
    # Let the SUBSCRIBE reach the broker before anything is published.
    time.sleep(0.3)
    try:
        yield collector
    finally:
        collector.stop()


def count(conn, query: str, params: tuple = ()) -> int:
    with conn.cursor() as cur:
        cur.execute(query, params)
        value = cur.fetchone()[0]
    conn.commit()
    return value


def collector_env(settings: Settings, broker_url: str, toml: str = "") -> dict[str, str]:
    """The environment for a `muck collect` subprocess on the test's database and broker,
    with `toml` as its city settings file (e.g. a clock job made to run every second)."""
    env = {**os.environ, "MUCK_DATABASE_URL": settings.database_url, "MUCK_MQTT_URL": broker_url}
    if toml:
        with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as config:
            config.write(toml)
        env["MUCK_CONFIG"] = config.name
    return env
