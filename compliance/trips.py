"""The trip state machine: empty → loading at a site → loaded in transit → unloading → empty.

A trip starts at the first loaded fix after an empty one (its origin is the construction
site the truck is in then, or the last one it was in while empty) and ends at the first empty
fix after it: `completed` when that fix is inside a disposal site on the trip's permit,
`unloaded_elsewhere` otherwise (the dumping rules say what it was). A truck loaded for longer
than `abandon_after_s` without unloading ends its trip as `abandoned`.

The carry changes only at those transitions (and when the truck enters a site), so a truck
in transit does not rewrite its rule state at every fix. The distance driven loaded is summed
from `positions` when the trip is recorded, once per trip. Only the transitions are walked in
Python; everything per fix is vectorised.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import psycopg2.extras

from compliance.frame import FixFrame

# `loaded_at` of a truck still loaded whose trip was already recorded as abandoned: no new
# trip starts until it has been seen empty (a batch boundary is not a loading).
ABANDONED = 1e300


@dataclass
class TripCarry:
    """Per-truck trip state: loading time (NaN: not loaded; ABANDONED), origin site, last
    site seen."""

    loaded_at: np.ndarray
    origin: list[str | None]
    last_site: list[str | None]


@dataclass
class TripRow:
    truck_id: int
    permit_no: str | None
    origin: str | None
    destination: str | None
    loaded_at: float
    unloaded_at: float | None
    status: str


def advance(
    frame: FixFrame, carry: TripCarry, codes: np.ndarray, abandon_after_s: float
) -> tuple[list[TripRow], TripCarry]:
    """Walk the batch's load transitions; returns finished trips and the carry after it."""
    out = TripCarry(carry.loaded_at.copy(), list(carry.origin), list(carry.last_site))
    trips: list[TripRow] = []
    if len(frame) == 0:
        return trips, out
    loaded = frame.loaded
    was_loaded = frame.previous(loaded, ~np.isnan(carry.loaded_at))
    # The last site seen up to each fix (inclusive), per truck: a forward fill of the site
    # index within each truck's fixes; -1 where the truck has seen none in this batch (then
    # the carried last site holds).
    n = len(frame)
    has_site = frame.site >= 0
    marker = np.where(has_site | frame.seg_start, np.arange(n), 0)
    filled = np.maximum.accumulate(marker)
    last_site_idx = np.where(has_site[filled], frame.site[filled], -1)
    for i in np.flatnonzero(loaded != was_loaded).tolist():
        s = int(frame.slot[i])
        if loaded[i]:
            out.loaded_at[s] = frame.t[i]
            j = int(last_site_idx[i])
            out.origin[s] = str(codes[j]) if j >= 0 else out.last_site[s]
        elif out.loaded_at[s] == ABANDONED:
            out.loaded_at[s] = np.nan  # the abandoned trip's load is gone; nothing to record
        elif not np.isnan(out.loaded_at[s]):
            permit = frame.permit[i]
            dest = codes[frame.disposal[i]] if frame.disposal[i] >= 0 else None
            ok = dest is not None and permit is not None and dest in permit.disposal_sites
            status = "completed" if ok else "unloaded_elsewhere"
            trips.append(_row(frame, i, out, s, dest, float(frame.t[i]), status))
            out.loaded_at[s] = np.nan
    last = np.flatnonzero(frame.seg_last)
    for i, j in zip(last.tolist(), last_site_idx[last].tolist(), strict=True):
        if j >= 0:
            out.last_site[int(frame.slot[i])] = str(codes[j])
    overdue = frame.t[last] - out.loaded_at[frame.slot[last]] > abandon_after_s  # NaN: False
    for i in last[overdue].tolist():
        s = int(frame.slot[i])
        trips.append(_row(frame, i, out, s, None, None, "abandoned"))
        out.loaded_at[s] = ABANDONED
    return trips, out


def _row(frame, i, carry, s, dest, unloaded_at, status) -> TripRow:
    permit = frame.permit[i]
    return TripRow(
        truck_id=int(frame.trucks[s]),
        permit_no=permit.number if permit is not None else None,
        origin=None if carry.origin[s] is None else str(carry.origin[s]),
        destination=None if dest is None else str(dest),
        loaded_at=float(carry.loaded_at[s]),
        unloaded_at=unloaded_at,
        status=status,
    )


# Distance driven loaded: consecutive moving fixes between loading and unloading (standing
# still, GPS jitter is not distance), by the local flat-earth step used for short hops.
_WRITE = """
INSERT INTO trips AS tr (truck_id, permit_no, origin_code, destination_code, loaded_at,
                         unloaded_at, distance_m, status)
SELECT v.truck_id, v.permit_no, v.origin, v.destination, to_timestamp(v.loaded_at),
       to_timestamp(v.unloaded_at), COALESCE(d.metres, 0), v.status
FROM (VALUES %s)
     AS v(truck_id, permit_no, origin, destination, loaded_at, unloaded_at, status, moving)
CROSS JOIN LATERAL (
    SELECT sum(sqrt(power((lon - plon) * cos(radians(lat)), 2) + power(lat - plat, 2))
               * 111195.0) FILTER (WHERE speed_kmh >= v.moving AND plon IS NOT NULL) AS metres
    FROM (
        SELECT lon, lat, speed_kmh,
               lag(lon) OVER (ORDER BY fix_time) AS plon, lag(lat) OVER (ORDER BY fix_time) AS plat
        FROM positions
        WHERE truck_id = v.truck_id
          AND fix_time >= to_timestamp(v.loaded_at)
          AND fix_time <= COALESCE(to_timestamp(v.unloaded_at), now())
    ) steps
) d
ON CONFLICT (truck_id, loaded_at) DO UPDATE SET
    permit_no = EXCLUDED.permit_no, origin_code = EXCLUDED.origin_code,
    destination_code = EXCLUDED.destination_code, unloaded_at = EXCLUDED.unloaded_at,
    distance_m = EXCLUDED.distance_m, status = EXCLUDED.status, recorded_at = now()
"""


def write_trips(cur, trips: list[TripRow], moving_kmh: float) -> None:
    if not trips:
        return
    rows = [
        (
            r.truck_id,
            r.permit_no,
            r.origin,
            r.destination,
            r.loaded_at,
            r.unloaded_at,
            r.status,
            moving_kmh,
        )
        for r in trips
    ]
    psycopg2.extras.execute_values(
        cur,
        _WRITE,
        rows,
        template="(%s::bigint, %s::text, %s::text, %s::text, %s::float8, %s::float8, %s::text,"
        " %s::float8)",
    )
