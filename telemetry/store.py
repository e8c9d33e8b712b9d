"""Writes one batch of decoded messages in one transaction.

Fixes go through COPY into a temporary staging table, then INSERT ... ON CONFLICT DO NOTHING
into `positions` (COPY alone cannot skip the duplicates that redelivery produces). Exact
duplicates are counted; a duplicate (device, fix time) whose content differs from the stored
row is quarantined as `duplicate_conflict`. The latest fix of each registered truck updates
`truck_state` in the same transaction.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import psycopg2.extras
from psycopg2 import sql as psql

from core.db import IntArray
from telemetry import partitions
from telemetry.contract import Topics
from telemetry.validation import Fix, Sighting

_STAGING_DDL = """
CREATE TEMP TABLE IF NOT EXISTS positions_staging (
    row_no int, device_id text, fix_ms bigint, received_ms bigint, truck_id bigint,
    lat float8, lon float8, speed_kmh real, heading smallint, altitude_m real,
    lid lid_state, lift lift_state, load load_state, weight_kg real, acc boolean,
    alarms text[], sats smallint, hdop real, seq bigint
) ON COMMIT DELETE ROWS;
"""

_INSERT = """
WITH inserted AS (
INSERT INTO positions (device_id, fix_time, received_at, truck_id, lat, lon, speed_kmh,
                       heading, altitude_m, lid, lift, load, weight_kg, acc, alarms, sats,
                       hdop, seq)
SELECT device_id,
       timestamptz 'epoch' + fix_ms * interval '1 millisecond',
       timestamptz 'epoch' + received_ms * interval '1 millisecond',
       truck_id, lat, lon, speed_kmh, heading, altitude_m, lid, lift, load, weight_kg, acc,
       alarms, sats, hdop, seq
FROM positions_staging
ON CONFLICT (device_id, fix_time) DO NOTHING
RETURNING device_id, fix_time
)
SELECT DISTINCT ON (s.device_id, s.fix_ms) s.row_no FROM positions_staging s
JOIN inserted i ON i.device_id = s.device_id
 AND i.fix_time = timestamptz 'epoch' + s.fix_ms * interval '1 millisecond'
ORDER BY s.device_id, s.fix_ms, s.row_no
"""

# Staged rows whose (device, fix time) was already stored with different content. A staged
# row identical to the stored one is a plain redelivery. Only the rows the insert skipped are
# looked up: joining the whole batch against positions cost more than the insert itself.
# Each one is fetched through the primary key (LATERAL ... LIMIT 1): this statement is
# prepared, and PostgreSQL's generic plan for a plain join came from the statistics of the
# moment it was planned. Planned while today's partition was small (after midnight, or
# without autoanalyze), it hash-joined a sequential scan of the whole day's partition, so a
# batch with one duplicate cost more the later in the day it came (63 ms at 150,000 rows).
_CONFLICTS = """
SELECT s.row_no FROM positions_staging s
CROSS JOIN LATERAL (
    SELECT p.lat, p.lon, p.speed_kmh, p.heading, p.lid, p.lift, p.load, p.acc
    FROM positions p
    WHERE p.device_id = s.device_id
      AND p.fix_time = timestamptz 'epoch' + s.fix_ms * interval '1 millisecond'
    LIMIT 1
) p
WHERE s.row_no = ANY($1)
  AND (p.lat, p.lon, p.speed_kmh, p.heading, p.lid, p.lift, p.load, p.acc)
      IS DISTINCT FROM
      (s.lat, s.lon, s.speed_kmh, s.heading, s.lid, s.lift, s.load, s.acc)
"""

# The latest fix of each truck in the batch. A late fix never moves the position back.
_TRUCK_STATE_ROWS = """
SELECT DISTINCT ON (truck_id)
       truck_id, device_id,
       timestamptz 'epoch' + fix_ms * interval '1 millisecond' AS fix_time,
       timestamptz 'epoch' + received_ms * interval '1 millisecond' AS received_at,
       lat, lon, speed_kmh, heading, lid, lift, load, acc, alarms
