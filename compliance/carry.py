"""Rule state of many trucks as columns: what the rules carry from one batch to the next.

A batch holds fixes of about as many trucks as fixes (each truck reports every few seconds),
so anything done per truck in Python costs as much as anything done per fix. The carry is
therefore one array per field, one row per truck, gathered and scattered with numpy:

* `Carry`: the state of some trucks (the rows of one batch, or everything the engine has
  seen); `Carried` and the per-stream `RunCarry` the rules read are views of its columns.
* `CarryCache`: one `Carry` row per truck the engine has evaluated, with the revision of the
  `truck_state` row it matches. Lanes keep a truck on one connection, so for nearly every
  truck of a batch the cached row is current and nothing is read or decoded.

The stored form is `TruckState` (msgspec JSON in `truck_state.rule_state` and in
`rule_snapshots`). Only trucks whose stored part changed are encoded; only trucks whose
cached revision is stale are decoded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import msgspec
import numpy as np

from compliance.rules.base import Carried
from compliance.runs import RunCarry
from compliance.trips import TripCarry

STATE_VERSION = 2
# JSON has no infinity: "never" and "no value yet" are stored as this and read back as -inf.
NEVER = -1e300


class TruckState(msgspec.Struct, omit_defaults=True):
    """A truck's rule state as stored.

    In `truck_state.rule_state` only what the row's own columns cannot tell is stored (open
    runs, the corridor state, the trip, the snapshot clock), so that for most trucks it does
    not change from one fix to the next and is not rewritten. The checkpoint (`cp`) and the
    last fix's facts (`last`) come from the row's position columns; snapshots store them.
    """

    v: int = STATE_VERSION
    layout: str = ""
    cp: float = NEVER  # device time of the last fix processed
    last: list[float] = []  # last_t, last_loaded, last_operating, on_route
    # Open runs only (most trucks have none): stream position -> [start_t, worst, fired].
    runs: dict[int, list[float]] = {}
    on_route: bool = True
    snap: float = NEVER  # device time of the last snapshot taken
    trip: list = []  # [loaded_at or None, origin, last site], or [] when nothing to remember


encode_state = msgspec.json.Encoder().encode
decode_state = msgspec.json.Decoder(TruckState).decode


def _finite_or_never(values: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(values), values, NEVER)


def _never_to_inf(values: np.ndarray) -> np.ndarray:
    return np.where(values <= NEVER, -np.inf, values)


@dataclass
class Carry:
    """Rule state of `len(self)` trucks, one row each; `streams` columns of open runs."""

    last: np.ndarray  # (m, 4): last fix time (-inf: none), loaded, operating, on_route (0/1)
    run_active: np.ndarray  # (m, streams) bool: a run of that stream is open
    run_start: np.ndarray  # (m, streams) its first fix's time (0 when none)
    run_worst: np.ndarray  # (m, streams) its worst value (-inf: none yet)
    run_fired: np.ndarray  # (m, streams) bool: reported as qualified
    snap: np.ndarray  # (m,) device time of the last snapshot, -inf: not counting yet
    trip_loaded_at: np.ndarray  # (m,) NaN: not loaded; compliance.trips.ABANDONED
    trip_origin: np.ndarray  # (m,) object: origin site code or None
    trip_last_site: np.ndarray  # (m,) object: last construction site seen or None

    @classmethod
    def fresh(cls, m: int, streams: int) -> Carry:
        last = np.zeros((m, 4))
        last[:, 0] = -np.inf
        last[:, 3] = 1.0
        return cls(
            last=last,
            run_active=np.zeros((m, streams), bool),
            run_start=np.zeros((m, streams)),
            run_worst=np.full((m, streams), -np.inf),
            run_fired=np.zeros((m, streams), bool),
            snap=np.full(m, -np.inf),
            trip_loaded_at=np.full(m, np.nan),
            trip_origin=np.full(m, None, object),
            trip_last_site=np.full(m, None, object),
        )

    def __len__(self) -> int:
        return int(self.snap.size)

    @property
    def streams(self) -> int:
        return int(self.run_active.shape[1])

    def take(self, rows: np.ndarray) -> Carry:
        """A copy of the given rows."""
        return Carry(*(getattr(self, f.name)[rows] for f in fields(self)))

    def put(self, rows: np.ndarray, other: Carry) -> None:
        """Overwrite the given rows with `other`'s rows, in order."""
        for f in fields(self):
            getattr(self, f.name)[rows] = getattr(other, f.name)

    def grow(self, capacity: int) -> Carry:
        """A copy with room for `capacity` rows (the new rows fresh)."""
        extra = Carry.fresh(capacity - len(self), self.streams)
        return Carry(
            *(np.concatenate([getattr(self, f.name), getattr(extra, f.name)]) for f in fields(self))
        )

    # -- what the rules read ------------------------------------------------------------
    def carried(self) -> Carried:
        last = self.last
        return Carried(last[:, 0], last[:, 1] > 0, last[:, 2] > 0, last[:, 3] > 0)

    def run_carry(self, k: int) -> RunCarry:
        """Stream `k`'s open runs, as views: the detector reads its carry and returns a new
        one, so nothing is copied here."""
        return RunCarry(
            self.run_active[:, k],
            self.run_start[:, k],
            self.last[:, 0],  # every stream has seen the truck's last fix
            self.run_worst[:, k],
            self.run_fired[:, k],
            np.full(len(self), -1, np.int64),
        )

    def trip_carry(self) -> TripCarry:
        return TripCarry(
            self.trip_loaded_at.copy(), self.trip_origin.tolist(), self.trip_last_site.tolist()
        )

    def set_runs(self, runs: Sequence[RunCarry]) -> None:
        self.run_active = np.column_stack([r.active for r in runs]).reshape(len(self), -1)
        # Closed runs are normalised so that comparing stored parts sees only open runs.
        self.run_start = np.where(
            self.run_active, np.column_stack([r.start_t for r in runs]).reshape(len(self), -1), 0
        )
        self.run_worst = np.where(
            self.run_active,
            np.column_stack([r.worst for r in runs]).reshape(len(self), -1),
            -np.inf,
        )
        self.run_fired = self.run_active & np.column_stack([r.fired for r in runs]).reshape(
            len(self), -1
        )

    def set_trip(self, trip: TripCarry) -> None:
        self.trip_loaded_at = trip.loaded_at
        origin = np.empty(len(self), object)
        origin[:] = trip.origin
        last_site = np.empty(len(self), object)
        last_site[:] = trip.last_site
        # A truck neither loaded nor having seen a site remembers nothing (stored as []).
        origin[np.isnan(trip.loaded_at) & np.equal(last_site, None)] = None
        self.trip_origin = origin
        self.trip_last_site = last_site

    # -- the stored form ----------------------------------------------------------------
    def stored_part_differs(self, other: Carry) -> np.ndarray:
        """Per row: does the part kept in truck_state.rule_state differ from `other`'s?"""
        active = self.run_active
        runs = (active != other.run_active) | (
            active
            & (
                (self.run_start != other.run_start)
                | (self.run_worst != other.run_worst)
                | (self.run_fired != other.run_fired)
            )
        )
        loaded_a, loaded_b = self.trip_loaded_at, other.trip_loaded_at
        loaded = (loaded_a != loaded_b) & ~(np.isnan(loaded_a) & np.isnan(loaded_b))
        return (
            runs.any(axis=1)
            | (self.last[:, 3] != other.last[:, 3])
            | (self.snap != other.snap)
            | loaded
            | np.not_equal(self.trip_origin, other.trip_origin)
            | np.not_equal(self.trip_last_site, other.trip_last_site)
        )

    def encode(self, rows: Sequence[int], layout: str, *, with_position: bool) -> list[bytes]:
        """The stored form of the given rows: the row part (`with_position=False`) or the
        whole state, as in a snapshot."""
        if not len(rows):
            return []
        rows = np.asarray(rows, np.int64)
        last = _finite_or_never(self.last[rows]).tolist()
        snap = _finite_or_never(self.snap[rows]).tolist()
        on_route = (self.last[rows, 3] > 0).tolist()
        loaded_at = self.trip_loaded_at[rows].tolist()
        origin = self.trip_origin[rows].tolist()
        last_site = self.trip_last_site[rows].tolist()
        active = self.run_active[rows]
        runs: list[dict[int, list[float]]] = [{} for _ in range(rows.size)]
        for i, k in zip(*np.nonzero(active), strict=True):
            r = rows[i]
            worst = self.run_worst[r, k]
            runs[i][int(k)] = [
                float(self.run_start[r, k]),
                float(worst) if np.isfinite(worst) else NEVER,
                float(self.run_fired[r, k]),
            ]
        out = []
        for i in range(rows.size):
            loaded = loaded_at[i]
            if last_site[i] is None and loaded != loaded:  # x != x: NaN
                trip = []
            else:
                trip = [None if loaded != loaded else loaded, origin[i], last_site[i]]
            state = TruckState(
                layout=layout,
                runs=runs[i],
                on_route=on_route[i],
                snap=snap[i],
                trip=trip,
            )
            if with_position:
                state.cp = last[i][0]
                state.last = last[i]
            out.append(encode_state(state))
        return out

    @classmethod
    def from_states(cls, states: Sequence[TruckState], streams: int) -> Carry:
        carry = cls.fresh(len(states), streams)
        for i, s in enumerate(states):
            carry.last[i] = s.last if s.last else [-np.inf, 0.0, 0.0, float(s.on_route)]
            carry.snap[i] = s.snap
            for k, (start_t, worst, fired) in s.runs.items():
                carry.run_active[i, k] = True
                carry.run_start[i, k] = start_t
                carry.run_worst[i, k] = worst
                carry.run_fired[i, k] = fired > 0
            if len(s.trip) == 3:
                loaded, origin, last_site = s.trip
                carry.trip_loaded_at[i] = np.nan if loaded is None else float(loaded)
                carry.trip_origin[i] = origin
                carry.trip_last_site[i] = last_site
        carry.last[:, 0] = _never_to_inf(carry.last[:, 0])
        carry.snap = _never_to_inf(carry.snap)
        carry.run_worst = _never_to_inf(carry.run_worst)
        return carry


class CarryCache:
    """The carry of every truck this engine has evaluated, with the `truck_state.rule_rev`
    each row matches (-1: matches nothing; read it before use)."""

    def __init__(self, streams: int) -> None:
        self.streams = streams
        self._row_of: dict[int, int] = {}
        self.table = Carry.fresh(0, streams)
        self.rev = np.zeros(0, np.int64)

    def __len__(self) -> int:
        return len(self._row_of)

    def rows(self, trucks: Sequence[int]) -> np.ndarray:
        """The cache rows of `trucks`, adding rows (fresh, revision -1) for new ones."""
        row_of = self._row_of
        rows = [row_of.get(t, -1) for t in trucks]
        if -1 in rows:
            for i, t in enumerate(trucks):
                if rows[i] < 0:
                    rows[i] = row_of[t] = len(row_of)
            if len(row_of) > len(self.table):
                capacity = max(len(row_of), 2 * len(self.table), 1024)
                self.table = self.table.grow(capacity)
                self.rev = np.concatenate([self.rev, np.full(capacity - self.rev.size, -1)])
        return np.array(rows, np.int64)
