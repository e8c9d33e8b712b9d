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

# Who may move a violation where (the web issue adds roles on top). The review actions an
# officer takes on a violation; `open_case` and `close` are done by a case (credit/cases.py),
# which moves its violations with `move_for_case` so that a violation is `case_opened`
# exactly while it is in a case that is not withdrawn.
TRANSITIONS = {
    "confirm": ({"new"}, "confirmed"),
    "dismiss": ({"new", "confirmed"}, "dismissed"),
    "open_case": ({"confirmed"}, "case_opened"),
    "close": ({"case_opened"}, "closed"),
}
REVIEW_ACTIONS = ("confirm", "dismiss")
# How a case moves its violations: into the case, its decision number recorded, closed with
# it, released when it is withdrawn (back to confirmed: the officer's confirmation stands).
CASE_MOVES = {
    "open_case": ({"confirmed"}, "case_opened"),
    "decision": ({"case_opened"}, "case_opened"),
    "close": ({"case_opened"}, "closed"),
    "release_case": ({"case_opened", "closed"}, "confirmed"),
}


# Severities, lowest first: `notice` asks for a look, not an alert (see docs/compliance.md).
SEVERITIES = ("notice", "minor", "serious")
SEVERITY_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}


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
    #: an orderly shutdown of the terminal would excuse it (going dark; never stored)
    excusable: bool = False

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
        best.worst, best.severity = worst, max(seen.severity, row.severity, key=SEVERITY_RANK.get)
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
                    WHEN 'minor' IN (v.severity, EXCLUDED.severity) THEN 'minor'
                    ELSE 'notice' END,
    lat = COALESCE(v.lat, EXCLUDED.lat), lon = COALESCE(v.lon, EXCLUDED.lon),
    -- a finding made when the episode ends (e.g. unloaded while dark) joins the parameters
    -- the sweep recorded when it opened the violation
    rule_params = v.rule_params || EXCLUDED.rule_params,
    updated_at = now()
WHERE v.ended_at IS NULL AND v.status <> 'withdrawn'
RETURNING id, (xmax = 0) AS inserted, ended_at IS NOT NULL AS ended, truck_id, kind
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
        self.new_for: set[int] = set()
        if not final:
            return []
        returned = psycopg2.extras.execute_values(
            cur, _UPSERT, [_values(r) for r in final.values()], template=_TEMPLATE, fetch=True
        )
        events = []
        # Trucks with a violation new in this write: the ones one act, one charge may link.
        self.new_for = {truck for _, inserted, _, truck, _ in returned if inserted}
        for vid, inserted, ended, _, kind in returned:
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

    def withdraw_open(self, cur, rows: list[EpisodeRow], note: str) -> None:
        """Withdraw the still open violations of these episodes (not found after all)."""
        for row in rows:
            cur.execute(
                """SELECT id, status FROM violations WHERE truck_id = %s AND kind = %s
                     AND stream = %s AND started_at = to_timestamp(%s) AND ended_at IS NULL
                     AND status <> 'withdrawn'""",
                (row.truck_id, row.kind, row.stream, row.start),
            )
            for vid, status in cur.fetchall():
                self._withdraw(cur, vid, status, note)

    def _withdraw(
        self,
        cur,
        vid: int,
        status: str,
        note: str = "not found again when re-evaluated with late fixes",
    ) -> None:
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
) -> str:
    """confirm / dismiss (reason required). Opening and closing a case is the case's
    business (credit/cases.py: `muck case`, the case pages), which calls `move_for_case`."""
    if action in CASE_MOVES:
        raise ViolationError(
            f"{action} is done through a case: `muck case open` / `muck case close` or the "
            "case pages"
        )
    if action not in TRANSITIONS:
        raise ViolationError(f"unknown action {action!r}")
    allowed_from, target = TRANSITIONS[action]
    if action == "dismiss" and not (note and note.strip()):
        raise ViolationError("a dismissal needs a reason")
    with conn.cursor() as cur:
        cur.execute("SELECT status FROM violations WHERE id = %s FOR UPDATE", (violation_id,))
        row = cur.fetchone()
        if row is None:
            conn.rollback()
            raise ViolationError(f"violation {violation_id} does not exist")
        if row[0] not in allowed_from:
            conn.rollback()
            raise ViolationError(refusal(violation_id, action, row[0]))
        cur.execute(
            "UPDATE violations SET status = %s, updated_at = now() WHERE id = %s",
            (target, violation_id),
        )
        _event(
            cur,
            violation_id,
            actor,
            action,
            {"status": row[0]},
            {"status": target},
            note,
        )
    conn.commit()
    return target


def refusal(violation_id: int, action: str, status: str) -> str:
    """Why `action` is refused on a violation in `status`: a violation in a case is only
    dismissed once the case is withdrawn (the case names it; compliance does not know
    cases)."""
    if action == "dismiss" and status in ("case_opened", "closed"):
        return (
            f"cannot dismiss violation {violation_id}: it is in a case ({status}); withdraw "
            "the case first"
        )
    return f"cannot {action} a violation that is {status}"


def move_for_case(
    cur,
    violation_ids: list[int],
    move: str,
    actor: str,
    *,
    case_no: str,
    decision_no: str | None = None,
    note: str | None = None,
) -> None:
    """Move a case's violations (CASE_MOVES), in the caller's transaction: every row locked
    and checked first, so a refusal changes none of them. One violation event each."""
    allowed_from, target = CASE_MOVES[move]
    ids = sorted(set(violation_ids))
    cur.execute(
        "SELECT id, status, decision_no FROM violations WHERE id = ANY(%s) ORDER BY id FOR UPDATE",
        (ids,),
    )
    rows = {vid: (status, number) for vid, status, number in cur.fetchall()}
    missing = [vid for vid in ids if vid not in rows]
    if missing:
        raise ViolationError(f"violation {', '.join(map(str, missing))} does not exist")
    wrong = [(vid, rows[vid][0]) for vid in ids if rows[vid][0] not in allowed_from]
    if wrong:
        listed = ", ".join(f"{vid} ({status})" for vid, status in wrong)
        expected = " or ".join(sorted(allowed_from))
        raise ViolationError(f"violation {listed} is not {expected}: cannot {move}")
    number = decision_no if move in ("open_case", "decision") else None
    cur.execute(
        """UPDATE violations SET status = %s,
               decision_no = CASE WHEN %s THEN NULL ELSE COALESCE(%s, decision_no) END,
               updated_at = now()
           WHERE id = ANY(%s)""",
        (target, move == "release_case", number, ids),
    )
    for vid in ids:
        before = {"status": rows[vid][0], "decision_no": rows[vid][1]}
        after = {
            "status": target,
            "decision_no": None if move == "release_case" else number or rows[vid][1],
            "case_no": case_no,
        }
        _event(cur, vid, actor, move, before, after, note)


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