FROM positions_staging
WHERE truck_id IS NOT NULL
ORDER BY truck_id, fix_ms DESC
"""
_TRUCK_STATE_SET = """
    device_id = CASE WHEN t.fix_time < EXCLUDED.fix_time THEN EXCLUDED.device_id ELSE t.device_id END,
    received_at = CASE WHEN t.fix_time < EXCLUDED.fix_time THEN EXCLUDED.received_at ELSE t.received_at END,
    lat = CASE WHEN t.fix_time < EXCLUDED.fix_time THEN EXCLUDED.lat ELSE t.lat END,
    lon = CASE WHEN t.fix_time < EXCLUDED.fix_time THEN EXCLUDED.lon ELSE t.lon END,
    speed_kmh = CASE WHEN t.fix_time < EXCLUDED.fix_time THEN EXCLUDED.speed_kmh ELSE t.speed_kmh END,
    heading = CASE WHEN t.fix_time < EXCLUDED.fix_time THEN EXCLUDED.heading ELSE t.heading END,
    lid = CASE WHEN t.fix_time < EXCLUDED.fix_time THEN EXCLUDED.lid ELSE t.lid END,
    lift = CASE WHEN t.fix_time < EXCLUDED.fix_time THEN EXCLUDED.lift ELSE t.lift END,
    load = CASE WHEN t.fix_time < EXCLUDED.fix_time THEN EXCLUDED.load ELSE t.load END,
    acc = CASE WHEN t.fix_time < EXCLUDED.fix_time THEN EXCLUDED.acc ELSE t.acc END,
    alarms = CASE WHEN t.fix_time < EXCLUDED.fix_time THEN EXCLUDED.alarms ELSE t.alarms END,
    fix_time = GREATEST(t.fix_time, EXCLUDED.fix_time),
    updated_at = now()
"""
_TRUCK_STATE_INSERT = """
INSERT INTO truck_state AS t (truck_id, device_id, fix_time, received_at, lat, lon, speed_kmh,
                              heading, lid, lift, load, acc, alarms, updated_at)
SELECT truck_id, device_id, fix_time, received_at, lat, lon, speed_kmh, heading, lid, lift, load,
       acc, alarms, now()
FROM ("""
_TRUCK_STATE = (
    _TRUCK_STATE_INSERT
    + _TRUCK_STATE_ROWS
    + ") l\nON CONFLICT (truck_id) DO UPDATE SET"
    + _TRUCK_STATE_SET
    + "WHERE t.fix_time < EXCLUDED.fix_time"
)
# The same write for batches that after-store hooks (the compliance rules) evaluate. It is
# also how those hooks lock the batch's trucks: the rows are written in truck order (the order
# of the subquery), so two collectors' transactions never wait on each other in a cycle, and
# every truck of the batch is written, late fixes or not, so every one is locked. It returns
# each row as it stood before the batch (the prev_* columns take the old values in the same
# write; nothing else can return them): the rules start from that last fix. prev_fix_time is
# NULL for a row this write created.
_TRUCK_STATE_FOR_HOOKS = (
    _TRUCK_STATE_INSERT
    + _TRUCK_STATE_ROWS
    + """) l
