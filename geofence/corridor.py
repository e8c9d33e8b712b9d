"""Route-corridor hysteresis: on/off-route state that does not flap on GPS noise at the edge.

A truck on its route goes off when it is farther than the corridor width; once off, it
counts as back only when nearer than width x reentry_ratio (thresholds.route_reentry_ratio,
0.7 by default). Between the two thresholds the previous state holds.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def corridor_hysteresis(
    distance_m: Any,
    width_m: Any,
    prev_on: Any,
    reentry_ratio: float = 0.7,
    group: Any = None,
) -> np.ndarray:
    """New on-route state (bool) for each fix. Pure and vectorised.

    distance_m: distance of each fix from its route (`GeofenceIndex.route_distance`).
    width_m: corridor width per fix (or a scalar), e.g. `index.width_m[route]`.
    prev_on: state before the fix (bool per fix, or a scalar).
    group: optional truck key per fix. Without it every fix is judged independently from its
      own prev_on. With it, fixes of one truck must be in time order within the batch; each
      truck starts from prev_on at its first fix and carries its state from fix to fix (the
      state after a truck's last fix is what to store for the next batch).

    Off when distance > width; on when distance < width x reentry_ratio; else unchanged.
    NaN distances never change the state.
    """
    d = np.asarray(distance_m, dtype=np.float64).reshape(-1)
    n = d.size
    w = np.broadcast_to(np.asarray(width_m, dtype=np.float64), (n,))
    prev = np.broadcast_to(np.asarray(prev_on, dtype=bool), (n,))
    if not 0.0 < reentry_ratio <= 1.0:
        raise ValueError(f"reentry_ratio must be in (0, 1], got {reentry_ratio}")
    leave = d > w
    enter = d < w * reentry_ratio
    if group is None:
        return np.where(leave, False, np.where(enter, True, prev))
    g = np.asarray(group).reshape(-1)
    if g.size != n:
        raise ValueError(f"{g.size} group keys for {n} fixes")
    if n == 0:
        return np.zeros(0, dtype=bool)
    order = np.argsort(g, kind="stable")  # keeps time order within each truck
    gs = g[order]
    starts = np.r_[True, gs[1:] != gs[:-1]]
    decisive = (leave | enter)[order]
    value = enter[order]  # state set by a decisive fix
    # a truck's first fix without a decisive distance takes the truck's previous state
    first_plain = starts & ~decisive
    value = np.where(first_plain, prev[order], value)
    marked = decisive | starts
    last = np.maximum.accumulate(np.where(marked, np.arange(n), 0))
    out = np.empty(n, dtype=bool)
    out[order] = value[last]
    return out
