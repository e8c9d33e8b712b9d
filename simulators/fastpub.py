"""A fast MQTT 3.1.1 QoS 1 publisher for load tests and benchmarks.

paho-mqtt spends about 60 µs of CPU per QoS 1 publish on this machine, so two paho
publisher processes alone would take more than a core at 20,000 msg/s and the benchmark would
measure the publisher. This writes pre-framed PUBLISH packets in large chunks on a plain
socket and counts PUBACKs, keeping at most `window` messages unacknowledged; it costs a few
µs per message. It only publishes: no subscriptions, no QoS 2, no reconnects (a load test
that loses its connection fails loudly instead).
"""

from __future__ import annotations

import select
import socket
import struct
import time
import uuid
from collections.abc import Callable, Iterable

from core.config import ConfigError, MqttEndpoint
from telemetry.mqtt.lean import connect_packet, encode_remaining_length


class MqttProtocolError(RuntimeError):
    pass


def plain_endpoint(endpoint: MqttEndpoint) -> MqttEndpoint:
    """The endpoint, refused with a clear message when it is mqtts:// (no TLS here)."""
    if endpoint.tls:
        raise ConfigError(
            f"the simulators and load tests publish over plain MQTT, but MUCK_MQTT_URL is "
            f"{endpoint.safe_url()}: point them at the broker's plain listener (mqtt://)"
        )
    return endpoint


def publish_packet(topic: bytes, payload: bytes, packet_id: int) -> bytes:
    body_len = 2 + len(topic) + 2 + len(payload)
    return (
        b"\x32"
        + encode_remaining_length(body_len)
        + struct.pack("!H", len(topic))
        + topic
        + struct.pack("!H", packet_id)
        + payload
    )


class FastPublisher:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str | None = None,
        username: str | None = None,
        password: str | None = None,
        window: int = 10_000,
    ) -> None:
        if not 0 < window < 65_535:
            raise ValueError("window must be between 1 and 65534 (packet ids are 16-bit)")
        self.window = window
        self.sock = socket.create_connection((host, port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(
            connect_packet(
                client_id or "fastpub-" + uuid.uuid4().hex[:8],
                60,
                True,  # clean session: a publisher needs no state on the broker
                username,
                password,
            )
        )
        connack = self._recv_exact(4)
        if connack[0] != 0x20 or connack[3] != 0:
            raise MqttProtocolError(f"CONNACK refused: {connack!r}")
        self.sent = 0
        self.acked = 0
        self._inbox = b""
        self._next_id = 1

    def _recv_exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise MqttProtocolError("broker closed the connection")
            data += chunk
        return data

    def _drain_acks(self, block: bool) -> None:
        readable, _, _ = select.select([self.sock], [], [], 30 if block else 0)
        if not readable:
            if block:
                raise MqttProtocolError("no PUBACK for 30 s")
            return
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise MqttProtocolError("broker closed the connection")
        data = self._inbox + chunk
        whole = len(data) // 4 * 4
        # Only PUBACKs (4 bytes each) come back to a publisher that subscribes to nothing.
        if whole and data[0] != 0x40:
            raise MqttProtocolError(f"unexpected packet type 0x{data[0]:02x}")
        self.acked += whole // 4
        self._inbox = data[whole:]

    def publish_many(
        self,
        messages: Iterable[tuple[bytes, bytes]],
        pace: Callable[[int], None] | None = None,
        chunk: int = 256,
    ) -> int:
        """Publish (topic, payload) pairs at QoS 1; returns when all are acknowledged."""
        buffer = []
        for topic, payload in messages:
            buffer.append(publish_packet(topic, payload, self._next_id))
            self._next_id = self._next_id % 65_535 + 1
            self.sent += 1
            if len(buffer) >= chunk:
                self._flush(buffer)
                buffer = []
                if pace is not None:
                    pace(self.sent)
        if buffer:
            self._flush(buffer)
        while self.acked < self.sent:
            self._drain_acks(block=True)
        return self.sent

    def _flush(self, packets: list[bytes]) -> None:
        self.sock.sendall(b"".join(packets))
        self._drain_acks(block=False)
        while self.sent - self.acked > self.window:
            self._drain_acks(block=True)

    def close(self) -> None:
        try:
            self.sock.sendall(b"\xe0\x00")  # DISCONNECT
        finally:
            self.sock.close()


def paced(rate: float) -> Callable[[int], None]:
    """A pace function keeping the average publish rate at `rate` msg/s."""
    began = time.perf_counter()

    def pace(sent: int) -> None:
        ahead = sent / rate - (time.perf_counter() - began)
        if ahead > 0:
            time.sleep(ahead)

    return pace
