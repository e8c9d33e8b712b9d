"""The black-truck list (`black_trucks`): one row per plate seen by cameras with black-truck
evidence, plus one per unregistered device id; kept by the sighting matcher and the device
scan from their evidence, listed and handled by officers (`black_truck_actions`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from core.db import transaction
from registry.validation import normalise_plate

_REFRESH_PLATES = """
    WITH ev AS (
        SELECT c.plate,
               max(c.truck_id) AS truck_id,
               min(c.seen_at) AS first_seen,
               max(c.seen_at) AS last_seen,
               count(*) AS n,
               count(*) FILTER (WHERE NOT c.low_confidence) AS n_confident,
               coalesce(array_agg(DISTINCT s.site_id ORDER BY s.site_id)
                        FILTER (WHERE s.site_id IS NOT NULL), '{}') AS sites,
               array_agg(DISTINCT c.outcome ORDER BY c.outcome) AS reasons,
               max(c.classified_at) AS last_evidence_at
        FROM sighting_checks c JOIN sightings s ON s.id = c.sighting_id
        WHERE c.plate = ANY(%(plates)s)
          AND c.outcome IN ('unregistered_plate', 'no_valid_permit', 'untracked')
        GROUP BY c.plate
        HAVING count(*) FILTER (WHERE NOT c.low_confidence) > 0
    ), gone AS (
        DELETE FROM black_trucks b
        WHERE b.kind = 'plate' AND b.key = ANY(%(plates)s) AND b.status = 'new'
          AND NOT EXISTS (SELECT 1 FROM ev WHERE ev.plate = b.key)
    )
    INSERT INTO black_trucks AS b (kind, key, truck_id, first_seen, last_seen, sightings,
        confident_sightings, sites, reasons, last_evidence_at)
    SELECT 'plate', plate, truck_id, first_seen, last_seen, n, n_confident, sites, reasons,
           last_evidence_at
    FROM ev
    ON CONFLICT (kind, key) DO UPDATE SET
        truck_id = EXCLUDED.truck_id, first_seen = EXCLUDED.first_seen,
        last_seen = EXCLUDED.last_seen, sightings = EXCLUDED.sightings,
        confident_sightings = EXCLUDED.confident_sightings, sites = EXCLUDED.sites,
        reasons = EXCLUDED.reasons, last_evidence_at = EXCLUDED.last_evidence_at,
        updated_at = now()
    WHERE (b.truck_id, b.first_seen, b.last_seen, b.sightings, b.confident_sightings,
           b.sites, b.reasons, b.last_evidence_at)
          IS DISTINCT FROM
          (EXCLUDED.truck_id, EXCLUDED.first_seen, EXCLUDED.last_seen, EXCLUDED.sightings,
           EXCLUDED.confident_sightings, EXCLUDED.sites, EXCLUDED.reasons,
           EXCLUDED.last_evidence_at)
    RETURNING b.id
"""

_REFRESH_DEVICES = """
    WITH ev AS (
        SELECT device_id, min(first_fix) AS first_seen,
               max(last_fix) AS last_seen, sum(fixes)::int AS n,
               coalesce((SELECT array_agg(DISTINCT s ORDER BY s)
                         FROM unregistered_device_days d2, unnest(d2.sites) s
                         WHERE d2.device_id = d.device_id), '{}') AS sites
        FROM unregistered_device_days d
        WHERE device_id = ANY(%(keys)s) GROUP BY device_id
    ), gone AS (
        DELETE FROM black_trucks b
        WHERE b.kind = 'device' AND b.key = ANY(%(keys)s) AND b.status = 'new'
          AND NOT EXISTS (SELECT 1 FROM ev WHERE ev.device_id = b.key)
    )
    INSERT INTO black_trucks AS b (kind, key, first_seen, last_seen, sightings,
        confident_sightings, sites, reasons, last_evidence_at)
    SELECT 'device', device_id, first_seen, last_seen, n, n, sites,
           '{unregistered_device}', last_seen
    FROM ev
    ON CONFLICT (kind, key) DO UPDATE SET
        first_seen = EXCLUDED.first_seen, last_seen = EXCLUDED.last_seen,
        sightings = EXCLUDED.sightings,
        confident_sightings = EXCLUDED.confident_sightings,
        sites = EXCLUDED.sites, last_evidence_at = EXCLUDED.last_evidence_at,
        updated_at = now()
    WHERE (b.first_seen, b.last_seen, b.sightings, b.sites)
          IS DISTINCT FROM
          (EXCLUDED.first_seen, EXCLUDED.last_seen, EXCLUDED.sightings,
           EXCLUDED.sites)
"""

_REOPEN = """
    WITH reopened AS (
        UPDATE black_trucks SET status = 'new', updated_at = now()
        WHERE kind = %(kind)s AND key = ANY(%(keys)s) AND status = 'handled'
          AND last_evidence_at > handled_at
        RETURNING id
    )
    INSERT INTO black_truck_actions (black_truck_id, action, actor, note)
    SELECT id, 'reopened', 'system', 'new evidence after it was handled' FROM reopened
