"""compliance.carry: the columnar rule state and its stored form."""

from __future__ import annotations

import numpy as np
import pytest

from compliance.carry import Carry, CarryCache, CarryLayout, decode_state
from compliance.trips import ABANDONED


def layout(streams: int) -> CarryLayout:
    """`streams` condition streams and two kept columns, a flag and a measure."""
    return CarryLayout(
        tuple(f"rule.s{k}" for k in range(streams)), (("flag", True), ("level", 0.0))
    )


def random_carry(rng: np.random.Generator, m: int, streams: int) -> Carry:
    carry = Carry.fresh(m, layout(streams))
    carry.last[:, 0] = np.where(rng.random(m) < 0.2, -np.inf, rng.uniform(1.7e9, 1.8e9, m))
    carry.last[:, 1:] = rng.random((m, 2)) < 0.5
    carry.kept[:, 0] = rng.random(m) < 0.5
    carry.kept[:, 1] = np.where(rng.random(m) < 0.5, 0.0, rng.normal(50, 20, m))
    carry.run_active = rng.random((m, streams)) < 0.3
    carry.run_start = np.where(carry.run_active, rng.uniform(1.7e9, 1.8e9, (m, streams)), 0)
    worst = np.where(rng.random((m, streams)) < 0.3, -np.inf, rng.normal(50, 20, (m, streams)))
    carry.run_worst = np.where(carry.run_active, worst, -np.inf)
    carry.run_fired = carry.run_active & (rng.random((m, streams)) < 0.5)
    carry.snap = np.where(rng.random(m) < 0.3, -np.inf, rng.uniform(1.7e9, 1.8e9, m))
    loaded = rng.random(m)
    carry.trip_loaded_at = np.where(
        loaded < 0.4, np.nan, np.where(loaded < 0.5, ABANDONED, rng.uniform(1.7e9, 1.8e9, m))
    )
    sites = np.array([None, "S1", "工地-2", 'quote"\\'], object)
    carry.trip_last_site = sites[rng.integers(0, 4, m)]
    carry.trip_origin = sites[rng.integers(0, 4, m)]
    # What the engine keeps: a truck neither loaded nor having seen a site remembers nothing.
    forget = np.isnan(carry.trip_loaded_at) & np.equal(carry.trip_last_site, None)
    carry.trip_origin[forget] = None
    return carry


def assert_same(a: Carry, b: Carry) -> None:
    np.testing.assert_array_equal(a.last, b.last)
    np.testing.assert_array_equal(a.kept, b.kept)
    np.testing.assert_array_equal(a.run_active, b.run_active)
    np.testing.assert_array_equal(a.run_start, b.run_start)
    np.testing.assert_array_equal(a.run_worst, b.run_worst)
    np.testing.assert_array_equal(a.run_fired, b.run_fired)
    np.testing.assert_array_equal(a.snap, b.snap)
    np.testing.assert_array_equal(a.trip_loaded_at, b.trip_loaded_at)
    assert a.trip_origin.tolist() == b.trip_origin.tolist()
    assert a.trip_last_site.tolist() == b.trip_last_site.tolist()


def test_the_stored_form_reads_back_as_the_same_carry():
    rng = np.random.default_rng(4)
    carry = random_carry(rng, 300, 11)
    texts = carry.encode(np.arange(300), layout(11), with_position=True)
    back = Carry.from_states([decode_state(t) for t in texts], layout(11))
    assert_same(back, carry)
    assert not back.stored_part_differs(carry).any()


def test_the_row_part_leaves_out_the_last_fix():
    carry = random_carry(np.random.default_rng(5), 50, 4)
    states = [decode_state(t) for t in carry.encode(np.arange(50), layout(4), with_position=False)]
    assert all(s.last == [] for s in states)
    back = Carry.from_states(states, layout(4))
    assert not back.stored_part_differs(carry).any()
    np.testing.assert_array_equal(back.last[:, 0], -np.inf)


