"""The real `muck gateway jt808` against the real broker and database: registration against
the registry, authentication, nothing accepted before it, location reports published on the
contract and acknowledged after the broker's PUBACK, unknown terminals, bad frames in the
quarantine, and the per-connection limits."""

from __future__ import annotations

import socket
import struct
import time

import pytest

from simulators.jt808 import TerminalClient, TerminalIdentity
from telemetry.jt808 import messages as m
from telemetry.jt808.frames import encode_frame, split_message
from telemetry.jt808.server import GC_YOUNG_THRESHOLD
from tests.mqtt_helpers import count, now_ms, wait_until
from tests.telemetry.jt808.gateway_helpers import (
    PHONE,
    Watcher,
    register_truck,
    running_gateway,
)

# the gateway retains its terminals' status: cleared after the module (conftest)
pytestmark = pytest.mark.usefixtures("no_retained_status_left")


def fix(ts: int, **extra) -> dict:
    body = {"ts": ts, "lat": 22.543101, "lon": 114.057868, "speed": 38.5, "heading": 92}
    body.update(extra)
    return body


@pytest.fixture
def watcher(broker):
    w = Watcher(broker.url)
    yield w
    w.close()


@pytest.mark.parametrize("edition", [2013, 2019])
def test_register_authenticate_report(settings, broker, db, watcher, edition):
    register_truck(db)
    with running_gateway(settings, broker.url) as (gateway, port):
        terminal = TerminalClient(
            TerminalIdentity(PHONE, "T000042", "粤B12345", edition), "127.0.0.1", port
        )
        terminal.connect()
        ts = now_ms() // 1000 * 1000
        # before authentication nothing is accepted, not even a heartbeat
        assert terminal.report(fix(ts - 60_000)) == m.FAILURE
        assert terminal.heartbeat() == m.FAILURE
        assert terminal.register() == m.REGISTERED
        assert len(terminal.identity.auth_code) == 16
        assert terminal.authenticate("wrong-code") == m.FAILURE
        assert terminal.authenticate() == m.OK
        assert terminal.heartbeat() == m.OK
        sensors = {"lid": "open", "lift": "down", "load": "full", "weight_kg": 31200, "sats": 11}
        assert terminal.report(fix(ts, alarms=["antenna_cut"], **sensors)) == m.OK
        assert wait_until(lambda: len(watcher.telemetry(PHONE)) == 1, 5)
        published = watcher.telemetry(PHONE)[0]
        assert published["ts"] == ts and published["alarms"] == ["antenna_cut"]
        assert {k: published[k] for k in sensors} == sensors
        assert (published["lat"], published["lon"], published["speed"]) == (
            22.543101,
            114.057868,
            38.5,
        )
        # a blind-area batch is one message with every device time, in order
        old = [fix(ts - 600_000 + k * 10_000) for k in range(5)]
        assert terminal.batch(old) == m.OK
        assert wait_until(lambda: len(watcher.telemetry(PHONE)) == 2, 5)
        assert [f["ts"] for f in watcher.telemetry(PHONE)[1]] == [f["ts"] for f in old]
        # the report sent before authentication was never published
        assert all(
            (b["ts"] if isinstance(b, dict) else 0) != ts - 60_000 for b in watcher.telemetry(PHONE)
        )
        # a new connection authenticates with the code kept from the registration
        terminal.close()
        terminal.connect()
        assert terminal.authenticate() == m.OK
        # logout is acknowledged, then the connection closes
        assert terminal.result_of(terminal.send(m.LOGOUT, b"")) == m.OK
        assert terminal.receive(2) is None
    with db.cursor() as cur:
        cur.execute(
            "SELECT device_id, terminal_id, plate, authenticated_at IS NOT NULL FROM jt808_terminals"
        )
        assert cur.fetchall() == [(PHONE, "T000042", "粤B12345", True)]
    db.commit()
    # online on authentication, offline when the connection ends (the first may be the
    # retained status an earlier test left)
    statuses = [b["status"] for t, b in watcher.messages if t == f"muck/v1/trucks/{PHONE}/status"]
    assert statuses[-4:] == ["online", "offline", "online", "offline"]


def test_unknown_terminal_is_refused_and_recorded_unregistered(settings, broker, db, watcher):
    register_truck(db)
    with running_gateway(settings, broker.url) as (gateway, port):
        rogue = TerminalClient(
            TerminalIdentity("013900000001", "ROGUE01", "粤B99999"), "127.0.0.1", port
        )
        rogue.connect()
        assert rogue.register() == m.NO_SUCH_TERMINAL
        assert rogue.authenticate("guess") == m.FAILURE
        ts = now_ms() // 1000 * 1000
        # refused, but published under the id it claimed: stored with no truck, the
        # unregistered-terminal evidence of the black-truck list
        assert rogue.report(fix(ts)) == m.FAILURE
        assert wait_until(lambda: len(watcher.telemetry("ROGUE01")) == 1, 5)
    assert count(db, "SELECT count(*) FROM jt808_terminals") == 0


