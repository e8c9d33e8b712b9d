"""Two real `muck collect` sharing a Mosquitto subscription with the rules on: round-robin
splits one truck's fixes between them, late fixes make the rules replay, and the violations
that stand are one collector's (a spurious one opened out of order is withdrawn by the
replay) (docs/operations.md, "Mosquitto's round-robin")."""

from __future__ import annotations

import datetime as dt
import time

from core.db import transaction
from registry.service import bind_terminal, upsert_truck
from telemetry.contract import Topics
from tests.conftest import require_mosquitto
from tests.mqtt_helpers import collector_env, count, fix, now_ms, publish, wait_until
from tests.muck.test_metrics import scrape, value
from tests.services import MuckProcess, free_port

T = Topics("muck/v1")
FAST = """
[rules.speeding]
min_duration_s = 5.0
"""


def test_round_robin_splits_a_truck_and_still_raises_one_violation(settings, broker, db):
    require_mosquitto(broker)
    with transaction(db) as cur:
        truck = upsert_truck(cur, "粤B50001", None)
        bind_terminal(cur, "RR-1", truck, dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    env = collector_env(settings, broker.url, FAST)
    ports = [free_port(), free_port()]
    collectors = [
        MuckProcess(
            [
                "collect",
                "--client-id",
                f"rr-{i}",
                "--shared-group",
                "rr",
                "--no-jobs",
                "--metrics-port",
                str(port),
            ],
            env,
            ready="connected to",
        )
        for i, port in enumerate(ports)
    ]
    try:
        time.sleep(1.0)  # both SUBSCRIBEs reach the broker before anything is published
        start = now_ms() - 120_000
        # One speeding episode of 40 s, then back under the limit: one violation.
        fixes = [(T.telemetry("RR-1"), fix(start + i * 1000, speed=100.0)) for i in range(40)]
        fixes += [
            (T.telemetry("RR-1"), fix(start + (40 + i) * 1000, speed=20.0)) for i in range(20)
        ]
        publish(broker.url, fixes)
        assert wait_until(lambda: count(db, "SELECT count(*) FROM positions") == 60, timeout=30)
        samples = [scrape(port) for port in ports]
        received = [value(s, "muck_ingest_messages_received_total") for s in samples]
        replays = sum(value(s, "muck_rule_replays_total") for s in samples)
        assert all(r > 0 for r in received) and sum(received) == 60, received
        # Out of order, a collector may open an episode from a later fix; the replay of the
        # late fix then withdraws it: what stands is one collector's single violation.
        found = wait_until(
            lambda: (
                count(
                    db,
                    "SELECT count(*) FROM violations WHERE kind = 'speeding' AND status <> 'withdrawn'",
                )
                == 1
            ),
            timeout=10,
        )
        with db.cursor() as cur:
            cur.execute(
                """SELECT started_at, ended_at, status FROM violations WHERE kind = 'speeding'"""
            )
            rows = cur.fetchall()
        db.rollback()
        assert found, f"violations {rows}; received {received}, replays {replays}"
        with db.cursor() as cur:
            cur.execute(
                """SELECT extract(epoch FROM started_at)::bigint, ended_at IS NOT NULL
                   FROM violations WHERE kind = 'speeding' AND status <> 'withdrawn'"""
            )
            started, ended = cur.fetchone()
        db.rollback()
        assert abs(started * 1000 - start) <= 1000 and ended
        withdrawn = len([r for r in rows if r[2] == "withdrawn"])
        print(f"round-robin: received {received}, replays {int(replays)}, withdrawn {withdrawn}")
    finally:
        for process in collectors:
            process.stop()
