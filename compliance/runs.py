"""Episode detection over a batch of fixes from many trucks at once, with state carried
between batches: the vectorised core every duration-based rule stands on.

A rule gives, per fix, a condition (e.g. "over the speed limit") and a value to track
(e.g. km/h over). A *run* is a stretch of consecutive fixes of one truck where the
condition holds, broken by a fix where it does not or by a gap between fixes longer than
`max_gap_s`. A run becomes an *episode* once it has lasted `min_duration_s` (device time,
first to last fix of the run); it is reported once, when it qualifies, and again when it
ends, so a violation is stored as soon as it is certain and closed when it is over.

Fixes must be sorted by (truck, time). Per-truck carry arrays hold the open run of each
truck at the start of the batch and are returned updated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class RunCarry:
    """Open run per truck (one slot per truck of the batch)."""

    active: np.ndarray  # bool: a run is open
    start_t: np.ndarray  # float64 epoch s of the run's first fix
    last_t: np.ndarray  # float64 epoch s of the run's last fix (also: last fix seen)
    worst: np.ndarray  # float64 worst value so far
    fired: np.ndarray  # bool: the episode has been reported as qualified
    start_i: np.ndarray  # int64 fix index (in this batch) of the run start, -1 if earlier

    @classmethod
    def empty(cls, n: int) -> RunCarry:
        return cls(
            np.zeros(n, bool),
            np.zeros(n),
            np.full(n, -np.inf),
            np.full(n, -np.inf),
            np.zeros(n, bool),
            np.full(n, -1, np.int64),
        )


@dataclass
class Episodes:
    """Episodes to report from one batch (qualified now, or ended now, or both)."""

    truck_slot: np.ndarray  # slot of the truck in the carry arrays
    start_t: np.ndarray
    end_t: np.ndarray  # NaN while the episode goes on
    worst: np.ndarray
    first_fix: np.ndarray  # index of the run's first fix in the batch, -1 if before it
    last_fix: np.ndarray  # index of the run's last fix in the batch, -1 if before it

    def __len__(self) -> int:
        return int(self.truck_slot.size)


def detect_runs(
    slot: np.ndarray,
    t: np.ndarray,
    cond: np.ndarray,
    value: np.ndarray,
    carry: RunCarry,
    *,
    min_duration_s: float | np.ndarray,
    max_gap_s: float,
    qualify_value: float | np.ndarray = np.inf,
) -> tuple[Episodes, RunCarry]:
    """slot: truck slot per fix (fixes sorted by slot, then t). Returns the episodes to
    report and the carry after the batch (a new object; the input is not modified).

    A run also qualifies, whatever its duration, once its worst value reaches
    `qualify_value` (e.g. a load-drop fix inside a lift run proves dumping at once).
    Both thresholds may be arrays with one value per carry slot (see `detect_streams`)."""
    n = t.size
    out = RunCarry(
        carry.active.copy(),
        carry.start_t.copy(),
        carry.last_t.copy(),
        carry.worst.copy(),
        carry.fired.copy(),
        np.full(carry.active.size, -1, np.int64),
    )
    if n == 0:
        return _no_episodes(), out
    idx = np.arange(n)
    seg_start = _cat([True], slot[1:] != slot[:-1])
    prev_t = np.where(seg_start, carry.last_t[slot], _cat([-np.inf], t[:-1]))
    prev_cond = np.where(seg_start, carry.active[slot], _cat([False], cond[:-1]))
    gap_break = (t - prev_t) > max_gap_s
    continues = cond & prev_cond & ~gap_break
    begins = cond & ~continues
    # Each fix in a run points at the fix that began it; -1 means the run began in an
    # earlier batch (carried).
    begin_idx = np.where(begins, idx, -1)
    marker = np.where(begins | seg_start, idx, 0)
    last_marker = np.maximum.accumulate(marker)
    run_begin = np.where(cond, begin_idx[last_marker], -1)
    run_begin = np.where(cond & ~begins & seg_start, -1, run_begin)
    carried = cond & (run_begin == -1)
    start_t = np.where(carried, carry.start_t[slot], t[np.maximum(run_begin, 0)])
    # Running worst within each run (reset at run begins, seeded from carry).
    run_key = np.where(cond, np.where(carried, -1 - slot, run_begin), np.iinfo(np.int64).min)
    worst = _segmented_cummax(
        run_key, np.where(carried, np.maximum(value, carry.worst[slot]), value)
    )
    # For carried runs, include the carry worst for every fix of the run.
    worst = np.where(carried, np.maximum(worst, carry.worst[slot]), worst)
    duration = t - start_t
    min_d = min_duration_s[slot] if np.ndim(min_duration_s) else min_duration_s
    q_value = qualify_value[slot] if np.ndim(qualify_value) else qualify_value
    qualified = cond & ((duration >= min_d) | (worst >= q_value))
    fired_before = np.where(carried, carry.fired[slot], False)
    first_qualify = qualified & ~fired_before & ~_seen_before(run_key, qualified)
    # A run ends at a fix whose condition holds and whose successor (same truck) does not
    # continue it.
    seg_last = _cat(seg_start[1:], [True])
    next_continues = _cat(continues[1:], [False]) & ~seg_last
    run_end = cond & ~next_continues
    ended = run_end & ~seg_last  # the next fix of this truck broke the run
    # Episodes that qualified at some point and end here.
    qualified_by_end = _seen_before(run_key, qualified) | qualified | fired_before
    report_end = ended & qualified_by_end
    report_open = first_qualify & ~(run_end & ~seg_last)
    rows = np.flatnonzero(report_end | report_open)
    # A run carried in from the previous batch that the first fix of this batch breaks
    # ended at the previous batch's last fix.
    head = np.flatnonzero(seg_start & ~continues)
    hs = slot[head]
    carried_end = hs[
        carry.active[hs]
        & (
            carry.fired[hs]
            | (carry.last_t[hs] - carry.start_t[hs] >= _at(min_duration_s, hs))
            | (carry.worst[hs] >= _at(qualify_value, hs))
        )
    ]
    episodes = Episodes(
        truck_slot=_cat(carried_end, slot[rows]),
        start_t=_cat(carry.start_t[carried_end], start_t[rows]),
        end_t=_cat(carry.last_t[carried_end], np.where(report_end[rows], t[rows], np.nan)),
        worst=_cat(carry.worst[carried_end], worst[rows]),
        first_fix=_cat(
            np.full(carried_end.size, -1, np.int64), np.where(carried[rows], -1, run_begin[rows])
        ),
        last_fix=_cat(np.full(carried_end.size, -1, np.int64), rows),
    )
    # Carry out: the state after each truck's last fix.
    last = np.flatnonzero(seg_last)
    s = slot[last]
    open_run = cond[last]
    out.active[s] = open_run
    out.start_t[s] = np.where(open_run, start_t[last], 0.0)
    out.last_t[s] = t[last]
    out.worst[s] = np.where(open_run, worst[last], -np.inf)
    out.fired[s] = open_run & (
        fired_before[last] | _seen_before(run_key, qualified)[last] | qualified[last]
    )
    out.start_i[s] = np.where(open_run & ~carried[last], run_begin[last], -1)
    return episodes, out


def _cat(a, b) -> np.ndarray:
    """np.concatenate of two pieces (np.r_ costs ~15 µs a call; this is on the hot path)."""
    return np.concatenate((np.asarray(a), np.asarray(b)))


def _at(threshold: float | np.ndarray, slots: np.ndarray) -> float | np.ndarray:
    return threshold[slots] if np.ndim(threshold) else threshold


def _segmented_cummax(key: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Running max of `value` within consecutive equal `key`s (exact: works on ranks)."""
    n = key.size
    if n == 0:
        return value.astype(np.float64)
    starts = _cat([True], key[1:] != key[:-1])
    group = np.cumsum(starts) - 1
    order = np.argsort(value, kind="stable")
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n)
    running = np.maximum.accumulate(rank + group * n) - group * n
    return value[order][running].astype(np.float64)


