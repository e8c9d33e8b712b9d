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

import logging
import math
import secrets
import threading
from dataclasses import dataclass

import numpy as np
import psycopg2.extras

from compliance.carry import (
    NEVER,
    STATE_VERSION,
    Carry,
    CarryCache,
    CarryLayout,
    TruckState,
    decode_state,
)
from compliance.concurrence import link_concurrent
from compliance.dark_excuses import split_excused
from compliance.frame import FixColumns, FixFrame, build_frame, is_working
from compliance.pipeline import PIPELINE
from compliance.rules.base import Carried, Rule
from compliance.runs import StreamInput, detect_streams
from compliance.sweep import withdraw_stale_dark
from compliance.trips import TripRow, advance, write_trips
from compliance.violations import RULE_REPLAYS, EpisodeRow, ViolationWriter
from core.config import Settings
from core.db import IntArray
from geofence.catalog import ZoneCatalog
from permits.catalog import PermitCatalog

log = logging.getLogger(__name__)

_LOADED = ("half", "full")
_GOLDEN = 0.6180339887498949  # spreads truck ids evenly over [0, 1)
# The rows are already locked by this transaction (telemetry.store writes them first).
_WRITE_STATE = """
UPDATE truck_state t
SET rule_state = s.rule_state, rule_checkpoint = to_timestamp(s.checkpoint), rule_rev = %s
FROM unnest(%s::bigint[], %s::text[], %s::float8[]) AS s(truck_id, rule_state, checkpoint)
WHERE t.truck_id = s.truck_id
"""


def snapshot_due(trucks: np.ndarray, last: np.ndarray, now: np.ndarray, every: float) -> np.ndarray:
    """Per truck: has its device time crossed a snapshot boundary between `last` and `now`?

    Each truck's boundaries are shifted by a phase of its own, so that a fleet does not
    snapshot all at once at every multiple of `every` (100,000 snapshots in a few batches
    would hold up those batches' alerts by seconds)."""
    phase = (trucks * _GOLDEN % 1.0) * every
    return (now + phase) // every > (last + phase) // every


