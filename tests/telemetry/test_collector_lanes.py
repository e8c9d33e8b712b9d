"""Writer lanes: a device always goes to the same lane, and acknowledgements leave in arrival
order whatever order the lanes commit in."""

from __future__ import annotations

import time

from telemetry.collector import Collector
from telemetry.contract import Topics
from telemetry.transport import Received
from tests.mqtt_helpers import count, fix, now_ms, publish, running_collector, wait_until

T = Topics("muck/v1")


class RecordingAcks:
    """Stands in for the MQTT transport's ack side only (what was acknowledged, in order)."""

    def __init__(self) -> None:
        self.acked: list[tuple[int, list[int]]] = []

    def ack(self, generation: int, packet_ids) -> bool:
        self.acked.append((generation, list(packet_ids)))
        return True


def _collector(settings, lanes: int) -> tuple[Collector, RecordingAcks]:
    collector = Collector(settings.with_overrides(ingest={"writer_lanes": lanes}))
    acks = RecordingAcks()
    collector.transport = acks
    return collector, acks


def _read(topics_and_mids):
    return [Received(topic, b"{}", mid, 1) for topic, mid in topics_and_mids]


def test_a_device_always_goes_to_the_same_lane(settings):
    collector, _ = _collector(settings, 3)
    devices = [T.telemetry(f"D{i:03d}") for i in range(60)]
    for round_ in range(3):
        collector._on_batch(1, _read((d, 100 * round_ + i) for i, d in enumerate(devices)))
    lane_of: dict[str, set[int]] = {}
    for lane in collector.lanes:
        while not lane.queue.empty():
            _, part = lane.queue.get()
            for topic, *_ in part:
                lane_of.setdefault(topic, set()).add(lane.index)
    assert set(lane_of) == set(devices)
    assert all(len(lanes) == 1 for lanes in lane_of.values())
    assert len({next(iter(lanes)) for lanes in lane_of.values()}) == 3  # all lanes used


def test_acks_wait_for_every_lane_and_keep_arrival_order(settings):
    collector, acks = _collector(settings, 2)
    devices = [T.telemetry(f"D{i:03d}") for i in range(40)]
    collector._on_batch(1, _read((d, i + 1) for i, d in enumerate(devices[:20])))
    collector._on_batch(1, _read((d, i + 21) for i, d in enumerate(devices[20:])))
    first, second = collector._unacked
    shares = {lane.index: [] for lane in collector.lanes}
    for lane in collector.lanes:
        while not lane.queue.empty():
            shares[lane.index].append(lane.queue.get()[0])
    assert first.outstanding == 2 and second.outstanding == 2
    # Lane 1 commits both of its shares first: nothing may be acknowledged yet.
    collector._committed(shares[1])
    assert acks.acked == []
    # Lane 0 commits: both reads go out, the first read's ids first.
    collector._committed(shares[0])
    assert acks.acked == [(1, list(range(1, 41)))]


def test_several_lanes_store_everything_and_acknowledge_it(settings, db):
    """End to end through the broker: with 3 lanes every message is stored once, and all
    were acknowledged (a second collector on the same session receives nothing again)."""
    lanes = settings.with_overrides(ingest={"writer_lanes": 3})
    start = now_ms() - 600_000
    messages = [
        (T.telemetry(f"L{d:03d}"), fix(start + i * 1000, lat=22.5 + d * 1e-3, seq=i))
        for i in range(20)
        for d in range(50)
    ]
    with running_collector(lanes, client_id="lanes-test") as collector:
        publish(lanes.mqtt_endpoint().url(), messages)
        assert wait_until(lambda: count(db, "SELECT count(*) FROM positions") == 1000)
        assert {lane.conn is not None for lane in collector.lanes} == {True}
        assert wait_until(lambda: not collector._unacked, timeout=5)
    # The same persistent session again: anything not acknowledged would be redelivered.
    with running_collector(lanes, client_id="lanes-test") as again:
        time.sleep(1.5)
        assert again.stats.snapshot()["received"] == 0
    assert count(db, "SELECT count(*) FROM positions") == 1000
