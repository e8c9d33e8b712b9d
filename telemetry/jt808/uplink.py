"""The gateway's MQTT 3.1.1 publisher on the event loop: PUBLISH at QoS 1, a future per
message called on the broker's PUBACK.

Why a callback per message: the gateway acknowledges a terminal's location report (0x8001)
only after the broker has accepted the fix, so a terminal whose report never reached the
broker keeps it in its blind-area buffer and sends it again. When the connection to the
broker drops, every unacknowledged publish fails at once and is not re-sent by the gateway
(the terminal re-sends it, and the unique key on (device, fix time) stores it once); while
the broker is away, a publish fails immediately, so terminals are simply not acknowledged.

Why callbacks rather than futures: a future costs an allocation, a done-callback and a
scheduled handle per report, on the path every report takes. The PUBACKs of one socket
read are handled in one pass (`acking` is true meanwhile) and `after_acks` runs once after
them, which lets the gateway write all the replies one terminal earned in one send.

Why not paho: one asyncio protocol shares the gateway's loop (no second thread, no lock per
message), and the PUBLISH packets of one loop iteration leave in one socket write.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import struct
from collections.abc import Callable
from typing import Any

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
        acked: list[int] = []
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
                acked.append((body[0] << 8) | body[1])
            elif kind == 2 and not self.connack.done():  # CONNACK
                self.connack.set_result(body[1] if len(body) > 1 else 255)
        del buf[:pos]
        if acked:
            self.uplink._acked(acked)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.connack.done():
            self.connack.set_exception(BrokerUnavailable(str(exc or "connection closed")))
        if not self.lost.done():
            self.lost.set_result(None)
        self.uplink._lost(exc)


class Uplink:
    """Where the gateway hands its fixes, and the bookkeeping of the ones not yet accepted:
    the broker (MqttUplink) or, in a collector's own process, its writer lanes
    (telemetry.jt808.direct.DirectUplink). Runs on the gateway's event loop."""

    def __init__(self, max_inflight: int) -> None:
        self.max_inflight = max_inflight
        # packet id → (callback, its argument): callback(argument, accepted)
        self._inflight: dict[int, tuple[Callable[[Any, bool], None], Any]] = {}
        self.acking = False  # true while the callbacks of one read's acceptances run
        self.after_acks: Callable[[], None] | None = None
        self._next_id = 0
        self.connected = asyncio.Event()
        self.published = 0
        self.refused = 0  # publishes failed at once: destination away or window full

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def _take_id(self, callback: Callable[[Any, bool], None], argument: Any) -> int:
        packet_id = self._next_id % 65535 + 1
        while packet_id in self._inflight:
            packet_id = packet_id % 65535 + 1
        self._next_id = packet_id
        self._inflight[packet_id] = (callback, argument)
        return packet_id

    def publish_then(
        self,
        topic: str,
        payload: bytes,
        callback: Callable[[Any, bool], None],
        argument: Any = None,
        *,
        retain: bool = False,
    ) -> None:
        raise NotImplementedError

    def publish_nowait(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Publish where nothing waits for the acceptance (statuses, unregistered evidence)."""
        self.publish_then(topic, payload, _ignore, None, retain=retain)

    def _acked(self, packet_ids: list[int]) -> None:
        inflight = self._inflight
        self.acking = True
        try:
            for packet_id in packet_ids:
                waiting = inflight.pop(packet_id, None)
                if waiting is not None:
                    self.published += 1
                    waiting[0](waiting[1], True)
        finally:
            self.acking = False
        if self.after_acks is not None:
            self.after_acks()

    def _fail_all(self) -> int:
        failed, self._inflight = self._inflight, {}
        for callback, argument in failed.values():
            callback(argument, False)
        return len(failed)

    async def run(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class MqttUplink(Uplink):
    def __init__(
        self,
        endpoint: MqttEndpoint,
        client_id: str,
        *,
        keepalive_s: int = 30,
        max_inflight: int = 20_000,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(max_inflight)
        self.endpoint = endpoint
        self.ssl_context = ssl_context
        self.client_id = client_id
        self.keepalive_s = keepalive_s
        self._transport: asyncio.Transport | None = None
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._closing = False

    def publish_then(
        self,
        topic: str,
        payload: bytes,
        callback: Callable[[Any, bool], None],
        argument: Any = None,
        *,
        retain: bool = False,
    ) -> None:
        """Publish; `callback(argument, True)` on the broker's PUBACK, `callback(argument,
        False)` when it cannot be (at once while the broker is away or the window is full,
        later when the connection drops first)."""
        if self._transport is None or len(self._inflight) >= self.max_inflight:
            self.refused += 1
            callback(argument, False)
            return
        packet_id = self._take_id(callback, argument)
        name = topic.encode()
        body = struct.pack("!H", len(name)) + name + struct.pack("!H", packet_id) + payload
        self._out.append(
            (b"\x33" if retain else b"\x32") + encode_remaining_length(len(body)) + body
        )
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._out and self._transport is not None:
            self._transport.write(b"".join(self._out))
        self._out.clear()

    def _lost(self, exc: Exception | None) -> None:
        self._transport = None
        self.connected.clear()
        self._out.clear()
        failed = self._fail_all()
        if failed:
            log.warning("broker connection lost: %d publishes not acknowledged", failed)

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


def _ignore(_argument: object, _accepted: bool) -> None:
    """A lost status or unregistered fix is not an error: nothing waits for it."""