def test_bad_frames_are_quarantined_and_the_connection_survives(settings, broker, db, watcher):
    register_truck(db)
    with running_gateway(settings, broker.url) as (gateway, port):
        terminal = TerminalClient(TerminalIdentity(PHONE, "T000042"), "127.0.0.1", port).connect()
        assert terminal.register() == m.REGISTERED and terminal.authenticate() == m.OK
        body = m.encode_location(m.Location(0, 3, 22.5, 114.0, 0, 0, 0, now_ms()))
        # A serial whose check code is neither escaped nor one bit from 0x7D/0x7E, so that
        # flipping its last bit makes a wrong check code, never a bad escape or a flag.
        serial, good = next(
            (s, frame)
            for s in range(77, 99)
            if (frame := encode_frame(m.LOCATION, PHONE, s, body))[-3] != 0x7D
            and frame[-2] not in (0x7C, 0x7F)
        )
        bad_check = good[:-2] + bytes([good[-2] ^ 0x01]) + b"\x7e"
        terminal.send_raw(bad_check)
        reply = terminal.reply_to(serial)
        assert m.decode_general_reply(reply.body).result == m.MESSAGE_ERROR
        # an impossible date: the header is fine, the body is not
        feb30 = struct.pack("!IIIIHHH", 0, 3, 22500000, 114000000, 0, 0, 0) + bytes.fromhex(
            "260230120000"
        )
        assert terminal.result_of(terminal.send(m.LOCATION, feb30)) == m.MESSAGE_ERROR
        terminal.send_raw(b"\x7e\x01\x02\x7d\x09\x7e")  # a bad escape
        assert terminal.heartbeat() == m.OK  # still connected
        assert wait_until(
            lambda: (
                count(db, "SELECT count(*) FROM quarantine WHERE topic = %s", (f"jt808/{PHONE}",))
                >= 2
            ),
            5,
        )
        time.sleep(1.2)
    with db.cursor() as cur:
        cur.execute("SELECT reason, length(payload) > 0 FROM quarantine ORDER BY id")
        reasons = cur.fetchall()
    db.commit()
    assert ("jt808_bad_checksum", True) in reasons
    assert ("jt808_bad_time", True) in reasons
    assert ("jt808_bad_escape", True) in reasons
    assert watcher.telemetry(PHONE) == []


def test_subpackaged_batch_out_of_order(settings, broker, db, watcher):
    register_truck(db)
    with running_gateway(settings, broker.url) as (gateway, port):
        terminal = TerminalClient(
            TerminalIdentity(PHONE, "T000042", edition=2019), "127.0.0.1", port
        ).connect()
        assert terminal.register() == m.REGISTERED and terminal.authenticate() == m.OK
        ts = now_ms() // 1000 * 1000
        locations = [
            m.Location(0, 3, 22.5 + k / 1e4, 114.0, 0, 20.0, 0, ts - 300_000 + k * 1000)
            for k in range(50)
        ]
        body = m.encode_batch(locations)
        frames = split_message(
            m.BATCH, terminal.identity.header_phone, 500, body, version=1, package_size=600
        )
        assert len(frames) == 3
        terminal.send_raw(frames[2] + frames[0])
        time.sleep(0.3)
        assert watcher.telemetry(PHONE) == []
        terminal.send_raw(frames[1])
        assert terminal.result_of(500) == m.OK
        assert wait_until(lambda: len(watcher.telemetry(PHONE)) == 1, 5)
        assert len(watcher.telemetry(PHONE)[0]) == 50
        # a package that never comes: asked for once (0x8003), then quarantined
        terminal.send_raw(
            split_message(
                m.BATCH, terminal.identity.header_phone, 900, body, version=1, package_size=600
            )[0]
        )
        request = None
        deadline = time.monotonic() + 5
        while request is None and time.monotonic() < deadline:
            frame = terminal.receive(1)
            if frame is not None and frame.msg_id == m.RETRANSMIT:
                request = m.decode_retransmit(frame.body, 2019)
        assert request is not None and (request.original_serial, request.indices) == (900, [2, 3])
        assert wait_until(
            lambda: (
                count(
                    db, "SELECT count(*) FROM quarantine WHERE reason = 'jt808_subpackage_timeout'"
                )
                == 1
            ),
            6,
        )