def test_stored_part_differs_sees_each_field_and_only_open_runs():
    rng = np.random.default_rng(6)
    base = random_carry(rng, 8, 3)
    base.run_active[:] = False
    base.run_start[:] = 0
    base.run_worst[:] = -np.inf
    base.run_fired[:] = False
    changes = {
        0: lambda c: c.run_active.__setitem__((0, 1), True),
        1: lambda c: c.kept.__setitem__((1, 0), 1 - c.kept[1, 0]),
        2: lambda c: c.snap.__setitem__(2, 12345.0),
        3: lambda c: c.trip_loaded_at.__setitem__(
            3, 1.75e9 if np.isnan(c.trip_loaded_at[3]) else np.nan
        ),
        4: lambda c: c.trip_origin.__setitem__(4, "elsewhere"),
        5: lambda c: c.trip_last_site.__setitem__(5, "elsewhere"),
        # The last fix's facts come from the row's own columns, not from the stored part.
        6: lambda c: c.last.__setitem__((6, 0), 99.0),
    }
    after = base.take(np.arange(8))
    for change in changes.values():
        change(after)
    differs = after.stored_part_differs(base).tolist()
    assert differs == [True, True, True, True, True, True, False, False]


def test_the_cache_gives_each_truck_one_row_and_grows():
    cache = CarryCache(layout(2))
    first = cache.rows([10, 20, 30])
    again = cache.rows([30, 10])
    assert again.tolist() == [first[2], first[0]]
    many = cache.rows(list(range(1000, 3000)))
    assert len(set(many.tolist()) | set(first.tolist())) == 2003
    assert len(cache.table) >= 2003 and (cache.rev[many] == -1).all()


def test_kept_columns_are_stored_by_name_only_when_not_their_default():
    carry = Carry.fresh(3, layout(1))
    carry.kept[1] = [0.0, 0.0]
    carry.kept[2] = [1.0, 7.5]
    states = [decode_state(t) for t in carry.encode(np.arange(3), layout(1), with_position=False)]
    assert [s.kept for s in states] == [{}, {"flag": 0.0}, {"level": 7.5}]
    # A pipeline that keeps other columns reads the ones it knows, the rest as defaults.
    other = CarryLayout(("rule.s0",), (("level", -1.0), ("new", True)))
    np.testing.assert_array_equal(
        Carry.from_states(states, other).kept, [[-1.0, 1.0], [-1.0, 1.0], [7.5, 1.0]]
    )


def test_an_older_state_keeps_its_corridor_state():
    """States written before rules declared their kept columns stored the route rule's
    corridor state as `on_route` and as a fourth value of `last`."""
    route = CarryLayout(("route_deviation.off_route",), (("on_route", True),))
    row = decode_state(b'{"v":2,"layout":"x","on_route":false,"snap":5.0}')
    snapshot = decode_state(
        b'{"v":2,"layout":"x","cp":9.0,"last":[9.0,1.0,1.0,0.0],"on_route":false}'
    )
    back = Carry.from_states([row, snapshot, decode_state(b'{"v":2}')], route)
    np.testing.assert_array_equal(back.kept[:, 0], [0.0, 0.0, 1.0])
    np.testing.assert_array_equal(back.last[1], [9.0, 1.0, 1.0])
    assert back.carried(route).kept["on_route"].tolist() == [False, False, True]


def test_each_writer_lane_thread_has_its_own_cache(settings):
    """A collector's lanes are threads sharing one engine; a shared cache would hand two
    trucks the same row when both threads add a truck at once."""
    import threading

    from compliance.engine import ComplianceEngine

    engine = ComplianceEngine(settings)
    seen = []
    threads = [threading.Thread(target=lambda: seen.append(engine.cache)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen[0] is not seen[1]
    assert engine.cache is engine.cache and engine.cache not in seen


def test_snapshots_are_spread_over_the_interval_not_taken_by_the_whole_fleet_at_once():
    from compliance.engine import snapshot_due

    trucks = np.arange(1, 10_001, dtype=np.int64)
    every = 900.0
    due_per_step = []
    for start in np.arange(0.0, 3 * every, 10.0):  # a fleet reporting every 10 s
        due = snapshot_due(
            trucks, np.full(trucks.size, start), np.full(trucks.size, start + 10), every
        )
        due_per_step.append(int(due.sum()))
    # Each truck still snapshots once per interval ...
    assert sum(due_per_step) == pytest.approx(3 * trucks.size, abs=trucks.size * 0.01)
    # ... but about 1/90 of the fleet at each step, never a large part of it.
    assert max(due_per_step) < trucks.size * 0.03
