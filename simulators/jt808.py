"""A simulated JT/T 808 terminal: what the fleet simulator (`muck simulate --protocol
jt808`), `muck bench jt808` and the tests connect to the gateway with.

It speaks the protocol the way a terminal does: register (0x0100) once and keep the auth
code, authenticate (0x0102) on every connection, send location reports (0x0200) and wait for
the platform's general reply (0x8001), and keep what was not acknowledged for a batch
re-upload (0x0704, blind area) later. `fix_to_location` turns one fix of the MQTT contract
into the location body the gateway's default mapping profile reads back to the same fix.
"""

from __future__ import annotations

import socket
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec

from telemetry.jt808 import messages as m
from telemetry.jt808.frames import Frame, FrameSplitter, decode_frame, encode_frame, split_message

# Alarm names → JT/T 808 alarm bits (the gateway's telemetry.jt808.mapping.ALARM_BITS).
ALARM_BIT = {"gnss_fault": 4, "antenna_cut": 5, "power_undervoltage": 7, "power_cut": 8}
_LOAD_BITS = {"empty": 0x000, "half": 0x100, "full": 0x300}


def fix_to_location(fix: dict) -> m.Location:
    """A contract fix → a location body in the gateway's default profile (load in status
    bits 8-9, lid and lift in item 0xE1, weight in item 0xE2, satellites in item 0x31)."""
    status = 0x02  # positioned
    if fix.get("acc", True):
        status |= 0x01
    status |= _LOAD_BITS.get(fix.get("load") or "empty", 0)
    alarm = 0
    for name in fix.get("alarms") or ():
        alarm |= 1 << ALARM_BIT[name]
    items: dict[int, bytes] = {}
    sensors = 0
    if fix.get("lid") == "open":
        sensors |= 0x01
    if fix.get("lift") == "up":
        sensors |= 0x02
    if fix.get("lid") is not None or fix.get("lift") is not None:
        items[0xE1] = bytes([sensors])
    if fix.get("weight_kg") is not None:
        items[0xE2] = int(fix["weight_kg"]).to_bytes(4, "big")
    if fix.get("sats") is not None:
        items[0x31] = bytes([int(fix["sats"])])
    return m.Location(
        alarm=alarm,
        status=status,
        lat=float(fix["lat"]),
        lon=float(fix["lon"]),
        alt_m=int(fix.get("alt") or 0),
        speed_kmh=float(fix["speed"]),
        heading=int(fix.get("heading") or 0) % 360,
        fix_ms=int(fix["ts"]),
        items=items,
    )


@dataclass
class TerminalIdentity:
    phone: str  # the header's phone digits (12 for 2013; 2019 pads them to 20)
    terminal_id: str = ""
    plate: str = ""
    edition: int = 2013
    auth_code: str = ""

    @property
    def header_phone(self) -> str:
        return self.phone.rjust(12 if self.edition == 2013 else 20, "0")

    @property
    def version(self) -> int | None:
        return None if self.edition == 2013 else 1


