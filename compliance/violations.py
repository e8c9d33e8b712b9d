"""Storing violations and every change to them.

A violation is keyed by (truck, kind, stream, start): the same episode found again (a
redelivered batch, a replay) is the same violation. It is inserted as soon as the rule is
certain (ongoing, `ended_at` NULL) and closed when the episode ends. Its evidence is captured
by the evidence package (evidence/), off the ingestion path. Status changes by officers and
revisions by replays are recorded in `violation_events`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import psycopg2.extras
from prometheus_client import Counter

from compliance.pipeline import PIPELINE
from core.metrics import PROCESS_REGISTRY

# Counted when the row is inserted, inside the batch's transaction: a batch that is rolled
# back and retried (database outage) counts its violations twice. Good enough for a rate
# on a dashboard; the violations table is the record.
VIOLATIONS_RAISED = Counter(
    "muck_violations_raised", "Violations opened, by kind", ["kind"], registry=PROCESS_REGISTRY
)
# Late fixes (older than their truck's checkpoint) make the rules replay the truck: frequent
# with collectors sharing a Mosquitto round-robin subscription (docs/operations.md).
RULE_REPLAYS = Counter(
    "muck_rule_replays", "Trucks replayed by the rules for a late fix", registry=PROCESS_REGISTRY
)

# Who may move a violation where (the web issue adds roles on top).
TRANSITIONS = {
    "confirm": ({"new"}, "confirmed"),
    "dismiss": ({"new", "confirmed"}, "dismissed"),
    "open_case": ({"confirmed"}, "case_opened"),
    "close": ({"case_opened"}, "closed"),
}


class ViolationError(ValueError):
    """A status change that is not allowed; the message says why."""


@dataclass
class EpisodeRow:
    truck_id: int
    kind: str
    stream: str
    start: float
    end: float | None
    worst: float | None
    unit: str
    severity: str
    permit_no: str | None
    zone_code: str | None
    lat: float | None
    lon: float | None
    points: int
    legal_basis: str
    params: dict[str, Any]

    @property
    def key(self) -> tuple:
        return (self.truck_id, self.kind, self.stream, round(self.start, 3))


def _final(episodes: list[EpisodeRow]) -> dict[tuple, EpisodeRow]:
    """One row per episode: an end report wins over an open one; the worst value is kept."""
    out: dict[tuple, EpisodeRow] = {}
    for row in episodes:
        seen = out.get(row.key)
        if seen is None:
            out[row.key] = row
            continue
        best = row if row.end is not None or seen.end is None else seen
        worst = max((w for w in (seen.worst, row.worst) if w is not None), default=None)
        serious = "serious" in (seen.severity, row.severity)
        best.worst, best.severity = worst, "serious" if serious else "minor"
        best.lat = seen.lat if seen.lat is not None else row.lat
        best.lon = seen.lon if seen.lon is not None else row.lon
        out[row.key] = best
    return out


_UPSERT = """
INSERT INTO violations AS v (truck_id, company_id, kind, stream, started_at, ended_at,
    worst_value, worst_unit, severity, permit_no, zone_code, lat, lon, points, legal_basis,
    rule_params)
VALUES %s
ON CONFLICT (truck_id, kind, stream, started_at) DO UPDATE SET
    ended_at = COALESCE(EXCLUDED.ended_at, v.ended_at),
    worst_value = GREATEST(v.worst_value, EXCLUDED.worst_value),
    severity = CASE WHEN 'serious' IN (v.severity, EXCLUDED.severity) THEN 'serious'
                    ELSE 'minor' END,
    lat = COALESCE(v.lat, EXCLUDED.lat), lon = COALESCE(v.lon, EXCLUDED.lon),
    -- a finding made when the episode ends (e.g. unloaded while dark) joins the parameters
    -- the sweep recorded when it opened the violation
    rule_params = v.rule_params || EXCLUDED.rule_params,
    updated_at = now()
