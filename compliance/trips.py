"""The trip state machine: empty → loading at a site → loaded in transit → unloading → empty.

A trip starts at the first loaded fix after an empty one (its origin is the construction
site the truck is in then, or the last one it was in while empty) and ends at the first empty
fix after it: `completed` when that fix is inside a disposal site on the trip's permit,
`unloaded_elsewhere` otherwise (the dumping rules say what it was). A truck loaded for longer
than `abandon_after_s` without unloading ends its trip as `abandoned`. Only the transitions
are walked in Python; everything per fix is vectorised.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import psycopg2.extras

from compliance.frame import FixFrame, previous

_EARTH_M_PER_DEG = 111_195.0


@dataclass
class TripCarry:
    """Per-truck trip state before the batch: [loaded_at or NaN, distance_m, origin site]."""

    loaded_at: np.ndarray
    distance_m: np.ndarray
    origin: list[str | None]
    last_site: list[str | None]
    last_lon: np.ndarray
    last_lat: np.ndarray


@dataclass
class TripRow:
    truck_id: int
    permit_no: str | None
    origin: str | None
    destination: str | None
    loaded_at: float
    unloaded_at: float | None
    distance_m: float
    status: str


def step_distances(frame: FixFrame, carry: TripCarry) -> np.ndarray:
    lon, lat = frame.cols.lon, frame.cols.lat
    plon = previous(frame, lon, carry.last_lon)
    plat = previous(frame, lat, carry.last_lat)
    dx = (lon - plon) * np.cos(np.radians(lat)) * _EARTH_M_PER_DEG
    dy = (lat - plat) * _EARTH_M_PER_DEG
    d = np.hypot(dx, dy)
    return np.where(np.isfinite(d), d, 0.0)


def advance(
    frame: FixFrame, carry: TripCarry, codes: np.ndarray, abandon_after_s: float
) -> tuple[list[TripRow], TripCarry]:
    """Walk the batch's load transitions; returns finished trips and the carry after it."""
    out = TripCarry(
        carry.loaded_at.copy(),
        carry.distance_m.copy(),
        list(carry.origin),
        list(carry.last_site),
        carry.last_lon.copy(),
        carry.last_lat.copy(),
    )
    trips: list[TripRow] = []
    if len(frame) == 0:
        return trips, out
    loaded = frame.loaded
    was_loaded = previous(frame, loaded, ~np.isnan(carry.loaded_at))
    # Distance driven loaded (standing still, GPS jitter is not distance); cum[i] sums it
    # over fixes up to i (all trucks, in frame order).
    driving = loaded & was_loaded & frame.moving
    cum = np.cumsum(np.where(driving, step_distances(frame, carry), 0.0))
    first = np.flatnonzero(frame.seg_start)
    base = np.zeros(frame.trucks.size)  # cum value the open trip's distance counts from
    base[frame.slot[first]] = np.r_[0.0, cum][first]
    site_code = np.full(len(frame), None, dtype=object)
    has_site = frame.site >= 0
    site_code[has_site] = codes[frame.site[has_site]]
    for i in np.flatnonzero((loaded != was_loaded) | (frame.site >= 0)):
        s = int(frame.slot[i])
        if loaded[i] and not was_loaded[i]:
            out.loaded_at[s] = frame.t[i]
            out.distance_m[s] = 0.0
            out.origin[s] = site_code[i] or out.last_site[s]
            base[s] = cum[i]
        elif was_loaded[i] and not loaded[i] and not np.isnan(out.loaded_at[s]):
            out.distance_m[s] += cum[i] - base[s]
            permit = frame.permit[i]
            dest = codes[frame.disposal[i]] if frame.disposal[i] >= 0 else None
            ok = dest is not None and permit is not None and dest in permit.disposal_sites
            status = "completed" if ok else "unloaded_elsewhere"
            trips.append(_row(int(frame.trucks[s]), frame, i, out, s, dest, frame.t[i], status))
            out.loaded_at[s] = np.nan
            out.distance_m[s] = 0.0
        if site_code[i] is not None:
            out.last_site[s] = site_code[i]
    for i in np.flatnonzero(frame.seg_last):
        s = int(frame.slot[i])
        out.last_lon[s], out.last_lat[s] = frame.cols.lon[i], frame.cols.lat[i]
        if np.isnan(out.loaded_at[s]):
            continue
        out.distance_m[s] += cum[i] - base[s]
        if frame.t[i] - out.loaded_at[s] > abandon_after_s:
            trips.append(_row(int(frame.trucks[s]), frame, i, out, s, None, None, "abandoned"))
            out.loaded_at[s] = np.nan
            out.distance_m[s] = 0.0
    return trips, out


def _row(truck, frame, i, carry, s, dest, unloaded_at, status) -> TripRow:
    permit = frame.permit[i]
    return TripRow(
        truck_id=truck,
        permit_no=permit.number if permit is not None else None,
        origin=None if carry.origin[s] is None else str(carry.origin[s]),
        destination=None if dest is None else str(dest),
        loaded_at=float(carry.loaded_at[s]),
        unloaded_at=None if unloaded_at is None else float(unloaded_at),
        distance_m=float(carry.distance_m[s]),
        status=status,
    )


def write_trips(cur, trips: list[TripRow]) -> None:
    if not trips:
        return
    psycopg2.extras.execute_values(
        cur,
        """INSERT INTO trips (truck_id, permit_no, origin_code, destination_code, loaded_at,
                              unloaded_at, distance_m, status)
           VALUES %s
           ON CONFLICT (truck_id, loaded_at) DO UPDATE SET
               permit_no = EXCLUDED.permit_no, origin_code = EXCLUDED.origin_code,
               destination_code = EXCLUDED.destination_code,
               unloaded_at = EXCLUDED.unloaded_at, distance_m = EXCLUDED.distance_m,
               status = EXCLUDED.status, recorded_at = now()""",
        [
            (
                r.truck_id,
                r.permit_no,
                r.origin,
                r.destination,
                r.loaded_at,
                r.unloaded_at,
                r.distance_m,
                r.status,
            )
            for r in trips
        ],
        template="(%s, %s, %s, %s, to_timestamp(%s), to_timestamp(%s), %s, %s)",
    )


def encode_carry(carry: TripCarry, s: int) -> list:
    la = carry.loaded_at[s]
    return [
        None if math.isnan(la) else float(la),
        float(carry.distance_m[s]),
        carry.origin[s],
        carry.last_site[s],
        None if math.isnan(carry.last_lon[s]) else float(carry.last_lon[s]),
        None if math.isnan(carry.last_lat[s]) else float(carry.last_lat[s]),
    ]


def decode_carry(items: list[list]) -> TripCarry:
    def num(v):
        return np.nan if v is None else float(v)

    rows = [it if it else [None, 0.0, None, None, None, None] for it in items]
    return TripCarry(
        np.array([num(r[0]) for r in rows], float),
        np.array([float(r[1] or 0.0) for r in rows], float),
        [r[2] for r in rows],
        [r[3] for r in rows],
        np.array([num(r[4]) for r in rows], float),
        np.array([num(r[5]) for r in rows], float),
    )