def test_limits_idle_rate_auth_timeout_and_garbage(settings, broker, db):
    register_truck(db)
    with running_gateway(
        settings, broker.url, heartbeat_s=1.0, auth_timeout_s=2.0, max_frames_per_s=5
    ) as (gateway, port):
        # never authenticates: closed after auth_timeout_s... or idle first (2 s)
        idle = TerminalClient(TerminalIdentity(PHONE), "127.0.0.1", port).connect()
        started = time.monotonic()
        assert idle.receive(6) is None
        assert time.monotonic() - started < 5.5
        # more than 5 frames a second: the extra ones are dropped, not answered
        busy = TerminalClient(TerminalIdentity(PHONE, "T000042"), "127.0.0.1", port).connect()
        assert busy.register() == m.REGISTERED
        serials = [busy.send(m.HEARTBEAT, b"") for _ in range(20)]
        answered = [busy.result_of(s, 0.5) for s in serials[-5:]]
        assert answered.count(None) >= 4
        # garbage without flags: the connection is closed
        junk = socket.create_connection(("127.0.0.1", port))
        junk.settimeout(5)
        try:
            for _ in range(10):
                junk.sendall(b"\x01" * 4096)
        except OSError:
            pass
        try:
            closed = junk.recv(10) == b""
        except ConnectionResetError:  # closed with our bytes unread
            closed = True
        assert closed
        junk.close()
    assert count(db, "SELECT count(*) FROM quarantine WHERE reason = 'jt808_rate_limited'") >= 1
    assert (
        count(
            db,
            "SELECT count(*) FROM quarantine WHERE reason IN ('jt808_garbage', 'jt808_oversized')",
        )
        >= 1
    )


def test_the_gateway_serves_metrics_and_health(settings, broker, db):
    """`--metrics-port`: connections by authentication, frames by message id, events,
    quarantine reasons and PUBACKed publishes, read from the running gateway."""
    from tests.muck.test_metrics import healthz, scrape, value
    from tests.services import free_port

    register_truck(db)
    metrics_port = free_port()
    with running_gateway(settings, broker.url, metrics_port=metrics_port) as (gateway, port):
        status, health = healthz(metrics_port)
        assert status == 200 and health["mqtt"] == "connected", health
        terminal = TerminalClient(
            TerminalIdentity(PHONE, "T000042", "粤B12345", 2019), "127.0.0.1", port
        ).connect()
        assert terminal.register() == m.REGISTERED
        assert terminal.authenticate() == m.OK
        ts = now_ms() // 1000 * 1000
        for k in range(3):
            assert terminal.report(fix(ts - k * 1000)) == m.OK
        terminal.send_raw(b"\x7e\x02\x00\x00\x01\x7e")  # too short for a header
        assert terminal.heartbeat() == m.OK
        samples = scrape(metrics_port)
        assert value(samples, "muck_jt808_connections", authenticated="true") == 1
        assert value(samples, "muck_jt808_frames_total", msg_id="0200") == 3
        assert value(samples, "muck_jt808_frames_total", msg_id="0100") == 1
        assert value(samples, "muck_jt808_events_total", event="auth_ok") == 1
        assert value(samples, "muck_jt808_quarantined_total", reason="jt808_truncated") == 1
        # 3 reports and the "online" status
        assert value(samples, "muck_jt808_published_total") == 4
        assert value(samples, "muck_jt808_broker_connected") == 1
        terminal.close()
    # Start-up tuned the cyclic collector for thousands of long-lived connections.
    assert f"young generation {GC_YOUNG_THRESHOLD}," in gateway.output()


def test_several_gateway_processes_share_the_port(settings, broker, db, watcher):
    """`--processes 2`: two workers on one port (SO_REUSEPORT), each with its own broker
    session and metrics port; the kernel spreads the terminals over both, every report is
    acknowledged and published; when a worker dies the supervisor stops the other and exits
    non-zero, for the service manager to restart the gateway."""
    import psutil

    from tests.muck.test_metrics import scrape, value
    from tests.services import free_port

    phones = [f"0139000{k:05d}" for k in range(16)]
    for k, phone in enumerate(phones):
        register_truck(db, phone, f"粤B7{k:04d}")
    metrics_port = free_port()
    with running_gateway(settings, broker.url, metrics_port=metrics_port, processes=2) as (
        gateway,
        port,
    ):
        assert wait_until(
            lambda: sum("gateway connected to the broker" in line for line in gateway.log) == 2,
            20,
        ), gateway.output()
        ts = now_ms() // 1000 * 1000
        terminals = []
        for k, phone in enumerate(phones):
            terminal = TerminalClient(
                TerminalIdentity(phone, f"T{k:06d}", f"粤B7{k:04d}", 2019), "127.0.0.1", port
            ).connect()
            assert terminal.register() == m.REGISTERED
            assert terminal.authenticate() == m.OK
            assert terminal.report(fix(ts - k * 1000)) == m.OK
            terminals.append(terminal)
        assert wait_until(lambda: all(len(watcher.telemetry(p)) == 1 for p in phones), 10)
        per_worker = [
            value(scrape(metrics_port + k), "muck_jt808_connections", authenticated="true")
            for k in range(2)
        ]
        assert sum(per_worker) == 16 and min(per_worker) > 0, per_worker
        for terminal in terminals:
            terminal.close()

        workers = psutil.Process(gateway.proc.pid).children()
        assert len(workers) == 2
        workers[0].kill()
        assert gateway.proc.wait(15) == 1
        assert wait_until(
            lambda: not workers[1].is_running() or workers[1].status() == "zombie", 35
        )
        assert any("exited: stopping the others" in line for line in gateway.log)