@dataclass
class Outcome:
    episodes: list[EpisodeRow]
    carry: Carry  # the state after the batch, one row per truck of the frame (sorted ids)
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
        self.rules: list[Rule] = [rule.from_settings(settings) for rule in PIPELINE]
        self.layout = CarryLayout.of(self.rules)
        self.writer = ViolationWriter(settings)
        # One cache per thread: a collector's writer lanes are threads sharing this engine,
        # and each device (so each truck) always goes to the same lane, so a lane's cache
        # holds its own trucks and no two threads ever touch one cache.
        self._local = threading.local()

    @property
    def cache(self) -> CarryCache:
        cache = getattr(self._local, "cache", None)
        if cache is None:
            cache = self._local.cache = CarryCache(self.layout)
        return cache

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
    def _parse(self, raw: str | bytes | None) -> TruckState:
        if not raw:
            return TruckState(layout=self.layout.key)
        state = decode_state(raw)
        if state.v != STATE_VERSION or state.layout != self.layout.key:
            if state.layout:
                log.info("rule pipeline changed; truck rule state restarts")
            return TruckState(layout=self.layout.key)
        return state

    # -- the pipeline ----------------------------------------------------------------------
    def evaluate(self, cols: FixColumns, carry: Carry, index=None) -> Outcome:
        """Run every rule over `cols` (fixes of any trucks, any order) from `carry`, whose
        rows are the trucks of `cols` in ascending id order."""
        index = index or self.zones.index
        frame = build_frame(
            cols,
            index,
            self.permits,
            default_speed_limit_kmh=self.default_speed_limit,
            moving_kmh=self.moving_kmh,
        )
        carried = carry.carried(self.layout)
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
                        carry.run_carry(len(inputs)),
                        stream.min_duration_s,
                        stream.qualify_value,
                    )
                )
            per_rule.append((rule, streams, rule.point_episodes(frame, carried)))
        detected = detect_streams(frame.slot, frame.t, inputs, max_gap_s=self.max_gap_s)
        episodes: list[EpisodeRow] = []
        k = 0
        for rule, streams, points in per_rule:
            for stream in streams:
                episodes.extend(self._rows(rule, stream.name, frame, detected[k][0]))
                k += 1
            if points is not None and points.fix.size:
                episodes.extend(self._point_rows(rule, frame, points))
        trips, trip_carry = advance(frame, carry.trip_carry(), frame.codes, self.abandon_after_s)
        after = Carry.fresh(len(carry), self.layout)
        after.last, after.kept = self._after_batch(frame, carried, carry)
        after.snap = carry.snap.copy()
        after.set_runs([run for _, run in detected])
        after.set_trip(trip_carry)
        return Outcome(episodes, after, trips)

    def _after_batch(
        self, frame: FixFrame, carried: Carried, before: Carry
    ) -> tuple[np.ndarray, np.ndarray]:
        """The carry's `last` and `kept` columns after the batch: each truck's last fix, and
        the values the rules' end-of-batch hooks give at it."""
        last = frame.seg_last
        s = frame.slot[last]
        out = np.column_stack([carried.last_t, carried.last_loaded, carried.last_working]).astype(
            float
        )
        out[s, 0] = frame.t[last]
        out[s, 1] = frame.loaded[last]
        out[s, 2] = frame.working[last]
        kept = before.kept.copy()
        column = self.layout.kept_index
        for rule in self.rules:
            for name, values in rule.end_of_batch(frame, carried).items():
                kept[s, column[name]] = values[last]
        return out, kept

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
        none = np.zeros(points.fix.size, bool)
        flagged = points.flagged if points.flagged is not None else none
        low = points.low if points.low is not None else none
        excusable = points.excusable if points.excusable is not None else none
        rows = []
        for i, s, e, w, flag, notice, excuse in zip(
            points.fix,
            points.start_t,
            points.end_t,
            points.worst,
            flagged,
            low,
            excusable,
            strict=True,
        ):
            row = self._row(
                rule, "gap", frame, int(frame.slot[i]), int(i), float(s), float(e), float(w), True
            )
            if flag:
                row.severity = "serious"
                row.params = {**row.params, **rule.flag_detail()}
            elif notice:
                row.severity = "notice"
            row.excusable = bool(excuse)
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
        """Hook for telemetry.store.BatchWriter: evaluate the fixes this batch inserted. The
        writer has already written (and so locked) the trucks' truck_state rows and hands
        over each row as it stood before the batch (`batch.prior`)."""
        truck_ids = batch.truck_ids
        chosen = [i for i in batch.inserted if truck_ids[i] is not None]
        if chosen:
            fixes = batch.fixes
            self.process(
                cur,
                FixColumns.from_fixes([fixes[i] for i in chosen], [truck_ids[i] for i in chosen]),
                batch.prior,
            )

    def process(self, cur, cols: FixColumns, prior: list[tuple]) -> None:
        """Evaluate `cols` (fixes of locked trucks) from `prior`, the trucks' truck_state rows
        before the batch: (truck, last fix time or None, load, speed, ignition, rule_rev)."""
        trucks = np.unique(cols.truck_id)
        slots = self.cache.rows(trucks.tolist())
        before = self._current(cur, trucks, slots, prior)
        # Fixes at or before a truck's checkpoint are late (a re-upload): that truck is
        # replayed instead of evaluated here.
        fix_slot = np.searchsorted(trucks, cols.truck_id)
        late = np.zeros(trucks.size, bool)
        late[fix_slot[cols.t <= before.last[fix_slot, 0]]] = True
        if not late.all():
            on_time = np.flatnonzero(~late)
            outcome = self.evaluate(
                cols.take(np.flatnonzero(~late[fix_slot])), before.take(on_time)
            )
            episodes, excused = split_excused(cur, outcome.episodes)
            self.writer.write(cur, episodes)
            if excused:  # the sweep may have opened them before the shutdown was known
                self.writer.withdraw_open(cur, excused, "the terminal shut down orderly")
            if self.writer.new_for:  # a link is made when the second of two charges is new
                link_concurrent(cur, self.settings, sorted(self.writer.new_for))
            withdraw_stale_dark(cur, self.settings, trucks[on_time].tolist())
            write_trips(cur, outcome.trips, self.moving_kmh)
            self._save(cur, trucks[on_time], slots[on_time], outcome.carry, before.take(on_time))
        for s in np.flatnonzero(late).tolist():
            earliest = float(cols.t[fix_slot == s].min())
            self._replay(cur, int(trucks[s]), int(slots[s]), earliest)

    def _current(self, cur, trucks: np.ndarray, slots: np.ndarray, prior: list[tuple]) -> Carry:
        """The trucks' carry before the batch: the cached rows, refreshed where the
        truck_state row was written by someone else (another collector, a rolled-back batch
        of ours) or never read, plus the last fix's facts from the row as it stood."""
        cache = self.cache
        m = trucks.size
        known = np.zeros(m, bool)  # the row existed before this batch
        rev = np.full(m, -1, np.int64)
        fix_t = np.full(m, -np.inf)
        loaded = np.zeros(m, bool)
        working = np.zeros(m, bool)
        if prior:
            ids, times, loads, speeds, accs, revs = zip(*prior, strict=True)
            ids = np.array(ids, np.int64)
            at = np.minimum(np.searchsorted(trucks, ids), m - 1)
            # The rows are those of this batch's trucks; a row of any other truck (none is
            # expected) must not land on a neighbour's slot.
            mine = trucks[at] == ids
            if not mine.all():
                at, mine_list = at[mine], np.flatnonzero(mine).tolist()
                times, loads, speeds, accs, revs = (
                    [column[i] for i in mine_list] for column in (times, loads, speeds, accs, revs)
                )
            rev[at] = revs
            times = np.array(times, float)  # None (a new row) becomes NaN
            known[at] = ~np.isnan(times)
            fix_t[at] = np.where(np.isnan(times), -np.inf, times)
            row_loaded = np.array([load in _LOADED for load in loads], bool)
            speed = np.array(speeds, float)  # None becomes NaN, which is not >= anything
            loaded[at] = row_loaded
            working[at] = is_working(speed, row_loaded, np.equal(accs, True), self.moving_kmh)
        # Trucks without a row before this batch start afresh (a cached row may hold a
        # rolled-back state).
        if not known.all():
            fresh = slots[~known]
            cache.table.put(fresh, Carry.fresh(fresh.size, self.layout))
            cache.rev[fresh] = rev[~known]
        stale = np.flatnonzero(known & (cache.rev[slots] != rev))
        if stale.size:
            cur.execute(
                "SELECT truck_id, rule_state FROM truck_state WHERE truck_id = ANY(%s)",
                (IntArray(trucks[stale].tolist()),),
            )
            text = dict(cur.fetchall())
            states = [self._parse(text.get(t)) for t in trucks[stale].tolist()]
            cache.table.put(slots[stale], Carry.from_states(states, self.layout))
            cache.rev[slots[stale]] = rev[stale]
        before = cache.table.take(slots)
        before.last[:, 0] = fix_t
        before.last[:, 1] = loaded
        before.last[:, 2] = working
        return before

    def _save(
        self,
        cur,
        trucks: np.ndarray,
        slots: np.ndarray,
        after: Carry,
        stored: Carry | None = None,
    ) -> None:
        """Write the states whose stored part changed to their (locked) truck_state rows,
        snapshot the trucks whose device time crossed a `snapshot_every_s` boundary, and keep
        the states in the cache. Most trucks' stored part does not change from one batch to
        the next (it holds open runs, the corridor state and the trip): those cost nothing."""
        every = self.snapshot_every_s
        cp = after.last[:, 0]
        counting = after.snap > -np.inf
        # Not counting yet: start at this checkpoint; no snapshot is needed before the first.
        snap = np.where(counting, after.snap, cp)
        due = np.flatnonzero(counting & snapshot_due(trucks, snap, cp, every))
        snap[due] = cp[due]
        after.snap = snap
        changed = (
            np.arange(len(after))
            if stored is None
            else np.flatnonzero(after.stored_part_differs(stored))
        )
        # A revision no other write shares: the cached row is trusted only while the
        # truck_state row still carries it (a rolled-back batch leaves the old one).
        revision = secrets.randbits(62)
        if changed.size:
            texts = after.encode(changed, self.layout, with_position=False)
            cur.execute(
                _WRITE_STATE,
                (
                    revision,
                    IntArray(trucks[changed].tolist()),
                    [text.decode() for text in texts],
                    cp[changed].tolist(),
                ),
            )
        if due.size:
            texts = after.encode(due, self.layout, with_position=True)
            psycopg2.extras.execute_values(
                cur,
                """INSERT INTO rule_snapshots (truck_id, at, state) VALUES %s
                   ON CONFLICT (truck_id, at) DO UPDATE SET state = EXCLUDED.state""",
                [
                    (truck, t, text.decode())
                    for truck, t, text in zip(
                        trucks[due].tolist(), cp[due].tolist(), texts, strict=True
                    )
                ],
                template="(%s, %s, %s::jsonb)",
            )
        cache = self.cache
        cache.table.put(slots, after)
        cache.rev[slots[changed]] = revision

    def _replay(self, cur, truck: int, slot: int, earliest: float) -> None:
        """Re-run a truck's rules from the newest snapshot before `earliest`."""
        RULE_REPLAYS.inc()
        cur.execute(
            """SELECT at, state::text FROM rule_snapshots WHERE truck_id = %s AND at < %s
               ORDER BY at DESC LIMIT 1""",
            (truck, earliest),
        )
        found = cur.fetchone()
        since, state = (found[0], self._parse(found[1])) if found else (NEVER, self._parse(None))
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
        outcome = self.evaluate(FixColumns.from_rows(rows), Carry.from_states([state], self.layout))
        self.writer.reconcile(cur, truck, since, split_excused(cur, outcome.episodes)[0])
        link_concurrent(cur, self.settings, [truck])
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
        outcome.carry.snap[:] = -np.inf if since <= NEVER else since
        self._save(cur, np.array([truck], np.int64), np.array([slot], np.int64), outcome.carry)
