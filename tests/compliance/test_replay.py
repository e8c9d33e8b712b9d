"""Real conditions: shuffled, duplicated and late re-uploaded fixes, and a crash mid-trip,
end with exactly the violations of the same fixes delivered in order."""

from __future__ import annotations

import random

import msgspec
import pytest

from telemetry.ingest import Incoming
from tests.compliance.city import (
    EMPTY,
    LOADED,
    TOPICS,
    Pipeline,
    Trace,
    build_city,
    normal_trip,
    violations,
)
from tests.conftest import truncate_all


def eventful_day(base_ms: int) -> list[Incoming]:
    """T1: speeding, lid open, off route, dark, dumping on the way; T2: no permit."""
    opened = {"load": "full", "lid": "open", "lift": "down"}
    t1 = Trace("T1", base_ms, seed=3).dwell(180, **LOADED)
    t1.drive(800, 0, 35, **LOADED).drive(1800, 0, 55, **LOADED)  # speeding
    t1.drive(2800, 0, 35, **opened)  # unsealed for ~100 s
    t1.drive(2800, 160, 20, **LOADED).drive(3500, 160, 30, **LOADED).drive(3500, 0, 20, **LOADED)
    t1.gap(600).drive(4200, 0, 35, **LOADED)  # dark 10 min
    t1.dwell(30, **LOADED).dwell(60, load="full", lid="open", lift="up").dwell(30, **EMPTY)
    t1.drive(4950, 0, 35, **EMPTY)
    t2 = Trace("T2", base_ms + 5000, seed=4).dwell(120, **LOADED).drive(4950, 0, 35, **LOADED)
    return sorted(t1.messages() + t2.messages(), key=lambda m: msgspec.json.decode(m.payload)["ts"])


def in_order(db, settings, messages) -> list[tuple]:
    Pipeline(settings, db).feed(messages)
    return violations(db)


@pytest.fixture
def baseline(db, settings):
    city = build_city(db, settings)
    messages = eventful_day(city.base_ms)
    expected = in_order(db, settings, messages)
    kinds = sorted({row[1] for row in expected})
    assert kinds == [
        "going_dark",
        "illegal_dumping",
        "no_valid_permit",
        "route_deviation",
        "speeding",
        "unsealed_transport",
    ], expected
    truncate_all(db)
    build_city(db, settings)
    return messages, expected


def test_shuffled_batches_give_the_same_violations(db, settings, baseline):
    messages, expected = baseline
    shuffled = messages[:]
    random.Random(11).shuffle(shuffled)
    Pipeline(settings, db).feed(shuffled, batch_size=40)
    assert violations(db) == expected


def test_every_message_twice_gives_the_same_violations(db, settings, baseline):
    messages, expected = baseline
    doubled = messages + messages
    random.Random(5).shuffle(doubled)
    Pipeline(settings, db).feed(doubled, batch_size=30)
    assert violations(db) == expected


def test_late_blind_area_reupload_gives_the_same_violations(db, settings, baseline):
    messages, expected = baseline
    t1 = [m for m in messages if "/T1/" in m.topic]
    # ~6 minutes of T1 out of coverage while speeding and driving with the lid open: the
    # on-time stream alone shows a truck gone dark and misses both.
    hold = set(map(id, t1[15:50]))
    on_time = [m for m in messages if id(m) not in hold]
    backlog = [msgspec.json.decode(m.payload) for m in messages if id(m) in hold]
    pipeline = Pipeline(settings, db)
    pipeline.feed(on_time)
    pipeline.feed([Incoming(TOPICS.telemetry("T1"), msgspec.json.encode(backlog))])
    assert violations(db) == expected
    # What the on-time stream alone suggested and the backlog disproved is withdrawn, on record.
    with db.cursor() as cur:
        cur.execute(
            """SELECT v.kind FROM violation_events e JOIN violations v ON v.id = e.violation_id
               WHERE e.action = 'withdrawn'"""
        )
        assert [row[0] for row in cur.fetchall()] == ["going_dark"]
    db.commit()


def test_crash_mid_trip_and_restart_gives_the_same_violations(db, settings, baseline):
    messages, expected = baseline
    half = len(messages) // 2
    Pipeline(settings, db).feed(messages[:half])
    # A new process: nothing in memory, everything from truck_state.
    Pipeline(settings, db).feed(messages[half:])
    assert violations(db) == expected


def _trips(db) -> list[tuple]:
    with db.cursor() as cur:
        cur.execute(
            """SELECT origin_code, destination_code, status, loaded_at, unloaded_at
               FROM trips ORDER BY loaded_at"""
        )
        rows = cur.fetchall()
    db.commit()
    return rows


def test_a_replay_that_moves_a_trip_start_leaves_one_trip_row(db, settings):
    """The loading fixes arrive after the whole trip (a blind area at the site): the replay
    moves the trip's start earlier, and the row written from the partial data goes."""
    city = build_city(db, settings)
    messages = normal_trip(Trace("T1", city.base_ms)).messages()
    Pipeline(settings, db).feed(messages)
    expected = _trips(db)
    assert len(expected) == 1 and expected[0][2] == "completed"
    truncate_all(db)
    build_city(db, settings)
    # Fixes 12-17: the first minute of loading (after 2 min empty at 10 s intervals).
    late = messages[12:18]
    pipeline = Pipeline(settings, db)
    pipeline.feed(messages[:12] + messages[18:])
    assert _trips(db)[0][3] != expected[0][3]  # the partial data saw loading start later
    pipeline.feed(late)
    assert _trips(db) == expected


def test_two_collectors_taking_turns_give_the_same_violations(db, settings, baseline):
    """Each engine keeps its trucks' rule state in memory between batches; when the other
    one has evaluated a truck meanwhile, it must notice and start from the stored state."""
    messages, expected = baseline
    collectors = [Pipeline(settings, db), Pipeline(settings, db)]
    for n, start in enumerate(range(0, len(messages), 25)):
        collectors[(n // 2) % 2].feed(messages[start : start + 25])
    assert violations(db) == expected


def test_a_rolled_back_batch_leaves_nothing_in_the_engines_memory(db, settings, baseline):
    """A batch whose transaction fails after the rules ran is delivered again (it was never
    acknowledged): the engine must not start from the state it computed for the lost batch."""
    messages, expected = baseline
    pipeline = Pipeline(settings, db)
    half = len(messages) // 2
    pipeline.feed(messages[:half])

    def fail(cur, batch):
        raise RuntimeError("connection lost after the rules ran")

    pipeline.writer.after_store.append(fail)
    with pytest.raises(RuntimeError):
        pipeline.feed(messages[half : half + 25])
    pipeline.writer.after_store.remove(fail)
    pipeline.feed(messages[half:])
    assert violations(db) == expected


def test_a_stranger_row_in_the_prior_rows_changes_nothing(db, settings, baseline):
    """The engine places each prior truck_state row by truck id; a row it did not ask for
    must not land on a neighbouring truck's slot."""
    messages, expected = baseline
    pipeline = Pipeline(settings, db)
    hook = pipeline.engine.after_store

    def with_stranger(cur, batch):
        batch.prior = [*batch.prior, (0, 1.0, "full", 99.0, True, 12345)]
        batch.prior.append((10**12, 1.0, "full", 99.0, True, 12345))
        hook(cur, batch)

    pipeline.writer.after_store = [with_stranger]
    pipeline.feed(messages)
    assert violations(db) == expected
