"""The vectorised episode detector equals a plain sequential loop, however fixes are batched."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from compliance.runs import RunCarry, StreamInput, detect_runs, detect_streams

MIN_DURATION = 60.0
MAX_GAP = 120.0


def reference(fixes: list[tuple[int, float, bool, float]]) -> set[tuple]:
    """Episodes (truck, start, end or None, worst) by walking each truck's fixes in order."""
    out = set()
    by_truck: dict[int, list] = {}
    for truck, t, cond, value in fixes:
        by_truck.setdefault(truck, []).append((t, cond, value))
    for truck, rows in by_truck.items():
        rows.sort()
        run = None  # [start, last, worst]
        prev_t = None
        for t, cond, value in rows:
            broken = prev_t is not None and t - prev_t > MAX_GAP
            if run is not None and (not cond or broken):
                if run[1] - run[0] >= MIN_DURATION:
                    out.add((truck, run[0], run[1] if (not cond or broken) else None, run[2]))
                run = None
            if cond:
                if run is None:
                    run = [t, t, value]
                else:
                    run[1], run[2] = t, max(run[2], value)
            prev_t = t
        if run is not None and run[1] - run[0] >= MIN_DURATION:
            out.add((truck, run[0], None, run[2]))
    return out


def batched(fixes, cuts) -> set[tuple]:
    """Feed fixes in time order through detect_runs in batches; collect final episodes."""
    fixes = sorted(fixes, key=lambda f: (f[1], f[0]))
    trucks = sorted({f[0] for f in fixes})
    slot_of = {truck: i for i, truck in enumerate(trucks)}
    carry = RunCarry.empty(len(trucks))
    episodes: dict[tuple, tuple] = {}
    bounds = [0, *sorted(c % (len(fixes) + 1) for c in cuts), len(fixes)]
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        part = sorted(fixes[lo:hi], key=lambda f: (slot_of[f[0]], f[1]))
        if not part:
            continue
        slot = np.array([slot_of[f[0]] for f in part])
        t = np.array([f[1] for f in part], float)
        cond = np.array([f[2] for f in part], bool)
        value = np.array([f[3] for f in part], float)
        found, carry = detect_runs(
            slot, t, cond, value, carry, min_duration_s=MIN_DURATION, max_gap_s=MAX_GAP
        )
        for k in range(len(found)):
            truck = trucks[found.truck_slot[k]]
            key = (truck, float(found.start_t[k]))
            end = None if np.isnan(found.end_t[k]) else float(found.end_t[k])
            episodes[key] = (truck, key[1], end, float(found.worst[k]))
    # Open episodes report their worst when they qualified; the reference reports the
    # worst so far, so compare (truck, start, end) and check worst separately for closed.
    return set(episodes.values())


def _strip_open_worst(episodes: set[tuple]) -> set[tuple]:
    return {(a, b, c, d if c is not None else None) for a, b, c, d in episodes}


fix_lists = st.lists(
    st.tuples(
        st.integers(0, 3),
        st.integers(0, 40).map(lambda k: k * 20.0),  # 20 s reporting, some gaps
        st.booleans(),
        st.floats(0, 100, allow_nan=False).map(lambda v: round(v, 1)),
    ),
    max_size=60,
    unique_by=lambda f: (f[0], f[1]),
)


@settings(max_examples=300, deadline=None)
@given(fix_lists, st.lists(st.integers(0, 100), max_size=6))
def test_batched_detection_equals_sequential_reference(fixes, cuts):
    assert _strip_open_worst(batched(fixes, cuts)) == _strip_open_worst(reference(fixes))


def test_an_episode_is_reported_when_it_qualifies_and_when_it_ends():
    t = np.arange(0, 200, 20.0)  # 10 fixes, 20 s apart
    cond = np.array([0, 1, 1, 1, 1, 1, 0, 0, 0, 0], bool)
    value = np.array([0, 5, 9, 7, 3, 2, 0, 0, 0, 0], float)
    slot = np.zeros(10, np.int64)
    carry = RunCarry.empty(1)
    found, carry = detect_runs(
        slot[:4], t[:4], cond[:4], value[:4], carry, min_duration_s=40, max_gap_s=120
    )
    assert len(found) == 1 and np.isnan(found.end_t[0]) and found.start_t[0] == 20
    assert found.worst[0] == 9
    found, carry = detect_runs(
        slot[4:], t[4:], cond[4:], value[4:], carry, min_duration_s=40, max_gap_s=120
    )
    assert len(found) == 1 and found.start_t[0] == 20 and found.end_t[0] == 100
    assert found.worst[0] == 9 and found.first_fix[0] == -1
    assert not carry.active[0]


def test_short_runs_never_qualify():
    t = np.arange(0, 100, 20.0)
    cond = np.array([0, 1, 1, 0, 0], bool)
    found, _ = detect_runs(
        np.zeros(5, np.int64),
        t,
        cond,
        np.ones(5),
        RunCarry.empty(1),
        min_duration_s=60,
        max_gap_s=120,
    )
    assert len(found) == 0


def _same_carry(a: RunCarry, b: RunCarry) -> None:
    for field in RunCarry.__dataclass_fields__:
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 30).map(lambda k: k * 20.0)),
        min_size=0,
        max_size=40,
        unique=True,
    ),
    st.integers(0, 2**32 - 1),
    st.lists(st.integers(0, 60), max_size=4),
)
def test_stacked_streams_equal_separate_passes(fixes, seed, cuts):
    """detect_streams over three streams with different thresholds gives, batch after batch,
    exactly the episodes and carries of three detect_runs calls."""
    rng = np.random.default_rng(seed)
    fixes = sorted(fixes, key=lambda f: (f[1], f[0]))
    m = 4
    specs = [(60.0, np.inf), (0.0, np.inf), (200.0, 50.0)]  # (min duration, qualify value)
    conds = [rng.random(len(fixes)) < 0.6 for _ in specs]
    values = [rng.uniform(0, 100, len(fixes)).round(1) for _ in specs]
    separate = [RunCarry.empty(m) for _ in specs]
    stacked = [RunCarry.empty(m) for _ in specs]
    bounds = [0, *sorted(c % (len(fixes) + 1) for c in cuts), len(fixes)]
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        order = sorted(range(lo, hi), key=lambda i: (fixes[i][0], fixes[i][1]))
        slot = np.array([fixes[i][0] for i in order], np.int64)
        t = np.array([fixes[i][1] for i in order], float)
        inputs = [
            StreamInput(c[order], v[order], carry, min_d, q)
            for c, v, carry, (min_d, q) in zip(conds, values, stacked, specs, strict=True)
        ]
        together = detect_streams(slot, t, inputs, max_gap_s=MAX_GAP)
        for j, (min_d, q) in enumerate(specs):
            alone, separate[j] = detect_runs(
                slot,
                t,
                conds[j][order],
                values[j][order],
                separate[j],
                min_duration_s=min_d,
                max_gap_s=MAX_GAP,
                qualify_value=q,
            )
            found, stacked[j] = together[j]
            for field in ("truck_slot", "start_t", "end_t", "worst", "first_fix", "last_fix"):
                np.testing.assert_array_equal(
                    getattr(found, field), getattr(alone, field), err_msg=field
                )
            _same_carry(stacked[j], separate[j])