"""


def refresh_plate_entries(cur, plates: list[str]) -> int:
    """Recompute the list rows of these plates from their classified sightings (a plate
    without confident evidence leaves the list unless it was handled); returns the rows
    written."""
    cur.execute(_REFRESH_PLATES, {"plates": plates})
    return len(cur.fetchall())


def refresh_device_entries(cur, devices: list[str]) -> None:
    """Recompute the list rows of these unregistered devices from their device-days."""
    cur.execute(_REFRESH_DEVICES, {"keys": devices})


def reopen_handled(cur, kind: str, keys: list[str]) -> None:
    """Handled entries with evidence newer than their handling go back to `new`."""
    cur.execute(_REOPEN, {"kind": kind, "keys": keys})


# ----------------------------------------------------------------- list and handling


@dataclass(frozen=True)
class BlackTruck:
    id: int
    kind: str
    key: str
    truck_id: int | None
    first_seen: dt.datetime
    last_seen: dt.datetime
    sightings: int
    confident_sightings: int
    sites: tuple[str, ...]
    reasons: tuple[str, ...]
    status: str
    handled_by: str | None
    handled_at: dt.datetime | None
    handled_note: str | None


_BT_COLUMNS = """id, kind, key, truck_id, first_seen, last_seen, sightings, confident_sightings,
    sites, reasons, status, handled_by, handled_at, handled_note"""


def _bt(row: tuple) -> BlackTruck:
    values = list(row)
    values[8] = tuple(values[8])
    values[9] = tuple(values[9])
    return BlackTruck(*values)


def list_black_trucks(
    conn, *, status: str | None = None, kind: str | None = None, limit: int | None = None
) -> list[BlackTruck]:
    """The black-truck list, most recently seen first."""
    with conn.cursor() as cur:
        cur.execute(
            f"""SELECT {_BT_COLUMNS} FROM black_trucks
                WHERE (%(status)s::text IS NULL OR status = %(status)s)
                  AND (%(kind)s::text IS NULL OR kind = %(kind)s)
                ORDER BY last_seen DESC, id LIMIT %(limit)s""",  # noqa: S608 (fixed columns)
            {"status": status, "kind": kind, "limit": limit},
        )
        rows = [_bt(row) for row in cur.fetchall()]
    conn.commit()
    return rows


def get_black_truck(conn, key: str, kind: str = "plate") -> BlackTruck | None:
    key = normalise_plate(key) if kind == "plate" else key.strip()
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT {_BT_COLUMNS} FROM black_trucks WHERE kind = %s AND key = %s",  # noqa: S608 (fixed columns)
            (kind, key),
        )
        row = cur.fetchone()
    conn.commit()
    return _bt(row) if row else None


@dataclass(frozen=True)
class SightingEvidence:
    sighting_id: int
    seen_at: dt.datetime
    camera_id: str
    site_id: str | None
    direction: str | None
    confidence: float | None
    image_ref: str | None
    outcome: str
    low_confidence: bool
    nearest_fix_m: float | None
    detail: str | None


def plate_sightings(conn, plate: str, *, evidence_only: bool = True) -> list[SightingEvidence]:
    """Every classified sighting of a plate (black-truck outcomes only by default)."""
    with conn.cursor() as cur:
        cur.execute(
            """SELECT s.id, s.seen_at, s.camera_id, s.site_id, s.direction, s.confidence,
                      s.image_ref, c.outcome, c.low_confidence, c.nearest_fix_m, c.detail
               FROM sighting_checks c JOIN sightings s ON s.id = c.sighting_id
               WHERE c.plate = %s
                 AND (NOT %s OR c.outcome IN ('unregistered_plate', 'no_valid_permit',
                                              'untracked'))
               ORDER BY s.seen_at, s.id""",
            (normalise_plate(plate), evidence_only),
        )
        rows = [SightingEvidence(*row) for row in cur.fetchall()]
    conn.commit()
    return rows


def handle_black_truck(conn, key: str, *, note: str, actor: str, kind: str = "plate") -> BlackTruck:
    """Mark a black truck handled (who, when, note); the action is kept in
    black_truck_actions. New evidence classified later reopens it (status back to new)."""
    if not note or not note.strip():
        raise ValueError("a note is required to handle a black truck")
    if not actor or not actor.strip():
        raise ValueError("the handling officer (actor) is required")
    key = normalise_plate(key) if kind == "plate" else key.strip()
    with transaction(conn) as cur:
        cur.execute(
            """UPDATE black_trucks SET status = 'handled', handled_by = %s, handled_at = now(),
                      handled_note = %s, updated_at = now()
               WHERE kind = %s AND key = %s RETURNING id""",
            (actor.strip(), note.strip(), kind, key),
        )
        row = cur.fetchone()
        if row is None:
            raise LookupError(f"{key!r} is not on the black-truck list")
        cur.execute(
            """INSERT INTO black_truck_actions (black_truck_id, action, actor, note)
               VALUES (%s, 'handled', %s, %s)""",
            (row[0], actor.strip(), note.strip()),
        )
    found = get_black_truck(conn, key, kind)
    assert found is not None
    return found
