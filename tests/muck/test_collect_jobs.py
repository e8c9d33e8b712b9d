"""Every clock job of a collector runs in the product: the real `muck collect`, started as an
operator starts it, against this test's database and broker, with the jobs' intervals
shortened in its configuration file. Each job is seen only by its effect in the database."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest
from psycopg2 import sql

from core.db import transaction
from geofence.model import Zone
from geofence.store import upsert_zones
from registry.service import bind_terminal, upsert_company, upsert_truck
from telemetry.contract import Topics
from tests.mqtt_helpers import collector_env, count, fix, now_ms, publish, wait_until
from tests.services import MuckProcess, muck_collect

T = Topics("muck/v1")
FAST_JOBS = """
[thresholds]
dark_after_s = 3
[compliance]
dark_sweep_s = 1
district_fill_s = 1
black_truck_scan_s = 1
permits_reload_poll_s = 0.5
[rules.speeding]
min_duration_s = 5.0
"""


def square(lon: float, lat: float, d: float = 0.01) -> dict:
    ring = [[lon - d, lat - d], [lon + d, lat - d], [lon + d, lat + d], [lon - d, lat + d]]
    return {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}


def furthest_partition(db) -> str:
    with db.cursor() as cur:
        cur.execute(
            """SELECT max(c.relname) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
               WHERE i.inhparent = 'positions'::regclass"""
        )
        name = cur.fetchone()[0]
    db.rollback()
    return name


@pytest.fixture
def collector(settings, broker):
    started = []

    def start() -> MuckProcess:
        env = collector_env(settings, broker.url, FAST_JOBS)
        started.append(muck_collect("jobs-test", env, maintenance=True))
        return started[-1]

    yield start
    for process in started:
        process.stop()


def test_every_clock_job_of_a_collector_runs_in_the_product(collector, broker, db):
    partition = furthest_partition(db)
    with db.cursor() as cur:
        cur.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(partition)))
    db.commit()
    with transaction(db) as cur:
        company = upsert_company(cur, "深圳某某运输有限公司", None)
        truck = upsert_truck(cur, "粤B20001", company)
        bind_terminal(cur, "JOBS-1", truck, dt.datetime(2026, 1, 1, tzinfo=dt.UTC))

    process = collector()

    # Partition maintenance runs at start: the partition dropped above is back.
    assert wait_until(lambda: furthest_partition(db) == partition, timeout=20), process.output()

    # Catalogue reload: a speed zone imported while the collector runs is applied to the next
    # fixes (30 km/h is within the ordinary-road limit; only the new 10 km/h zone makes it
    # speeding).
    upsert_zones(
        db,
        [
            Zone(
                "SLOW-1",
                "speed",
                "限速10",
                square(114.06, 22.55),
                attributes={"speed_limit_kmh": 10},
            )
        ],
    )
    time.sleep(2)  # > permits_reload_poll_s: the engine polls the catalogue version
    start = now_ms() - 20_000
    publish(
        broker.url, [(T.telemetry("JOBS-1"), fix(start + i * 2000, speed=30.0)) for i in range(8)]
    )
    assert wait_until(
        lambda: count(db, "SELECT count(*) FROM violations WHERE kind = 'speeding'") == 1,
        timeout=20,
    ), process.output()

    # Going-dark sweep: the truck was moving at its last fix and has been silent since.
    assert wait_until(
        lambda: count(db, "SELECT count(*) FROM violations WHERE kind = 'going_dark'") == 1,
        timeout=20,
    ), process.output()

    # District fill: the violations above lie in no district; once one is imported, they do.
    upsert_zones(db, [Zone("440304", "district", "福田区", square(114.06, 22.55, 0.05))])
    assert wait_until(
        lambda: count(db, "SELECT count(*) FROM violations WHERE district_code = '440304'") == 2,
        timeout=20,
    ), process.output()

    # Black-truck scan: a camera reads a plate nobody registered.
    sighting = {"ts": now_ms(), "plate": "粤B99999", "direction": "in", "confidence": 0.95}
    publish(broker.url, [(T.sightings("CAM-1"), json.dumps(sighting).encode())])
    assert wait_until(
        lambda: count(db, "SELECT count(*) FROM black_trucks WHERE key = '粤B99999'") == 1,
        timeout=20,
    ), process.output()

    assert process.stop() == 0, process.output()
