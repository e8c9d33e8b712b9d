"""Rule state of many trucks as columns: what the rules carry from one batch to the next.

A batch holds fixes of about as many trucks as fixes (each truck reports every few seconds),
so anything done per truck in Python costs as much as anything done per fix. The carry is
therefore one array per field, one row per truck, gathered and scattered with numpy:

* `Carry`: the state of some trucks (the rows of one batch, or everything the engine has
  seen); `Carried` and the per-stream `RunCarry` the rules read are views of its columns.
  Its shape comes from the pipeline (`CarryLayout`): one open run per condition stream, and
  the columns each rule keeps (`Rule.keeps`, e.g. the route rule's corridor state).
* `CarryCache`: one `Carry` row per truck the engine has evaluated, with the revision of the
  `truck_state` row it matches. Lanes keep a truck on one connection, so for nearly every
  truck of a batch the cached row is current and nothing is read or decoded.

The stored form is `TruckState` (msgspec JSON in `truck_state.rule_state` and in
`rule_snapshots`). Only trucks whose stored part changed are encoded; only trucks whose
cached revision is stale are decoded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, fields
from functools import cached_property

import msgspec
import numpy as np

from compliance.rules.base import Carried, Rule
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
    last: list[float] = []  # last_t, last_loaded, last_working
    # Open runs only (most trucks have none): stream position -> [start_t, worst, fired].
    runs: dict[int, list[float]] = {}
    # The rules' kept columns (Rule.keeps) whose value is not their default, by name.
    kept: dict[str, float] = {}
    # Read, never written: states written before rules declared their kept columns stored the
    # route rule's corridor state here (and as a fourth value of `last`); it is read as the
    # kept column of that name. (`v` is omitted at its default, so it cannot tell them apart.)
    on_route: bool = True
    snap: float = NEVER  # device time of the last snapshot taken
    trip: list = []  # [loaded_at or None, origin, last site], or [] when nothing to remember


encode_state = msgspec.json.Encoder().encode
decode_state = msgspec.json.Decoder(TruckState).decode


def _finite_or_never(values: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(values), values, NEVER)


def _never_to_inf(values: np.ndarray) -> np.ndarray:
    return np.where(values <= NEVER, -np.inf, values)


@dataclass(frozen=True)
class CarryLayout:
    """The shape of a pipeline's carry: one open run per condition stream ("kind.stream", in
    pipeline order) and the columns the rules keep, each with its value for a truck not seen
    yet (`Rule.keeps`; a bool default makes a bool column for the rules)."""

    stream_keys: tuple[str, ...] = ()
    kept: tuple[tuple[str, bool | float], ...] = ()

    @classmethod
    def of(cls, rules: Sequence[Rule]) -> CarryLayout:
        kept: dict[str, bool | float] = {}
        for rule in rules:
            for name, default in rule.keeps.items():
                if name in kept:
                    raise ValueError(f"two rules keep a column named {name!r}")
                kept[name] = default
        streams = tuple(f"{rule.kind}.{name}" for rule in rules for name in rule.stream_names)
        return cls(streams, tuple(kept.items()))

    @property
    def streams(self) -> int:
        return len(self.stream_keys)

    @cached_property
    def kept_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.kept)

    @cached_property
    def kept_index(self) -> dict[str, int]:
        """Each kept column's position in `Carry.kept`."""
        return {name: j for j, (name, _) in enumerate(self.kept)}

    @cached_property
    def defaults(self) -> np.ndarray:
        return np.array([float(default) for _, default in self.kept], float)

    @cached_property
    def key(self) -> str:
        """Stored with each state (a short hash) so that a changed pipeline starts afresh
        instead of misreading old carries. Only the streams count: runs are stored by
        position, kept columns by name (one not stored reads as its default)."""
        return hashlib.sha1(",".join(self.stream_keys).encode()).hexdigest()[:10]


