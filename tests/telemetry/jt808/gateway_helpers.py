"""The real `muck gateway jt808` for tests, and a subscriber that sees what it publishes."""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
import uuid
from collections.abc import Iterator

import msgspec
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from core.config import MqttEndpoint
from registry.service import bind_terminal, upsert_company, upsert_truck
from tests.mqtt_helpers import clear_retained, collector_env
from tests.services import MuckProcess, free_port

PHONE = "013912345678"
BOUND_FROM = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)


def register_truck(conn, device_id: str = PHONE, plate: str = "粤B12345") -> int:
    with conn.cursor() as cur:
        company = upsert_company(cur, "测试运输公司", None)
        truck = upsert_truck(cur, plate, company)
        bind_terminal(cur, device_id, truck, BOUND_FROM)
    conn.commit()
    return truck


GATEWAY_TOML = """
[jt808]
client_id = "{client_id}"
heartbeat_s = {heartbeat_s}
idle_factor = 2.0
auth_timeout_s = {auth_timeout_s}
max_frames_per_s = {max_frames_per_s}
subpackage_timeout_s = 1.0
"""


@contextlib.contextmanager
def running_gateway(
    settings,
    broker_url: str,
    *,
    heartbeat_s: float = 60.0,
    auth_timeout_s: float = 60.0,
    max_frames_per_s: float = 200.0,
    extra_toml: str = "",
    metrics_port: int = 0,
    processes: int = 1,
) -> Iterator[tuple[MuckProcess, int]]:
    port = free_port()
    toml = (
        GATEWAY_TOML.format(
            client_id="test-gw-" + uuid.uuid4().hex[:8],
            heartbeat_s=heartbeat_s,
            auth_timeout_s=auth_timeout_s,
            max_frames_per_s=max_frames_per_s,
        )
        + extra_toml
    )
    env = collector_env(settings, broker_url, toml)
    try:
        with MuckProcess(
            ["gateway", "jt808", "--listen", f"127.0.0.1:{port}"]
            + (["--metrics-port", str(metrics_port)] if metrics_port else [])
            + (["--processes", str(processes)] if processes > 1 else []),
            env,
            ready="gateway connected to the broker",
        ) as process:
            yield process, port
    finally:  # once it has exited: the statuses it retained would reach later collectors
        clear_retained(broker_url)


class Watcher:
    """Every message published under the topic prefix, decoded."""

    def __init__(self, broker_url: str, topic: str = "muck/v1/trucks/#") -> None:
        endpoint = MqttEndpoint.parse(broker_url)
        self.messages: list[tuple[str, object]] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="test-watch-" + uuid.uuid4().hex[:8]
        )
        client.on_message = self._on_message
        client.on_subscribe = lambda *a: self.subscribed.set()
        client.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
        client.connect(endpoint.host, endpoint.port)
        client.loop_start()
        self.client = client
        assert self.subscribed.wait(10)

    def _on_message(self, client, userdata, message) -> None:
        if not message.payload:  # a retained status being cleared (clear_retained), not news
            return
        try:
            body = msgspec.json.decode(message.payload)
        except msgspec.DecodeError:
            body = message.payload
        with self.lock:
            self.messages.append((message.topic, body))

    def telemetry(self, device_id: str) -> list[object]:
        with self.lock:
            return [b for t, b in self.messages if t == f"muck/v1/trucks/{device_id}/telemetry"]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