WHERE v.ended_at IS NULL AND v.status <> 'withdrawn'
RETURNING id, (xmax = 0) AS inserted, ended_at IS NOT NULL AS ended, kind
"""
_TEMPLATE = (
    "(%s, (SELECT company_id FROM trucks WHERE id = %s), %s, %s, to_timestamp(%s), "
    "to_timestamp(%s), %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb)"
)


def _values(row: EpisodeRow) -> tuple:
    return (
        row.truck_id,
        row.truck_id,
        row.kind,
        row.stream,
        row.start,
        row.end,
        row.worst,
        row.unit,
        row.severity,
        row.permit_no,
        row.zone_code,
        row.lat,
        row.lon,
        row.points,
        row.legal_basis,
        json.dumps(row.params, ensure_ascii=False),
    )


class ViolationWriter:
    def __init__(self, settings: Any) -> None:
        self.settings = settings

    def write(self, cur, episodes: list[EpisodeRow]) -> list[int]:
        """Insert new episodes, close ended ones; an event for each."""
        final = _final(episodes)
        if not final:
            return []
        returned = psycopg2.extras.execute_values(
            cur, _UPSERT, [_values(r) for r in final.values()], template=_TEMPLATE, fetch=True
        )
        events = []
        for vid, inserted, ended, kind in returned:
            if inserted:
                events.append((vid, "detected"))
                VIOLATIONS_RAISED.labels(kind).inc()
            if ended:
                events.append((vid, "ended"))
        if events:
            psycopg2.extras.execute_values(
                cur,
                "INSERT INTO violation_events (violation_id, actor, action) VALUES %s",
                [(vid, "system", action) for vid, action in events],
            )
        return [row[0] for row in returned]

    def reconcile(self, cur, truck_id: int, since: float, episodes: list[EpisodeRow]) -> None:
        """Make the truck's violations in the replayed window match a replay's episodes."""
        final = _final(episodes)
        cur.execute(
            """SELECT id, kind, stream, extract(epoch FROM started_at)::float8,
                      extract(epoch FROM ended_at)::float8, worst_value, severity, status
               FROM violations
               WHERE truck_id = %s AND status <> 'withdrawn'
                 AND (ended_at IS NULL OR ended_at > to_timestamp(%s))""",
            (truck_id, max(since, 0.0)),
        )
        existing = {
            (truck_id, kind, stream, round(start, 3)): (vid, end, worst, severity, status)
            for vid, kind, stream, start, end, worst, severity, status in cur.fetchall()
        }
        new_rows = [row for key, row in final.items() if key not in existing]
        for key, (vid, end, worst, severity, status) in existing.items():
            row = final.get(key)
            if row is None:
                self._withdraw(cur, vid, status)
                continue
            before = {"ended_at": end, "worst": worst, "severity": severity}
            after = {"ended_at": row.end, "worst": row.worst, "severity": row.severity}
            if _differs(before, after):
                cur.execute(
                    """UPDATE violations SET ended_at = to_timestamp(%s), worst_value = %s,
                           severity = %s, updated_at = now() WHERE id = %s""",
                    (row.end, row.worst, row.severity, vid),
                )
                _event(
                    cur,
                    vid,
                    "system",
                    "revised",
                    before,
                    after,
                    "re-evaluated after late fixes arrived",
                )
        if new_rows:
            self.write(cur, new_rows)

    def _withdraw(self, cur, vid: int, status: str) -> None:
        note = "not found again when re-evaluated with late fixes"
        if status == "new":
            cur.execute(
                "UPDATE violations SET status = 'withdrawn', updated_at = now() WHERE id = %s",
                (vid,),
            )
            _event(
                cur, vid, "system", "withdrawn", {"status": status}, {"status": "withdrawn"}, note
            )
        else:
            # An officer has acted on it: flag for review rather than change it.
            _event(cur, vid, "system", "replay_disagrees", None, None, note)


def _differs(a: dict, b: dict) -> bool:
    for key in a:
        x, y = a[key], b[key]
        if isinstance(x, float) and isinstance(y, float):
            if abs(x - y) > 1e-3:
                return True
        elif x != y:
            return True
    return False


def _event(cur, vid, actor, action, before, after, note=None) -> None:
    cur.execute(
        """INSERT INTO violation_events (violation_id, actor, action, before, after, note)
           VALUES (%s, %s, %s, %s::jsonb, %s::jsonb, %s)""",
        (
            vid,
            actor,
            action,
            json.dumps(before) if before is not None else None,
            json.dumps(after) if after is not None else None,
            note,
        ),
    )


def change_status(
    conn,
    violation_id: int,
    action: str,
    actor: str,
    note: str | None = None,
    decision_no: str | None = None,
) -> str:
    """confirm / dismiss (reason required) / open_case (decision number required) / close."""
    if action not in TRANSITIONS:
        raise ViolationError(f"unknown action {action!r}")
    allowed_from, target = TRANSITIONS[action]
    if action == "dismiss" and not (note and note.strip()):
        raise ViolationError("a dismissal needs a reason")
    if action == "open_case" and not (decision_no and decision_no.strip()):
        raise ViolationError("opening a case needs the decision document number")
    with conn.cursor() as cur:
        cur.execute("SELECT status FROM violations WHERE id = %s FOR UPDATE", (violation_id,))
        row = cur.fetchone()
        if row is None:
            conn.rollback()
            raise ViolationError(f"violation {violation_id} does not exist")
        if row[0] not in allowed_from:
            conn.rollback()
            raise ViolationError(f"cannot {action} a violation that is {row[0]}")
        cur.execute(
            """UPDATE violations SET status = %s, decision_no = COALESCE(%s, decision_no),
                   updated_at = now() WHERE id = %s""",
            (target, decision_no, violation_id),
        )
        _event(
            cur,
            violation_id,
            actor,
            action,
            {"status": row[0]},
            {"status": target, **({"decision_no": decision_no} if decision_no else {})},
            note,
        )
    conn.commit()
    return target


# One kind per rule, in pipeline order.
KINDS = tuple(rule.kind for rule in PIPELINE)
STATUSES = ("new", "confirmed", "dismissed", "case_opened", "closed", "withdrawn")


@dataclass
class ViolationSummary:
    id: int
    plate: str
    company: str | None
    kind: str
    started_at: Any
    ended_at: Any
    worst_value: float | None
    worst_unit: str
    severity: str
    status: str
    permit_no: str | None
    zone_code: str | None


def list_violations(
    conn,
    *,
    kind: str | None = None,
    status: str | None = None,
    plate: str | None = None,
    since=None,
    until=None,
    limit: int = 100,
) -> list[ViolationSummary]:
    """Newest first, filtered; every filter is a bound parameter."""
    with conn.cursor() as cur:
        cur.execute(
            """SELECT v.id, t.plate, c.name, v.kind, v.started_at, v.ended_at, v.worst_value,
                      v.worst_unit, v.severity, v.status, v.permit_no, v.zone_code
               FROM violations v JOIN trucks t ON t.id = v.truck_id
               LEFT JOIN companies c ON c.id = v.company_id
               WHERE (%(kind)s::text IS NULL OR v.kind = %(kind)s)
                 AND (%(status)s::text IS NULL OR v.status = %(status)s)
                 AND (%(plate)s::text IS NULL OR t.plate = %(plate)s)
                 AND (%(since)s::timestamptz IS NULL OR v.started_at >= %(since)s)
                 AND (%(until)s::timestamptz IS NULL OR v.started_at < %(until)s)
               ORDER BY v.started_at DESC, v.id DESC LIMIT %(limit)s""",
            {
                "kind": kind,
                "status": status,
                "plate": plate,
                "since": since,
                "until": until,
                "limit": limit,
            },
        )
        rows = [ViolationSummary(*row) for row in cur.fetchall()]
    conn.commit()
    return rows


def get_violation(conn, violation_id: int) -> tuple[dict, list[dict]] | None:
    """The violation (every column, plate, company) and its events in order."""
    with conn.cursor() as cur:
        cur.execute(
            """SELECT to_jsonb(v) || jsonb_build_object('plate', t.plate, 'company', c.name,
                                                        'credit_code', c.credit_code)
               FROM violations v JOIN trucks t ON t.id = v.truck_id
               LEFT JOIN companies c ON c.id = v.company_id WHERE v.id = %s""",
            (violation_id,),
        )
        row = cur.fetchone()
        if row is None:
            conn.commit()
            return None
        cur.execute(
            """SELECT jsonb_build_object('at', at, 'actor', actor, 'action', action,
                                         'before', before, 'after', after, 'note', note)
               FROM violation_events WHERE violation_id = %s ORDER BY at, id""",
            (violation_id,),
        )
        events = [r[0] for r in cur.fetchall()]
    conn.commit()
    return row[0], events