def _seen_before(key: np.ndarray, flag: np.ndarray) -> np.ndarray:
    """True where an earlier fix with the same consecutive `key` had `flag`."""
    n = key.size
    if n == 0:
        return flag.copy()
    starts = _cat([True], key[1:] != key[:-1])
    group = np.cumsum(starts) - 1
    counts = np.cumsum(flag.astype(np.int64))
    before_group = _cat([0], counts)[np.flatnonzero(starts)][group]
    prior = counts - flag.astype(np.int64) - before_group
    return prior > 0


def _no_episodes() -> Episodes:
    z = np.zeros(0)
    zi = np.zeros(0, np.int64)
    return Episodes(zi, z, z, z, zi, zi)


@dataclass
class StreamInput:
    """One condition stream for `detect_streams`."""

    cond: np.ndarray
    value: np.ndarray
    carry: RunCarry
    min_duration_s: float
    qualify_value: float = np.inf


def detect_streams(
    slot: np.ndarray, t: np.ndarray, streams: list[StreamInput], *, max_gap_s: float
) -> list[tuple[Episodes, RunCarry]]:
    """`detect_runs` for many condition streams over the same fixes, in one pass.

    The streams are stacked end to end as one problem whose "trucks" are (stream, truck)
    pairs, so the numpy calls are paid once per batch instead of once per stream. The result
    is what `detect_runs` gives for each stream on its own."""
    k = len(streams)
    if k == 0:
        return []
    n, m = t.size, streams[0].carry.active.size
    offsets = np.arange(k, dtype=np.int64)
    big_slot = (offsets[:, None] * m + slot[None, :]).ravel()
    carry = RunCarry(
        *(
            np.concatenate([getattr(s.carry, f) for s in streams])
            for f in RunCarry.__dataclass_fields__
        )
    )
    found, out = detect_runs(
        big_slot,
        np.tile(t, k),
        np.concatenate([s.cond for s in streams]),
        np.concatenate([np.asarray(s.value, np.float64) for s in streams]),
        carry,
        min_duration_s=np.repeat([s.min_duration_s for s in streams], m),
        max_gap_s=max_gap_s,
        qualify_value=np.repeat([float(s.qualify_value) for s in streams], m),
    )
    which = found.truck_slot // m if m else found.truck_slot
    local_slot = found.truck_slot - which * m
    # Fix indices point into the stacked arrays: back to the batch's fixes.
    first_fix = np.where(found.first_fix >= 0, found.first_fix % max(n, 1), -1)
    last_fix = np.where(found.last_fix >= 0, found.last_fix % max(n, 1), -1)
    results = []
    for j in range(k):
        sel = np.flatnonzero(which == j)
        episodes = Episodes(
            local_slot[sel],
            found.start_t[sel],
            found.end_t[sel],
            found.worst[sel],
            first_fix[sel],
            last_fix[sel],
        )
        part = slice(j * m, (j + 1) * m)
        start_i = out.start_i[part]
        out.start_i[part] = np.where(start_i >= 0, start_i % max(n, 1), -1)
        results.append(
            (episodes, RunCarry(*(getattr(out, f)[part] for f in RunCarry.__dataclass_fields__)))
        )
    return results
