"""The gateway's MQTT 3.1.1 publisher on the event loop: PUBLISH at QoS 1, a future per
message that resolves on the broker's PUBACK.

Why a future per message: the gateway acknowledges a terminal's location report (0x8001)
only after the broker has accepted the fix, so a terminal whose report never reached the
broker keeps it in its blind-area buffer and sends it again. When the connection to the
broker drops, every unacknowledged publish fails at once and is not re-sent by the gateway
(the terminal re-sends it, and the unique key on (device, fix time) stores it once); while
the broker is away, `publish` fails immediately, so terminals are simply not acknowledged.

Why not paho: one asyncio protocol shares the gateway's loop (no second thread, no lock per
message), and the PUBLISH packets of one loop iteration leave in one socket write.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import struct

from core.config import MqttEndpoint
from telemetry.mqtt.lean import connect_packet, encode_remaining_length

log = logging.getLogger(__name__)


class BrokerUnavailable(ConnectionError):
    pass


class _Protocol(asyncio.Protocol):
    def __init__(self, uplink: MqttUplink) -> None:
        self.uplink = uplink
        self.buffer = bytearray()
        self.connack: asyncio.Future = asyncio.get_running_loop().create_future()
        self.lost: asyncio.Future = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        pos, end = 0, len(buf)
        while end - pos >= 2:
            header = buf[pos]
            i, length, multiplier, complete = pos + 1, 0, 1, False
            while i < end:
                byte = buf[i]
                i += 1
                length += (byte & 0x7F) * multiplier
                multiplier *= 128
                if not byte & 0x80:
                    complete = True
                    break
            if not complete or i + length > end:
                break
            body = bytes(buf[i : i + length])
            pos = i + length
            kind = header >> 4
            if kind == 4 and len(body) >= 2:  # PUBACK
                self.uplink._acked(struct.unpack_from("!H", body)[0])
            elif kind == 2 and not self.connack.done():  # CONNACK
                self.connack.set_result(body[1] if len(body) > 1 else 255)
        del buf[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.connack.done():
            self.connack.set_exception(BrokerUnavailable(str(exc or "connection closed")))
        if not self.lost.done():
            self.lost.set_result(None)
        self.uplink._lost(exc)


class MqttUplink:
    def __init__(
        self,
        endpoint: MqttEndpoint,
        client_id: str,
        *,
        keepalive_s: int = 30,
        max_inflight: int = 20_000,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.ssl_context = ssl_context
        self.client_id = client_id
        self.keepalive_s = keepalive_s
        self.max_inflight = max_inflight
        self._transport: asyncio.Transport | None = None
        self._inflight: dict[int, asyncio.Future] = {}
        self._next_id = 0
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self.connected = asyncio.Event()
        self.published = 0
        self.refused = 0  # publishes failed at once: broker away or window full
        self._closing = False

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> asyncio.Future:
        """A future resolved on PUBACK, failed with BrokerUnavailable otherwise."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if self._transport is None or len(self._inflight) >= self.max_inflight:
            self.refused += 1
            future.set_exception(BrokerUnavailable("broker not connected or window full"))
            return future
        packet_id = self._next_id % 65535 + 1
        while packet_id in self._inflight:
            packet_id = packet_id % 65535 + 1
        self._next_id = packet_id
        self._inflight[packet_id] = future
        name = topic.encode()
        body = struct.pack("!H", len(name)) + name + struct.pack("!H", packet_id) + payload
        self._out.append(
            (b"\x33" if retain else b"\x32") + encode_remaining_length(len(body)) + body
        )
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return future

    def publish_nowait(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Publish where nothing waits for the PUBACK (statuses, unregistered evidence)."""
        self.publish(topic, payload, retain=retain).add_done_callback(_consume)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._out and self._transport is not None:
            self._transport.write(b"".join(self._out))
        self._out.clear()

    def _acked(self, packet_id: int) -> None:
        future = self._inflight.pop(packet_id, None)
        if future is not None and not future.done():
            self.published += 1
            future.set_result(None)

    def _lost(self, exc: Exception | None) -> None:
        self._transport = None
        self.connected.clear()
        self._out.clear()
        failed, self._inflight = self._inflight, {}
        for future in failed.values():
            if not future.done():
                future.set_exception(BrokerUnavailable("broker connection lost before PUBACK"))
        if failed:
            log.warning("broker connection lost: %d publishes not acknowledged", len(failed))

    async def run(self) -> None:
        """Connect, and reconnect with back-off, until `close`."""
        loop = asyncio.get_running_loop()
        delay = 0.2
        while not self._closing:
            try:
                transport, protocol = await loop.create_connection(
                    lambda: _Protocol(self),
                    self.endpoint.host,
                    self.endpoint.port,
                    ssl=self.ssl_context,
                )
            except OSError as exc:
                log.debug("broker unreachable: %s", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            transport.write(
                connect_packet(
                    self.client_id,
                    self.keepalive_s,
                    True,
                    self.endpoint.username,
                    self.endpoint.password,
                )
            )
            try:
                code = await asyncio.wait_for(protocol.connack, 10)
            except (TimeoutError, BrokerUnavailable) as exc:
                log.warning("broker refused or did not answer CONNECT: %s", exc)
                transport.close()
                await asyncio.sleep(delay)
                continue
            if code != 0:
                log.error("broker refused the gateway: CONNACK code %s", code)
                transport.close()
                await asyncio.sleep(5.0)
                continue
            delay = 0.2
            self._transport = transport  # type: ignore[assignment]
            self.connected.set()
            log.info(
                "gateway connected to the broker %s:%s", self.endpoint.host, self.endpoint.port
            )
            while not protocol.lost.done():
                try:
                    await asyncio.wait_for(asyncio.shield(protocol.lost), self.keepalive_s / 2)
                except TimeoutError:
                    if self._transport is not None:
                        self._transport.write(b"\xc0\x00")  # PINGREQ
            if not self._closing:
                log.warning("broker connection lost; reconnecting")

    async def close(self) -> None:
        self._closing = True
        if self._transport is not None:
            self._flush()
            self._transport.write(b"\xe0\x00")  # DISCONNECT
            self._transport.close()


def _consume(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()  # retrieved: a lost status or evidence is not an error to log
