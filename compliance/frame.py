"""The fixes of one batch, as arrays, enriched with everything the rules ask about them.

Built once per batch for all trucks together: fixes sorted by (truck, device time), one
geofence evaluation for the whole batch, the permit valid at each fix and the distance from
its approved route. Rules then only combine boolean arrays.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from geofence.index import GeofenceIndex
from permits.catalog import Permit, PermitCatalog
from permits.lookup import PermitColumn

LOAD_CODE = {None: -1, "empty": 0, "half": 1, "full": 2}
DARK_ALARMS = frozenset({"antenna_cut", "power_cut", "gnss_fault"})


@dataclass
class FixColumns:
    """Raw columns of fixes of registered trucks, in any order."""

    truck_id: np.ndarray  # int64
    t: np.ndarray  # float64 epoch seconds (device time)
    lon: np.ndarray
    lat: np.ndarray
    speed: np.ndarray
    lid_open: np.ndarray  # bool
    lift_up: np.ndarray  # bool
    load: np.ndarray  # int8: -1 unknown, 0 empty, 1 half, 2 full
    acc: np.ndarray  # int8: -1 unknown, 0 off, 1 on
    alarm: np.ndarray  # bool: antenna cut, power cut or GNSS fault reported

    @classmethod
    def from_rows(cls, rows: Sequence[tuple]) -> FixColumns:
        """rows: (truck_id, t, lon, lat, speed, lid, lift, load, acc, alarms), as read from
        `positions` (t in epoch seconds)."""
        columns = list(zip(*rows, strict=True)) or [()] * 10  # rows → one tuple per column
        return cls._convert(len(rows), *columns)

    @classmethod
    def from_fixes(cls, fixes: Sequence, truck_ids: Sequence[int]) -> FixColumns:
        """Columns straight from validated fixes (telemetry.validation.Fix) of the trucks
        `truck_ids` (one per fix), without an intermediate row tuple per fix."""
        return cls._convert(
            len(fixes),
            truck_ids,
            (f.fix_ms / 1000.0 for f in fixes),
            (f.lon for f in fixes),
            (f.lat for f in fixes),
            (f.speed for f in fixes),
            (f.lid for f in fixes),
            (f.lift for f in fixes),
            (f.load for f in fixes),
            (f.acc for f in fixes),
            (f.alarms for f in fixes),
        )

    @classmethod
    def _convert(
        cls, n: int, truck, t, lon, lat, speed, lid, lift, load, acc, alarms
    ) -> FixColumns:
        """One column per iterable of raw values: the one place that maps the stored
        states (lid, lift, load, acc, alarms) to the rules' codes."""
        load_code = LOAD_CODE.get
        return cls(
            np.fromiter(truck, np.int64, n),
            np.fromiter(t, np.float64, n),
            np.fromiter(lon, np.float64, n),
            np.fromiter(lat, np.float64, n),
            np.fromiter((v or 0.0 for v in speed), np.float64, n),
            np.fromiter((v == "open" for v in lid), bool, n),
            np.fromiter((v == "up" for v in lift), bool, n),
            np.fromiter((load_code(v, -1) for v in load), np.int8, n),
            np.fromiter((-1 if v is None else int(v) for v in acc), np.int8, n),
            np.fromiter((bool(v) and not DARK_ALARMS.isdisjoint(v) for v in alarms), bool, n),
        )

    def take(self, order: np.ndarray) -> FixColumns:
        return FixColumns(*(getattr(self, f)[order] for f in self.__dataclass_fields__))