@dataclass
class Carry:
    """Rule state of `len(self)` trucks, one row each; `streams` columns of open runs."""

    last: np.ndarray  # (m, 3): last fix time (-inf: none), loaded, working (0/1)
    kept: np.ndarray  # (m, kept columns): the rules' kept columns, in CarryLayout.kept order
    run_active: np.ndarray  # (m, streams) bool: a run of that stream is open
    run_start: np.ndarray  # (m, streams) its first fix's time (0 when none)
    run_worst: np.ndarray  # (m, streams) its worst value (-inf: none yet)
    run_fired: np.ndarray  # (m, streams) bool: reported as qualified
    snap: np.ndarray  # (m,) device time of the last snapshot, -inf: not counting yet
    trip_loaded_at: np.ndarray  # (m,) NaN: not loaded; compliance.trips.ABANDONED
    trip_origin: np.ndarray  # (m,) object: origin site code or None
    trip_last_site: np.ndarray  # (m,) object: last construction site seen or None

    @classmethod
    def fresh(cls, m: int, layout: CarryLayout) -> Carry:
        last = np.zeros((m, 3))
        last[:, 0] = -np.inf
        streams = layout.streams
        return cls(
            last=last,
            kept=np.broadcast_to(layout.defaults, (m, layout.defaults.size)).copy(),
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

    def take(self, rows: np.ndarray) -> Carry:
        """A copy of the given rows."""
        return Carry(*(getattr(self, f.name)[rows] for f in fields(self)))

    def put(self, rows: np.ndarray, other: Carry) -> None:
        """Overwrite the given rows with `other`'s rows, in order."""
        for f in fields(self):
            getattr(self, f.name)[rows] = getattr(other, f.name)

    def grow(self, capacity: int, layout: CarryLayout) -> Carry:
        """A copy with room for `capacity` rows (the new rows fresh)."""
        extra = Carry.fresh(capacity - len(self), layout)
        return Carry(
            *(np.concatenate([getattr(self, f.name), getattr(extra, f.name)]) for f in fields(self))
        )

    # -- what the rules read ------------------------------------------------------------
    def carried(self, layout: CarryLayout) -> Carried:
        last, kept = self.last, self.kept
        columns = {
            name: kept[:, j] > 0 if isinstance(default, bool) else kept[:, j]
            for j, (name, default) in enumerate(layout.kept)
        }
        return Carried(last[:, 0], last[:, 1] > 0, last[:, 2] > 0, columns)

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
            | (self.kept != other.kept).any(axis=1)
            | (self.snap != other.snap)
            | loaded
            | np.not_equal(self.trip_origin, other.trip_origin)
            | np.not_equal(self.trip_last_site, other.trip_last_site)
        )

    def encode(
        self, rows: Sequence[int], layout: CarryLayout, *, with_position: bool
    ) -> list[bytes]:
        """The stored form of the given rows: the row part (`with_position=False`) or the
        whole state, as in a snapshot."""
        if not len(rows):
            return []
        rows = np.asarray(rows, np.int64)
        last = _finite_or_never(self.last[rows]).tolist()
        snap = _finite_or_never(self.snap[rows]).tolist()
        kept_values = self.kept[rows]
        kept_differs = kept_values != layout.defaults
        has_kept = kept_differs.any(axis=1).tolist()
        names = layout.kept_names
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
            kept = {}
            if has_kept[i]:
                values = kept_values[i].tolist()
                kept = {names[j]: values[j] for j in np.flatnonzero(kept_differs[i]).tolist()}
            state = TruckState(layout=layout.key, runs=runs[i], kept=kept, snap=snap[i], trip=trip)
            if with_position:
                state.cp = last[i][0]
                state.last = last[i]
            out.append(encode_state(state))
        return out

    @classmethod
    def from_states(cls, states: Sequence[TruckState], layout: CarryLayout) -> Carry:
        carry = cls.fresh(len(states), layout)
        column = layout.kept_index
        for i, s in enumerate(states):
            if s.last:
                carry.last[i] = s.last[:3]  # older snapshots: the corridor state was a fourth
            kept = s.kept if s.on_route else {"on_route": 0.0, **s.kept}  # older states
            for name, value in kept.items():
                j = column.get(name)
                if j is not None:  # a column no rule keeps any more
                    carry.kept[i, j] = value
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

    def __init__(self, layout: CarryLayout) -> None:
        self.layout = layout
        self._row_of: dict[int, int] = {}
        self.table = Carry.fresh(0, layout)
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
                self.table = self.table.grow(capacity, self.layout)
                self.rev = np.concatenate([self.rev, np.full(capacity - self.rev.size, -1)])
        return np.array(rows, np.int64)
