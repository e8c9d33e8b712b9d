"""The compliance engine: runs the rule pipeline on every stored batch, inside the batch's
transaction, so rule state is checkpointed with the fixes that produced it.

Per batch: the newly stored fixes of registered trucks → one `FixFrame` (geofence and
permits evaluated for all of them at once) → each rule's condition streams → the episode
detector with the carry loaded from `truck_state` (rows locked, so collectors sharing a
subscription never process one truck at the same time) → violations → new carry.

Late fixes (older than a truck's checkpoint, e.g. a blind-area re-upload) are not skipped:
that truck is replayed from the newest rule snapshot before the late fix, over every stored
fix since, and the violations of the replayed window are reconciled (unchanged, revised,
added, or withdrawn — each change recorded as an event). Shuffled, duplicated and late input
therefore ends with the same violations as the same fixes in order.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
import psycopg2.extras

from compliance.frame import FixColumns, FixFrame, build_frame
from compliance.permits import PermitCatalog
from compliance.rules.base import Carried, Rule
from compliance.rules.dark import GoingDark
from compliance.rules.dumping import IllegalDumping, UnapprovedDisposal
from compliance.rules.permit import NoValidPermit
from compliance.rules.restricted import RestrictedHours, RestrictedZone
from compliance.rules.route import RouteDeviation
from compliance.rules.speeding import Speeding
from compliance.rules.unsealed import UnsealedTransport
from compliance.runs import RunCarry, StreamInput, detect_streams
from compliance.trips import TripRow, advance, decode_carry, encode_carries, write_trips
from compliance.violations import EpisodeRow, ViolationWriter
from core.config import Settings
from geofence.catalog import ZoneCatalog

log = logging.getLogger(__name__)

# The order rules run in, written down in one place.
PIPELINE: tuple[type[Rule], ...] = (
    RouteDeviation,
    UnsealedTransport,
    IllegalDumping,
    UnapprovedDisposal,
    Speeding,
    RestrictedZone,
    RestrictedHours,
    GoingDark,
    NoValidPermit,
)

_STATE_VERSION = 2
# JSON has no infinity: "never" and "no value yet" are stored as this and read back as -inf.
_NEVER = -1e300
_NEW_TRUCK_LOCK = 0x7275  # advisory-lock namespace for trucks without a truck_state row
_LOCK_NEW_TRUCKS = "SELECT pg_advisory_xact_lock(%s, t) FROM unnest(%s::int[]) t ORDER BY t"
_DECODED_CACHE = 200_000  # distinct rule-state texts kept decoded (a few hundred bytes each)


class TruckState(msgspec.Struct, omit_defaults=True):
    """A truck's rule state.

    In `truck_state.rule_state` only what the row's own columns cannot tell is stored (open
    runs, the corridor state, the trip, the snapshot clock), so that for most trucks it does
    not change from one fix to the next and is not rewritten. The checkpoint (`cp`) and the
    last fix's facts (`last`) come from the row's position columns; snapshots store them.
    """

    v: int = _STATE_VERSION
    layout: str = ""
    cp: float = _NEVER  # device time of the last fix processed
    last: list[float] = []  # last_t, last_loaded, last_operating, on_route
    # Open runs only (most trucks have none): stream position -> [start_t, worst, fired].
    runs: dict[int, list[float]] = {}
    on_route: bool = True
    snap: float = _NEVER  # device time of the last snapshot taken
    trip: list = []  # compliance.trips carry


def _row_part(state: TruckState) -> TruckState:
    """The part of a state kept in truck_state.rule_state."""
    return msgspec.structs.replace(state, cp=_NEVER, last=[])


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(TruckState).decode


@dataclass
class Outcome:
    episodes: list[EpisodeRow]
    states: dict[int, TruckState]
    trips: list[TripRow]


class ComplianceEngine:
    def __init__(
        self,
        settings: Settings,
        zones: ZoneCatalog | None = None,
        permits: PermitCatalog | None = None,
    ) -> None:
        self.settings = settings
        self.zones = zones or ZoneCatalog(settings)
        self.permits = permits or PermitCatalog(settings)
        cfg = settings["compliance"]
        self.moving_kmh = float(cfg["moving_kmh"])
        self.max_gap_s = float(cfg["max_gap_s"])
        self.snapshot_every_s = float(cfg["snapshot_every_s"])
        self.abandon_after_s = float(cfg["abandon_trip_after_s"])
        self.default_speed_limit = float(settings.thresholds["speed_limit_other_kmh"])
        rules = settings["rules"]
        self.rules: list[Rule] = [rule(rules[rule.kind], settings) for rule in PIPELINE]
        self.streams = [(r, name) for r in self.rules for name in r.stream_names]
        # Stored with each state (as a short hash) so that a changed pipeline starts afresh
        # instead of misreading old carries.
        layout = ",".join(f"{r.kind}.{name}" for r, name in self.streams)
        self.layout = hashlib.sha1(layout.encode()).hexdigest()[:10]
        self.writer = ViolationWriter(settings)
        self._fresh_part = _row_part(self._fresh())
        self._decoded: dict[str, TruckState] = {}
        # Trucks seen to have a truck_state row (rows are only removed with their truck).
        self._has_row: set[int] = set()

    # -- catalogues ------------------------------------------------------------------------
    def refresh(self, conn) -> None:
        """Reload zones and permits if they changed (call with a connection of its own:
        the catalogues commit their read transactions)."""
        self.zones.maybe_refresh(conn)
        self.permits.maybe_refresh(conn)

    def load(self, conn) -> None:
        self.zones.load(conn)
        self.permits.load(conn)

    # -- state -----------------------------------------------------------------------------
    def _fresh(self) -> TruckState:
        return TruckState(layout=self.layout)

    def _parse(self, raw: Any) -> TruckState:
        if not raw:
            return self._fresh()
        state = _decode(raw if isinstance(raw, bytes | str) else msgspec.json.encode(raw))
        if state.v != _STATE_VERSION or state.layout != self.layout:
            if state.layout:
                log.info("rule pipeline changed; truck rule state restarts")
            return self._fresh()
        return state

    def _stored_part(self, raw: str | None) -> TruckState:
        """The row part of a stored rule state, decoded once per distinct text: most trucks'
        row part does not change from one batch to the next (it holds only open runs, the
        corridor state and the trip), so the text read back is the text read last time.
        The returned object is shared: callers copy it before changing it."""
        if not raw:
            return self._fresh_part
        part = self._decoded.get(raw)
        if part is None:
            if len(self._decoded) >= _DECODED_CACHE:
                self._decoded.clear()
            part = self._decoded[raw] = _row_part(self._parse(raw))
        return part

    def _carries(self, states: list[TruckState]) -> tuple[Carried, list[RunCarry]]:
        m = len(states)
        last = np.array(
            [s.last if s.last else [_NEVER, 0.0, 0.0, 1.0] for s in states], float
        ).reshape(m, 4)
        last[last <= _NEVER] = -np.inf
        carried = Carried(last[:, 0], last[:, 1] > 0, last[:, 2] > 0, last[:, 3] > 0)
        carries = [RunCarry.empty(m) for _ in self.streams]
        for slot, state in enumerate(states):
            for k, (start_t, worst, fired) in state.runs.items():
                carry = carries[int(k)]
                carry.active[slot] = True
                carry.start_t[slot] = start_t
                carry.worst[slot] = -np.inf if worst <= _NEVER else worst
                carry.fired[slot] = fired > 0
        for carry in carries:
            carry.last_t[:] = carried.last_t  # every stream has seen the truck's last fix
        return carried, carries

    # -- the pipeline ----------------------------------------------------------------------
    def evaluate(self, cols: FixColumns, states: dict[int, TruckState], index=None) -> Outcome:
        """Run every rule over `cols` (fixes of any trucks, any order) from `states`."""
        index = index or self.zones.index
        frame = build_frame(
            cols,
            index,
            self.permits,
            default_speed_limit_kmh=self.default_speed_limit,
            moving_kmh=self.moving_kmh,
        )
        trucks = [int(t) for t in frame.trucks]
        before = [states.get(t) or self._fresh() for t in trucks]
        carried, carries = self._carries(before)
        # Every rule's condition streams first, then one detector pass over all of them.
        per_rule = []
        inputs: list[StreamInput] = []
        for rule in self.rules:
            streams = rule.streams(frame, carried)
            for stream in streams:
                inputs.append(
                    StreamInput(
                        stream.cond,
                        stream.value,
                        carries[len(inputs)],
                        stream.min_duration_s,
                        stream.qualify_value,
                    )
                )
            per_rule.append((rule, streams, rule.point_episodes(frame, carried)))
        detected = detect_streams(frame.slot, frame.t, inputs, max_gap_s=self.max_gap_s)
        new_runs = [carry for _, carry in detected]
        episodes: list[EpisodeRow] = []
        k = 0
        for rule, streams, points in per_rule:
            for stream in streams:
                episodes.extend(self._rows(rule, stream.name, frame, detected[k][0]))
                k += 1
            if points is not None and points.fix.size:
                episodes.extend(self._point_rows(rule, frame, points))
        new_last = self._last(frame, carried)
        trips, trip_carry = advance(
            frame, decode_carry([s.trip for s in before]), frame.codes, self.abandon_after_s
        )
        out: dict[int, TruckState] = {}
        open_runs: list[dict[int, list[float]]] = [{} for _ in trucks]
        for k, carry in enumerate(new_runs):
            for slot in np.flatnonzero(carry.active).tolist():
                worst = carry.worst[slot]
                open_runs[slot][k] = [
                    float(carry.start_t[slot]),
                    float(worst) if np.isfinite(worst) else _NEVER,
                    float(carry.fired[slot]),
                ]
        lasts = np.where(np.isfinite(new_last), new_last, _NEVER).tolist()
        trip_lists = encode_carries(trip_carry)
        layout = self.layout
        for slot, truck in enumerate(trucks):
            out[truck] = TruckState(
                layout=layout,
                cp=lasts[slot][0],
                last=lasts[slot],
                runs=open_runs[slot],
                snap=before[slot].snap,
                trip=trip_lists[slot],
            )
        return Outcome(episodes, out, trips)

    def _last(self, frame: FixFrame, carried: Carried) -> np.ndarray:
        last = frame.seg_last
        s = frame.slot[last]
        out = np.column_stack(
            [carried.last_t, carried.last_loaded, carried.last_operating, carried.on_route]
        ).astype(float)
        operating = frame.moving | frame.loaded | (frame.cols.acc == 1)
        out[s, 0] = frame.t[last]
        out[s, 1] = frame.loaded[last]
        out[s, 2] = operating[last]
        route_rule = next((r for r in self.rules if isinstance(r, RouteDeviation)), None)
        if route_rule is not None:
            out[s, 3] = route_rule.on_route(frame, carried)[last]
        return out

    def _rows(self, rule: Rule, stream: str, frame: FixFrame, found) -> list[EpisodeRow]:
        rows = []
        for i in range(len(found)):
            slot = int(found.truck_slot[i])
            at = int(found.first_fix[i]) if found.first_fix[i] >= 0 else int(found.last_fix[i])
            end = None if np.isnan(found.end_t[i]) else float(found.end_t[i])
            rows.append(
                self._row(
                    rule,
                    stream,
                    frame,
                    slot,
                    at,
                    float(found.start_t[i]),
                    end,
                    float(found.worst[i]),
                    located=found.first_fix[i] >= 0,
                )
            )
        return rows

    def _point_rows(self, rule: Rule, frame: FixFrame, points) -> list[EpisodeRow]:
        flagged = points.flagged if points.flagged is not None else np.zeros(points.fix.size, bool)
        rows = []
        for i, s, e, w, flag in zip(
            points.fix, points.start_t, points.end_t, points.worst, flagged, strict=True
        ):
            row = self._row(
                rule, "gap", frame, int(frame.slot[i]), int(i), float(s), float(e), float(w), True
            )
            if flag:
                row.severity = "serious"
                row.params = {**row.params, **rule.flag_detail()}
            rows.append(row)
        return rows

    def _row(self, rule, stream, frame, slot, at, start, end, worst, located) -> EpisodeRow:
        permit = frame.permit[at] if 0 <= at < len(frame) else None
        duration = (end if end is not None else float(frame.t[at])) - start
        zone = None
        if 0 <= at < len(frame):
            for zone_idx in (frame.restricted[at], frame.disposal[at], frame.site[at]):
                if zone_idx >= 0:
                    zone = str(frame.codes[zone_idx])
                    break
        return EpisodeRow(
            truck_id=int(frame.trucks[slot]),
            kind=rule.kind,
            stream=stream,
            start=start,
            end=end,
            # Rules without a measure (unit "") store no worst value.
            worst=worst if rule.unit and math.isfinite(worst) else None,
            unit=rule.unit,
            severity=rule.severity(duration, worst),
            permit_no=permit.number if permit is not None else None,
            zone_code=zone,
            lat=float(frame.cols.lat[at]) if located else None,
            lon=float(frame.cols.lon[at]) if located else None,
            points=rule.points,
            legal_basis=rule.legal_basis,
            params=rule.parameters(),
        )

    # -- the after-store hook ----------------------------------------------------------
    def after_store(self, cur, batch) -> None:
        """Hook for telemetry.store.BatchWriter: evaluate the fixes this batch inserted."""
        truck_ids = batch.truck_ids
        chosen = [i for i in batch.inserted if truck_ids[i] is not None]
        if chosen:
            fixes = batch.fixes
            self.process(
                cur,
                FixColumns.from_fixes([fixes[i] for i in chosen], [truck_ids[i] for i in chosen]),
            )

    def process(self, cur, cols: FixColumns) -> None:
        trucks = sorted({int(t) for t in cols.truck_id})
        # Lock the trucks' rows: collectors sharing a subscription never evaluate one truck
        # at the same time, and each starts from the state the other committed. Trucks
        # without a row yet are locked with a transaction-scoped advisory lock instead,
        # taken *before* any row lock: every transaction then takes all its advisory locks
        # and then all its row locks, each kind in truck order, so two transactions can
        # never wait on each other in a cycle. (Taking the advisory locks after the row
        # locks deadlocked two collectors' lanes on trucks that got their first row
        # meanwhile; docs/performance.md.) Whether a truck may lack a row is known from
        # the rows seen before, so a batch of known trucks costs no extra query.
        select = """SELECT truck_id, rule_state, date_part('epoch', fix_time),
                           load::text, speed_kmh, acc
                    FROM truck_state WHERE truck_id = ANY(%s) ORDER BY truck_id FOR UPDATE"""
        unknown = [t for t in trucks if t not in self._has_row]
        new: list[int] = []
        if unknown:
            cur.execute("SELECT truck_id FROM truck_state WHERE truck_id = ANY(%s)", (unknown,))
            self._has_row.update(row[0] for row in cur.fetchall())
            new = [t for t in unknown if t not in self._has_row]
            if new:
                cur.execute(_LOCK_NEW_TRUCKS, (_NEW_TRUCK_LOCK, new))
        cur.execute(select, (trucks,))
        rows = cur.fetchall()
        self._has_row.update(row[0] for row in rows)
        missing = sorted(set(trucks) - {row[0] for row in rows} - set(new))
        if missing:
            # A row thought to exist is gone (a truck deleted meanwhile): lock it the old
            # way. Rare, and a deadlock here is detected by PostgreSQL and retried.
            self._has_row.difference_update(missing)
            cur.execute(_LOCK_NEW_TRUCKS, (_NEW_TRUCK_LOCK, missing))
            cur.execute(select, (missing,))
            rows += cur.fetchall()
        states: dict[int, TruckState] = {}
        stored: dict[int, TruckState] = {}
        replace = msgspec.structs.replace
        moving_kmh = self.moving_kmh
        for truck, raw, fix_t, load, speed, acc in rows:
            part = stored[truck] = self._stored_part(raw)
            loaded = load in ("half", "full")
            operating = loaded or (speed or 0.0) >= moving_kmh or acc is True
            states[truck] = replace(
                part,
                cp=fix_t,
                last=[fix_t, float(loaded), float(operating), float(part.on_route)],
            )
        known = np.array(sorted(states), np.int64)
        checkpoints = np.array([states[t].cp for t in known.tolist()], np.float64)
        at = np.minimum(np.searchsorted(known, cols.truck_id), max(known.size - 1, 0))
        found = known.size > 0
        cp = (
            np.where(known[at] == cols.truck_id, checkpoints[at], _NEVER)
            if found
            else np.full(cols.t.size, _NEVER)
        )
        late_trucks = set(np.unique(cols.truck_id[cols.t <= cp]).tolist())
        on_time = ~np.isin(cols.truck_id, list(late_trucks))
        if on_time.any():
            outcome = self.evaluate(cols.take(np.flatnonzero(on_time)), states)
            self.writer.write(cur, outcome.episodes)
            write_trips(cur, outcome.trips, self.moving_kmh)
            self._save(cur, outcome.states, stored)
        for truck in sorted(late_trucks):
            late = cols.t[(cols.truck_id == truck)]
            self._replay(cur, truck, float(late.min()))

    def _save(
        self, cur, states: dict[int, TruckState], stored: dict[int, TruckState] | None = None
    ) -> None:
        """Hand the changed states to the batch's truck_state write (telemetry.store merges
        truck_state_staging into the same row update), and snapshot the trucks whose device
        time crossed a `snapshot_every_s` boundary."""
        every = self.snapshot_every_s
        stored = stored or {}
        lines, snapshots = [], []
        for truck, state in states.items():
            state.on_route = bool(state.last[3]) if state.last else True
            if state.snap > _NEVER and state.cp // every > state.snap // every:
                state.snap = state.cp
                snapshots.append((truck, state.cp, _encode(state).decode()))
            elif state.snap <= _NEVER:
                state.snap = state.cp  # start counting; no snapshot needed before the first
            part = _row_part(state)
            if part == stored.get(truck):
                continue  # unchanged: the row's own columns carry the rest
            text = _encode(part).decode().replace("\\", "\\\\")
            lines.append(f"{truck}\t{text}\t{state.cp!r}\n")
        if lines:
            cur.copy_expert("COPY truck_state_staging FROM STDIN", io.StringIO("".join(lines)))
        if snapshots:
            psycopg2.extras.execute_values(
                cur,
                """INSERT INTO rule_snapshots (truck_id, at, state) VALUES %s
                   ON CONFLICT (truck_id, at) DO UPDATE SET state = EXCLUDED.state""",
                snapshots,
                template="(%s, %s, %s::jsonb)",
            )

    def _replay(self, cur, truck: int, earliest: float) -> None:
        """Re-run a truck's rules from the newest snapshot before `earliest`."""
        cur.execute(
            """SELECT at, state::text FROM rule_snapshots WHERE truck_id = %s AND at < %s
               ORDER BY at DESC LIMIT 1""",
            (truck, earliest),
        )
        found = cur.fetchone()
        since, state = (found[0], self._parse(found[1])) if found else (_NEVER, self._fresh())
        cur.execute(
            """SELECT truck_id, extract(epoch FROM fix_time)::float8, lon, lat, speed_kmh,
                      lid::text, lift::text, load::text, acc, alarms
               FROM positions WHERE truck_id = %s AND fix_time > to_timestamp(%s)
               ORDER BY fix_time""",
            (truck, max(since, 0.0)),
        )
        rows = cur.fetchall()
        # Snapshots after the replay start were computed without the late fixes.
        cur.execute(
            "DELETE FROM rule_snapshots WHERE truck_id = %s AND at >= %s",
            (truck, since),
        )
        if not rows:
            return
        outcome = self.evaluate(FixColumns.from_rows(rows), {truck: state})
        self.writer.reconcile(cur, truck, since, outcome.episodes)
        # Trips are derived data: a trip recorded from the partial fixes whose start the
        # replay moved (or that the replay no longer sees) goes; the replay's trips are
        # written again below. Trips loaded before the replay window come from the snapshot's
        # carry unchanged.
        cur.execute(
            """DELETE FROM trips WHERE truck_id = %s AND loaded_at > to_timestamp(%s)
                 AND loaded_at <> ALL (ARRAY(SELECT to_timestamp(x)
                                             FROM unnest(%s::float8[]) x))""",
            (truck, max(since, 0.0), [r.loaded_at for r in outcome.trips]),
        )
        write_trips(cur, outcome.trips, self.moving_kmh)
        new_state = outcome.states[truck]
        new_state.snap = since
        self._save(cur, outcome.states)
