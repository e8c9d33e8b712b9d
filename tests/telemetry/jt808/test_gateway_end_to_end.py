"""JT/T 808 terminals → the real `muck gateway jt808` → a real Mosquitto → the real
`muck collect` → PostgreSQL. Register, authenticate, report, batch-upload blind-area fixes,
lose the broker: no acknowledgement while it is away, the terminal keeps its reports and
re-uploads them, and every fix is stored exactly once. An unknown terminal's reports land
where the black-truck scan finds unregistered terminals."""

from __future__ import annotations

import time

import pytest

from simulators.jt808 import TerminalClient, TerminalIdentity
from telemetry.jt808 import messages as m
from tests.conftest import require_mosquitto
from tests.mqtt_helpers import collector_env, count, now_ms, wait_until
from tests.services import muck_collect
from tests.telemetry.jt808.gateway_helpers import PHONE, register_truck, running_gateway

# the gateway retains its terminals' status: cleared after the module (conftest)
pytestmark = pytest.mark.usefixtures("no_retained_status_left")


def fix(ts: int, k: int) -> dict:
    return {
        "ts": ts,
        "lat": 22.54 + k * 1e-4,
        "lon": 114.05,
        "speed": 30.0,
        "heading": 90,
        "lid": "closed",
        "lift": "down",
        "load": "full",
    }


def test_register_report_lose_the_broker_store_every_fix_once(settings, broker, db):
    require_mosquitto(broker)
    truck_id = register_truck(db)
    env = collector_env(settings, broker.url)
    start = now_ms() // 1000 * 1000 - 3_600_000
    sent: dict[int, dict] = {}
    with (
        muck_collect("jt808-e2e", env),
        running_gateway(settings, broker.url) as (gateway, port),
    ):
        terminal = TerminalClient(
            TerminalIdentity(PHONE, "T000042", "粤B12345", edition=2019), "127.0.0.1", port
        ).connect()
        assert terminal.register() == m.REGISTERED
        assert terminal.authenticate() == m.OK
        for k in range(5):  # live reports
            sent[k] = fix(start + k * 10_000, k)
            assert terminal.report(sent[k]) == m.OK
        blind = []  # the blind-area buffer from a coverage gap, re-uploaded in one batch
        for k in range(5, 25):
            sent[k] = fix(start + k * 10_000, k)
            blind.append(sent[k])
        assert terminal.batch(blind, m.BATCH_BLIND_AREA) == m.OK
        assert wait_until(
            lambda: (
                count(db, "SELECT count(*) FROM positions WHERE device_id = %s", (PHONE,)) == 25
            ),
            20,
        )

        broker.stop()
        unacked = []
        for k in range(25, 30):
            sent[k] = fix(start + k * 10_000, k)
            # the broker is away: no PUBACK, so no 0x8001 — the terminal keeps the report
            assert terminal.report(sent[k], timeout=1.5) is None
            unacked.append(sent[k])
        assert terminal.batch(unacked, timeout=1.5) is None

        broker.restart()
        assert wait_until(
            lambda: sum("gateway connected to the broker" in line for line in gateway.log) >= 2,
            20,
        ), gateway.output()
        # Back online: the terminal re-uploads what was never acknowledged, and (as real
        # terminals do after a lost reply) one report that was acknowledged already.
        assert terminal.batch(unacked + [sent[3]], m.BATCH_BLIND_AREA) == m.OK
        sent[30] = fix(start + 300_000, 30)
        assert terminal.report(sent[30]) == m.OK
        assert wait_until(
            lambda: (
                count(db, "SELECT count(*) FROM positions WHERE device_id = %s", (PHONE,)) == 31
            ),
            30,
        )
        time.sleep(1.0)  # nothing more arrives

    with db.cursor() as cur:
        cur.execute(
            """SELECT (extract(epoch FROM fix_time) * 1000)::bigint, truck_id, lid, load
               FROM positions WHERE device_id = %s ORDER BY fix_time""",
            (PHONE,),
        )
        rows = cur.fetchall()
    db.commit()
    assert [r[0] for r in rows] == sorted(f["ts"] for f in sent.values())  # each once
    assert {r[1] for r in rows} == {truck_id}
    assert {(r[2], r[3]) for r in rows} == {("closed", "full")}
    assert count(db, "SELECT count(*) FROM quarantine WHERE reason = 'duplicate_conflict'") == 0


def test_unknown_terminal_reaches_the_black_truck_list(settings, broker, db):
    """The collector's own black-truck scan (every second here) lists the unknown terminal:
    the gateway feeds the data path unregistered MQTT terminals already take."""
    register_truck(db)
    env = collector_env(settings, broker.url, "[compliance]\nblack_truck_scan_s = 1\n")
    with (
        muck_collect("jt808-e2e-rogue", env),
        running_gateway(settings, broker.url) as (gateway, port),
    ):
        rogue = TerminalClient(
            TerminalIdentity("013900000009", "ROGUE09", "粤B66666"), "127.0.0.1", port
        ).connect()
        assert rogue.register() == m.NO_SUCH_TERMINAL
        ts = now_ms() // 1000 * 1000 - 60_000
        for k in range(3):
            assert rogue.report(fix(ts + k * 10_000, k)) == m.FAILURE
        assert wait_until(
            lambda: (
                count(
                    db,
                    "SELECT count(*) FROM positions WHERE device_id = 'ROGUE09' AND truck_id IS NULL",
                )
                == 3
            ),
            20,
        )
        assert wait_until(
            lambda: (
                count(
                    db,
                    "SELECT count(*) FROM black_trucks WHERE kind = 'device' AND key = 'ROGUE09'",
                )
                == 1
            ),
            20,
        )
