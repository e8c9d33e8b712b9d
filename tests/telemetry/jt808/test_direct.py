"""`muck collect --jt808`: the gateway in the collector's process, without the broker. A
terminal's report is acknowledged only after its commit — so at the moment the terminal
has its 0x8001 the row is already in the database — and everything downstream (the
quarantine, the unregistered path, the rules) is the collector's as for MQTT."""

from __future__ import annotations

import pytest

from simulators.jt808 import TerminalClient, TerminalIdentity
from telemetry.jt808 import messages as m
from telemetry.jt808.server import GC_YOUNG_THRESHOLD
from tests.mqtt_helpers import collector_env, count, now_ms, wait_until
from tests.services import MuckProcess, free_port
from tests.telemetry.jt808.gateway_helpers import PHONE, register_truck


def fix(ts: int, k: int = 0) -> dict:
    return {"ts": ts, "lat": 22.54 + k * 1e-4, "lon": 114.05, "speed": 30.0, "heading": 90}


@pytest.fixture
def direct(settings, db):
    port = free_port()
    # No broker: the URL points nowhere, and the collector must not need it.
    env = collector_env(settings, "mqtt://127.0.0.1:1")
    with MuckProcess(
        ["collect", "--jt808", f"127.0.0.1:{port}", "--no-jobs", "--client-id", "direct-1"],
        env,
        ready="collecting from JT/T 808 terminals",
    ) as process:
        yield process, port


def stored(db, device: str) -> int:
    return count(db, "SELECT count(*) FROM positions WHERE device_id = %s", (device,))


def test_a_report_is_acknowledged_after_its_commit(db, direct):
    process, port = direct
    truck_id = register_truck(db)
    terminal = TerminalClient(
        TerminalIdentity(PHONE, "T000042", "粤B12345", edition=2019), "127.0.0.1", port
    ).connect()
    assert terminal.register() == m.REGISTERED
    assert terminal.authenticate() == m.OK
    start = now_ms() // 1000 * 1000 - 600_000
    for k in range(5):
        assert terminal.report(fix(start + k * 10_000, k)) == m.OK
        assert stored(db, PHONE) == k + 1  # no waiting: committed before the 0x8001
    batch = [fix(start + (5 + k) * 10_000, 5 + k) for k in range(10)]
    assert terminal.batch(batch, m.BATCH_BLIND_AREA) == m.OK
    assert stored(db, PHONE) == 15
    assert terminal.report(fix(start)) == m.OK  # a re-send: acknowledged, stored once
    assert stored(db, PHONE) == 15
    terminal.close()
    assert (
        count(
            db,
            "SELECT count(*) FROM positions WHERE device_id = %s AND truck_id = %s",
            (PHONE, truck_id),
        )
        == 15
    )
    # the status the gateway publishes reaches the collector the same way
    assert wait_until(
        lambda: count(db, "SELECT count(*) FROM device_status WHERE device_id = %s", (PHONE,)) == 1
    )
    assert process.stop() == 0
    assert any("stopped:" in line for line in process.log), process.output()
    assert f"young generation {GC_YOUNG_THRESHOLD}," in process.output()  # tuned for terminals


def test_an_unknown_terminal_is_stored_unbound_and_never_acknowledged(db, direct):
    _process, port = direct
    terminal = TerminalClient(
        TerminalIdentity("013800000099", "T000099", "粤B99999", edition=2013), "127.0.0.1", port
    ).connect()
    assert terminal.register() == m.NO_SUCH_TERMINAL
    ts = now_ms() // 1000 * 1000 - 60_000
    assert terminal.report(fix(ts)) == m.FAILURE
    terminal.close()
    assert wait_until(
        lambda: (
            count(
                db,
                "SELECT count(*) FROM positions WHERE device_id = 'T000099' AND truck_id IS NULL",
            )
            == 1
        )
    )
