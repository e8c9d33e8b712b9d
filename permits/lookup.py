"""The permit valid at each fix of a batch, and what it approves there — as arrays.

`PermitCatalog.by_truck` answers one truck at one instant; the rules need the answer for
every fix of a batch (a thousand or more). `PermitLookup` flattens the catalogue once, when
it is loaded, into candidate arrays sorted by (truck, precedence), and deduplicates the
operating-hours bitmaps (permits of one city share a handful of hour patterns), so a batch
costs a few numpy passes whatever its size:

* candidates of each fix: a `searchsorted` of its truck into the candidate trucks;
* the valid one: the first candidate, in precedence order (newest `valid_from`, then the
  highest id, as `PermitCatalog.permits_for`), whose validity interval holds the fix —
  one vectorised step per candidate rank (trucks rarely hold more than two permits);
* what it approves there: per geofence index (zone codes map to indexes that change when
  the zones are reloaded) a table of origin site, approved disposal sites and routes by
  permit, looked up with the fix's zone indexes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from geofence.timewin import LocalClock

MINUTES_PER_WEEK = 7 * 24 * 60


@dataclass
class ZoneTables:
    """Permit → zone indexes of one geofence index."""

    index: object  # the geofence index they were built for (compared by identity)
    origin: np.ndarray  # zone index of each permit's origin site (-1: unknown)
    disposal_pairs: np.ndarray  # sorted keys permit * zones + zone of approved disposal sites
    routes: np.ndarray  # [permits, max routes] zone index of each approved route, -1 padding
    zones: int


@dataclass
class PermitsAtFixes:
    """The lookup's answer for a batch of fixes."""

    position: np.ndarray  # position of the valid permit in `PermitLookup.permits`, -1 none
    operating: np.ndarray  # inside that permit's operating hours (True without a permit)
    approved_disposal: np.ndarray  # the disposal site at the fix is on the permit
    origin_site: np.ndarray  # the construction site at the fix is the permit's origin
    routes: np.ndarray  # [fixes, max routes] zone indexes of the permit's routes, -1 padding


class PermitLookup:
    def __init__(self, permits: Sequence, clock: LocalClock) -> None:
        """`permits`: the catalogue's `Permit` objects (any order)."""
        self.permits = list(permits)
        self.clock = clock
        rows = []  # (truck, -valid_from ordinal, -id, position)
        for pos, p in enumerate(self.permits):
            for truck in p.truck_ids:
                rows.append((truck, -p.valid_from.toordinal(), -p.id, pos))
        rows.sort()
        self.cand_truck = np.array([r[0] for r in rows], np.int64)
        self.cand_pos = np.array([r[3] for r in rows], np.int64)
        active = np.array([p.status == "active" for p in self.permits], bool)
        start = np.array([p.start_s for p in self.permits], np.float64)
        end = np.array([p.end_s for p in self.permits], np.float64)
        # An inactive permit is never valid: an empty interval.
        self.cand_start = np.where(active, start, np.inf)[self.cand_pos]
        self.cand_end = np.where(active, end, -np.inf)[self.cand_pos]
        # The deepest candidate list: how many vectorised rounds a lookup needs.
        if rows:
            _, counts = np.unique(self.cand_truck, return_counts=True)
            self.max_candidates = int(counts.max())
        else:
            self.max_candidates = 0
        # Operating hours: row 0 is "any time"; identical bitmaps share a row.
        patterns: dict[bytes, int] = {}
        bitmaps = [np.ones(MINUTES_PER_WEEK, bool)]
        hours_row = np.zeros(len(self.permits), np.int64)
        for pos, p in enumerate(self.permits):
            if p._hours is None:
                continue
            key = np.packbits(p._hours).tobytes()
            if key not in patterns:
                patterns[key] = len(bitmaps)
                bitmaps.append(np.asarray(p._hours, bool))
            hours_row[pos] = patterns[key]
        self.hours = np.stack(bitmaps)
        self.hours_row = hours_row
        self._zones: ZoneTables | None = None

    def __len__(self) -> int:
        return len(self.permits)

    def _zone_tables(self, index) -> ZoneTables:
        if self._zones is not None and self._zones.index is index:
            return self._zones
        zones = max(len(index), 1)
        origin = np.array(
            [index.zone_index(p.origin_site) if p.origin_site else -1 for p in self.permits],
            np.int64,
        )
        pairs = [
            pos * zones + int(z)
            for pos, p in enumerate(self.permits)
            for z in (index.zone_index(code) for code in p.disposal_sites)
            if z >= 0
        ]
        width = max((len(p.routes) for p in self.permits), default=0)
        routes = np.full((len(self.permits), width), -1, np.int64)
        for pos, p in enumerate(self.permits):
            for k, code in enumerate(p.routes):
                routes[pos, k] = index.zone_index(code)
        self._zones = ZoneTables(index, origin, np.unique(np.array(pairs, np.int64)), routes, zones)
        return self._zones

    def valid_positions(self, truck_id: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Position of the permit valid for each (truck, instant), -1 where none is."""
        n = truck_id.size
        found = np.full(n, -1, np.int64)
        if n == 0 or self.max_candidates == 0:
            return found
        lo = np.searchsorted(self.cand_truck, truck_id, side="left")
        hi = np.searchsorted(self.cand_truck, truck_id, side="right")
        for rank in range(self.max_candidates):
            c = lo + rank
            pending = (found < 0) & (c < hi)
            if not pending.any():
                break
            c = np.minimum(c, self.cand_truck.size - 1)
            ok = pending & (self.cand_start[c] <= t) & (t < self.cand_end[c])
            found = np.where(ok, self.cand_pos[c], found)
        return found

    def at_fixes(
        self,
        truck_id: np.ndarray,
        t: np.ndarray,
        *,
        index,
        site: np.ndarray,
        disposal: np.ndarray,
    ) -> PermitsAtFixes:
        """Everything the rules ask about each fix's permit; `site` and `disposal` are the
        zone indexes (of `index`) of the construction and disposal site at each fix, -1."""
        n = truck_id.size
        position = self.valid_positions(truck_id, t)
        has = position >= 0
        if not has.any():
            return PermitsAtFixes(
                position, np.ones(n, bool), np.zeros(n, bool), np.zeros(n, bool),
                np.full((n, 0), -1, np.int64),
            )  # fmt: skip
        tables = self._zone_tables(index)
        operating = np.ones(n, bool)
        minute = self.clock.minute_of_week(np.floor(t[has]).astype(np.int64))
        operating[has] = self.hours[self.hours_row[position[has]], minute]
        pos = np.maximum(position, 0)
        origin_site = has & (site >= 0) & (tables.origin[pos] == site)
        keys = pos * tables.zones + disposal
        approved_disposal = (
            has & (disposal >= 0) & np.isin(keys, tables.disposal_pairs, assume_unique=False)
        )
        routes = np.where(has[:, None], tables.routes[pos], -1)
        return PermitsAtFixes(position, operating, approved_disposal, origin_site, routes)


class PermitColumn(Sequence):
    """The `Permit` (or None) at each fix, materialised only where a rule asks."""

    def __init__(self, permits: list, position: np.ndarray) -> None:
        self._permits = permits
        self._position = position

    def __len__(self) -> int:
        return int(self._position.size)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        pos = int(self._position[i])
        return self._permits[pos] if pos >= 0 else None