@dataclass
class FixFrame:
    cols: FixColumns  # sorted by (truck, t)
    index: GeofenceIndex  # the geofence index the frame was evaluated with
    slot: np.ndarray  # truck slot per fix
    trucks: np.ndarray  # truck id per slot
    seg_start: np.ndarray
    seg_last: np.ndarray
    moving: np.ndarray
    loaded: np.ndarray
    working: np.ndarray  # moving, loaded or ignition on (see is_working)
    site: np.ndarray  # zone index of the construction site containing the fix, -1
    disposal: np.ndarray  # zone index of a disposal site containing the fix, -1
    disposal_open: np.ndarray  # that disposal site is within its opening hours
    restricted: np.ndarray  # zone index of a restricted zone whose ban is in force, -1
    speed_limit: np.ndarray  # km/h applicable at the fix
    permit: Sequence[Permit | None]  # valid permit per fix
    has_permit: np.ndarray
    route_distance: np.ndarray  # m from the permit's nearest approved route; nan if none;
    # capped at the index's search radius (>= 2 x width): "at least this far" beyond it
    route_index: np.ndarray  # zone index of that route, -1 if none
    route_width: np.ndarray  # corridor width of that route; nan if none
    approved_disposal: np.ndarray  # the disposal site at the fix is on the permit
    origin_site: np.ndarray  # the site at the fix is the permit's origin
    within_permit_hours: np.ndarray  # inside the permit's operating hours (True: no permit)
    codes: np.ndarray  # zone code per zone index of the geofence index used
    _once: dict[Any, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def t(self) -> np.ndarray:
        return self.cols.t

    def __len__(self) -> int:
        return int(self.cols.t.size)

    def previous(self, values: np.ndarray, carried: np.ndarray) -> np.ndarray:
        """Each fix's predecessor value within its truck; the carried value at a truck's
        first fix."""
        if len(self) == 0:
            return values.copy()
        shifted = np.r_[values[:1], values[:-1]]
        return np.where(self.seg_start, carried[self.slot], shifted)

    def once(self, key: Any, compute: Callable[[], np.ndarray]) -> np.ndarray:
        """`compute()` the first time `key` is asked for, the same array after that: for a
        value more than one step of a batch needs (e.g. the corridor state, which the route
        rule's streams and its end-of-batch hook both read). A frame is evaluated from one
        carry, so values derived from the carried state are the batch's too."""
        if key not in self._once:
            self._once[key] = compute()
        return self._once[key]


def is_working(
    speed_kmh: np.ndarray, loaded: np.ndarray, ignition_on: np.ndarray, moving_kmh: float
) -> np.ndarray:
    """Working: moving (at least `moving_kmh`; an unknown speed, NaN, is not), loaded or
    ignition on. The one definition: `FixFrame.working` for the fixes of a batch, the engine
    for each truck's last fix before it, and its SQL twin `compliance_working()`
    (compliance/sql/0008_working.sql) for the going-dark sweep."""
    return (speed_kmh >= moving_kmh) | loaded | ignition_on


def build_frame(
    cols: FixColumns,
    index: GeofenceIndex,
    permits: PermitCatalog,
    *,
    default_speed_limit_kmh: float,
    moving_kmh: float,
) -> FixFrame:
    order = np.lexsort((cols.t, cols.truck_id))
    cols = cols.take(order)
    n = cols.t.size
    trucks, slot = np.unique(cols.truck_id, return_inverse=True)
    seg_start = np.r_[True, slot[1:] != slot[:-1]] if n else np.zeros(0, bool)
    seg_last = np.r_[slot[1:] != slot[:-1], True] if n else np.zeros(0, bool)
    cls = index.classify(cols.lon, cols.lat, cols.t.astype(np.int64))
    site = cls.site_at()
    disposal = cls.disposal_site_at()
    disposal_open = cls.disposal_site_at(open_only=True) >= 0
    restricted = cls.restricted_active_at()
    # Speed zones carry the limit of their area (an expressway corridor, a school zone);
    # elsewhere the default limit for other roads applies.
    zone_limit = cls.speed_limit_at()
    speed_limit = np.where(np.isfinite(zone_limit), zone_limit, default_speed_limit_kmh)

    # The permit valid at each fix and what it approves there: a few array passes for the
    # whole batch (permits.lookup).
    found = permits.lookup.at_fixes(
        cols.truck_id, cols.t, index=index, site=site, disposal=disposal
    )
    has_permit = found.position >= 0
    # Route distance: one vectorised call per route position (permits rarely have more
    # than one or two approved routes); the nearest approved route counts.
    route_distance = np.full(n, np.nan)
    route_width = np.full(n, np.nan)
    route_index = np.full(n, -1, np.int64)
    for k in range(found.routes.shape[1]):
        route_idx = found.routes[:, k]
        sel = route_idx >= 0
        if not sel.any():
            continue
        d = np.full(n, np.nan)
        d[sel] = index.route_distance(cols.lon[sel], cols.lat[sel], route_idx[sel])
        w = np.full(n, np.nan)
        w[sel] = index.width_m[route_idx[sel]]
        better = sel & (np.isnan(route_distance) | (d - w < route_distance - route_width))
        route_distance = np.where(better, d, route_distance)
        route_width = np.where(better, w, route_width)
        route_index = np.where(better, route_idx, route_index)
    loaded = cols.load >= 1
    return FixFrame(
        cols=cols,
        index=index,
        slot=slot,
        trucks=trucks,
        seg_start=seg_start,
        seg_last=seg_last,
        moving=cols.speed >= moving_kmh,
        loaded=loaded,
        working=is_working(cols.speed, loaded, cols.acc == 1, moving_kmh),
        site=site,
        disposal=disposal,
        disposal_open=disposal_open,
        restricted=restricted,
        speed_limit=speed_limit,
        permit=PermitColumn(permits.lookup.permits, found.position),
        has_permit=has_permit,
        route_distance=route_distance,
        route_width=route_width,
        route_index=route_index,
        approved_disposal=found.approved_disposal,
        origin_site=found.origin_site,
        within_permit_hours=found.operating,
        codes=index.codes,
    )