@dataclass
class TerminalClient:
    """One terminal's TCP connection to the gateway (blocking, for tests and small fleets)."""

    identity: TerminalIdentity
    host: str
    port: int
    timeout: float = 5.0
    sock: socket.socket | None = None
    serial: int = 0
    splitter: FrameSplitter = field(default_factory=lambda: FrameSplitter(1 << 16))
    inbox: list[Frame] = field(default_factory=list)
    replies: dict[int, Frame] = field(default_factory=dict)
    other: list[Frame] = field(default_factory=list)  # what the platform sent unasked (0x8003)

    def connect(self) -> TerminalClient:
        self.sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        self.splitter = FrameSplitter(1 << 16)
        self.inbox = []
        self.replies = {}
        return self

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def send(self, msg_id: int, body: bytes) -> int:
        self.serial = (self.serial + 1) & 0xFFFF
        ident = self.identity
        if len(body) > 1023:
            frames = split_message(
                msg_id, ident.header_phone, self.serial, body, version=ident.version
            )
            self.serial = (self.serial + len(frames) - 1) & 0xFFFF
            self.sock.sendall(b"".join(frames))
            return (self.serial - len(frames) + 1) & 0xFFFF
        self.sock.sendall(
            encode_frame(msg_id, ident.header_phone, self.serial, body, version=ident.version)
        )
        return self.serial

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def receive(self, timeout: float | None = None) -> Frame | None:
        """The next frame from the gateway, or None on timeout or a closed connection."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self.inbox:
            if self.sock is None:
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return None
            except OSError:
                return None
            if not data:
                return None
            raws, _ = self.splitter.feed(data)
            for raw in raws:
                frame = decode_frame(raw)
                if isinstance(frame, Frame):
                    self.inbox.append(frame)
        return self.inbox.pop(0)

    def reply_to(self, serial: int, timeout: float | None = None) -> Frame | None:
        """The gateway's reply (0x8001 or 0x8100) to our message `serial`; replies to other
        messages that arrive meanwhile are kept for their own `reply_to`."""
        found = self.replies.pop(serial, None)
        if found is not None:
            return found
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            frame = self.receive(max(0.0, deadline - time.monotonic()))
            if frame is None:
                return None
            if frame.msg_id not in (m.PLATFORM_REPLY, m.REGISTER_REPLY) or len(frame.body) < 2:
                self.other.append(frame)
                continue
            answered = int.from_bytes(frame.body[:2], "big")
            if answered == serial:
                return frame
            self.replies[answered] = frame

    def result_of(self, serial: int, timeout: float | None = None) -> int | None:
        frame = self.reply_to(serial, timeout)
        if frame is None:
            return None
        if frame.msg_id == m.REGISTER_REPLY:
            return m.decode_register_reply(frame.body).result
        return m.decode_general_reply(frame.body).result

    def register(self) -> int | None:
        ident = self.identity
        reg = m.Registration(44, 300, "MUCK", "SIM-808", ident.terminal_id, 2, ident.plate)
        frame = self.reply_to(self.send(m.REGISTER, m.encode_register(reg, ident.edition)))
        if frame is None:
            return None
        reply = m.decode_register_reply(frame.body)
        if reply.result == m.REGISTERED:
            ident.auth_code = reply.auth_code
        return reply.result

    def authenticate(self, code: str | None = None) -> int | None:
        ident = self.identity
        auth = m.Authentication(ident.auth_code if code is None else code, "861234567890123", "sim")
        return self.result_of(self.send(m.AUTHENTICATE, m.encode_authenticate(auth, ident.edition)))

    def report(self, fix: dict, timeout: float | None = None) -> int | None:
        serial = self.send(m.LOCATION, m.encode_location(fix_to_location(fix)))
        return self.result_of(serial, timeout)

    def batch(
        self, fixes: list[dict], kind: int = m.BATCH_BLIND_AREA, timeout: float | None = None
    ) -> int | None:
        body = m.encode_batch([fix_to_location(f) for f in fixes], kind)
        return self.result_of(self.send(m.BATCH, body), timeout)

    def heartbeat(self) -> int | None:
        return self.result_of(self.send(m.HEARTBEAT, b""))


def phone_for(device_id: str) -> str:
    """A stable 12-digit terminal phone for a simulated device id (its SIM card number)."""
    return "0139" + f"{zlib.crc32(device_id.encode()) % 100_000_000:08d}"


class GatewayFleetPublisher:
    """The fleet's messages (`Fleet.advance`) sent the JT/T 808 way: each device's fixes
    over its own terminal connection to the gateway (2019 edition: the simulated device ids
    are longer than the 2013 edition's 7-byte terminal id), one 0x0200 per fix and one 0x0704
    per re-uploaded batch; the cameras' sightings still over MQTT (`mqtt_publish`), and the
    terminal's simulated status topic left out (the gateway publishes each connection's
    online and offline itself).

    A terminal registers with its device id as the terminal id, so the registry's binding
    of that id is found; an unknown (rogue) terminal is refused and its reports are still
    recorded by the gateway as an unregistered terminal's. Reports of one call are pipelined
    and the call returns once every report is answered; an unanswered report (gateway or
    broker away) is sent again on a new connection, as a terminal keeps it in its buffer.
    """

    def __init__(
        self,
        host: str,
        port: int,
        topics,
        mqtt_publish: Callable[[list[tuple[str, bytes]]], None] | None = None,
        *,
        timeout: float = 10.0,
        attempts: int = 3,
    ) -> None:
        self.host, self.port, self.topics = host, port, topics
        self.mqtt_publish = mqtt_publish
        self.timeout = timeout
        self.attempts = attempts
        self.clients: dict[str, TerminalClient] = {}
        self.unregistered: set[str] = set()
        self.reports = 0
        self.refused = 0
        # Each authentication makes the gateway publish an online status, each end of an
        # authenticated connection an offline one (the accuracy run counts them).
        self.authentications = 0
        self.disconnects = 0
        self.authenticated: set[str] = set()

    def _client(self, device_id: str) -> TerminalClient:
        client = self.clients.get(device_id)
        if client is not None and client.sock is not None:
            return client
        identity = (
            client.identity
            if client is not None
            else TerminalIdentity(phone_for(device_id), device_id, "", 2019)
        )
        client = TerminalClient(identity, self.host, self.port, self.timeout).connect()
        self.clients[device_id] = client
        if not identity.auth_code:  # an unknown terminal tries again on every connection
            result = client.register()
            if result == m.NO_SUCH_TERMINAL:
                self.unregistered.add(device_id)
                return client
            if result != m.REGISTERED:
                raise ConnectionError(f"gateway answered registration of {device_id}: {result}")
        if client.authenticate() != m.OK:
            raise ConnectionError(f"gateway refused the auth code of {device_id}")
        self.authentications += 1
        self.authenticated.add(device_id)
        return client

    def __call__(self, messages: list[tuple[str, bytes]]) -> None:
        other: list[tuple[str, bytes]] = []
        reports: list[tuple[str, int, bytes]] = []
        for topic, payload in messages:
            parsed = self.topics.parse(topic)
            if parsed is None or parsed[0] == "sightings":
                other.append((topic, payload))
                continue
            kind, device_id = parsed
            if kind != "telemetry":
                continue
            body = msgspec.json.decode(payload)
            if isinstance(body, list):
                reports.append(
                    (device_id, m.BATCH, m.encode_batch([fix_to_location(f) for f in body]))
                )
            else:
                reports.append((device_id, m.LOCATION, m.encode_location(fix_to_location(body))))
        if other and self.mqtt_publish is not None:
            self.mqtt_publish(other)
        for _ in range(self.attempts):
            if not reports:
                return
            reports = self._send_all(reports)
        raise ConnectionError(f"{len(reports)} reports never acknowledged by the gateway")

    def _send_all(self, reports: list[tuple[str, int, bytes]]) -> list[tuple[str, int, bytes]]:
        sent: list[tuple[TerminalClient, int, tuple[str, int, bytes]]] = []
        for report in reports:
            device_id, msg_id, body = report
            try:
                client = self._client(device_id)
                sent.append((client, client.send(msg_id, body), report))
            except OSError:
                self._drop(device_id)
                sent.append((None, -1, report))  # type: ignore[arg-type]
        again = []
        for client, serial, report in sent:
            result = None if client is None else client.result_of(serial)
            if result is None:
                self._drop(report[0])
                again.append(report)
            else:
                self.reports += 1
                self.refused += result != m.OK
        return again

    def _drop(self, device_id: str) -> None:
        client = self.clients.get(device_id)
        if client is not None and client.sock is not None:
            client.close()
            if device_id in self.authenticated:
                self.authenticated.discard(device_id)
                self.disconnects += 1

    def close(self) -> None:
        for client in self.clients.values():
            client.close()
