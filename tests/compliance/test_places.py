"""Violations opened without a position get the first fix of their episode, in the running
product: the real `muck collect` runs the place-fill job (compliance/places.py)."""

from __future__ import annotations

import uuid

from tests.compliance.city import EMPTY, Pipeline, Trace, build_city
from tests.mqtt_helpers import collector_env, count, wait_until
from tests.services import muck_collect


def test_muck_collect_fills_the_place_of_a_violation_without_one(settings, broker, db):
    city = build_city(db, settings)
    trace = Trace("T2", city.base_ms).dwell(120, **EMPTY).drive(2000, 0, 30, **EMPTY)
    Pipeline(settings, db).feed(trace.messages())
    first_after = trace.fixes[3]
    with db.cursor() as cur:  # as the going-dark sweep leaves one when it knows no position
        cur.execute(
            """INSERT INTO violations (truck_id, kind, stream, started_at)
               VALUES (%s, 'going_dark', 'dark', to_timestamp(%s)) RETURNING id""",
            (city.trucks["T2"], (first_after["ts"] - 1) / 1000),
        )
        vid = cur.fetchone()[0]
    db.commit()
    env = collector_env(settings, broker.url, "[compliance]\nplace_fill_s = 1\n")
    collector = muck_collect("place-" + uuid.uuid4().hex[:6], env)
    try:
        assert wait_until(
            lambda: count(db, "SELECT count(*) FROM violations WHERE lat IS NOT NULL") == 1,
            timeout=60,
            step=0.5,
        ), collector.output()
    finally:
        collector.stop()
    with db.cursor() as cur:
        cur.execute("SELECT lat, lon FROM violations WHERE id = %s", (vid,))
        assert cur.fetchone() == (first_after["lat"], first_after["lon"])
    db.rollback()