ON CONFLICT (truck_id) DO UPDATE SET
    prev_fix_time = t.fix_time, prev_load = t.load, prev_speed_kmh = t.speed_kmh,
    prev_acc = t.acc,"""
    + _TRUCK_STATE_SET
    + """RETURNING truck_id, date_part('epoch', prev_fix_time), prev_load::text, prev_speed_kmh,
          prev_acc, rule_rev"""
)


# The statements every batch runs, prepared once per connection so that PostgreSQL plans them
# once instead of at every batch: planning the conflict lookup over every daily partition
# alone took about 1.3 ms, and at moderate rates, where batches are small, planning was a
# large share of the database's work per message (docs/performance.md).
_PREPARED = {
    "muck_insert_fixes": ("", _INSERT),
    "muck_fix_conflicts": ("(bigint[])", _CONFLICTS),
    "muck_unstage_skipped": ("(bigint[])", "DELETE FROM positions_staging WHERE row_no = ANY($1)"),
    "muck_truck_state": ("", _TRUCK_STATE),
    "muck_truck_state_for_hooks": ("", _TRUCK_STATE_FOR_HOOKS),
}


@dataclass(slots=True)
class Quarantined:
    received_ms: int
    topic: str
    device_id: str | None
    reason: str
    detail: str
    payload: bytes


@dataclass
class Batch:
    received_ms: int
    fixes: list[Fix] = field(default_factory=list)
    truck_ids: list[int | None] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)
    sightings: list[Sighting] = field(default_factory=list)
    statuses: dict[str, tuple[str, int, bool]] = field(default_factory=dict)
    # Indexes into `fixes` of the rows actually inserted (not duplicates); set by write().
    inserted: list[int] = field(default_factory=list)
    # For after-store hooks, set by write(): the truck_state rows of the batch's trucks as they
    # stood before it (truck id, last fix time in epoch s or None for a new row, load, speed,
    # ignition, rule_rev), locked by this transaction; in no particular order.
    prior: list[tuple] = field(default_factory=list)


@dataclass(slots=True)
class WriteResult:
    stored: int = 0
    duplicates: int = 0
    conflicts: list[Quarantined] = field(default_factory=list)
    sightings_stored: int = 0


def _copy_buffer(fixes: Sequence[Fix], truck_ids: Sequence[int | None], received_ms: int):
    # One f-string per row with the NULL tests inline: a helper call per optional field cost
    # about a third of the formatting (docs/performance.md, "Session 5"). Device ids and alarm
    # names are restricted to characters that need no COPY escaping (telemetry.contract), so
    # plain joins are safe here.
    n = "\\N"
    lines = [
        f"{row_no}\t{f.device_id}\t{f.fix_ms}\t{received_ms}\t{n if truck is None else truck}\t"
        f"{f.lat!r}\t{f.lon!r}\t{f.speed!r}\t{n if f.heading is None else f.heading}\t"
        f"{n if f.alt is None else repr(f.alt)}\t{n if f.lid is None else f.lid}\t"
        f"{n if f.lift is None else f.lift}\t{n if f.load is None else f.load}\t"
        f"{n if f.weight_kg is None else repr(f.weight_kg)}\t"
        f"{n if f.acc is None else ('t' if f.acc else 'f')}\t"
        f"{n if f.alarms is None else '{' + ','.join(f.alarms) + '}'}\t"
        f"{n if f.sats is None else f.sats}\t{n if f.hdop is None else repr(f.hdop)}\t"
        f"{n if f.seq is None else f.seq}\n"
        for row_no, (f, truck) in enumerate(zip(fixes, truck_ids, strict=True))
    ]
    return io.StringIO("".join(lines))


AfterStore = Callable[[object, Batch], None]


class BatchWriter:
    """Owns one database connection; `write` stores a batch atomically."""

    def __init__(
        self,
        conn,
        quarantine_payload_bytes: int = 4096,
        after_store: Sequence[AfterStore] = (),
        topics: Topics | None = None,
    ) -> None:
        self.conn = conn
        self.topics = topics or Topics()
        self.quarantine_payload_bytes = quarantine_payload_bytes
        self.after_store = list(after_store)
        self._known_days: set[dt.date] | None = None
        self._timescale: bool | None = None
        with conn.cursor() as cur:
            cur.execute(_STAGING_DDL)
            # A connection may serve several writers in turn (benchmarks, tests).
            cur.execute("SELECT name FROM pg_prepared_statements")
            prepared = {row[0] for row in cur.fetchall()}
            for name, (types, statement) in _PREPARED.items():
                if name in prepared:
                    continue
                cur.execute(
                    psql.SQL("PREPARE {} {} AS {}").format(
                        psql.Identifier(name), psql.SQL(types), psql.SQL(statement)
                    )
                )
            cur.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")
            self._timescale = cur.fetchone() is not None
        conn.commit()

    def _ensure_partitions(self, cur, fixes: Sequence[Fix]) -> None:
        if self._timescale or not fixes:
            return
        if self._known_days is None:
            self._known_days = set(partitions.existing_partitions(cur))
        times = [f.fix_ms for f in fixes]
        first = dt.datetime.fromtimestamp(min(times) / 1000, dt.UTC).date()
        last = dt.datetime.fromtimestamp(max(times) / 1000, dt.UTC).date()
        days = {first + dt.timedelta(days=i) for i in range((last - first).days + 1)}
        missing = days - self._known_days
        if missing:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (0x706F73,))
            self._known_days = set(partitions.existing_partitions(cur))
            partitions.ensure_days(cur, days, self._known_days)

    def write(self, batch: Batch, *, run_hooks: bool = True) -> WriteResult:
        result = WriteResult()
        conn = self.conn
        try:
            with conn.cursor() as cur:
                if batch.fixes:
                    self._ensure_partitions(cur, batch.fixes)
                    cur.copy_expert(
                        "COPY positions_staging FROM STDIN",
                        _copy_buffer(batch.fixes, batch.truck_ids, batch.received_ms),
                    )
                    cur.execute("EXECUTE muck_insert_fixes")
                    inserted = [row[0] for row in cur.fetchall()]
                    batch.inserted = inserted
                    result.stored = len(inserted)
                    if result.stored < len(batch.fixes):
                        result.duplicates = len(batch.fixes) - result.stored
                        skipped = sorted(set(range(len(batch.fixes))) - set(inserted))
                        cur.execute("EXECUTE muck_fix_conflicts (%s)", (IntArray(skipped),))
                        for (row_no,) in cur.fetchall():
                            fix = batch.fixes[row_no]
                            result.conflicts.append(
                                Quarantined(
                                    batch.received_ms,
                                    self.topics.telemetry(fix.device_id),
                                    fix.device_id,
                                    "duplicate_conflict",
                                    "a different fix with this device and time is already stored",
                                    fix.raw,
                                )
                            )
                        result.duplicates -= len(result.conflicts)
                        # Rows already stored must not reach the truck_state write below: it
                        # would lock (and hand the rules) trucks that have nothing new.
                        cur.execute(
                            "EXECUTE muck_unstage_skipped (%s)",
                            (IntArray(skipped),),
                        )
                    hooks = self.after_store if run_hooks else ()
                    if hooks:
                        cur.execute("EXECUTE muck_truck_state_for_hooks")
                        batch.prior = cur.fetchall()
                        # Rules run here: after the fixes and the trucks' rows are written
                        # (and locked), in the same transaction, so the rule state they
                        # checkpoint commits with the fixes that produced it.
                        for hook in hooks:
                            hook(cur, batch)
                    else:
                        cur.execute("EXECUTE muck_truck_state")
                quarantined = batch.quarantined + result.conflicts
                if quarantined:
                    limit = self.quarantine_payload_bytes
                    psycopg2.extras.execute_values(
                        cur,
                        """INSERT INTO quarantine (received_at, topic, device_id, reason, detail,
                                                   payload, payload_bytes) VALUES %s""",
                        [
                            (
                                dt.datetime.fromtimestamp(q.received_ms / 1000, dt.UTC),
                                q.topic,
                                q.device_id,
                                q.reason,
                                q.detail[:1000],
                                q.payload[:limit],
                                len(q.payload),
                            )
                            for q in quarantined
                        ],
                    )
                if batch.sightings:
                    received = dt.datetime.fromtimestamp(batch.received_ms / 1000, dt.UTC)
                    psycopg2.extras.execute_values(
                        cur,
                        """INSERT INTO sightings (camera_id, seen_at, received_at, plate,
                               plate_color, direction, site_id, confidence, image_ref)
                           VALUES %s ON CONFLICT (camera_id, seen_at, plate) DO NOTHING""",
                        [
                            (
                                s.camera_id,
                                dt.datetime.fromtimestamp(s.seen_ms / 1000, dt.UTC),
                                received,
                                s.plate,
                                s.plate_color,
                                s.direction,
                                s.site_id,
                                s.confidence,
                                s.image_ref,
                            )
                            for s in batch.sightings
                        ],
                    )
                    result.sightings_stored = cur.rowcount
                if batch.statuses:
                    psycopg2.extras.execute_values(
                        cur,
                        """INSERT INTO device_status AS d (device_id, status, changed_at,
                               orderly_offline_at)
                           VALUES %s ON CONFLICT (device_id) DO UPDATE
                           SET status = EXCLUDED.status, changed_at = EXCLUDED.changed_at,
                               orderly_offline_at = COALESCE(EXCLUDED.orderly_offline_at,
                                                             d.orderly_offline_at)
                           WHERE d.changed_at <= EXCLUDED.changed_at""",
                        [
                            (
                                device,
                                status,
                                dt.datetime.fromtimestamp(ms / 1000, dt.UTC),
                                # kept when the terminal comes back online: the going-dark
                                # rule asks whether the gap it ends began with an orderly
                                # shutdown
                                dt.datetime.fromtimestamp(ms / 1000, dt.UTC) if orderly else None,
                            )
                            for device, (status, ms, orderly) in batch.statuses.items()
                        ],
                    )
            conn.commit()
        except BaseException:
            self._known_days = None
            try:
                conn.rollback()
            except Exception:  # noqa: BLE001 - the connection may be gone; caller reconnects
                pass
            raise
        return result
