"""End to end: real broker → collector → real PostgreSQL."""

from __future__ import annotations

import datetime as dt

import msgspec

from registry.service import bind_terminal, upsert_company, upsert_truck
from telemetry.contract import Topics
from tests.mqtt_helpers import count, fix, now_ms, publish, running_collector, wait_until

T = Topics("muck/v1")


def register(db, device: str, plate: str = "粤B12345") -> int:
    with db.cursor() as cur:
        company = upsert_company(cur, "测试运输公司", "91110000600037341L", "李四")
        truck = upsert_truck(cur, plate, company)
        bind_terminal(cur, device, truck, dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
    db.commit()
    return truck


def test_stored_rows_equal_published_and_redelivery_adds_nothing(settings, broker, db):
    truck = register(db, "DEV1")
    base = now_ms() - 600_000
    sent = [
        (
            T.telemetry("DEV1"),
            fix(
                base + i * 10_000,
                lat=22.55 + i * 1e-4,
                lid="closed",
                load="full",
                acc=True,
                alarms=["power_cut"] if i == 3 else None,
                seq=i,
                sats=11,
                hdop=0.8,
                alt=5.0,
                lift="down",
                weight_kg=30500,
            ),
        )
        for i in range(50)
    ]
    with running_collector(settings) as collector:
        publish(broker.url, sent)
        assert wait_until(lambda: count(db, "SELECT count(*) FROM positions") == 50)
        # Redeliver everything: exact duplicates are counted, never stored twice.
        publish(broker.url, sent)
        assert wait_until(lambda: collector.stats.snapshot()["duplicates"] == 50)
    assert count(db, "SELECT count(*) FROM positions") == 50
    assert count(db, "SELECT count(*) FROM quarantine") == 0
    with db.cursor() as cur:
        cur.execute(
            """SELECT device_id, truck_id, (extract(epoch FROM fix_time) * 1000)::bigint, lat, lon,
                      speed_kmh, heading, altitude_m, lid, lift, load, weight_kg, acc, alarms,
                      sats, hdop, seq
               FROM positions ORDER BY fix_time"""
        )
        rows = cur.fetchall()
        cur.execute(
            "SELECT truck_id, s.lat, p.seq FROM truck_state s JOIN positions p USING (truck_id, fix_time)"
        )
        state = cur.fetchall()
    for i, row in enumerate(rows):
        body = msgspec.json.decode(sent[i][1])
        assert row[:5] == ("DEV1", truck, body["ts"], body["lat"], body["lon"])
        assert row[5:] == (
            30.0,
            90,
            5.0,
            "closed",
            "down",
            "full",
            30500.0,
            True,
            body.get("alarms"),
            11,
            0.8,
            i,
        )
    assert state == [(truck, rows[-1][3], 49)]


def test_bad_inputs_are_quarantined_next_to_good_messages(settings, broker, db):
    register(db, "DEV2")
    now = now_ms()
    good = [(T.telemetry("DEV2"), fix(now - 60_000 + i * 1000)) for i in range(5)]
    bad = [
        ("malformed_json", T.telemetry("DEV2"), b'{"ts": 1'),
        ("missing_field", T.telemetry("DEV2"), msgspec.json.encode({"ts": now, "lat": 22.5})),
        ("out_of_range", T.telemetry("DEV2"), fix(now - 1000, lat=123.0)),
        ("zero_position", T.telemetry("DEV2"), fix(now - 2000, lat=0.0, lon=0.0)),
        ("future_time", T.telemetry("DEV2"), fix(now + 86_400_000)),
        ("too_old", T.telemetry("DEV2"), fix(now - 40 * 86_400_000)),
        ("topic_mismatch", T.telemetry("DEV2"), fix(now - 3000, device="DEV9")),
        ("oversized", T.telemetry("DEV2"), b"[" + b" " * 300_000 + b"]"),
        ("bad_topic", "muck/v1/trucks/DEV 2/telemetry", fix(now)),
        ("invalid_field", T.sightings("CAM1"), msgspec.json.encode({"ts": now, "plate": "?"})),
        # 20 km in 10 s after the good fixes: no truck drives that fast.
        ("implied_speed", T.telemetry("DEV2"), fix(now - 50_000, lat=22.73)),
    ]
    # A different fix at a time already stored (after the good ones are in).
    conflict = [("duplicate_conflict", T.telemetry("DEV2"), fix(now - 60_000, lat=22.5501))]
    with running_collector(settings):
        publish(broker.url, good)
        assert wait_until(lambda: count(db, "SELECT count(*) FROM positions") == 5)
        publish(broker.url, [(topic, payload) for _, topic, payload in bad + conflict] + good)
        expected = sorted(reason for reason, _, _ in bad + conflict)
        assert wait_until(lambda: count(db, "SELECT count(*) FROM quarantine") == len(expected))
    with db.cursor() as cur:
        cur.execute(
            "SELECT reason, topic, payload_bytes, length(payload) FROM quarantine ORDER BY reason"
        )
        rows = cur.fetchall()
    assert sorted(r[0] for r in rows) == expected
    oversized = next(r for r in rows if r[0] == "oversized")
    assert oversized[2] > 300_000 and oversized[3] == settings.ingest["quarantine_payload_bytes"]
    assert count(db, "SELECT count(*) FROM positions") == 5


def test_unregistered_terminal_is_stored_and_marked(settings, broker, db):
    register(db, "DEV3")
    now = now_ms()
    with running_collector(settings):
        publish(
            broker.url,
            [(T.telemetry("GHOST1"), fix(now - 5000)), (T.telemetry("DEV3"), fix(now - 4000))],
        )
        assert wait_until(lambda: count(db, "SELECT count(*) FROM positions") == 2)
    assert (
        count(db, "SELECT count(*) FROM positions WHERE device_id = 'GHOST1' AND truck_id IS NULL")
        == 1
    )
    assert (
        count(
            db, "SELECT count(*) FROM positions WHERE device_id = 'DEV3' AND truck_id IS NOT NULL"
        )
        == 1
    )
    assert count(db, "SELECT count(*) FROM truck_state") == 1


def test_late_batch_reupload_is_stored_and_does_not_move_truck_state_back(settings, broker, db):
    truck = register(db, "DEV4")
    now = now_ms()
    with running_collector(settings):
        publish(broker.url, [(T.telemetry("DEV4"), fix(now - 1000, lat=22.56))])
        assert wait_until(lambda: count(db, "SELECT count(*) FROM positions") == 1)
        backlog = [
            {"ts": now - 600_000 + i * 10_000, "lat": 22.55, "lon": 114.06, "speed": 20}
            for i in range(30)
        ]
        publish(broker.url, [(T.telemetry("DEV4"), msgspec.json.encode(backlog))])
        assert wait_until(lambda: count(db, "SELECT count(*) FROM positions") == 31)
    with db.cursor() as cur:
        cur.execute("SELECT lat FROM truck_state WHERE truck_id = %s", (truck,))
        assert cur.fetchone()[0] == 22.56


def test_sightings_and_status_are_stored(settings, broker, db):
    now = now_ms()
    sighting = {
        "ts": now - 1000,
        "plate": "粤B99999",
        "plate_color": "yellow",
        "direction": "in",
        "site_id": "SITE-1",
        "confidence": 0.93,
        "image_ref": "s3://cam/1.jpg",
    }
    with running_collector(settings):
        publish(
            broker.url,
            [
                (T.sightings("CAM7"), msgspec.json.encode(sighting)),
                (T.sightings("CAM7"), msgspec.json.encode(sighting)),  # redelivered
                (T.status("DEV5"), b"online"),
                (T.status("DEV5"), msgspec.json.encode({"status": "offline"})),
                # An older status arriving late must not override the newer one.
                (T.status("DEV5"), msgspec.json.encode({"status": "online", "ts": now - 60_000})),
            ],
        )
        assert wait_until(
            lambda: count(db, "SELECT count(*) FROM device_status WHERE status = 'offline'") == 1
        )
        assert wait_until(lambda: count(db, "SELECT count(*) FROM sightings") == 1)
    with db.cursor() as cur:
        cur.execute(
            "SELECT camera_id, plate, direction, site_id, confidence, image_ref FROM sightings"
        )
        assert cur.fetchone() == ("CAM7", "粤B99999", "in", "SITE-1", 0.93, "s3://cam/1.jpg")


def test_fixes_on_a_day_without_partition_create_it(settings, broker, db):
    # 6 days back is inside the horizon; maintenance created it, but drop it to prove the
    # collector creates missing partitions on demand.
    day = (dt.datetime.now(dt.UTC) - dt.timedelta(days=6)).date()
    with db.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS positions_p{day:%Y%m%d}")  # noqa: S608 - generated name
    db.commit()
    ts = int(dt.datetime.combine(day, dt.time(12), tzinfo=dt.UTC).timestamp() * 1000)
    with running_collector(settings):
        publish(broker.url, [(T.telemetry("DEV6"), fix(ts))])
        assert wait_until(lambda: count(db, "SELECT count(*) FROM positions") == 1)
    assert (
        count(db, "SELECT count(*) FROM pg_class WHERE relname = %s", (f"positions_p{day:%Y%m%d}",))
        == 1
    )


def test_duplicates_inside_one_batch_are_stored_once_and_counted(settings, db):
    from telemetry.ingest import Incoming, Ingestor

    ingestor = Ingestor(settings)
    writer = ingestor.make_writer(db)
    ts = now_ms() - 10_000
    messages = [Incoming(T.telemetry("DUP1"), fix(ts))] * 3 + [
        Incoming(T.telemetry("DUP1"), fix(ts + 1000))
    ]
    with db.cursor() as cur:
        batch = ingestor.build(messages, cur)
    result = writer.write(batch)
    assert (result.stored, result.duplicates, result.conflicts) == (2, 2, [])
    assert sorted(batch.inserted) == [0, 3]
    assert count(db, "SELECT count(*) FROM positions WHERE device_id = 'DUP1'") == 2


def test_a_failing_rule_hook_never_stops_ingestion(settings, broker, db):
    calls = []

    def broken_rules(cur, batch):
        calls.append(len(batch.fixes))
        raise ZeroDivisionError("bug in a rule")

    register(db, "DEV7")
    now = now_ms()
    with running_collector(settings, after_store=[broken_rules]) as collector:
        publish(broker.url, [(T.telemetry("DEV7"), fix(now - 9000 + i * 1000)) for i in range(5)])
        assert wait_until(lambda: count(db, "SELECT count(*) FROM positions") == 5)
        assert collector.stats.snapshot()["hook_errors"] >= 1
    assert calls, "the hook was called"
    assert count(db, "SELECT count(*) FROM truck_state") == 1


def test_a_batch_that_cannot_be_stored_is_quarantined_not_lost(settings, broker, db, monkeypatch):
    from telemetry.ingest import Ingestor

    def broken_build(self, messages, cur):
        raise RuntimeError("bug while decoding")

    monkeypatch.setattr(Ingestor, "build", broken_build)
    with running_collector(settings):
        publish(broker.url, [(T.telemetry("DEV8"), fix(now_ms() - 1000))])
        assert wait_until(
            lambda: (
                count(db, "SELECT count(*) FROM quarantine WHERE reason = 'internal_error'") == 1
            )
        )


def test_a_batch_leaves_unlocked_the_trucks_whose_fixes_were_all_duplicates(
    settings, database_url, db
):
    """A truck whose only fix in a batch is one already stored gets no truck_state write, so
    its row is not locked: the rules lock the trucks of the inserted fixes, in truck order,
    and a row locked outside that order let two collectors deadlock."""
    import psycopg2
    import psycopg2.extensions

    from compliance.engine import ComplianceEngine
    from telemetry.ingest import Incoming, Ingestor

    truck_a, truck_b = register(db, "LOCKA", "粤B11111"), register(db, "LOCKB", "粤B22222")
    ingestor = Ingestor(settings)
    engine = ComplianceEngine(settings)
    engine.load(db)
    ts = now_ms() - 60_000
    first = [Incoming(T.telemetry("LOCKA"), fix(ts)), Incoming(T.telemetry("LOCKB"), fix(ts))]
    with db.cursor() as cur:
        ingestor.make_writer(db, after_store=[engine.after_store]).write(ingestor.build(first, cur))
    unlocked: list[list[int]] = []

    class CheckBeforeCommit(psycopg2.extensions.connection):
        def commit(self) -> None:
            # From another session, at the end of the batch's transaction: which of the two
            # trucks' rows can be locked (SKIP LOCKED leaves out those the batch holds)?
            with db.cursor() as other:
                other.execute(
                    """SELECT truck_id FROM truck_state WHERE truck_id = ANY(%s)
                       ORDER BY truck_id FOR UPDATE SKIP LOCKED""",
                    ([truck_a, truck_b],),
                )
                unlocked.append([row[0] for row in other.fetchall()])
            db.rollback()
            super().commit()

    conn = psycopg2.connect(database_url, connection_factory=CheckBeforeCommit)
    try:
        second_engine = ComplianceEngine(settings)
        second_engine.load(conn)
        writer = ingestor.make_writer(conn, after_store=[second_engine.after_store])
        second = [
            Incoming(T.telemetry("LOCKA"), fix(ts)),  # already stored: a duplicate only
            Incoming(T.telemetry("LOCKB"), fix(ts + 10_000)),  # a new fix
        ]
        with conn.cursor() as cur:
            batch = ingestor.build(second, cur)
        unlocked.clear()  # the catalogue loads above committed too
        result = writer.write(batch)
    finally:
        conn.close()
    assert (result.stored, result.duplicates) == (1, 1)
    assert unlocked[0] == [truck_a]  # B is held by the batch; A was never touched


def test_the_conflict_lookup_reads_positions_by_key_whatever_plan_is_cached(settings, db):
    """The duplicate-conflict lookup is a prepared statement. PostgreSQL caches a generic plan
    for it, planned from the statistics of that moment: with a plain join, planned while the
    day's partition looked small, it scanned the whole partition for every batch holding a
    duplicate (63 ms per batch at 150,000 rows). It must read positions through the key."""
    from telemetry.ingest import Incoming, Ingestor

    ingestor = Ingestor(settings)
    writer = ingestor.make_writer(db)
    ts = now_ms() - 10_000
    with db.cursor() as cur:
        writer.write(ingestor.build([Incoming(T.telemetry("PLAN1"), fix(ts))], cur))
        cur.execute("SET plan_cache_mode = force_generic_plan")
        cur.execute("EXPLAIN (FORMAT JSON) EXECUTE muck_fix_conflicts ('{0}')")
        plan = cur.fetchone()[0]
        cur.execute("RESET plan_cache_mode")
    db.rollback()
    scanned = {
        node["Relation Name"]: node["Node Type"]
        for node in _plan_nodes(plan[0]["Plan"])
        if node.get("Relation Name", "").startswith("positions_p")
    }
    assert scanned, plan
    assert set(scanned.values()) <= {"Index Scan", "Index Only Scan"}, scanned


def _plan_nodes(node: dict):
    yield node
    for child in node.get("Plans", []):
        yield from _plan_nodes(child)
